"""podnode.raft.replica.voters_due and ObserverPacer: which AppendEntries rounds the leader sends, and to whom;
poll_wait: the Raft thread's wait for messages ends when news held back from the observers is due."""

from __future__ import annotations

import pytest

from podnode.raft.replica import (
    OBSERVER_BURST,
    OBSERVER_HEARTBEAT_S,
    OBSERVER_PERIOD_S,
    ObserverPacer,
    poll_wait,
    voters_due,
)


def test_on_an_idle_cluster_an_entry_and_its_commit_both_go_at_once():
    pacer = ObserverPacer()
    assert pacer.due(10.0, True)
    pacer.sent(10.0, True)                  # the entry
    assert pacer.due(10.001, True)
    pacer.sent(10.001, True)                # its commit index, a round trip later
    assert not pacer.due(10.002, True)      # a third within the period waits
    assert pacer.next_due() == pytest.approx(10.001 + OBSERVER_PERIOD_S * (1 - pacer.tokens))


def test_under_load_one_round_with_news_per_period():
    pacer = ObserverPacer()
    rounds, now = 0, 0.0
    while now < 1.0:                        # a tick with news every millisecond for a second
        if pacer.due(now, True):
            pacer.sent(now, True)
            rounds += 1
        now += 0.001
    assert 1.0 / OBSERVER_PERIOD_S <= rounds <= 1.0 / OBSERVER_PERIOD_S + OBSERVER_BURST + 1


def test_news_held_back_is_due_after_at_most_a_period():
    pacer = ObserverPacer()
    for t in (5.0, 5.0, 5.0):
        if pacer.due(t, True):
            pacer.sent(t, True)
    assert not pacer.due(5.0, True)
    assert 5.0 < pacer.next_due() <= 5.0 + OBSERVER_PERIOD_S
    assert pacer.due(pacer.next_due() + 1e-9, True)


def test_without_news_only_the_slower_heartbeat():
    pacer = ObserverPacer()
    pacer.sent(10.0, False)
    assert OBSERVER_HEARTBEAT_S > OBSERVER_PERIOD_S
    assert not pacer.due(10.0 + OBSERVER_PERIOD_S * 2, False)
    assert pacer.due(10.0 + OBSERVER_HEARTBEAT_S * 1.01, False)


def test_a_new_leader_sends_to_everyone_at_once():
    pacer = ObserverPacer()
    for _ in range(3):
        pacer.sent(1.0, True)
    pacer.reset()
    assert pacer.due(1.0, False) and pacer.due(1.0, True)


def test_the_limits_can_be_given():
    pacer = ObserverPacer(period_s=0.5, heartbeat_s=2.0, burst=1, tokens=1)
    pacer.sent(0.0, True)
    assert not pacer.due(0.4, True) and pacer.due(0.51, True)
    assert not pacer.due(1.0, False) and pacer.due(2.0, False)


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
