"""The leader's scaling loop in process: launches racing the cap, the join timeout with its back-off, and a
provider whose calls take 10 s while the manager goes on scheduling (fakes.py: a replica without Raft and a
provider whose calls can be held)."""

from __future__ import annotations

import asyncio
import time

import pytest

from podnode.changes import Changes
from podnode.config import NodeConfig
from podnode.manager import Manager
from podnode.raft import commands as C
from podnode.raft.bridge import CommandBridge
from podnode.raft.lifecycle import IN_PROGRESS, NODE_LOST_STATUS
from podnode.raft.state import State
from podnode.scaling.autoscaler import Autoscaler
from podnode.scaling.policy import parse_rules

from ..unit.builders import activity_new, assign, install_done, node_up
from .fakes import Clock, FakeProvider, FakeReplica, addr, settle


def observer_up(node: str, now: float) -> C.NodeUp:
    return node_up(node, slots=1, now=now, role="observer")


async def leader(rules: str, provider: FakeProvider, *, seeds=("n1",), clock=None, slots: int = 1,
                 **kw) -> tuple[FakeReplica, Autoscaler]:
    """Node n1 leads a cluster of `seeds` (all voters) under the policy `rules`; the provider is prepared."""
    clock = clock or Clock()
    replica = FakeReplica("n1", voters=seeds)
    for node in seeds:
        replica.apply(node_up(node, slots=slots, now=clock()))
    replica.apply(C.PolicyNew(name="p", rules=parse_rules(rules), now=clock()))
    replica.apply(C.PolicyApply(name="p", now=clock()))
    scaler = autoscaler(replica, provider, clock=clock, **kw)
    await scaler.prepare()
    return replica, scaler


def autoscaler(replica: FakeReplica, provider: FakeProvider, **kw) -> Autoscaler:
    bridge = CommandBridge(replica, asyncio.get_running_loop(), timeout_s=5.0)
    return Autoscaler(node_id="n1", replica=replica, bridge=bridge, provider=provider, **kw)


def queue(replica: FakeReplica, count: int, now: float, nodes=("n1",)) -> None:
    """An activity installed on `nodes` and `count` executions of it waiting."""
    replica.apply(activity_new("act", now=now))
    first, *rest = nodes
    replica.apply(assign(("act", first), now=now))
    replica.apply(install_done("act", first, now=now))    # verified: now approved
    if rest:
        replica.apply(assign(*(("act", n) for n in rest), now=now))
    for node in rest:
        replica.apply(install_done("act", node, now=now))
    assert set(replica.state.installations["act"]) == set(nodes)
    for _ in range(count):
        replica.apply(C.ExecNew(name="act", now=now))


def held(replica: FakeReplica) -> int:
    """Servers the cluster has: nodes not left, and launches."""
    with replica.lock:
        return sum(r.get("status") != "left" for r in replica.state.nodes.values()) + len(replica.state.launches)


# ---------------------------------------------------------------------------------------------- the cap


async def test_launches_in_flight_count_against_max_workers_over_ticks_and_a_leader_change():
    provider = FakeProvider()
    replica, first = await leader("maxWorkers=4,maxWait=0", provider)
    queue(replica, 20, first.clock())
    provider.hold("launch")   # the cloud takes its time: no launch returns during these ticks
    for _ in range(5):
        await first.tick()
    await settle(lambda: provider.pending["launch"] == 3, what="3 launches in flight")
    assert len(provider.calls["launch"]) == 3 and set(replica.state.launches) == set(provider.calls["launch"])
    assert held(replica) == 4
    assert "already reach maxWorkers=4" in first.last_decision["reason"]
    # A new leader (no memory of the first one's tasks) sees the launches in the replicated state.
    second = autoscaler(replica, provider, clock=first.clock)
    await second.prepare()
    for _ in range(3):
        await second.tick()
    assert len(provider.calls["launch"]) == 3
    provider.release("launch")
    await settle(lambda: all(r["ref"] for r in replica.state.launches.values()), what="refs recorded")
    for node in provider.calls["launch"]:
        replica.apply(observer_up(node, first.clock()))
    assert replica.state.launches == {} and held(replica) == 4
    assert all(replica.state.nodes[n]["removable"] and replica.state.nodes[n]["ref"] == f"ref-{n}"
               for n in provider.calls["launch"])
    for scaler in (first, second, first):
        await scaler.tick()
    assert len(provider.calls["launch"]) == 3


async def test_a_draining_node_still_counts_so_a_new_backlog_does_not_bring_a_fifth():
    provider = FakeProvider()
    clock = Clock()
    replica, scaler = await leader("maxWorkers=4,maxWait=0", provider, clock=clock)
    for node in ("wa", "wb", "wc"):
        replica.apply(observer_up(node, clock()))
    replica.apply(C.NodeDrain(node="wc", deadlineS=60.0, now=clock()))
    queue(replica, 20, clock())
    await scaler.tick()
    await settle()
    assert provider.calls["launch"] == []
    assert "with 1 draining or lost" in scaler.last_decision["reason"]


async def test_the_provider_is_called_only_for_a_launch_the_state_accepted():
    provider = FakeProvider()
    replica, scaler = await leader("maxWorkers=3,maxWait=0", provider)
    queue(replica, 20, scaler.clock())
    seen_in_state = []
    original_launch, original_submit = provider.launch, scaler.bridge.submit

    async def launch(node_id):
        seen_in_state.append(node_id in replica.state.launches)
        return await original_launch(node_id)

    async def submit(cmd):
        if cmd.t == C.NODE_LAUNCHED and "wother" not in replica.state.launches:
            # Another leader's launch lands in the log between this leader's read and its commit.
            replica.apply(C.NodeLaunched(node="wother", provider="fake", maxNodes=3, now=1.0))
        return await original_submit(cmd)
    provider.launch, scaler.bridge.submit = launch, submit
    await scaler.tick()
    assert scaler.last_decision["launch"] == 2          # it decided on what it read: n1 alone
    await settle(lambda: len(seen_in_state) == 1, what="one launch")
    await settle()
    assert seen_in_state == [True]                      # one of its two was refused: only one provider call
    assert held(replica) == 3


def test_the_state_machine_refuses_a_launch_past_max_nodes():
    state = State()
    state.apply(node_up("n1"))
    launch = lambda node, cap: C.NodeLaunched(node=node, provider="p", maxNodes=cap, now=5.0)  # noqa: E731
    assert state.apply(launch("wa", 3)) == {"ok": True}
    assert state.apply(launch("wb", 3)) == {"ok": True}
    refused = state.apply(launch("wc", 3))          # a second leader racing the first: the log decides
    assert refused["error"] == "conflict" and "already holds 3 nodes" in refused["message"]
    assert set(state.launches) == {"wa", "wb"}
    state.apply(C.NodeLaunched(node="wold", provider="p", now=5.0))  # old entries: no cap
    assert "wold" in state.launches
    # A launched node that is lost but not destroyed still counts; a static lost one does not.
    state.apply(node_up("wa", role="observer"))
    state.apply(C.NodeLost(node="wa", now=6.0))
    state.apply(C.NodeLost(node="n1", now=6.0))
    assert state.apply(launch("wd", 3))["error"] == "conflict"
    assert state.apply(launch("wd", 4)) == {"ok": True}


def test_the_launch_ref_is_recorded_on_the_launch_or_the_node_that_registered():
    state = State()
    state.apply(C.NodeLaunched(node="wa", provider="p", ref="", now=1.0))
    state.apply(C.NodeLaunched(node="wb", provider="p", ref="", now=1.0))
    state.apply(C.NodeLaunchRef(node="wa", ref="42", hourlyPrice=0.1, now=2.0))
    assert state.launches["wa"]["ref"] == "42" and state.launches["wa"]["hourlyPrice"] == 0.1
    state.apply(node_up("wb"))                  # registered before its provider call returned
    state.apply(C.NodeLaunchRef(node="wb", ref="43", now=2.0))
    assert state.nodes["wb"]["ref"] == "43" and state.nodes["wb"]["removable"]
    assert state.apply(C.NodeLaunchRef(node="nobody", ref="1", now=2.0))["ignored"]
    assert "error" in state.apply({"t": C.NODE_LAUNCH_REF, "now": 2.0})   # malformed: refused, not raised


