"""This node's worker: carries out `reconcile`'s instructions and reports back through Raft."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..changes import Changes
from ..config import NodeConfig
from ..errors import Unavailable
from ..local.left import LEFT_MARKER, mark_left
from ..local.procs import kill_until_gone, signal_group, working_in
from ..raft import commands as C
from ..raft.bridge import CommandBridge
from ..raft.lifecycle import NODE_LEFT_STATUS, NODE_LOST_STATUS
from ..raft.replica import Replica
from .armed import ArmedPool
from .install import InstallError, install_activity, remove_activity
from .netguard import guard_metadata
from .output_slice import OutputSlice, take
from .reconcile import reconcile, wanted_here
from .runner import ExecutionResult, ExecutionRun
from .sandbox import Limits, Sandbox, node_limits, secure_data_dir

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, cfg: NodeConfig, replica: Replica, bridge: CommandBridge, changes: Changes):
        self.cfg = cfg
        self.replica = replica
        self.bridge = bridge
        self.changes = changes
        self.node = cfg.node_id
        self.activities_dir = Path(cfg.data_dir) / "activities"
        self.sandbox = Sandbox.create(node_id=cfg.node_id, run_as=cfg.run_as, cgroups=cfg.cgroups,
                                      defaults=node_limits(cfg))
        if self.sandbox.run_as is not None:
            guard_metadata(self.sandbox.run_as.uid)
        secure_data_dir(Path(cfg.data_dir), self.activities_dir, self.sandbox)
        self.runs: dict[int, ExecutionRun] = {}
        self.done: set[tuple[int, int]] = set()
        self.installing: set[str] = set()
        self.uninstalling: set[str] = set()
        self._reports: list[C.Report] = []
        self._report_wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.incarnation = uuid.uuid4().hex   # this run of the node; see reconcile
        self._lost_reported: set[tuple[int, int]] = set()
        self._registering = False
        self._stopped_by_shutdown: set[tuple[int, int]] = set()   # stopped by shutdown: never reported finished

    # ---- main loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        await asyncio.to_thread(_stop_stale_executions, self.activities_dir, self.cfg.stale_kill_timeout_s)
        ArmedPool.start(self.sandbox, self.cfg.slots)   # one spawn armed per slot: its cgroup move done ahead
        self._spawn(self._report_loop())
        await self._register()
        while True:
            seen = self.changes.version
            with self.replica.lock:
                todo = reconcile(self.replica.state, self.node,
                                 running={i: r.attempt for i, r in self.runs.items()},
                                 done=self.done, installing=self.installing, uninstalling=self.uninstalling,
                                 incarnation=self.incarnation)
                self._prune_done()
                my_status = self.replica.state.nodes.get(self.node, {}).get("status")
            if my_status == NODE_LEFT_STATUS:
                log.info("this node has left the cluster; stopping")
                await asyncio.to_thread(_record_leaving, Path(self.cfg.data_dir), self.node)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if my_status == NODE_LOST_STATUS and not self._registering:
                # The leader lost us (a freeze, a partition) and moved our work: say we are back.
                self._spawn(self._register())
            await self._carry_out(todo)
            await self.changes.wait(self.cfg.reconcile_interval_s, since=seen)

    async def _register(self) -> None:
        self._registering = True
        try:
            (Path(self.cfg.data_dir) / LEFT_MARKER).unlink(missing_ok=True)   # registering again: a member
            cmd = lambda: C.NodeUp(node=self.node, raftAddr=self.cfg.raft_addr,  # noqa: E731
                                   httpUrl=self.cfg.http_url, slots=self.cfg.slots, now=time.time(),
                                   version=_version(), incarnation=self.incarnation,
                                   role="observer" if self.replica.observer else "voter")
            await self._commit_retrying(cmd, lambda: True)
            await self._check_activity_files()
        finally:
            self._registering = False

    def reregister(self) -> None:
        """Register again (after a promotion: the role changed)."""
        self._spawn(self._register())

    async def _check_activity_files(self) -> None:
        """After (re)joining: reinstall activities whose files are gone, remove those no longer ours."""
        with self.replica.lock:
            mine = {name: insts[self.node]["status"] for name, insts in self.replica.state.installations.items()
                    if self.node in insts}
        present = set(await asyncio.to_thread(_present_activities, self.activities_dir))
        for name in sorted(present - set(mine) - self.installing):
            log.info("removing activity %s: this node no longer has it", name, extra={"activity": name})
            await asyncio.to_thread(remove_activity, self.activities_dir / name)
        for name, status in sorted(mine.items()):
            if status == "installed" and not (self.activities_dir / name / "main.sh").is_file():
                log.info("reinstalling activity %s: its files are missing", name, extra={"activity": name})
                cmd = lambda name=name: C.Reinstall(name=name, node=self.node, now=time.time())  # noqa: E731
                await self._commit_retrying(cmd, lambda name=name: self._install_status(name) == "installed")

    async def _report_lost(self, records: list[dict[str, Any]]) -> None:
        keys = [(r["id"], r["attempt"]) for r in records]
        reports = [C.Report(id=i, attempt=a, node=self.node) for i, a in keys]
        cmd = lambda: C.ExecLost(reports=reports, now=time.time(),  # noqa: E731
                                 reason=f"node {self.node} restarted while running it")
        try:
            await self._commit_retrying(cmd, lambda: any(self._still_in_progress_here(*k) for k in keys))
        finally:
            self._lost_reported.difference_update(keys)

    def _still_in_progress_here(self, exec_id: int, attempt: int) -> bool:
        """Does the state still count this attempt as running here (or owing its output)?"""
        with self.replica.lock:
            record = self.replica.state.executions.get(exec_id)
            return wanted_here(record, self.node, attempt) or bool(
                record and record.get("outputPending") and record["workerId"] == self.node
                and record["attempt"] == attempt)

    def _prune_done(self) -> None:
        state = self.replica.state
        self.done = {(i, a) for i, a in self.done if wanted_here(state.executions.get(i), self.node, a)}

    async def _carry_out(self, todo) -> None:
        lost = [r for r in todo.lost if (r["id"], r["attempt"]) not in self._lost_reported]
        if lost:
            self._lost_reported.update((r["id"], r["attempt"]) for r in lost)
            self._spawn(self._report_lost(lost))
        for exec_id in todo.stop:
            run = self.runs.get(exec_id)
            if run is not None:
                self._spawn(run.terminate())
        for record in todo.start:
            await self._start(record)
        for activity in todo.install:
            self.installing.add(activity["name"])
            self._spawn(self._install(activity))
        for name in todo.uninstall:
            self.uninstalling.add(name)
            self._spawn(self._uninstall(name))

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent task failed", exc_info=task.exception())

    # ---- executions -------------------------------------------------------------------------------
    async def _start(self, record: dict[str, Any]) -> None:
        exec_id, attempt = record["id"], record["attempt"]
        with self.replica.lock:
            limits = activity_limits(self.replica.state.activities.get(record["activityName"]))
        run = ExecutionRun(
            execution_id=exec_id, attempt=attempt, activity=record["activityName"],
            activity_dir=self.activities_dir / record["activityName"],
            input=record["stdin"],
            output_cap_bytes=self.cfg.output_cap_bytes, kill_grace_s=self.cfg.kill_grace_s, sandbox=self.sandbox,
            limits=limits,
        )
        self.runs[exec_id] = run
        await run.start()
        ids = {"execution": exec_id, "activity": record["activityName"], "attempt": attempt}
        log.info("execution %s started (%s, attempt %d%s)", exec_id, record["activityName"], attempt,
                 ", a retry" if attempt > 1 else "", extra=ids)
        self._spawn(self._watch(run))

    async def _watch(self, run: ExecutionRun) -> None:
        result: ExecutionResult = await run.wait()
        key = (run.execution_id, run.attempt)
        self.done.add(key)
        if self.runs.get(run.execution_id) is run:
            del self.runs[run.execution_id]
        if key in self._stopped_by_shutdown:
            return  # killed because this node stops: not the execution's result (see shutdown)
        log.info("execution %s ended: exit code %s%s", run.execution_id, result.exit_code,
                 f" ({result.error})" if result.error else "",
                 extra={"execution": run.execution_id, "activity": run.activity, "attempt": run.attempt,
                        "exit_code": result.exit_code})
        self._reports.append(C.Report(
            id=run.execution_id, attempt=run.attempt, node=self.node,
            exitCode=result.exit_code, stdout=result.stdout, stderr=result.stderr,
            stdoutTruncated=result.stdout_truncated, stderrTruncated=result.stderr_truncated,
            error=result.error,
        ))
        self._report_wake.set()

    def output_of(self, exec_id: int) -> tuple[str, str] | None:
        """Output so far of an execution running here, for reads from any node."""
        run = self.runs.get(exec_id)
        return None if run is None else run.read_output()

    async def output_from(self, exec_id: int, attempt: int, stdout_at: int, stderr_at: int,
                          wait_s: float) -> OutputSlice | None:
        """The output of this attempt after the byte offsets, waiting up to wait_s for some to come; None if the
        attempt does not run here (any more: its result is then on its way through Raft)."""
        run = self.runs.get(exec_id)
        if run is None or run.attempt != attempt:
            return None
        await run.wait_output(stdout_at, stderr_at, wait_s)
        stdout, stderr, ended = run.output_bytes(stdout_at, stderr_at)
        return take(stdout, stderr, stdout_at, stderr_at, ended=ended)

    async def _report_loop(self) -> None:
        """Send finished executions' results, as many per command as have piled up."""
        backoff = self.cfg.retry_first_s
        while True:
            await self._report_wake.wait()
            self._report_wake.clear()
            while self._reports:
                reports, self._reports = self._reports, []
                try:
                    await self.bridge.submit(C.ExecFinish(reports=reports, now=time.time(), pull=self.node))
                    backoff = self.cfg.retry_first_s
                except Unavailable as exc:
                    log.warning("could not report %d results yet: %s", len(reports), exc)
                    self._reports[:0] = reports
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.cfg.retry_max_s)
            self.changes.notify_threadsafe()

    # ---- activities -------------------------------------------------------------------------------
    async def _install(self, activity: dict[str, Any]) -> None:
        name = activity["name"]
        try:
            await install_activity(
                name=name, url=activity["installationScriptLocation"], activity_dir=self.activities_dir / name,
                allow_file_urls=bool(self.cfg.allow_file_urls), fetch_timeout_s=self.cfg.fetch_timeout_s,
                install_timeout_s=self.cfg.install_timeout_s, max_script_bytes=self.cfg.script_max_bytes,
                sandbox=self.sandbox,
                # Its memory and process limits; an install keeps --install-timeout-s, not its executions' timeout.
                limits=replace(activity_limits(activity), timeout_s=None),
            )
            ok, error = True, None
        except InstallError as exc:
            ok, error = False, str(exc)
        except Exception as exc:  # a bug here must still end the install, not leave it "installing"
            log.exception("install of %s failed", name, extra={"activity": name})
            ok, error = False, f"internal error while installing: {exc!r}"
        log.info("install of %s %s", name, "done" if ok else f"failed: {error}",
                 extra={"activity": name, "ok": ok})
        cmd = lambda: C.InstallDone(name=name, node=self.node, ok=ok, error=error, now=time.time())  # noqa: E731
        try:
            await self._commit_retrying(cmd, lambda: self._install_status(name) == "installing")
        finally:
            self.installing.discard(name)

    async def _uninstall(self, name: str) -> None:
        try:
            runs = [r for r in self.runs.values() if r.activity == name]
            await asyncio.gather(*(r.terminate() for r in runs), return_exceptions=True)
            await asyncio.to_thread(remove_activity, self.activities_dir / name)
            cmd = lambda: C.UninstallDone(name=name, node=self.node)  # noqa: E731
            await self._commit_retrying(cmd, lambda: self._install_status(name) == "uninstalling")
        finally:
            self.uninstalling.discard(name)

    def _install_status(self, name: str) -> str | None:
        with self.replica.lock:
            inst = self.replica.state.installations.get(name, {}).get(self.node)
            return None if inst is None else inst["status"]

    async def _commit_retrying(self, make_cmd: Callable[[], C.Command], still_needed: Callable[[], bool]) -> None:
        backoff = self.cfg.retry_first_s
        while still_needed():
            try:
                await self.bridge.submit(make_cmd())
                return
            except Unavailable as exc:
                log.info("retrying in %.1f s: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.cfg.retry_max_s)

    # ---- status -------------------------------------------------------------------------------------
    def running_view(self) -> list[dict[str, Any]]:
        return [{"id": i, "attempt": r.attempt, "activity": r.activity, "pid": r.pid} for i, r in self.runs.items()]

    async def shutdown(self) -> None:
        """Stop every execution running here without reporting it: a node that stops is a restart, not the
        end of its work. The runs' exit (-15 from our own SIGTERM) is not their result; the next run of this
        node reports them lost (an earlier incarnation's attempts, see reconcile), or, if it does not come
        back, the leader declares the node lost; either way they are retried under maxAttempts.

        Handing them back here at once (EXEC_LOST) was tried: when the whole cluster stops, the requeued
        work is placed on another node that is stopping too, and its restart reports that attempt lost as
        well, so one stop cost two attempts."""
        self._stopped_by_shutdown.update((r.execution_id, r.attempt) for r in self.runs.values())
        await asyncio.gather(*(r.terminate() for r in list(self.runs.values())), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.sandbox.disarm()
        await asyncio.to_thread(self.sandbox.close)


def activity_limits(activity: dict[str, Any] | None) -> Limits:
    """An activity's own limits (its record's, checked when it was created): None (unset) takes the node's
    default (Limits.over), 0 is no limit, which the sandbox treats as such (memory.max and pids.max "max", no
    rlimit, no timer)."""
    own = (activity or {}).get("limits") or {}
    return Limits(timeout_s=own.get("timeoutS"), memory_mb=own.get("memoryMB"), max_processes=own.get("maxProcesses"))


def _version() -> str:
    from .. import __version__
    return __version__


def _stop_stale_executions(activities_dir: Path, timeout_s: float) -> None:
    """Kill what an earlier run of this node left running in its activity directories: after a SIGKILL or
    a crash its executions live on (each in a session of its own); their attempts are reported lost and
    retried, so they must not run on beside the retry."""
    stale = working_in(activities_dir)
    if stale:
        log.warning("stopping %d processes an earlier run of this node left running: %s", len(stale), stale)
        for pid in stale:   # main.sh leads its own group: its children go too, wherever they cd'd to
            signal_group(pid, signal.SIGKILL)
        kill_until_gone(lambda: working_in(activities_dir), timeout_s=timeout_s)


def _record_leaving(data_dir: Path, node: str) -> None:
    """Record in the data dir that this node left on purpose, for whoever starts nodes (`pod up` does not
    restart it, nor start it again: it is no longer a member, and as one it would stand for election forever)."""
    try:
        mark_left(data_dir, node, "drained")
    except OSError as exc:
        log.warning("could not record that this node left: %s", exc)


def _present_activities(activities_dir: Path) -> list[str]:
    try:
        return [p.name for p in activities_dir.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []
