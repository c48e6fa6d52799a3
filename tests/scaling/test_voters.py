"""Who votes, and how a node that leaves goes out of Raft: the pure rules (scheduler) and the manager's order.

Quorum safety under scaling comes from here, not from a node-count floor in the policy: launched nodes join
as observers, and a launched voter (an observer promoted in place of a lost voter) is taken out of Raft
while it still answers, before it is let go and destroyed.
"""

from __future__ import annotations

import asyncio
import signal
import time

from podnode import scheduler
from podnode.changes import Changes
from podnode.config import NodeConfig
from podnode.manager import Manager
from podnode.raft import commands as C
from podnode.raft.bridge import CommandBridge
from podnode.raft.state import State

from ..conftest import Client, pid_alive, start_cluster, wait_until
from ..unit.builders import node_up
from .fakes import FakeReplica, addr, settle


def launched(state: State, node: str, now: float = 1000.0, role: str = "observer") -> None:
    """A node launched by a provider that has registered."""
    state.apply(C.NodeLaunched(node=node, provider="local", ref="1", now=now))
    state.apply(node_up(node, slots=1, now=now, role=role))


def seeded(*nodes: str) -> State:
    state = State()
    for node in nodes:
        state.apply(node_up(node, slots=1))
    return state


# ---------------------------------------------------------------------------------------------- join_role


def test_a_launched_node_joins_as_an_observer_even_with_room_for_voters():
    state = seeded("n1")
    state.apply(C.NodeLaunched(node="wa", provider="local", now=1.0))
    assert scheduler.join_role(state, "wa", addr("wa"), [addr("n1")], max_voters=5) == "observer"
    assert scheduler.join_role(state, "n2", addr("n2"), [addr("n1")], max_voters=5) == "voter"
    assert scheduler.join_role(state, "n6", addr("n6"), [addr(f"n{i}") for i in range(1, 6)],
                               max_voters=5) == "observer"
    # A member asking again (a restart) stays a voter.
    assert scheduler.join_role(state, "wa", addr("wa"), [addr("n1"), addr("wa")], max_voters=5) == "voter"


# ---------------------------------------------------------------------------------------------- promotion


def test_launched_observers_are_not_promoted_while_the_seeds_vote():
    state = seeded("n1")
    launched(state, "wa")
    launched(state, "wb")
    assert scheduler.voter_target(state, max_voters=5) == 1
    assert scheduler.plan_promotion(state, [addr("n1")], max_voters=5) == (None, [])


def test_a_launched_observer_stands_in_for_a_lost_seed_voter():
    state = seeded("n1", "n2", "n3")
    launched(state, "wa")
    state.apply(C.NodeLost(node="n3", now=1001.0))
    members = [addr("n1"), addr("n2"), addr("n3")]
    assert scheduler.plan_promotion(state, members, max_voters=5) == (None, [addr("n3")])
    assert scheduler.plan_promotion(state, members[:2], max_voters=5) == ("wa", [])


def test_static_observers_are_promoted_first_and_up_to_max_voters():
    state = seeded("n1", "n2")
    launched(state, "wa")
    state.apply(node_up("n3", slots=1, role="observer"))
    assert scheduler.plan_promotion(state, [addr("n1"), addr("n2")], max_voters=5) == ("n3", [])
    assert scheduler.plan_promotion(state, [addr("n1"), addr("n2")], max_voters=2) == (None, [])


# ---------------------------------------------------------------------------------------------- leaving


def drained(state: State, node: str, now: float = 1000.0) -> None:
    assert state.apply(C.NodeDrain(node=node, deadlineS=60.0, now=now))["ok"]


