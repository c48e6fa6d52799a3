"""podnode.raft.replica.voters_due and observers_due: which AppendEntries rounds the leader sends, and to whom;
poll_wait: the Raft thread's wait for messages ends when news held back from the observers is due."""

from __future__ import annotations

import pytest

from podnode.raft.replica import OBSERVER_HEARTBEAT_S, OBSERVER_PERIOD_S, observers_due, poll_wait, voters_due


def test_news_waits_for_the_period_since_the_observers_last_round():
    assert not observers_due(10.0, 10.0, True)
    assert not observers_due(10.0 + OBSERVER_PERIOD_S / 2, 10.0, True)
    assert observers_due(10.0 + OBSERVER_PERIOD_S * 1.01, 10.0, True)


def test_without_news_only_the_slower_heartbeat():
    assert OBSERVER_HEARTBEAT_S > OBSERVER_PERIOD_S
    assert not observers_due(10.0 + OBSERVER_PERIOD_S * 2, 10.0, False)
    assert observers_due(10.0 + OBSERVER_HEARTBEAT_S * 1.01, 10.0, False)


def test_a_new_leader_sends_to_everyone_at_once():
    assert observers_due(0.0, float("-inf"), False)
    assert observers_due(0.0, float("-inf"), True)


def test_the_limits_can_be_given():
    assert observers_due(1.0, 0.0, True, period_s=0.5, heartbeat_s=2.0)
    assert not observers_due(1.0, 0.0, False, period_s=0.5, heartbeat_s=2.0)


def test_voters_get_new_entries_at_once():
    assert voters_due((11, 9), (10, 9))
    assert voters_due((11, 10), (10, 9))


def test_a_commit_index_alone_waits_while_entries_are_out():
    assert not voters_due((12, 11), (12, 10))      # entry 12 not acknowledged yet: its round will carry 11
    assert voters_due((12, 12), (12, 11))          # everything committed: tell the voters now
    assert not voters_due((12, 12), (12, 12))      # nothing new



def test_the_poll_waits_as_pysyncobj_asks_when_nothing_is_held_back():
    assert poll_wait(0.05, None, 100.0) == 0.05


def test_the_poll_ends_when_the_observers_round_is_due():
    assert poll_wait(0.05, 100.0 + OBSERVER_PERIOD_S / 2, 100.0) == pytest.approx(OBSERVER_PERIOD_S / 2)
    assert poll_wait(0.05, 100.5, 100.0) == 0.05          # due later than pysyncobj's own wait
    assert poll_wait(0.05, 99.0, 100.0) == 0.0            # overdue: do not wait at all
