"""newExecution&wait's settling on the node: CommandBridge.submit_soon (a command that rides in this node's next
entry, or goes alone after within_s) and server/settle.py's Settler (claims, batches of ExecSettle, retries).

The bridge tests reuse test_bridge's FakeReplica (the pysyncobj boundary, answered from another thread); the
Settler is given a submit function that records its commands and answers as the test says."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pysyncobj import FAIL_REASON

from podnode.errors import Unavailable
from podnode.raft import commands as C
from podnode.server.settle import Settler

from .builders import NOW, approved_state, ok
from .test_bridge import DEADLINE_S, FakeReplica, loop_errors, make_bridge, node_up, settle, until

__all__ = ["loop_errors"]   # the fixture, used by name


# ---- CommandBridge.submit_soon -----------------------------------------------------------------------------
async def test_a_rider_goes_in_the_next_submission_s_entry(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica)
    rider = bridge.submit_soon(node_up("r1"), within_s=DEADLINE_S)
    await settle()
    assert replica.calls == [], "a rider waits for another submission"
    task = asyncio.ensure_future(bridge.submit(node_up("n1")))
    await until(lambda: len(replica.calls) == 1)
    assert replica.payload(0) == C.batch([node_up("n1").to_wire(), node_up("r1").to_wire()])
    replica.answer(0)
    assert (await asyncio.wait_for(task, DEADLINE_S))["node"]["id"] == "n1"
    assert (await asyncio.wait_for(rider, DEADLINE_S))["node"]["id"] == "r1"
    assert set(replica.state.nodes) == {"n1", "r1"}
    await asyncio.sleep(0.05)
    assert len(replica.calls) == 1, "its timer was cancelled: it is not sent again"
    assert loop_errors == []


async def test_a_rider_waits_for_a_full_window_then_goes_with_the_queued_batch(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica, max_inflight=1)
    first = asyncio.ensure_future(bridge.submit(node_up("n0")))
    await until(lambda: len(replica.calls) == 1)
    rider = bridge.submit_soon(node_up("r1"), within_s=DEADLINE_S)
    queued = asyncio.ensure_future(bridge.submit(node_up("n1")))
    await settle()
    assert len(replica.calls) == 1
    replica.answer(0)
    await asyncio.wait_for(first, DEADLINE_S)
    await until(lambda: len(replica.calls) == 2)
    assert replica.payload(1) == C.batch([node_up("n1").to_wire(), node_up("r1").to_wire()])
    replica.answer(1)
    assert (await asyncio.wait_for(queued, DEADLINE_S))["node"]["id"] == "n1"
    assert (await asyncio.wait_for(rider, DEADLINE_S))["node"]["id"] == "r1"
    assert loop_errors == []


async def test_riders_go_alone_after_within_s(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica)
    loop = asyncio.get_running_loop()
    start = loop.time()
    riders = [bridge.submit_soon(node_up("r1"), within_s=0.05), bridge.submit_soon(node_up("r2"), within_s=10.0)]
    await until(lambda: len(replica.calls) == 1)
    assert loop.time() - start >= 0.04, "not before within_s (the first rider's)"
    assert replica.payload(0) == C.batch([node_up("r1").to_wire(), node_up("r2").to_wire()])
    replica.answer(0)
    results = await asyncio.wait_for(asyncio.gather(*riders), DEADLINE_S)
    assert [r["node"]["id"] for r in results] == ["r1", "r2"]
    # A later rider gets a timer of its own.
    later = bridge.submit_soon(node_up("r3"), within_s=0.01)
    await until(lambda: len(replica.calls) == 2)
    assert replica.payload(1) == node_up("r3").to_wire()
    replica.answer(1)
    assert (await asyncio.wait_for(later, DEADLINE_S))["node"]["id"] == "r3"
    assert loop_errors == []


@pytest.mark.parametrize("no", ["leader", "quorum"])
async def test_a_rider_fails_fast_without_leader_or_quorum(no, loop_errors):
    replica = FakeReplica(leader=None if no == "leader" else "127.0.0.1:4000")
    replica.quorum = no != "quorum"
    bridge = make_bridge(replica)
    rider = bridge.submit_soon(node_up("r1"), within_s=0.01)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(rider, 1.0)
    assert replica.calls == []
    # Once the cluster is back, the next rider goes through.
    replica.leader, replica.quorum = "127.0.0.1:4000", True
    rider = bridge.submit_soon(node_up("r2"), within_s=0.01)
    await until(lambda: len(replica.calls) == 1)
    replica.answer(0)
    assert (await asyncio.wait_for(rider, DEADLINE_S))["node"]["id"] == "r2"
    assert loop_errors == []


async def test_a_rider_in_a_failed_entry_fails_with_it(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica)
    rider = bridge.submit_soon(node_up("r1"), within_s=DEADLINE_S)
    task = asyncio.ensure_future(bridge.submit(node_up("n1")))
    await until(lambda: len(replica.calls) == 1)
    replica.answer(0, err=FAIL_REASON.LEADER_CHANGED)
    for fut in (task, rider):
        with pytest.raises(Unavailable):
            await asyncio.wait_for(fut, DEADLINE_S)
    assert loop_errors == []


async def test_fail_all_fails_the_riders(loop_errors):
    replica = FakeReplica()
    bridge = make_bridge(replica)
    rider = bridge.submit_soon(node_up("r1"), within_s=DEADLINE_S)
    bridge.fail_all()
    with pytest.raises(Unavailable, match="shutting down"):
        await asyncio.wait_for(rider, 1.0)
    await asyncio.sleep(0.02)
    assert replica.calls == []
    assert loop_errors == []


# ---- Settler -----------------------------------------------------------------------------------------------
class FakeSubmit:
    """Records the commands; answers each with the next of `answers` (an exception is raised), else ok."""

    def __init__(self, answers: list[Any] | None = None):
        self.cmds: list[C.ExecSettle] = []
        self.answers = list(answers or [])
        self.gate: asyncio.Event | None = None

    async def __call__(self, cmd: C.ExecSettle) -> dict[str, Any]:
        self.cmds.append(cmd)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0) if self.answers else {"ok": True, "forgotten": cmd.forget,
                                                          "released": cmd.release}
        if isinstance(answer, Exception):
            raise answer
        return answer


def settler(submit: FakeSubmit) -> Settler:
    return Settler("n1", submit, retry_first_s=0.01, retry_max_s=0.04)


async def test_claim_is_once_per_id_until_settled():
    s = settler(FakeSubmit())
    assert s.claim(5) is True
    assert s.claim(5) is False, "a second request for the same execution reads it as any reader"
    assert s.claim(6) is True
    s.settle(5, handed=True)
    assert s.claim(5) is True
    s.settle(5, handed=True)
    s.settle(6, handed=False)
    await s.stop(timeout_s=DEADLINE_S)


async def test_ids_settled_together_go_in_one_command():
    submit = FakeSubmit()
    s = settler(submit)
    for exec_id, handed in ((1, True), (2, False), (3, True)):
        assert s.claim(exec_id)
        s.settle(exec_id, handed=handed)
    assert s.pending() == 3
    await until(lambda: s.pending() == 0)
    assert len(submit.cmds) == 1
    cmd = submit.cmds[0]
    assert (cmd.node, cmd.forget, cmd.release) == ("n1", [1, 3], [2])


async def test_ids_settled_while_one_is_in_flight_go_in_the_next():
    submit = FakeSubmit()
    submit.gate = asyncio.Event()
    s = settler(submit)
    s.settle(1, handed=True)
    await until(lambda: len(submit.cmds) == 1)
    s.settle(2, handed=True)
    s.settle(3, handed=False)
    await settle()
    assert len(submit.cmds) == 1, "one entry in flight at a time"
    submit.gate.set()
    await until(lambda: s.pending() == 0)
    assert [(c.forget, c.release) for c in submit.cmds] == [([1], []), ([2], [3])]


async def test_it_retries_after_unavailable_with_the_same_ids():
    submit = FakeSubmit([Unavailable("no leader"), Unavailable("no leader")])
    s = settler(submit)
    s.settle(7, handed=True)
    s.settle(8, handed=False)
    await until(lambda: s.pending() == 0)
    assert [(c.forget, c.release) for c in submit.cmds] == [([7], [8])] * 3


async def test_a_refused_settle_is_not_retried_forever():
    submit = FakeSubmit([{"error": "bad_request", "message": "no"}])
    s = settler(submit)
    s.settle(7, handed=True)
    await until(lambda: s.pending() == 0)
    await asyncio.sleep(0.05)
    assert len(submit.cmds) == 1


async def test_stop_settles_what_is_pending_within_its_timeout():
    submit = FakeSubmit([Unavailable("no leader")])
    s = settler(submit)
    s.settle(1, handed=True)
    await s.stop(timeout_s=DEADLINE_S)
    assert s.pending() == 0 and len(submit.cmds) == 2
    # Stopped while the cluster never answers: it gives up after its timeout.
    submit = FakeSubmit()
    submit.gate = asyncio.Event()
    s = settler(submit)
    s.settle(1, handed=True)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await s.stop(timeout_s=0.05)
    assert loop.time() - start < 1.0 and s.pending() == 1


async def test_a_settler_through_the_bridge_deletes_and_releases_in_the_state(loop_errors):
    """Settler -> submit_soon -> one entry -> the state machine: the handed result is deleted, the other released."""
    replica = FakeReplica()
    state = replica.state = approved_state({"n1": 2, "n2": 0})
    ids = [ok(state, C.ExecNew(name="act", now=NOW, collector="n2"))["execution"]["id"] for _ in range(2)]
    ok(state, C.ExecPlace(placements=[[i, "n1"] for i in ids], now=NOW))
    ok(state, C.ExecFinish(now=NOW, reports=[C.Report(id=i, node="n1", attempt=1, exitCode=0) for i in ids]))
    bridge = make_bridge(replica)
    s = Settler("n2", lambda cmd: bridge.submit_soon(cmd, 0.01), retry_first_s=0.01)
    for exec_id, handed in zip(ids, (True, False), strict=True):
        assert s.claim(exec_id)
        s.settle(exec_id, handed=handed)
    await until(lambda: len(replica.calls) == 1)
    replica.answer(0)
    await until(lambda: s.pending() == 0)
    assert ids[0] not in state.executions
    assert "collector" not in state.executions[ids[1]]
    assert state.execution_table.ended_ids(None, 10) == [ids[1]]
    assert loop_errors == []