def test_a_launched_voter_goes_out_of_raft_before_it_is_let_go():
    state = seeded("n1")
    launched(state, "wa", role="voter")     # e.g. promoted earlier in place of a lost voter
    drained(state, "wa")
    members = [addr("n1"), addr("wa")]
    assert scheduler.plan_drains(state, 1001.0, members=members) == []
    assert scheduler.plan_raft_exits(state, 1001.0, members=members, connected=members) == [addr("wa")]
    # Out of Raft: now it leaves (and its provider destroys it).
    assert scheduler.plan_drains(state, 1001.0, members=[addr("n1")]) == [
        C.NodeLeft(node="wa", now=1001.0)]
    assert scheduler.plan_raft_exits(state, 1001.0, members=[addr("n1")], connected=[addr("n1")]) == []


def test_a_static_voter_is_let_go_first_then_taken_out_once_it_stopped():
    state = seeded("n1", "n2")
    drained(state, "n2")
    members = [addr("n1"), addr("n2")]
    assert scheduler.plan_drains(state, 1001.0, members=members) == [C.NodeLeft(node="n2", now=1001.0)]
    assert scheduler.plan_raft_exits(state, 1001.0, members=members, connected=members) == []
    state.apply(C.NodeLeft(node="n2", now=1001.0))
    # Still connected: it has yet to learn that it left (from the log) and stop.
    assert scheduler.plan_raft_exits(state, 1001.5, members=members, connected=members) == []
    assert scheduler.plan_raft_exits(state, 1001.5, members=members, connected=[addr("n1")]) == [addr("n2")]
    retention = scheduler.Retention(departed_grace_s=2.0)
    assert scheduler.plan_raft_exits(state, 1003.0, members=members, connected=members,
                                     retention=retention) == [addr("n2")]


def test_an_observer_just_leaves():
    state = seeded("n1")
    launched(state, "wa")
    drained(state, "wa")
    assert scheduler.plan_drains(state, 1001.0, members=[addr("n1")]) == [
        C.NodeLeft(node="wa", now=1001.0)]
    assert scheduler.plan_raft_exits(state, 1001.0, members=[addr("n1")], connected=[addr("n1")]) == []


def test_a_busy_launched_voter_stays_until_its_work_ends_or_the_deadline():
    state = seeded("n1")
    launched(state, "wa", role="voter")
    state.apply(C.ActivityNew(name="a", url="u", now=1000.0))
    state.apply(C.InstallAssign(assignments=[["a", "wa"]], now=1000.0))
    state.apply(C.InstallDone(name="a", node="wa", ok=True, now=1000.0))
    state.apply(C.ExecNew(name="a", now=1000.0, node="wa"))
    drained(state, "wa")
    members = [addr("n1"), addr("wa")]
    assert scheduler.plan_raft_exits(state, 1010.0, members=members, connected=members) == []
    past_deadline_s = 1061.0
    assert scheduler.plan_raft_exits(state, past_deadline_s, members=members, connected=members) == [addr("wa")]


async def test_the_manager_takes_a_launched_voter_out_of_raft_before_committing_that_it_left():
    loop = asyncio.get_running_loop()
    replica = FakeReplica("n1", voters=("n1", "wa"))
    events: list[str] = []
    remove = replica.removeNodeFromCluster

    def removing(raft_addr, callback=None):
        events.append(f"out of raft {raft_addr} (left: {replica.state.nodes['wa']['status'] == 'left'})")
        remove(raft_addr, callback)
    replica.removeNodeFromCluster = removing
    changes = Changes(loop)
    replica.on_change = changes.notify_threadsafe
    replica.apply(node_up("n1", slots=1, now=time.time()))
    replica.apply(C.NodeLaunched(node="wa", provider="local", now=time.time()))
    replica.apply(node_up("wa", slots=1, now=time.time()))
    bridge = CommandBridge(replica, loop, timeout_s=5.0)
    manager = Manager(NodeConfig(node_id="n1", scheduler_interval_s=0.1), replica, bridge, changes)
    running = asyncio.create_task(manager.run())
    try:
        await bridge.submit(C.NodeDrain(node="wa", deadlineS=60.0, now=time.time()))
        await settle(lambda: replica.state.nodes["wa"]["status"] == "left", what="wa left")
        assert events == [f"out of raft {addr('wa')} (left: False)"]
        assert replica.members() == [addr("n1")]
        # The one voter left commits on its own.
        assert "ok" in await bridge.submit(C.Sync())
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