async def test_a_node_that_left_is_destroyed_once_and_a_later_leader_does_not_destroy_it_again():
    clock = Clock()
    provider = FakeProvider()
    replica, first = await leader("maxWorkers=3", provider, clock=clock)
    replica.apply(C.NodeLaunched(node="wa", provider="fake", ref="r", now=clock()))
    replica.apply(observer_up("wa", clock()))
    replica.apply(C.NodeLeft(node="wa", now=clock()))
    await first.tick()
    await settle(lambda: replica.state.nodes["wa"].get("destroyedAt"), what="destroyed recorded")
    assert provider.calls["destroy"] == ["wa"]
    second = autoscaler(replica, provider, clock=clock)
    await second.tick()
    await settle()
    assert provider.calls["destroy"] == ["wa"]


async def test_a_launched_node_lost_too_long_is_destroyed_and_marked_left():
    clock = Clock()
    provider = FakeProvider()
    replica, scaler = await leader("maxWorkers=3", provider, clock=clock, destroy_lost_after_s=30.0)
    replica.apply(C.NodeLaunched(node="wa", provider="fake", ref="r", now=clock()))
    replica.apply(observer_up("wa", clock()))
    replica.apply(C.NodeLost(node="wa", now=clock()))
    clock.advance(29.0)
    await scaler.tick()
    await settle()
    assert provider.calls["destroy"] == []
    clock.advance(2.0)
    await scaler.tick()
    await settle(lambda: replica.state.nodes["wa"]["status"] == "left", what="wa marked left")
    assert provider.calls["destroy"] == ["wa"] and replica.state.nodes["wa"]["destroyedAt"] == clock()


# ---------------------------------------------------------------------------------------------- join timeout


async def test_a_node_that_never_joins_is_destroyed_after_the_join_timeout_and_the_back_off_doubles():
    clock = Clock()
    provider = FakeProvider()
    replica, scaler = await leader("minWorkers=2", provider, clock=clock, join_timeout_s=90.0,
                                   backoff_first_s=10.0, backoff_max_s=300.0)

    async def tick_at(offset_s: float) -> None:
        clock.now = start + offset_s
        await scaler.tick()
        await settle()

    start = clock()
    backoffs = []
    launched_at = 0.0
    for attempt, backoff in enumerate((10.0, 20.0, 40.0), start=1):
        await tick_at(launched_at)
        assert len(provider.calls["launch"]) == attempt, scaler.last_decision
        node = provider.calls["launch"][-1]
        await tick_at(launched_at + 89.0)                  # not yet: 89 s is within the join timeout
        assert provider.calls["destroy"].count(node) == 0 and node in replica.state.launches
        await tick_at(launched_at + 91.0)
        await settle(lambda: node not in replica.state.launches, what=f"{node} given up")
        assert provider.calls["destroy"].count(node) == 1
        assert replica.state.launch_failures["count"] == attempt
        assert "did not join within 90 s" in replica.state.launch_failures["lastReason"]
        backoffs.append(scaler.backoff_s)
        await tick_at(launched_at + 91.0 + backoff - 1.0)  # still backing off: no launch
        assert len(provider.calls["launch"]) == attempt
        assert "backing off" in scaler.last_decision["reason"]
        launched_at += 91.0 + backoff + 0.5
    assert backoffs == [10.0, 20.0, 40.0]
    # A launch that registers resets the back-off.
    await tick_at(launched_at)
    node = provider.calls["launch"][-1]
    replica.apply(observer_up(node, clock()))
    await tick_at(launched_at + 1.0)
    assert scaler.backoff_s == 0.0


async def test_the_back_off_stops_doubling_at_its_maximum():
    clock = Clock()
    provider = FakeProvider()
    provider.fail = "no capacity"
    replica, scaler = await leader("minWorkers=2", provider, clock=clock, backoff_first_s=10.0,
                                   backoff_max_s=30.0)
    seen = []
    for _ in range(4):
        clock.advance(301.0)
        await scaler.tick()
        await settle(lambda: not replica.state.launches, what="the failed launch given up")
        seen.append(scaler.backoff_s)
    assert seen == [10.0, 20.0, 30.0, 30.0]
    assert "no capacity" in replica.state.launch_failures["lastReason"]


async def test_launches_that_fail_together_back_off_once():
    clock = Clock()
    provider = FakeProvider()
    provider.fail = "no capacity"
    replica, scaler = await leader("minWorkers=4", provider, clock=clock, backoff_first_s=10.0)
    await scaler.tick()
    await settle(lambda: replica.state.launch_failures.get("count") == 3, what="three failed launches")
    assert scaler.backoff_s == 10.0 and scaler.backoff_until_s == clock() + 10.0


# ---------------------------------------------------------------------------------------------- a slow cloud


