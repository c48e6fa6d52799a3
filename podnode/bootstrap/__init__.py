"""Seed a POD cluster: local processes, servers reached over ssh, or cloud servers through libcloud.

    pod-bootstrap local --nodes 3 --port 8080 --state-dir ./pod-cluster
    pod-bootstrap ssh --hosts 10.0.0.1,10.0.0.2,10.0.0.3 --user root --state-dir ./pod-cluster [--dry-run]
    pod-bootstrap cloud --provider-config cloud.json --nodes 3 --state-dir ./pod-cluster
    pod-bootstrap stop --state-dir ./pod-cluster

Every mode generates a cluster secret and records the cluster in `<state-dir>/cluster.json` (mode 600): name,
secret, mode, members. Running again with the same state dir is safe: a cluster that answers (some member's
/status names a leader) is printed and nothing starts; a recorded cluster that does not answer is restarted with
the same secret (local) or left alone with an explanation (ssh, cloud) unless --force.

The modules: state.py (the record, BootstrapError, probing and printing the cluster), local.py, ssh.py and
cloud.py (one mode each), cli.py (the arguments, `stop`, main); __main__.py runs main.
"""

from __future__ import annotations

from .cli import build_parser, main
from .cloud import cloud_bootstrap, destroy_cloud, load_provider_options, server_url
from .local import is_node_process, port_free, stop_pids
from .ssh import ssh_plan, ssh_steps, unit_file
from .state import BootstrapError, answering, existing_cluster, load_state, new_state, save_state

__all__ = [
    "BootstrapError", "answering", "build_parser", "cloud_bootstrap", "destroy_cloud", "existing_cluster",
    "is_node_process", "load_provider_options", "load_state", "main", "new_state", "port_free", "save_state",
    "server_url", "ssh_plan", "ssh_steps", "stop_pids", "unit_file",
]
