"""`pod up` as a user runs it: the real command, killed nodes, a drain, a stop and a start with work running.

Every test runs `python -m podnode.cli up` in a session of its own on free ports and a temporary data dir,
and kills whatever it started at the end, pass or fail: pod up's process group, and every process whose
command line or working directory is in the test's data dir (nodes, launched nodes, executions).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from podnode.local.cluster import get_json
from podnode.local.procs import alive, cmdline, descendants
from tests.conftest import install_script, wait_until
from tests.procs_helpers import free_base, processes_in, stop_pod_up

pytestmark = pytest.mark.integration

STOP_LIMIT_S = 10.0   # the requirement: Ctrl-C / SIGTERM stops every process of the cluster within 10 s


class PodUp:
    """One `pod up` process; its output goes to a file the test reads."""

    def __init__(self, data_dir: Path, *, nodes: int = 3, slots: int = 2, base: int | None = None,
                 extra: tuple[str, ...] = ()):
        self.data_dir, self.nodes, self.slots, self.extra = data_dir, nodes, slots, extra
        self.base = base or free_base(nodes)
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.base + i}" for i in range(self.nodes)]

    @property
    def token(self) -> str:
        """The admin token pod up keeps in DATA/token."""
        return (self.data_dir / "token").read_text().strip()

    @property
    def out_path(self) -> Path:
        return self.data_dir.parent / f"pod-up-{self.runs}.out"

    def start(self) -> PodUp:
        self.runs += 1
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "podnode.cli", "up", "--port", str(self.base), "--data-dir",
                 str(self.data_dir), "--nodes", str(self.nodes), "--slots", str(self.slots), *self.extra],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def wait_output(self, text: str, timeout_s: float = 60.0) -> str:
        def seen():
            assert self.proc.poll() is None or text in self.output(), \
                f"pod up exited ({self.proc.returncode}) before printing {text!r}:\n{self.output()}"
            return text in self.output()
        wait_until(seen, timeout_s=timeout_s, interval_s=0.2, what=f"pod up printing {text!r}")
        return self.output()

    def wait_up(self) -> None:
        self.wait_output("POD is up", timeout_s=90)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> float:
        """Signal pod up (not its nodes) and wait for it to exit; the seconds it took."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout_s)
        return time.monotonic() - t0

    def call(self, action: str, node: int | None = None, **params) -> tuple[int, dict]:
        """Ask the nodes in turn (from `node`) until one answers."""
        order = range(self.nodes) if node is None else [node]
        for i in order:
            try:
                return get_json(f"{self.urls[i]}/POD/?" + urllib.parse.urlencode({"action": action, **params}),
                                timeout_s=30.0, token=self.token)
            except OSError:
                continue
        return 0, {"error": "no node answered"}

    def ok(self, action: str, *, accept: tuple[int, ...] = (200,), **params) -> dict:
        """Call, retrying a 503 (no leader for a moment: a node just left or died) for up to 30 s."""
        deadline = time.monotonic() + 30.0
        code, body = self.call(action, **params)
        while code in (503, 0) and time.monotonic() < deadline:
            time.sleep(0.3)
            code, body = self.call(action, **params)
        assert code in accept, (action, params, code, body)
        return body

    def status(self, i: int) -> dict | None:
        try:
            code, body = get_json(f"{self.urls[i]}/status", timeout_s=2.0, token=self.token)
        except OSError:
            return None
        return body if code == 200 else None


@pytest.fixture
def pod_up(tmp_path):
    made: list[PodUp] = []

    def make(**kwargs) -> PodUp:
        up = PodUp(tmp_path / "pod-data", **kwargs)
        made.append(up)
        return up
    yield make
    for up in made:
        stop_pod_up(up.proc, up.data_dir)
        if up.proc is not None:
            print(f"---- pod up output (run {up.runs})\n{up.output()}")


def create_activity(up: PodUp, tmp_path: Path, name: str, main_body: str, *, nodes: int | None = None) -> None:
    """Create an activity and wait until `nodes` (default all) nodes have installed it."""
    script = tmp_path / f"{name}.sh"
    script.write_text(install_script(main_body))
    up.ok("newActivity", name=name, installationScriptLocation=script.as_uri(), accept=(200, 409))  # 409: a retry

    def everywhere():
        act = up.ok("getActivityStatus", name=name)["activity"]
        assert act["status"] != "rejected", act
        insts = act.get("installations", [])
        return act["status"] == "approved" and len(insts) >= (nodes or up.nodes) and \
            all(i["status"] == "installed" for i in insts)
    wait_until(everywhere, timeout_s=60, what=f"{name} installed everywhere")


def read_when_ended(up: PodUp, exec_id: int, timeout_s: float = 90.0) -> dict:
    """Poll getExecutionStatus (which deletes an ended record when read) until the execution has ended."""
    def ended():
        code, body = up.call("getExecutionStatus", executionId=exec_id, wait=5)
        assert code in (200, 503, 0), (exec_id, code, body)
        record = body.get("execution") if code == 200 else None
        return record if record and record["status"] in ("finished", "error", "terminated") else None
    return wait_until(ended, timeout_s=timeout_s, interval_s=0.2, what=f"execution {exec_id} to end")