@pytest.mark.timeout(60)
async def test_a_provider_taking_10_s_never_holds_up_placements_or_lost_node_detection():
    loop = asyncio.get_running_loop()
    provider = FakeProvider(hold_s=10.0)
    provider.hold("prepare", "price", "launch", "destroy")
    replica = FakeReplica("n1", voters=("n1", "n2", "n3", "n4"))
    changes = Changes(loop)
    replica.on_change = changes.notify_threadsafe
    now = time.time()
    for node in ("n1", "n2", "n3", "n4"):
        replica.apply(node_up(node, slots=2, now=now))
    queue(replica, 0, now, nodes=("n1", "n2", "n3", "n4"))
    replica.apply(C.PolicyNew(name="p", rules=parse_rules("maxWorkers=8,maxWait=0"), now=now))
    replica.apply(C.PolicyApply(name="p", now=now))
    cfg = NodeConfig(node_id="n1", node_lost_after_s=1.0, scheduler_interval_s=0.5)
    bridge = CommandBridge(replica, loop, timeout_s=5.0)
    scaler = Autoscaler(node_id="n1", replica=replica, bridge=bridge, provider=provider, interval_s=0.1)
    manager = Manager(cfg, replica, bridge, changes, autoscaler=scaler)
    running = asyncio.create_task(manager.run())

    async def submit(count: int) -> list[int]:
        """New executions, queued (no node proposed with them: only the manager places them)."""
        return [(await bridge.submit(C.ExecNew(name="act", now=time.time())))["execution"]["id"]
                for _ in range(count)]

    def running_on(node: str) -> set[int]:
        return {i for i, e in replica.state.executions.items()
                if e["status"] == IN_PROGRESS and e["workerId"] == node}   # a waiting record has no workerId yet

    async def placed_by_the_manager(ids: list[int]) -> None:
        t0 = time.monotonic()
        await settle(lambda: all(replica.state.executions[i]["status"] == IN_PROGRESS for i in ids),
                     timeout_s=3.0, what=f"{ids} placed")
        assert replica.commands(C.EXEC_PLACE, since=t0 - 1.0)

    async def finish_one_and_see_its_slot_reused() -> None:
        """An execution on n1 finishes: the manager places a waiting one in its slot."""
        before = running_on("n1")
        done = min(before)
        t0 = time.monotonic()
        await bridge.submit(C.ExecFinish(now=time.time(), reports=[
            C.Report(id=done, attempt=replica.state.executions[done]["attempt"], node="n1", exitCode=0)]))
        await settle(lambda: running_on("n1") - before, timeout_s=3.0, what="n1's freed slot used again")
        assert replica.commands(C.EXEC_PLACE, since=t0)

    async def lost_after(node: str) -> float:
        t0 = time.monotonic()
        replica.silent_since[addr(node)] = t0
        await settle(lambda: replica.state.nodes[node]["status"] == NODE_LOST_STATUS, timeout_s=4.0,
                     what=f"{node} declared lost")
        return time.monotonic() - t0

    try:
        # 1. The provider's prepare() hangs.
        await settle(lambda: provider.pending["prepare"] == 1, what="prepare called")
        await placed_by_the_manager(await submit(2))
        assert 1.0 <= await lost_after("n4") < 3.0
        await submit(10)   # 6 slots up: a backlog, and the policy wants nodes
        await settle(lambda: "waiting for the provider's price" in scaler.last_decision.get("reason", ""),
                     what="the policy waits for the price")
        await finish_one_and_see_its_slot_reused()
        assert provider.pending["prepare"] == 1, "the provider call ended: the test proved nothing"
        # 2. Then its hourly_price(), a blocking call (libcloud's first lookup is), hangs in a thread.
        provider.release("prepare")
        await settle(lambda: provider.pending["price"] == 1, what="hourly_price called")
        await finish_one_and_see_its_slot_reused()
        assert provider.pending["price"] == 1, "the provider call ended: the test proved nothing"
        # 3. The price is known; the launches the backlog asks for hang in the provider.
        provider.release("price")
        await settle(lambda: provider.pending["launch"] >= 1, what="a launch in the provider")
        assert replica.state.launches
        await finish_one_and_see_its_slot_reused()
        assert 1.0 <= await lost_after("n3") < 3.0
        assert provider.pending["launch"] >= 1, "the launch ended: the test proved nothing"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        provider.release()
        await scaler.close()
