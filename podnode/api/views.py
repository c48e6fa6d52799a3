"""How records look to clients: the original POD's field names, plus a few additions; /status and getWorkers.
Pure functions of plain data: the node gathers the data (server/node.py), these shape it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..raft.lifecycle import NODE_DRAINING_STATUS, NODE_LEFT_STATUS, NODE_LOST_STATUS, NODE_UP_STATUS

_ACTIVITY_FIELDS = ("id", "name", "installationScriptLocation", "status", "maxAttempts", "errorDescription")
_INSTALLATION_FIELDS = ("workerId", "status", "errorDescription")


def ms(t: float | None) -> int | None:
    """Times are milliseconds since the epoch, like the original POD's Java timestamps."""
    return None if t is None else int(round(t * 1000))


def activity(record: dict[str, Any], default_limits: dict[str, Any] | None = None) -> dict[str, Any]:
    """An activity; with `default_limits` (the answering node's), the limits its executions run with: its own
    where it set them, else the node's default (None: no limit)."""
    view = {k: record[k] for k in _ACTIVITY_FIELDS if k in record}
    view["createdAt"] = ms(record.get("createdAt"))
    if default_limits is not None:
        own = record.get("limits") or {}
        view["limits"] = {k: (own[k] or None) if k in own else default for k, default in default_limits.items()}
    if "installations" in record:
        view["installations"] = [{k: i[k] for k in _INSTALLATION_FIELDS if k in i} for i in record["installations"]]
    return view


def execution(record: dict[str, Any], *, output: tuple[str, str] | None = None,
              waiting: dict[str, Any] | None = None) -> dict[str, Any]:
    """An execution. `waiting` (podnode/waiting.py: waitingReason, queuePosition) is given for a waiting one
    only: the two keys are in the view while the execution waits, and absent once it runs or has ended, like
    the other optional keys (errorDescription, lastError)."""
    stdout, stderr = output if output is not None else (record.get("stdout", ""), record.get("stderr", ""))
    view = {
        "id": record["id"],
        "stdin": record["stdin"],
        "stdout": stdout,
        "stderr": stderr,
        "status": record["status"],
        "activityId": record.get("activityId"),
        "activityName": record["activityName"],
        "submitTime": ms(record.get("submitTime")),
        "startTime": ms(record.get("startTime")),
        "finishTime": ms(record.get("finishTime")),
        "exitCode": record.get("exitCode"),
        "workerId": record.get("workerId"),
        "attempts": record.get("attempt", 0),
    }
    for key in ("errorDescription", "requestId", "lastError"):
        if record.get(key):
            view[key] = record[key]
    for key in ("stdoutTruncated", "stderrTruncated"):
        if record.get(key):
            view[key] = True
    if record.get("outputPending"):
        view["outputPending"] = True
    if waiting:
        view.update(waiting)
    return view


def execution_summary(record: dict[str, Any]) -> dict[str, Any]:
    """newExecution's answer: what the contract lists."""
    return {k: record.get(k) for k in ("id", "stdin", "status", "activityId", "activityName")}


def worker(n: dict[str, Any], *, busy: int, connected: bool) -> dict[str, Any]:
    """One node as getWorkers shows it. `connected` (reached over Raft, or this node) counts only for a node
    that is up or draining and not destroyed: one that left or was lost is never connected, even if its Raft
    address answers (another node may have it now). One that left or was lost has leftTime or lostTime."""
    status = n.get("status", NODE_UP_STATUS)
    live = status in (NODE_UP_STATUS, NODE_DRAINING_STATUS) and not n.get("destroyedAt")
    view = {"id": n["id"], "httpUrl": n["httpUrl"], "raftAddress": n["raftAddr"], "slots": n["slots"],
            "busy": busy, "load": round(busy / n["slots"], 3) if n["slots"] else 0.0, "status": status,
            "provider": n.get("provider", "static"), "hourlyPrice": n.get("hourlyPrice", 0.0), "ref": n.get("ref"),
            "connected": live and connected}
    if status == NODE_LEFT_STATUS and n.get("leftAt") is not None:
        view["leftTime"] = ms(n["leftAt"])
    if status == NODE_LOST_STATUS and n.get("lostAt") is not None:
        view["lostTime"] = ms(n["lostAt"])
    return view


def workers(nodes: list[dict[str, Any]], *, busy: dict[str, int], launches: dict[str, dict[str, Any]],
            launch_failures: dict[str, Any], spend_per_hour: float, spent_so_far: float, this_node: str,
            peer_connected: Callable[[str], bool]) -> dict[str, Any]:
    """getWorkers: every node with its state, slots, load, provider and price; the launches in flight and
    failed; the spend rate and the spend so far. This node reaches itself, and another node when
    peer_connected(its Raft address)."""
    def reached(n: dict[str, Any]) -> bool:
        return n["id"] == this_node or peer_connected(n["raftAddr"])
    return {"workers": [worker(n, busy=busy.get(n["id"], 0), connected=reached(n)) for n in nodes],
            "launching": [{"id": n, **rec} for n, rec in sorted(launches.items())],
            "launchFailures": launch_failures, "spendPerHour": round(spend_per_hour, 6),
            "spentSoFar": round(spent_so_far, 6)}


RAFT_ROLES = {0: "follower", 1: "candidate", 2: "leader"}
NO_PROVIDER = {"reason": "no provider: this cluster does not launch or destroy nodes (start nodes with "
                         "--provider local or libcloud)"}


def role(raft_state: int | None, *, observer: bool) -> str:
    """This node's role in /status: an observer is one whatever pysyncobj's state says."""
    return "observer" if observer else RAFT_ROLES.get(raft_state, "follower")


def status(*, node_id: str, role: str, leader: str | None, raft: dict[str, Any], http_url: str, raft_addr: str,
           peers: list[dict[str, Any]], slots: int, running: list[dict[str, Any]], installed: dict[str, str],
           version: str, pid: int, uptime_s: float, last_plan: dict[str, Any] | None,
           scaling: dict[str, Any] | None, workers_view: dict[str, Any]) -> dict[str, Any]:
    """GET /status: this node, the leader, Raft's figures, peers, slots, what runs and is installed here, the
    spend; on the leader (last_plan given) its last plan and its last scaling decision."""
    view = {
        "node": node_id,
        "role": role,
        "leader": leader,
        "term": raft.get("raft_term"),
        "commitIndex": raft.get("commit_idx"),
        "lastApplied": raft.get("last_applied"),
        "hasQuorum": raft.get("has_quorum"),
        "httpUrl": http_url,
        "raftAddress": raft_addr,
        "peers": peers,
        "slots": {"total": slots, "busy": len(running)},
        "executions": running,
        "activities": installed,
        "version": version,
        "pid": pid,
        "uptimeSeconds": round(uptime_s, 1),
    }
    if role == "leader":
        view["lastPlan"] = {k: v for k, v in (last_plan or {}).items() if k != "results"}
        view["scaling"] = scaling if scaling is not None else NO_PROVIDER
    view["spendPerHour"], view["spentSoFar"] = workers_view["spendPerHour"], workers_view["spentSoFar"]
    return view