def stays(check, *, for_s: float, what: str) -> None:
    """Poll `check` for `for_s` seconds; fail as soon as it is false (the opposite of wait_until)."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        assert check(), f"no longer true: {what}"
        time.sleep(0.1)


def tree_of(pid: int) -> list[int]:
    return [p for p in descendants(pid) if alive(p)]


# ---------------------------------------------------------------------------------------------------- tests

def test_killed_leader_is_restarted_and_every_execution_ends(pod_up, tmp_path):
    up = pod_up(slots=1).start()
    up.wait_up()
    create_activity(up, tmp_path, "nap", 'sleep 2\necho "done $1"')
    ids = [up.ok("newExecution", name="nap", input=str(i))["execution"]["id"] for i in range(8)]
    leader = wait_until(lambda: next((s for s in map(up.status, range(3)) if s and s.get("role") == "leader"), None),
                        what="a leader")
    statuses = [e["status"] for e in up.ok("getAllExecutions")["executions"] if e["id"] in ids]
    assert statuses.count("waiting") >= 1, statuses   # 8 executions of 2 s on 3 slots: some queued
    os.kill(leader["pid"], signal.SIGKILL)
    name = leader["node"]
    up.wait_output(f"{name} exited (signal 9); the cluster carries on with 2 of 3; restarting {name} in 1 s")
    results = {i: read_when_ended(up, i) for i in ids}
    assert {i: r["status"] for i, r in results.items()} == {i: "finished" for i in ids}, results
    assert {i: r["stdout"] for i, r in results.items()} == {i: f"done {n}\n" for n, i in enumerate(ids)}
    up.wait_output(f"{name} is back: 3 of 3 nodes up")
    assert up.proc.poll() is None, up.output()


def test_drained_node_leaves_for_good_and_the_next_pod_up_starts_without_it(pod_up, tmp_path):
    up = pod_up().start()
    up.wait_up()
    assert up.ok("drainWorker", workerId="n3")["worker"]["status"] == "draining"
    up.wait_output("n3 left the cluster; the cluster carries on with 2 nodes (n3 is not restarted)")
    create_activity(up, tmp_path, "hi", 'echo "hi $1"', nodes=2)
    ex = up.ok("newExecution", name="hi", input="after")["execution"]
    assert read_when_ended(up, ex["id"])["stdout"] == "hi after\n"
    wait_until(lambda: up.status(2) is None, what="n3's HTTP port closed")
    stays(lambda: "n3 restarted" not in up.output() and up.status(2) is None, for_s=3.0,  # back-off is 1 s
          what="n3 not restarted")
    assert up.stop() < STOP_LIMIT_S, "pod up took longer than 10 s to stop"

    again = up.start()
    out = again.wait_output("POD is up", timeout_s=90)
    assert "n3 left the cluster earlier; starting without it" in out, out
    assert "POD is up: 2 nodes" in out, out
    ex = up.ok("newExecution", name="hi", input="again")["execution"]
    assert read_when_ended(up, ex["id"])["stdout"] == "hi again\n"


def test_stop_and_start_with_work_running_retries_it(pod_up, tmp_path):
    up = pod_up().start()
    up.wait_up()
    create_activity(up, tmp_path, "long", 'sleep 4\necho "slept $1"')
    ids = [up.ok("newExecution", name="long", input=str(i))["execution"]["id"] for i in range(3)]
    wait_until(lambda: all(e["status"] == "in progress" for e in up.ok("getAllExecutions")["executions"]
                           if e["id"] in ids), what="the executions running")
    took_s = up.stop()
    assert "POD stopped in" in up.output(), up.output()
    assert took_s < STOP_LIMIT_S, f"pod up took {took_s:.1f} s to stop (limit {STOP_LIMIT_S} s)"
    assert processes_in(up.data_dir) == [], "processes of the cluster outlived pod up"

    up.start()
    up.wait_up()
    results = {i: read_when_ended(up, i) for i in ids}
    assert {i: (r["status"], r["attempts"]) for i, r in results.items()} == {i: ("finished", 2) for i in ids}, results
    assert all("restarted while running it" in (r.get("lastError") or "") for r in results.values()), results


def test_sigterm_leaves_no_process_behind_launched_nodes_and_executions_included(pod_up, tmp_path):
    up = pod_up().start()
    up.wait_up()
    create_activity(up, tmp_path, "forever", "sleep 300")
    up.ok("newPolicy", name="four", rules="minWorkers=4,maxWorkers=4")
    up.ok("applyPolicy", name="four")

    def launched_up():
        workers = up.ok("getWorkers")["workers"]
        return [w for w in workers if w.get("provider") == "local" and w["status"] == "up"]
    launched = wait_until(launched_up, timeout_s=90, what="a node launched for minWorkers=4")
    for i in range(4):
        up.ok("newExecution", name="forever", input=str(i))
    wait_until(lambda: [p for p in tree_of(up.proc.pid) if cmdline(p)[:1] == ["sleep"]],
               timeout_s=30, what="an execution's sleep running")
    before = tree_of(up.proc.pid)
    node_pids = {int(w["ref"]) for w in launched}
    assert node_pids <= set(before), (node_pids, before)
    took_s = up.stop()
    assert took_s < STOP_LIMIT_S, f"pod up took {took_s:.1f} s to stop (limit {STOP_LIMIT_S} s)"
    assert [p for p in before if alive(p)] == [], [(p, cmdline(p)) for p in before if alive(p)]
    assert processes_in(up.data_dir) == [], [(p, cmdline(p)) for p in processes_in(up.data_dir)]
    assert "POD stopped in" in up.output()


def test_a_pod_up_killed_with_sigkill_leaves_nothing_the_next_one_keeps(pod_up, tmp_path):
    """SIGKILL cannot be caught: the nodes and their executions live on. The next pod up on the data dir
    stops them (they would otherwise rejoin unseen) and runs its own."""
    up = pod_up().start()
    up.wait_up()
    create_activity(up, tmp_path, "forever", "sleep 300")
    up.ok("newExecution", name="forever", input="x")
    wait_until(lambda: [p for p in tree_of(up.proc.pid) if cmdline(p)[:1] == ["sleep"]],
               timeout_s=30, what="the execution's sleep running")
    old = tree_of(up.proc.pid)
    up.proc.kill()
    up.proc.wait(timeout=10)
    assert [p for p in old if alive(p)], "nothing outlived the killed pod up: the test proves nothing"

    up.start()
    out = up.wait_output("POD is up", timeout_s=90)
    assert "stopping what an earlier pod up on" in out and "processes of executions" in out, out
    assert [(p, cmdline(p)) for p in old if alive(p)] == []
    assert up.stop() < STOP_LIMIT_S, "pod up took longer than 10 s to stop"
    assert processes_in(up.data_dir) == []


def pod_cli(cwd: Path, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    """The `pod` client as a user runs it from the directory where pod up runs: no --url, no $POD_URL, no token
    given (both come from ./pod-data)."""
    env = {k: v for k, v in os.environ.items() if k not in ("POD_URL", "POD_TOKEN", "POD_CACERT")}
    return subprocess.run([sys.executable, "-m", "podnode.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout_s)


def test_pod_finds_the_nodes_of_pod_up_in_its_directory_and_asks_the_next_when_one_is_gone(pod_up, tmp_path):
    up = pod_up(extra=("--no-restart",)).start()   # free ports: not the 8080 the client would otherwise ask
    up.wait_up()
    assert (up.data_dir / "urls").read_text().split() == up.urls
    script = tmp_path / "greet.sh"
    script.write_text(install_script('echo "hello $1"'))
    made = pod_cli(tmp_path, "activity", "create", "greet", "--script", str(script), "--wait")
    assert made.returncode == 0, made.stderr
    ran = pod_cli(tmp_path, "run", "greet", "one", "--wait")
    assert (ran.returncode, ran.stdout) == (0, "hello one\n"), ran.stderr
    first = up.status(0)
    assert first is not None
    os.kill(first["pid"], signal.SIGKILL)      # the first node listed, left down (--no-restart): refused
    up.wait_output(f"{first['node']} exited (signal 9)")
    ran = pod_cli(tmp_path, "run", "greet", "two", "--wait")
    assert (ran.returncode, ran.stdout) == (0, "hello two\n"), ran.stderr
    assert up.status(0) is None          # answered by another node: the first is still down
    up.stop()
    assert not (up.data_dir / "urls").exists()   # nothing there any more: pod goes back to its defaults


def test_one_node_cluster_runs_executions(pod_up, tmp_path):
    """`pod up --nodes 1`: the lightest cluster, its one voter commits alone (tests/integration/test_single_voter.py
    has the deterministic check of how fast)."""
    up = pod_up(nodes=1).start()
    out = up.wait_output("POD is up")
    assert "POD is up: 1 node." in out and "starting 1 node..." in out, out
    script = tmp_path / "greet.sh"
    script.write_text(install_script('echo "hello $1"'))
    assert pod_cli(tmp_path, "activity", "create", "greet", "--script", str(script), "--wait").returncode == 0
    for word in ("one", "two", "three"):
        ran = pod_cli(tmp_path, "run", "greet", word, "--wait")
        assert (ran.returncode, ran.stdout) == (0, f"hello {word}\n"), ran.stderr
    # each result was handed over once, and its delete settled after the answer (server/settle.py)
    wait_until(lambda: up.ok("getAllExecutions")["executions"] == [], what="the results deleted")
