"""Scaling figure on a local 3-node cluster with the local provider and default timings.

    python -m podnode.bench.scaling [--trials 3]

Time from a backlog appearing to the first execution running on a newly launched node. Figures only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ..local.cluster import LocalCluster
from .failover import call, poll, summary

INSTALL = "#!/usr/bin/env bash\nprintf '#!/usr/bin/env bash\\nsleep 20\\n' > main.sh\nchmod +x main.sh\n"
POLICY = "maxWorkers=5,maxWait=1000,terminationTime=1000,cooldown=500"


def launched_workers(node) -> set[str]:
    body = call(node, action="getWorkers")[1]
    return {w["id"] for w in body.get("workers", []) if w.get("provider") == "local" and w["status"] != "left"}


def trial(cluster: LocalCluster) -> float:
    node = cluster.nodes[0]
    ids = [call(node, action="newExecution", name="backlog")[1]["execution"]["id"] for _ in range(9)]
    start = time.monotonic()

    def first_on_launched() -> bool:
        launched = launched_workers(node)
        executions = call(node, action="getAllExecutions")[1].get("executions", [])
        return any(e["status"] == "in progress" and e["workerId"] in launched for e in executions)
    poll(first_on_launched, timeout_s=120, interval_s=0.05)
    took = time.monotonic() - start
    for exec_id in ids:
        call(node, action="terminateExecution", executionId=exec_id)
    poll(lambda: not launched_workers(node), timeout_s=180, interval_s=0.5)   # scaled back in
    return took


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m podnode.bench.scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pod-scaling-") as tmp:
        with LocalCluster(Path(tmp) / "cluster", nodes=3, slots=1, extra_args=["--provider", "local"]) as cluster:
            cluster.start(timeout_s=60)
            node = cluster.nodes[0]
            script = Path(tmp) / "backlog.sh"
            script.write_text(INSTALL)
            call(node, action="newActivity", name="backlog", installationScriptLocation=script.as_uri())
            poll(lambda: (act := call(node, action="getActivityStatus", name="backlog")[1].get("activity"))
                 and act["status"] == "approved" and len(act["installations"]) == 3)
            call(node, action="newPolicy", name="grow", rules=POLICY)
            call(node, action="applyPolicy", name="grow")
            print(f"cluster: 3 nodes x 1 slot, local provider, policy {POLICY}, scaling interval 2 s")
            took = [trial(cluster) for _ in range(a.trials)]
            print(summary("backlog of 9 to first execution on a launched node", took))
            print(f"(mean {statistics.mean(took):.2f} s: evaluation interval, process start, join, install, place)")


if __name__ == "__main__":
    main()
