"""podnode.raft.replica.voters_due and observers_due: which AppendEntries rounds the leader sends, and to whom;
WakeAlarm: the Raft thread woken when news held back from the observers is due."""

from __future__ import annotations

import os
import time

import pytest

from podnode.raft.replica import OBSERVER_HEARTBEAT_S, OBSERVER_PERIOD_S, WakeAlarm, observers_due, voters_due

from ..conftest import wait_until


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


@pytest.fixture
def alarm_pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    alarm = WakeAlarm(w, time.monotonic)
    try:
        yield alarm, r
    finally:
        alarm.close()
        os.close(r)
        os.close(w)


def _woken(fd: int) -> bool:
    try:
        return bool(os.read(fd, 64))
    except BlockingIOError:
        return False


def test_the_alarm_wakes_the_pipe_once_at_the_earliest_time_asked(alarm_pipe):
    alarm, r = alarm_pipe
    start = time.monotonic()
    alarm.set_at(start + 5.0)
    alarm.set_at(start + 0.05)              # earlier: this one counts
    alarm.set_at(start + 1.0)               # later: ignored while 0.05 is pending
    wait_until(lambda: _woken(r), timeout_s=3, interval_s=0.005, what="the alarm")
    assert 0.04 <= time.monotonic() - start < 2.0
    time.sleep(0.2)                         # nothing more is pending: no second byte
    assert not _woken(r)


def test_a_closed_alarm_stops_its_thread(alarm_pipe):
    alarm, _ = alarm_pipe
    alarm.set_at(time.monotonic() + 60)
    alarm.close()
    assert not alarm._thread.is_alive()
