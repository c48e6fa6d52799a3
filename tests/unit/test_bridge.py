"""Tests for podnode.raft.bridge: group commit from asyncio into Raft.

The Replica is replaced at the pysyncobj boundary by a small fake that records submit() calls and
answers them, when the test says so, from another thread as pysyncobj does.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pysyncobj import FAIL_REASON

from podnode.errors import Conflict, Unavailable
from podnode.raft import commands as C
from podnode.raft.bridge import CommandBridge
from podnode.raft.state import State

DEADLINE_S = 5.0
_APPLY = object()


class FakeReplica:
    """Stands in for Replica: a leader address and submit(payload, callback)."""

    def __init__(self, leader: str | None = "127.0.0.1:4000"):
        self.leader = leader
        self.state = State()
        self.calls: list[tuple[bytes, Any]] = []
        self.fail_with: Exception | None = None
        self.quorum = True

    def leader_addr(self) -> str | None:
        return self.leader

    def has_quorum(self) -> bool:
        return self.quorum

    def submit(self, payload: bytes, callback=None) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        assert isinstance(payload, bytes)
        self.calls.append((payload, callback))

    def payload(self, index: int) -> Any:
        return C.decode(self.calls[index][0])

    def answer(self, index: int, err: int = FAIL_REASON.SUCCESS, result: Any = _APPLY) -> None:
        """Call the callback of call `index` from another thread, as the Raft thread would."""
        payload, callback = self.calls[index]
        if result is _APPLY:
            result = self.state.apply(C.decode(payload)) if err == FAIL_REASON.SUCCESS else None
        thread = threading.Thread(target=callback, args=(result, err))
        thread.start()
        thread.join()


@pytest.fixture
async def loop_errors() -> list[dict]:
    """Errors the event loop would otherwise only log (e.g. setting a result on a finished future)."""
    errors: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
    return errors


def make_bridge(replica: FakeReplica, **kw: Any) -> CommandBridge:
    kw.setdefault("timeout_s", DEADLINE_S)
    return CommandBridge(replica, asyncio.get_running_loop(), **kw)


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(pred, timeout_s: float = DEADLINE_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def node_up(node: str) -> C.NodeUp:
    return C.NodeUp(node=node, raftAddr=f"{node}:1", httpUrl="h", slots=1, now=1.0)


def wire(cmds: list[C.Command]) -> list[dict]:
    return [cmd.to_wire() for cmd in cmds]


def spawn(bridge: CommandBridge, cmds: list[C.Command]) -> list[asyncio.Task]:
    return [asyncio.ensure_future(bridge.submit(cmd)) for cmd in cmds]


async def test_no_leader_fails_fast(loop_errors):
    replica = FakeReplica(leader=None)
    bridge = make_bridge(replica)
    with pytest.raises(Unavailable) as info:
        await asyncio.wait_for(bridge.submit(node_up("n1")), 1.0)
    assert "no leader" in info.value.message
    assert info.value.retry_after_s == 1.0
    assert replica.calls == []
    assert loop_errors == []


async def test_no_quorum_fails_fast_and_sends_nothing(loop_errors):
    replica = FakeReplica()
    replica.quorum = False
    bridge = make_bridge(replica)
    with pytest.raises(Unavailable) as info:
        await asyncio.wait_for(bridge.submit(node_up("n1")), 1.0)
    assert "majority" in info.value.message and "nothing was changed" in info.value.message
    assert replica.calls == []
    assert loop_errors == []


async def test_single_command_is_sent_as_is(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica)
    task = asyncio.ensure_future(bridge.submit(node_up("n1")))
    await until(lambda: len(replica.calls) == 1)
    assert replica.payload(0) == node_up("n1").to_wire()
    replica.answer(0)
    result = await asyncio.wait_for(task, DEADLINE_S)
    assert result["ok"] is True and result["node"]["id"] == "n1"
    assert "n1" in replica.state.nodes
    assert loop_errors == []


async def test_submits_while_one_is_in_flight_are_packed_into_one_batch(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, max_inflight=1)
    first = asyncio.ensure_future(bridge.submit(node_up("n0")))
    await until(lambda: len(replica.calls) == 1)
    cmds = [
        node_up("n1"),
        C.ActivityNew(name="a", url="u", now=1.0),
        C.ActivityNew(name="a", url="u", now=1.0),   # refused: duplicate
        C.ExecNew(name="a", now=1.0),
        node_up("n5"),
    ]
    tasks = spawn(bridge, cmds)
    await settle()
    assert len(replica.calls) == 1, "nothing else is sent while one entry is in flight"

    replica.answer(0)
    assert (await asyncio.wait_for(first, DEADLINE_S))["node"]["id"] == "n0"
    await until(lambda: len(replica.calls) == 2)
    assert replica.payload(1) == {"t": C.BATCH, "cmds": wire(cmds)}

    replica.answer(1)
    results = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    assert results[0]["node"]["id"] == "n1"
    assert results[1]["activity"]["name"] == "a"
    assert results[2]["error"] == "conflict"          # a refusal is returned to its own caller only
    assert results[3]["execution"]["id"] == 1
    assert results[4]["node"]["id"] == "n5"
    assert len(replica.calls) == 2
    assert loop_errors == []


async def test_default_inflight_window_then_batch(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica)   # max_inflight=2
    cmds = [node_up(f"n{i}") for i in range(5)]
    tasks = spawn(bridge, cmds)
    await until(lambda: len(replica.calls) == 2)
    await settle()
    assert replica.payload(0) == cmds[0].to_wire() and replica.payload(1) == cmds[1].to_wire()
    assert len(replica.calls) == 2

    replica.answer(1)                # answers may come in any order
    await until(lambda: len(replica.calls) == 3)
    assert replica.payload(2) == C.batch(wire(cmds[2:]))
    replica.answer(2)
    replica.answer(0)
    results = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    assert [r["node"]["id"] for r in results] == [f"n{i}" for i in range(5)]
    assert loop_errors == []


async def test_max_batch_splits_groups(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, max_inflight=1, max_batch=2)
    cmds = [node_up(f"n{i}") for i in range(5)]
    tasks = spawn(bridge, cmds)
    await until(lambda: len(replica.calls) == 1)
    replica.answer(0)
    await until(lambda: len(replica.calls) == 2)
    assert replica.payload(1) == C.batch(wire(cmds[1:3]))
    replica.answer(1)
    await until(lambda: len(replica.calls) == 3)
    assert replica.payload(2) == C.batch(wire(cmds[3:5]))
    replica.answer(2)
    results = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    assert [r["node"]["id"] for r in results] == [f"n{i}" for i in range(5)]
    assert loop_errors == []


async def test_raft_error_fails_every_future_of_that_batch(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, max_inflight=1)
    first = asyncio.ensure_future(bridge.submit(node_up("n0")))
    await until(lambda: len(replica.calls) == 1)
    tasks = spawn(bridge, [node_up("n1"), node_up("n2"), node_up("n3")])
    await settle()
    replica.answer(0)
    assert (await asyncio.wait_for(first, DEADLINE_S))["ok"] is True
    await until(lambda: len(replica.calls) == 2)
    replica.answer(1, err=FAIL_REASON.LEADER_CHANGED)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DEADLINE_S)
    assert all(isinstance(r, Unavailable) for r in results), results
    assert all("leader changed" in r.message for r in results)
    assert set(replica.state.nodes) == {"n0"}

    # The bridge goes on working.
    task = asyncio.ensure_future(bridge.submit(node_up("n4")))
    await until(lambda: len(replica.calls) == 3)
    replica.answer(2)
    assert (await asyncio.wait_for(task, DEADLINE_S))["node"]["id"] == "n4"
    assert loop_errors == []


@pytest.mark.parametrize("err", [FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.DISCARDED,
                                 FAIL_REASON.NOT_LEADER, FAIL_REASON.REQUEST_DENIED, 12345])
async def test_raft_error_on_a_single_command(err, loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica)
    task = asyncio.ensure_future(bridge.submit(node_up("n1")))
    await until(lambda: len(replica.calls) == 1)
    replica.answer(0, err=err)
    with pytest.raises(Unavailable) as info:
        await asyncio.wait_for(task, DEADLINE_S)
    assert info.value.retry_after_s == 1.0
    assert loop_errors == []


async def test_timeout_then_late_callback_is_ignored(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, max_inflight=1, timeout_s=0.05)
    lost = asyncio.ensure_future(bridge.submit(node_up("n0")))
    await until(lambda: len(replica.calls) == 1)
    queued = asyncio.ensure_future(bridge.submit(node_up("n1")))
    with pytest.raises(Unavailable) as info:
        await asyncio.wait_for(lost, DEADLINE_S)
    assert "no commit within 0.05 s" in info.value.message

    # The expiry freed the window: the queued command goes out.
    await until(lambda: len(replica.calls) == 2)
    assert replica.payload(1) == node_up("n1").to_wire()

    # The late answer for the expired entry is dropped; it must not reach the queued command's future.
    replica.answer(0, result={"ok": True, "node": {"id": "late"}})
    await settle()
    assert not queued.done()
    assert isinstance(lost.exception(), Unavailable)

    replica.answer(1)
    assert (await asyncio.wait_for(queued, DEADLINE_S))["node"]["id"] == "n1"
    assert loop_errors == []


async def test_late_failure_callback_is_ignored(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, timeout_s=0.02)
    tasks = spawn(bridge, [node_up("n0")])
    with pytest.raises(Unavailable):
        await asyncio.wait_for(tasks[0], DEADLINE_S)
    replica.answer(0, err=FAIL_REASON.DISCARDED)
    await settle()
    assert loop_errors == []


async def test_answer_before_timeout_is_not_expired_later(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, timeout_s=0.05)
    task = asyncio.ensure_future(bridge.submit(node_up("n0")))
    await until(lambda: len(replica.calls) == 1)
    replica.answer(0)
    assert (await asyncio.wait_for(task, DEADLINE_S))["ok"] is True
    await asyncio.sleep(0.1)     # the timer fires and finds nothing to expire
    assert task.result()["ok"] is True
    assert loop_errors == []


async def test_apply_command_raising_fails_the_futures(loop_errors):
    replica = FakeReplica()
    replica.fail_with = RuntimeError("socket closed")
    bridge = make_bridge(replica)
    with pytest.raises(Unavailable) as info:
        await asyncio.wait_for(bridge.submit(node_up("n0")), DEADLINE_S)
    assert "socket closed" in info.value.message
    replica.fail_with = None
    task = asyncio.ensure_future(bridge.submit(node_up("n1")))
    await until(lambda: len(replica.calls) == 1)
    replica.answer(0)
    assert (await asyncio.wait_for(task, DEADLINE_S))["ok"] is True
    assert loop_errors == []


async def test_missing_results_become_internal_errors(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, max_inflight=1)
    first = asyncio.ensure_future(bridge.submit(C.Sync()))
    await until(lambda: len(replica.calls) == 1)
    tasks = spawn(bridge, [C.Sync(), C.Sync()])
    await settle()
    replica.answer(0, result=None)
    assert (await asyncio.wait_for(first, DEADLINE_S))["error"] == "internal"
    await until(lambda: len(replica.calls) == 2)
    replica.answer(1, result={"ok": True, "results": [{"ok": True}]})
    results = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    assert results[0] == {"ok": True}
    assert results[1]["error"] == "internal"
    assert loop_errors == []


async def test_submit_ok_raises_refusals(loop_errors):
    replica = FakeReplica()
    replica.state.apply({"t": C.ACTIVITY_NEW, "name": "a", "url": "u", "now": 1.0})
    bridge = make_bridge(replica)
    task = asyncio.ensure_future(bridge.submit_ok(C.ActivityNew(name="a", url="u", now=1.0)))
    await until(lambda: len(replica.calls) == 1)
    replica.answer(0)
    with pytest.raises(Conflict):
        await asyncio.wait_for(task, DEADLINE_S)

    task = asyncio.ensure_future(bridge.submit_ok(C.ActivityNew(name="b", url="u", now=1.0)))
    await until(lambda: len(replica.calls) == 2)
    replica.answer(1)
    assert (await asyncio.wait_for(task, DEADLINE_S))["activity"]["name"] == "b"
    assert loop_errors == []


async def test_a_cancelled_caller_does_not_disturb_the_others(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, max_inflight=1)
    first = asyncio.ensure_future(bridge.submit(node_up("n0")))
    await until(lambda: len(replica.calls) == 1)
    tasks = spawn(bridge, [node_up("n1"), node_up("n2")])
    await settle()
    tasks[0].cancel()
    replica.answer(0)
    await asyncio.wait_for(first, DEADLINE_S)
    await until(lambda: len(replica.calls) == 2)
    replica.answer(1)
    assert (await asyncio.wait_for(tasks[1], DEADLINE_S))["node"]["id"] == "n2"
    assert tasks[0].cancelled()
    assert loop_errors == []


async def test_fail_all_on_shutdown(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, max_inflight=1)
    tasks = spawn(bridge, [node_up("n0"), node_up("n1")])
    await until(lambda: len(replica.calls) == 1)
    await settle()
    bridge.fail_all()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DEADLINE_S)
    assert all(isinstance(r, Unavailable) and "shutting down" in r.message for r in results)
    replica.answer(0)      # a late answer after shutdown is ignored
    await settle()
    assert loop_errors == []
