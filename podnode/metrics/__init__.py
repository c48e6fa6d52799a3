"""Prometheus metrics of a node (GET /metrics): counters and histograms counted as entries are applied
(apply_counts.py), gauges read from the replicated state and Raft at scrape time (gauges.py), one registry per
node with its text exposition (registry.py). Everything is prometheus_client's; nothing is hand-formatted."""
