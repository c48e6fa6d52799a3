"""One node's metrics: its own CollectorRegistry (not prometheus_client's global one: a process, a test, may run
several nodes), the apply-path counters, the scrape-time gauges, and the text exposition."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .apply_counts import ApplyCounts, Gate, ReplicaObserver
from .gauges import ClusterView, RaftView, StateCollector


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counts = ApplyCounts(self.registry)
        self.gate = Gate()

    def observer_for(self, entry_index: Callable[[], int]) -> ReplicaObserver:
        """The observer to give a replica's state; entry_index: the log index of the entry being applied."""
        return ReplicaObserver(self.counts, self.gate, entry_index)

    def start_counting(self, after_index: int) -> None:
        """The node has caught up with the cluster: count the entries applied after this log index."""
        self.gate.start(after_index)

    def add_gauges(self, *, read_cluster: Callable[[], ClusterView], read_raft: Callable[[], RaftView],
                   node_id: str, version: str) -> None:
        self.registry.register(StateCollector(read_cluster=read_cluster, read_raft=read_raft, node_id=node_id,
                                              version=version))

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """Every metric in the format the scraper's Accept header asks for (Prometheus text 0.0.4 by default, or
        OpenMetrics), and its content type. A malformed Accept header (prometheus_client's parser raises on some)
        gets the default format, as HTTP allows a server to ignore it."""
        try:
            encode, content_type = choose_encoder(accept)
        except Exception:  # noqa: BLE001 - e.g. "version=abc": a TypeError inside the parser
            encode, content_type = choose_encoder("")
        return encode(self.registry), content_type
