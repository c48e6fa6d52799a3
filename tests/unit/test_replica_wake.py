"""Replica.submit wakes the Raft thread through a pipe, once per burst: a wake-up is written only when none is
pending. The one interleaving that matters: a command submitted while the Raft thread empties the pipe. Whatever
happens then, the next command must find a wake-up in the pipe (or write one), else it waits for the poll's timeout.
"""

from __future__ import annotations

import os
import select

import pytest

from podnode.raft import replica as replica_module
from podnode.raft.replica import Replica


@pytest.fixture
def pipes():
    made: list[int] = []
    yield made
    for fd in made:
        os.close(fd)


def bare_replica(queued: list[bytes], pipes: list[int]) -> Replica:
    r = Replica.__new__(Replica)   # only the wake-up's parts: no pysyncobj
    r._wake_r, r._wake_w = os.pipe()
    os.set_blocking(r._wake_r, False)
    os.set_blocking(r._wake_w, False)
    pipes += [r._wake_r, r._wake_w]
    r._wake_pending = False
    r.apply_command = lambda payload, callback: queued.append(payload)
    return r


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_burst_writes_one_wake_up(pipes):
    queued: list[bytes] = []
    r = bare_replica(queued, pipes)
    for payload in (b"a", b"b", b"c"):
        r.submit(payload, callback=None)
    assert queued == [b"a", b"b", b"c"]
    assert os.read(r._wake_r, 100) == b"!"


def test_a_command_submitted_while_the_pipe_is_emptied_does_not_lose_the_next_wake_up(monkeypatch, pipes):
    queued: list[bytes] = []
    r = bare_replica(queued, pipes)
    r.submit(b"a", callback=None)
    real_read = os.read
    calls = []

    def read_while_another_thread_submits(fd: int, n: int) -> bytes:
        if not calls:
            r.submit(b"b", callback=None)   # the asyncio thread, between two reads of the Raft thread
        calls.append(fd)
        return real_read(fd, n)
    monkeypatch.setattr(replica_module.os, "read", read_while_another_thread_submits)
    r._drain_wake(r._wake_r, 0)
    monkeypatch.setattr(replica_module.os, "read", real_read)
    assert queued == [b"a", b"b"]   # b is queued: the tick after this poll takes it
    # The next command must wake the Raft thread: a wake-up is in the pipe once it is submitted.
    r.submit(b"c", callback=None)
    assert readable(r._wake_r), "a command submitted now would wait for the poll's timeout"
