"""Gauges read at scrape time: the queue and what runs (from the execution index's counts, never a loop over the
executions), slots per node, installations, launches in flight, spend, and this node's Raft figures.

cluster_view reads the replicated state (call it under the replica's lock) in O(activities x statuses + nodes +
installations); raft_view takes pysyncobj's getStatus(); families turns both into metric families (pure). The
collector calls them when the registry is collected.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..raft.executions import EXECUTION_STATUSES
from ..raft.lifecycle import IN_PROGRESS, NODE_LEFT_STATUS, WAITING
from ..scaling.cost import spend

RAFT_ROLES = ("leader", "follower", "candidate", "observer")


@dataclass(frozen=True)
class ClusterView:
    """What the replicated state holds, counted."""

    executions: dict[str, int]                        # status -> executions held, all activities
    by_activity: dict[str, dict[str, int]]            # activity -> status -> executions held
    nodes: list[tuple[str, str, int, int]]            # (node, status, slots, busy slots), nodes that have not left
    node_statuses: dict[str, int]                     # status -> nodes (left included)
    installations: dict[str, int]                     # status -> installations of activities on nodes
    launching: int                                    # launches recorded, not registered yet
    spend_per_hour: float
    spent: float


@dataclass(frozen=True)
class RaftView:
    """This node's Raft figures (pysyncobj's getStatus)."""

    role: str
    term: int = 0
    commit_index: int = 0
    last_applied: int = 0
    leader_commit_index: int = 0
    log_entries: int = 0
    has_quorum: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def apply_lag(self) -> int:
        """Entries committed (as this node or the leader it follows knows) and not applied here yet."""
        return max(0, max(self.commit_index, self.leader_commit_index) - self.last_applied)


def cluster_view(state: Any, now: float) -> ClusterView:
    """Count the state (a raft.state.State; hold the replica's lock)."""
    table = state.execution_table
    busy = state.busy_slots()
    nodes, statuses = [], collections.Counter()
    for node, rec in state.nodes.items():
        status = rec.get("status", "up")
        statuses[status] += 1
        if status != NODE_LEFT_STATUS:
            nodes.append((str(node), status, int(rec.get("slots") or 0), busy.get(node, 0)))
    installations = collections.Counter(inst.get("status") for insts in state.installations.values()
                                        for inst in insts.values())
    rate, total = spend(state.nodes.values(), state.launches.values(), now)
    return ClusterView(
        executions=table.counts(), by_activity={name: table.counts(name) for name in state.activities},
        nodes=sorted(nodes), node_statuses=dict(statuses), installations=dict(installations),
        launching=len(state.launches), spend_per_hour=rate, spent=total)


def raft_view(status: dict[str, Any], role: str) -> RaftView:
    """From pysyncobj's getStatus() (an empty dict if it could not be read) and the node's role."""
    def number(key: str) -> int:
        value = status.get(key)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0
    return RaftView(role=role, term=number("raft_term"), commit_index=number("commit_idx"),
                    last_applied=number("last_applied"), leader_commit_index=number("leader_commit_idx"),
                    log_entries=number("log_len"), has_quorum=bool(status.get("has_quorum")))


def gauge(name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = (),
          samples: dict[tuple[str, ...], float] | None = None) -> GaugeMetricFamily:
    """A gauge family: one value, or one sample per tuple of label values."""
    if not labels:
        return GaugeMetricFamily(name, doc, value=value or 0.0)
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, sample in sorted((samples or {}).items()):
        family.add_metric(list(values), sample)
    return family


def families(cluster: ClusterView, raft: RaftView, *, node_id: str, version: str) -> list[Metric]:
    """The scrape-time metric families (pure)."""
    info = gauge("pod_node_info", "This node (the one scraped): its id and POD version", labels=("node", "version"),
                 samples={(node_id, version): 1.0})
    return [
        info,
        gauge("pod_queue_length", "Executions waiting for a slot, cluster-wide", cluster.executions.get(WAITING, 0)),
        gauge("pod_executions_running", "Executions in progress, cluster-wide", cluster.executions.get(IN_PROGRESS, 0)),
        gauge("pod_executions", "Executions held in the state by activity and status (ended ones until their result "
              "is read or expires)", labels=("activity", "status"),
              samples={(name, status): float(counts.get(status, 0))
                       for name, counts in cluster.by_activity.items() for status in EXECUTION_STATUSES}),
        gauge("pod_node_slots", "Slots of each node that has not left", labels=("node",),
              samples={(node,): float(slots) for node, _, slots, _ in cluster.nodes}),
        gauge("pod_node_slots_busy", "Slots taken on each node that has not left", labels=("node",),
              samples={(node,): float(busy) for node, _, _, busy in cluster.nodes}),
        gauge("pod_nodes", "Nodes by status (up, draining, lost, left)", labels=("status",),
              samples={(status,): float(n) for status, n in cluster.node_statuses.items()}),
        gauge("pod_installations", "Installations of activities on nodes, by status", labels=("status",),
              samples={(str(status),): float(n) for status, n in cluster.installations.items()}),
        gauge("pod_scaling_launching", "Launches recorded whose node has not registered yet", cluster.launching),
        gauge("pod_spend_per_hour", "What the cluster's nodes cost per hour now (the providers' currency)",
              cluster.spend_per_hour),
        gauge("pod_spend_so_far", "What the cluster's nodes have cost since they were launched or joined",
              cluster.spent),
        gauge("pod_raft_role", "This node's Raft role (1 for the role it has)", labels=("role",),
              samples={(role,): float(role == raft.role) for role in RAFT_ROLES}),
        gauge("pod_raft_term", "This node's current Raft term", raft.term),
        gauge("pod_raft_commit_index", "The last log index this node knows committed", raft.commit_index),
        gauge("pod_raft_last_applied", "The last log index this node applied", raft.last_applied),
        gauge("pod_raft_apply_lag", "Log entries committed and not yet applied on this node", raft.apply_lag),
        gauge("pod_raft_log_entries", "Entries in this node's Raft log (since its last snapshot)", raft.log_entries),
        gauge("pod_raft_has_quorum", "Does this node reach a majority of the voters (1) or not (0)",
              float(raft.has_quorum)),
    ]


class StateCollector(Collector):
    """Collects `families` from the node's readers when the registry is collected (at each scrape)."""

    def __init__(self, *, read_cluster: Callable[[], ClusterView], read_raft: Callable[[], RaftView], node_id: str,
                 version: str) -> None:
        self._read_cluster = read_cluster
        self._read_raft = read_raft
        self._node_id = node_id
        self._version = version

    def collect(self) -> Iterator[Metric]:
        yield from families(self._read_cluster(), self._read_raft(), node_id=self._node_id, version=self._version)

    def describe(self) -> Iterator[Metric]:
        return iter(())   # registered without a trial collection (the node is not up yet)
