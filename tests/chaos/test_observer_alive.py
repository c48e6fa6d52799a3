"""Observers tell the leader they are alive (a signed POST /internal/alive); the leader polls nobody.

A frozen observer stops telling and is declared lost; a live one never is, through a leader change too (it
finds the new leader from its replica); an unsigned or wrongly signed /internal/alive is refused and keeps
nobody alive.
"""

from __future__ import annotations

import signal
import time

from podnode.local.cluster import LocalCluster, get_json
from podnode.server.peers import FORM, form_body, signed

from ..conftest import Client, start_cluster, wait_until

LOST_AFTER_S = 1.5
ARGS = ["--election-timeout-s", "0.3", "--kill-grace-s", "1", "--node-lost-after-s", str(LOST_AFTER_S),
        "--max-voters", "3", "--no-announce"]


def alive(url: str, node: str, *, secret: str | None) -> tuple[int, dict]:
    """POST /internal/alive for `node`, signed with `secret` (None: unsigned)."""
    target, body = f"{url}/internal/alive", form_body({"node": node})
    return get_json(target, data=body, headers={"Content-Type": FORM, **signed(secret, "POST", target, body)})


def statuses(client: Client) -> dict[str, str]:
    return {w["id"]: w["status"] for w in client.ok("getWorkers")["workers"]}


def role(cluster: LocalCluster, node) -> str | None:
    return (cluster.status(node) or {}).get("role")


def test_a_frozen_observer_is_lost_a_live_one_is_not_and_unsigned_alives_change_nothing(tmp_path):
    cluster = start_cluster(tmp_path, nodes=3, slots=1, extra_args=ARGS)
    frozen = None
    try:
        leader = wait_until(cluster.leader, what="a leader")
        follower = next(n for n in cluster.nodes if n is not leader)
        observers = [cluster.add_node(join=follower.url) for _ in range(3)]
        client = Client([leader.url], cluster.token)
        wait_until(lambda: all(statuses(client).get(o.node_id) == "up" and role(cluster, o) == "observer"
                               for o in observers), timeout_s=60, what="three observers up")
        frozen, live = observers[0], observers[1:]

        # Only a request signed with the cluster secret, about an observer, to the leader, is taken.
        assert alive(leader.url, frozen.node_id, secret=None)[0] == 401
        assert alive(leader.url, frozen.node_id, secret="not the cluster secret")[0] == 401
        assert alive(leader.url, "nobody", secret=cluster.secret)[0] == 404
        assert alive(leader.url, follower.node_id, secret=cluster.secret)[0] == 404     # a voter: Raft tells
        assert alive(follower.url, frozen.node_id, secret=cluster.secret)[0] == 503     # not the leader
        assert alive(leader.url, frozen.node_id, secret=cluster.secret)[0] == 200

        # Frozen, it says nothing more; unsigned alives in its name keep coming and change nothing.
        cluster.signal_node(frozen, signal.SIGSTOP)

        def frozen_lost() -> bool:
            code, body = alive(leader.url, frozen.node_id, secret=None)
            assert code == 401, body
            now = statuses(client)
            assert all(now.get(o.node_id) == "up" for o in live), now
            return now.get(frozen.node_id) == "lost"
        wait_until(frozen_lost, timeout_s=30, interval_s=0.05, what="the frozen observer declared lost")

        # The leader dies: the observers find the new one from their replicas, and it never declares them lost.
        cluster.stop_node(leader, sig=signal.SIGKILL)
        others = [n for n in cluster.nodes if n not in (leader, frozen)]
        client = Client([n.url for n in others], cluster.token)
        new_leader = wait_until(lambda: next((n for n in others if role(cluster, n) == "leader"), None),
                                timeout_s=30, what="a new leader")
        client = Client([new_leader.url], cluster.token)

        def old_leader_lost() -> bool:
            now = statuses(client)
            assert all(now.get(o.node_id) == "up" for o in live), now
            return now.get(leader.node_id) == "lost"
        wait_until(old_leader_lost, timeout_s=30, what="the old leader declared lost")
        # Three voters are kept: one observer is promoted in the old leader's place, the other stays one.
        wait_until(lambda: sorted(role(cluster, o) or "?" for o in live) == ["follower", "observer"],
                   timeout_s=30, what="one observer promoted in the old leader's place")
        still_observing = next(o for o in live if role(cluster, o) == "observer")
        # Twice the time after which a node that says nothing is lost: the new leader hears the observers.
        deadline = time.monotonic() + 2 * LOST_AFTER_S
        while time.monotonic() < deadline:
            now = statuses(client)
            assert all(now.get(o.node_id) == "up" for o in live), now
            time.sleep(0.1)
        assert role(cluster, still_observing) == "observer"
    finally:
        if frozen is not None:
            cluster.signal_node(frozen, signal.SIGCONT)
        cluster.stop()
