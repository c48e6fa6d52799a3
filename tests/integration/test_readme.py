"""The README's walkthrough, as a newcomer runs it: `./dev.sh up` in one terminal, then the ```sh blocks under
"## Walkthrough" pasted in order into another, from the repository's root. The blocks run verbatim, in one bash
(with -e: every line must succeed), and each command's output is checked against what the README says.

Only the ports are the test's: the blocks read the nodes' URLs from N1, N2, N3 (defaulting to localhost:8080..)
and `pod` from POD_URL, so the cluster runs on free ports; POD_VENV (which ./dev.sh honours) is a venv whose `pod`
runs this checkout's code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from podnode.local.cluster import get_json
from podnode.local.procs import signal_group
from tests.conftest import wait_until
from tests.integration.test_cli import pod
from tests.procs_helpers import free_base, stop_pod_up

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MARK = "==POD-README-STEP=="


def walkthrough_blocks(text: str) -> list[str]:
    """The ```sh blocks of the "## Walkthrough" section, in order (```console blocks are shown output)."""
    section = text.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)


def test_the_walkthrough_blocks_are_found_and_port_free():
    blocks = walkthrough_blocks((REPO / "README.md").read_text())
    assert len(blocks) == 2, blocks
    assert "curl" in blocks[0] and "pod run" in blocks[1]
    # Every node is reached through N1..N3 (or pod's POD_URL), so a cluster on other ports runs the same lines.
    for line in "\n".join(blocks).splitlines():
        code = re.sub(r"\$\{N\d:-http://localhost:808\d\}", "", line.split("#", 1)[0])
        assert not re.search(r"localhost|127\.0\.0\.1|:80\d\d", code), line


# ---- running the blocks -------------------------------------------------------------------------------
@dataclass
class Step:
    command: str    # bash's $BASH_COMMAND: the command as written, before expansion
    stdout: str
    stderr: str


def run_blocks(blocks: list[str], env: dict[str, str], timeout_s: float, cwd: Path) -> tuple[int, list[Step]]:
    """Run the blocks in one `bash -e`, as pasted into one terminal; split the output by command."""
    show = f"printf \"\\n{MARK} %s\\n\" \"$BASH_COMMAND\""
    trap = f"trap '{show}; {show} >&2' DEBUG\n"
    proc = subprocess.Popen(["bash", "-e", "-c", trap + "\n".join(blocks)], cwd=cwd, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the walkthrough did not end within {timeout_s} s; its output:\n{out}\n{err}") from None
    outs, errs = _split(out), _split(err)
    assert [c for c, _ in outs] == [c for c, _ in errs], (out, err)
    return proc.returncode, [Step(c, o, e) for (c, o), (_, e) in zip(outs, errs)]


def _split(text: str) -> list[tuple[str, str]]:
    parts = re.split(rf"\n?{MARK} (.*)\n", text)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts), 2)]


def _body(step: Step) -> dict:
    return json.loads(step.stdout)


def _execution(step: Step) -> dict:
    return _body(step)["execution"]


def _has(record: dict, **fields) -> bool:
    return {k: record.get(k) for k in fields} == fields


def _alphabet_prefix(text: str) -> bool:
    letters = text.split("\n")
    return text.endswith("\n") and letters[:-1] == [chr(ord("a") + i) for i in range(len(letters) - 1)]


def _row(stdout: str, first: str) -> list[str]:
    rows = [line.split() for line in stdout.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, stdout
    return rows[0]


# What each command prints, in the README's order: (a part of the command as written, a check of its output).
EXPECTED: list[tuple[str, Callable[[Step], object]]] = [
    ("action=newActivity&name=greet&", lambda s: _body(s)["status"] == "installing"
     and _has(_body(s)["activity"], id=1, name="greet", status="verifying")),
    ("action=getActivityStatus&name=greet", lambda s: _body(s)["activity"]["status"] in ("verifying", "approved")),
    ("action=newExecution&name=greet&input=world", lambda s: _has(_execution(s), id=1, stdin="world", activityId=1,
                                                                  activityName="greet")
     and _execution(s)["status"] in ("waiting", "in progress")),
    ("executionId=1&wait=10", lambda s: _has(_execution(s), id=1, stdout="hello world\n",
                                             stderr="input was 5 characters\n", status="finished", exitCode=0)),
    ('executionId=1"', lambda s: _body(s) == {
        "error": "Execution with id 1 doesn't exist, its result has already been retrieved or it expired"}),
    ("action=newActivity&name=alphabet&", lambda s: _body(s)["activity"]["id"] == 2),
    ("action=newExecution&name=alphabet", lambda s: _execution(s)["id"] == 2
     and _execution(s)["status"] in ("waiting", "in progress")),
    ("executionId=2&wait=5", lambda s: _execution(s)["status"] == "in progress"
     and _execution(s)["stdout"].startswith("a\n") and _alphabet_prefix(_execution(s)["stdout"])),
    ("action=terminateExecution&executionId=2", lambda s: _body(s) == {"execution": {"id": 2, "status": "terminated"}}),
    ("grep '^pod_executions_finished_total'",   # the pipeline's last command: curl's output went to it
     lambda s: 'pod_executions_finished_total{activity="greet"} 1.0' in s.stdout.splitlines()),
    ('curl "$N1/POD/?action=getActivityStatus', lambda s: _body(s)["error"].startswith("no token: send Authorization")),
    ("pod activity status greet", lambda s: "activity greet  status approved  id 1" in s.stdout
     and re.search(r"^nodes\s+n1 installed, n2 installed, n3 installed$", s.stdout, re.M)),
    ("pod run greet POD --wait", lambda s: s.stdout == "hello POD\n" and s.stderr == "input was 3 characters\n"),
    ("pod execution list --activity alphabet", lambda s: len(s.stdout.splitlines()) == 3
     and _row(s.stdout, "2")[:3] == ["2", "alphabet", "terminated"]
     and s.stdout.splitlines()[-1].startswith("1 listed")),
    ("pod execution status 2", lambda s: s.stdout.startswith("execution 2  activity alphabet  status terminated")
     and "--- stdout\na\nb\n" in s.stdout and "deleted this execution's record" in s.stdout),
    ('echo "exit code $?"', lambda s: s.stdout == "exit code 143\n"),
    ("pod activity create fail --script examples/fail.sh --wait",
     lambda s: s.stdout.startswith("activity fail  status approved  id 3")),
    ("pod run fail 3", lambda s: s.stdout.startswith("execution 4  status ")),
    ("pod execution status 4 --wait 10", lambda s: s.stdout.startswith(
        "execution 4  activity fail  status error  exit code 3") and "--- stdout\nabout to fail\n" in s.stdout
     and "--- stderr\nfailing with exit code 3\n" in s.stdout),
    ('echo "exit code $?"', lambda s: s.stdout == "exit code 3\n"),
    ("pod run alphabet", lambda s: s.stdout.startswith("execution 5  status ")),
    ("pod execution status 5 --wait 3", lambda s: s.stdout.startswith("execution 5  activity alphabet  status "
                                                                      "in progress") and "--- stdout\na\n" in s.stdout),
    ("pod execution terminate 5", lambda s: s.stdout == "execution 5  status terminated\n"),
    ("pod activity delete alphabet", lambda s: s.stdout == "activity alphabet is being uninstalled\n"),
    ("pod run greet again --follow", lambda s: s.stdout == "hello again\n" and s.stderr == "input was 5 characters\n"),
    ("pod status", lambda s: re.search(r"^leader\s+n[123]$", s.stdout, re.M)
     and re.search(r"^peers\s+2/2 connected", s.stdout, re.M)),
    ("pod worker list", lambda s: all(_row(s.stdout, n)[1] == "up" and _row(s.stdout, n)[-1] == "yes"
                                      for n in ("n1", "n2", "n3"))),
    ("pod worker drain n3 --deadline 60", lambda s: s.stdout.startswith("worker n3 is draining")),
    ("pod policy create grow minWorkers=1,maxWorkers=4,maxWait=2000 --apply",
     lambda s: s.stdout == "policy grow created and applied: minWorkers=1,maxWorkers=4,maxWait=2000\n"),
    ("pod policy list", lambda s: _row(s.stdout, "grow")[:2] == ["grow", "yes"]),
]


def check_steps(steps: list[Step]) -> None:
    """Each expectation matches the next command containing its text, in order; its output must pass."""
    at = 0
    for text, check in EXPECTED:
        found = next((i for i in range(at, len(steps)) if text in steps[i].command), None)
        assert found is not None, f"no command with {text!r} after {steps[at - 1].command if at else 'the start'!r}" \
                                  f" in the README's walkthrough (the test and the README disagree)"
        step = steps[found]
        try:
            ok = check(step)
        except (ValueError, KeyError, TypeError, AssertionError) as err:
            ok, step.stderr = False, f"{step.stderr}\n(check raised {err!r})"
        assert ok, f"`{step.command}` printed\n--- stdout\n{step.stdout}--- stderr\n{step.stderr}"
        at = found + 1


# ---- the cluster, started the README's way --------------------------------------------------------------
def checkout(root: Path) -> Path:
    """A directory that is, for the walkthrough, the repository's root: its ./dev.sh and examples/ (copies), so
    that `./dev.sh up` keeps its data in ITS ./pod-data, where the README's lines and `pod` find the token,
    without touching a pod-data/ of the real checkout."""
    root.mkdir()
    shutil.copy2(REPO / "dev.sh", root / "dev.sh")
    shutil.copytree(REPO / "examples", root / "examples")
    return root


def fake_venv(root: Path) -> Path:
    """A venv for ./dev.sh (POD_VENV) whose python and pod are this interpreter and this checkout's code."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    for name, args in (("python", '"$@"'), ("pod", '-m podnode.cli "$@"')):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexport PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
                          f'exec "{sys.executable}" {args}\n')
        script.chmod(0o755)
    (root / ".pod-installed").touch()  # newer than pyproject.toml: ./dev.sh installs nothing
    return root


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl, which is not installed")
def test_the_readme_walkthrough_runs_as_written(tmp_path: Path):
    blocks = walkthrough_blocks((REPO / "README.md").read_text())
    base = free_base(3)
    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    marker = f"POD_README_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k not in ("POD_URL", "POD_TOKEN", "N1", "N2", "N3")}
    env.update({marker.split("=")[0]: marker.split("=")[1], "POD_VENV": str(fake_venv(tmp_path / "venv")),
                "PYTHONUNBUFFERED": "1"})
    root = checkout(tmp_path / "pod")
    data_dir = root / "pod-data"
    up_out = tmp_path / "up.out"
    with open(up_out, "w") as sink:
        up = subprocess.Popen(["./dev.sh", "up", "--port", str(base)], cwd=root,
                              env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_until(lambda: "POD is up" in up_out.read_text() or up.poll() is not None, timeout_s=90,
                   what="./dev.sh up")
        assert "POD is up: 3 nodes" in up_out.read_text(), up_out.read_text()
        assert re.findall(r"^n\d\s+(\S+)", up_out.read_text(), re.M) == urls, up_out.read_text()

        shell_env = {**env, "N1": urls[0], "N2": urls[1], "N3": urls[2], "POD_URL": urls[0]}
        code, steps = run_blocks(blocks, shell_env, timeout_s=240, cwd=root)
        failed = steps[-1] if steps else None
        assert code == 0, (f"the walkthrough stopped with exit code {code} at `{failed and failed.command}`:\n"
                           f"--- stdout\n{failed and failed.stdout}--- stderr\n{failed and failed.stderr}"
                           f"--- pod up\n{up_out.read_text()}")
        check_steps(steps)

        # After the drain: n3 left (and is not shown as connected), and the other two carry on.
        token = (data_dir / "token").read_text().strip()
        def n3_left():
            code, body = get_json(f"{urls[0]}/POD/?action=getWorkers", timeout_s=5, token=token)
            n3 = next(w for w in body["workers"] if w["id"] == "n3")
            return n3 if code == 200 and n3["status"] == "left" else None
        n3 = wait_until(n3_left, timeout_s=60, what="n3 to leave")
        assert n3["connected"] is False and n3["leftTime"] > 0, n3
        assert up.poll() is None, f"pod up stopped after the drain:\n{up_out.read_text()}"
        listed = pod("worker", "list", url=urls[1], cwd=root)       # pod finds ./pod-data/token
        assert listed.returncode == 0, listed.stderr
        assert not any(line.split()[:1] == ["n3"] for line in listed.stdout.splitlines()), listed.stdout
        assert re.search(r"^left\s+1 node \(the last: n3, \d+ s ago\)", listed.stdout, re.M), listed.stdout
        assert _row(pod("worker", "list", "--all", url=urls[1], cwd=root).stdout, "n3")[0] == "n3"
        after = pod("run", "greet", "again", "--wait", "--timeout", "30", url=urls[1], cwd=root)
        assert (after.returncode, after.stdout) == (0, "hello again\n"), after.stderr
    finally:
        stop_pod_up(up, data_dir, ask=signal.SIGINT, marker=marker)   # Ctrl-C, as its user would; then SIGKILL