# ---------------------------------------------------------------------------------------------- real Raft


FAST = ["--election-timeout-s", "0.3", "--kill-grace-s", "1", "--node-lost-after-s", "1.5",
        "--scaling-interval-s", "0.5"]


def peers_of(cluster, node) -> set[str]:
    return {p["address"] for p in (cluster.status(node) or {}).get("peers", [])}


def commits_for_longer_than_the_leader_fallback(client: Client, leader_fallback_s: float = 3.0) -> None:
    """Writes succeed now, and again after the leader's fallback time (a leader that hears from no majority of
    its voters that long steps down: a wedged cluster would refuse the second write)."""
    client.ok("newPolicy", name="probe1", rules="minWorkers=0")
    deadline = time.monotonic() + leader_fallback_s + 1.0
    while time.monotonic() < deadline:
        time.sleep(0.2)
    client.ok("newPolicy", name="probe2", rules="minWorkers=0")


def test_a_two_voter_cluster_drained_to_one_still_commits(tmp_path):
    cluster = start_cluster(tmp_path, nodes=2, slots=1, extra_args=FAST)
    try:
        leader = wait_until(cluster.leader, what="leader")
        victim = next(n for n in cluster.nodes if n is not leader)
        client = Client([leader.url], cluster.token)
        client.ok("drainWorker", workerId=victim.node_id, deadline=60)
        wait_until(lambda: victim.proc.poll() is not None, timeout_s=30, what="the drained node stopped by itself")
        wait_until(lambda: peers_of(cluster, leader) == set(), timeout_s=10, what="out of Raft")
        commits_for_longer_than_the_leader_fallback(client)
        assert cluster.status(leader)["role"] == "leader"
    finally:
        cluster.stop()


def test_a_launched_voter_goes_out_of_raft_first_and_the_voters_left_commit(tmp_path):
    cluster = start_cluster(tmp_path, nodes=3, slots=1, extra_args=FAST + ["--provider", "local"])
    try:
        leader = wait_until(cluster.leader, what="leader")
        client = Client([leader.url], cluster.token)
        client.ok("newPolicy", name="four", rules="minWorkers=4,maxWorkers=4")
        client.ok("applyPolicy", name="four")
        launched = wait_until(lambda: [w for w in client.ok("getWorkers")["workers"]
                                       if w["provider"] == "local" and w["status"] == "up"], timeout_s=60,
                              what="a launched node up")[0]
        assert launched["raftAddress"] not in peers_of(cluster, leader)    # it joined as an observer
        client.ok("newPolicy", name="hold", rules="maxWorkers=4")            # no more launches from here
        client.ok("applyPolicy", name="hold")
        # A seed voter dies: it is taken out of Raft and the launched observer votes in its place.
        dead = next(n for n in cluster.nodes if n is not leader)
        cluster.signal_node(dead, signal.SIGKILL)
        wait_until(lambda: launched["raftAddress"] in peers_of(cluster, leader)
                   and dead.raft_addr not in peers_of(cluster, leader), timeout_s=30, what="the launched node promoted")
        # Drained, the launched voter leaves Raft while it still answers, then leaves and is destroyed.
        client.ok("drainWorker", workerId=launched["id"], deadline=60)
        wait_until(lambda: {w["id"]: w for w in client.ok("getWorkers")["workers"]}[launched["id"]]["status"]
                   == "left", timeout_s=30, what="the launched voter left")
        assert launched["raftAddress"] not in peers_of(cluster, leader)
        wait_until(lambda: not pid_alive(int(launched["ref"])), timeout_s=30, what="destroyed")
        commits_for_longer_than_the_leader_fallback(client)
        log = (tmp_path / f"{leader.node_id}.log").read_text(errors="replace")
        assert f"removed {launched['raftAddress']} from the Raft cluster" in log
    finally:
        cluster.stop()
