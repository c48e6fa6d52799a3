"""Tests for podnode.changes: waking asyncio waiters from the Raft thread."""

from __future__ import annotations

import asyncio
import threading

from podnode.changes import COARSE_S, Changes

DEADLINE_S = 5.0


async def notify_from_thread(changes: Changes, touched=()) -> None:
    t = threading.Thread(target=changes.notify_threadsafe, args=(touched,))
    t.start()
    await asyncio.to_thread(t.join)


async def test_wait_returns_at_the_next_change():
    changes = Changes(asyncio.get_running_loop())
    waiter = asyncio.create_task(changes.wait(DEADLINE_S))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    before = changes.version
    await notify_from_thread(changes, [1])
    await asyncio.wait_for(waiter, DEADLINE_S)
    assert changes.version == before + 1


async def test_wait_times_out_without_a_change():
    changes = Changes(asyncio.get_running_loop())
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(changes.wait(0.05), DEADLINE_S)
    assert loop.time() - start >= 0.04
    assert changes.version == 0
    assert changes._waiters == {}  # the timed-out waiter is gone


async def test_a_change_missed_while_busy_is_not_lost():
    changes = Changes(asyncio.get_running_loop())
    seen = changes.version
    await notify_from_thread(changes, [1])
    await asyncio.sleep(0)  # the wake-up runs
    assert changes.version != seen
    # A waiter that read `seen` before the change returns at once instead of sleeping until the timeout.
    await asyncio.wait_for(changes.wait(60.0, since=seen), 0.5)


async def test_execution_waiters_wake_only_for_their_execution():
    changes = Changes(asyncio.get_running_loop())
    w1 = asyncio.create_task(changes.wait_execution(1, DEADLINE_S))
    w2 = asyncio.create_task(changes.wait_execution(2, DEADLINE_S))
    await asyncio.sleep(0.01)
    await notify_from_thread(changes, [2])
    await asyncio.wait_for(w2, DEADLINE_S)
    await asyncio.sleep(0.02)
    assert not w1.done()
    await notify_from_thread(changes, None)  # a snapshot: everything may have changed
    await asyncio.wait_for(w1, DEADLINE_S)
    assert changes._execution_waiters == {}


async def test_cancelling_one_waiter_leaves_the_others_waiting():
    changes = Changes(asyncio.get_running_loop())
    a = asyncio.create_task(changes.wait(DEADLINE_S))
    b = asyncio.create_task(changes.wait(DEADLINE_S))
    c = asyncio.create_task(changes.wait_execution(5, DEADLINE_S))
    await asyncio.sleep(0.01)
    a.cancel()
    c.cancel()
    await asyncio.gather(a, c, return_exceptions=True)
    assert a.cancelled() and c.cancelled()
    assert len(changes._waiters) == 1 and 5 not in changes._execution_waiters
    await notify_from_thread(changes, [5])
    await asyncio.wait_for(b, DEADLINE_S)


async def test_long_waits_share_one_sweep_and_end_on_time():
    changes = Changes(asyncio.get_running_loop())
    loop = asyncio.get_running_loop()
    start = loop.time()
    waits = [asyncio.create_task(changes.wait(0.3)) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert changes._sweep is not None and len(changes._waiters) == 50
    await asyncio.wait_for(asyncio.gather(*waits), DEADLINE_S)
    took = loop.time() - start
    assert 0.3 <= took < 0.3 + COARSE_S + 0.2
    assert changes._waiters == {}
    await asyncio.sleep(COARSE_S * 1.5)
    assert changes._sweep is None  # nothing left to sweep for: the timer stops
