"""Tests for podnode.exec.reconcile: what one node must start, stop, install and uninstall."""

from __future__ import annotations

from podnode.exec.reconcile import Instructions, reconcile, wanted_here
from podnode.raft import commands as C
from podnode.raft.state import State

NOW = 1000.0


def ok(state: State, cmd: dict) -> dict:
    result = state.apply(cmd)
    assert "error" not in result, (cmd, result)
    assert not result.get("refused"), (cmd, result)
    return result


def node_up(state: State, node: str, slots: int = 4) -> None:
    ok(state, C.NodeUp(node=node, raftAddr=f"{node}:1", httpUrl="h", slots=slots, now=NOW))


def installed(state: State, name: str, nodes: list[str]) -> None:
    ok(state, C.ActivityNew(name=name, url=f"http://x/{name}", now=NOW))
    for node in nodes:
        ok(state, C.InstallAssign(assignments=[[name, node]], now=NOW))
        ok(state, C.InstallDone(name=name, node=node, ok=True, now=NOW))


def new_exec(state: State, name: str = "act") -> int:
    return ok(state, C.ExecNew(name=name, input="in", now=NOW))["execution"]["id"]


def place(state: State, exec_id: int, node: str) -> None:
    ok(state, C.ExecPlace(placements=[[exec_id, node]], now=NOW))


def run(state: State, node: str = "n1", *, running: dict[int, int] | None = None,
        done: set[tuple[int, int]] | None = None, installing: set[str] | None = None,
        uninstalling: set[str] | None = None) -> Instructions:
    return reconcile(state, node, running=running or {}, done=done or set(),
                     installing=installing or set(), uninstalling=uninstalling or set())


def cluster() -> State:
    state = State()
    node_up(state, "n1")
    node_up(state, "n2")
    installed(state, "act", ["n1", "n2"])
    return state


def test_nothing_to_do():
    state = cluster()
    out = run(state)
    assert out == Instructions() and not out
    assert not run(State(), "n1")


def test_start_executions_assigned_here():
    state = cluster()
    mine = new_exec(state)
    theirs = new_exec(state)
    waiting = new_exec(state)
    place(state, mine, "n1")
    place(state, theirs, "n2")
    out = run(state, "n1")
    assert out.stop == [] and out.install == [] and out.uninstall == []
    assert [r["id"] for r in out.start] == [mine]
    record = out.start[0]
    assert record["attempt"] == 1 and record["workerId"] == "n1" and record["stdin"] == "in"
    assert record["activityName"] == "act"
    # The instruction is a copy: changing it does not touch the state.
    record["status"] = "changed"
    assert state.executions[mine]["status"] == "in progress"
    assert state.executions[waiting]["status"] == "waiting"
    assert [r["id"] for r in run(state, "n2").start] == [theirs]


def test_no_start_when_running_or_done_here():
    state = cluster()
    a, b = new_exec(state), new_exec(state)
    place(state, a, "n1")
    place(state, b, "n1")
    out = run(state, running={a: 1}, done={(b, 1)})
    assert out.start == [] and out.stop == []
    # A report for another attempt does not count as done.
    out = run(state, running={a: 1}, done={(b, 7)})
    assert [r["id"] for r in out.start] == [b]


def test_no_start_for_ended_executions():
    state = cluster()
    a, b = new_exec(state), new_exec(state)
    place(state, a, "n1")
    place(state, b, "n1")
    ok(state, C.ExecFinish(now=NOW, reports=[C.Report(id=a, node="n1", attempt=1, exitCode=0)]))
    ok(state, C.ExecTerminate(id=b, now=NOW))
    assert run(state).start == []


def test_stop_runs_the_state_no_longer_wants():
    state = cluster()
    keep, terminated, elsewhere, retried, finished = (new_exec(state) for _ in range(5))
    for exec_id in (keep, terminated, retried, finished):
        place(state, exec_id, "n1")
    place(state, elsewhere, "n2")
    ok(state, C.ExecTerminate(id=terminated, now=NOW))
    ok(state, C.ExecFinish(now=NOW, reports=[C.Report(id=finished, node="n1", attempt=1, exitCode=0)]))
    running = {
        keep: 1,
        terminated: 1,     # terminated by request
        elsewhere: 1,      # the state runs it on another node
        retried: 2,        # another attempt than the state's
        finished: 1,       # ended
        999: 1,            # record gone (forgotten or expired)
    }
    out = run(state, running=running)
    assert sorted(out.stop) == sorted([terminated, elsewhere, retried, finished, 999])
    assert out.start == []


def test_stop_when_record_forgotten():
    state = cluster()
    a = new_exec(state)
    place(state, a, "n1")
    ok(state, C.ExecTerminate(id=a, now=NOW))
    ok(state, C.ExecForget(id=a))
    assert run(state, running={a: 1}).stop == [a]


def test_wanted_here():
    state = cluster()
    a = new_exec(state)
    assert not wanted_here(state.executions[a], "n1", 0)      # waiting
    place(state, a, "n1")
    record = state.executions[a]
    assert wanted_here(record, "n1", 1)
    assert not wanted_here(record, "n2", 1)
    assert not wanted_here(record, "n1", 2)
    assert not wanted_here(None, "n1", 1)


def test_install_instructions():
    state = State()
    node_up(state, "n1")
    node_up(state, "n2")
    ok(state, C.ActivityNew(name="a", url="http://x/a", now=NOW))
    ok(state, C.ActivityNew(name="b", url="http://x/b", now=NOW))
    ok(state, C.ActivityNew(name="c", url="http://x/c", now=NOW))
    ok(state, C.InstallAssign(assignments=[["a", "n1"], ["b", "n1"], ["c", "n2"]], now=NOW))

    out = run(state, "n1")
    assert [a["name"] for a in out.install] == ["a", "b"]
    assert out.install[0]["installationScriptLocation"] == "http://x/a"
    assert out.install[0]["status"] == "verifying"
    assert out.uninstall == [] and out.start == [] and out.stop == []
    # Not repeated while in progress here.
    assert [a["name"] for a in run(state, "n1", installing={"a"}).install] == ["b"]
    assert not run(state, "n1", installing={"a", "b"})
    assert [a["name"] for a in run(state, "n2").install] == ["c"]

    # Installed or failed: nothing to do.
    ok(state, C.InstallDone(name="a", node="n1", ok=True, now=NOW))
    ok(state, C.InstallDone(name="b", node="n1", ok=False, now=NOW))
    assert not run(state, "n1")


def test_uninstall_instructions():
    state = cluster()
    installed(state, "other", ["n1"])
    a = new_exec(state)
    place(state, a, "n1")
    ok(state, C.ActivityDelete(name="act", now=NOW))
    out = run(state, "n1", running={a: 1})
    assert out.uninstall == ["act"]
    assert out.stop == [a]
    assert out.install == []
    assert run(state, "n2").uninstall == ["act"]
    # Not repeated while in progress here.
    assert run(state, "n1", running={}, uninstalling={"act"}).uninstall == []
    # Once reported, nothing more.
    ok(state, C.UninstallDone(name="act", node="n1"))
    assert run(state, "n1").uninstall == []
    assert run(state, "n2").uninstall == ["act"]


def test_uninstall_of_an_activity_still_installing():
    state = cluster()
    ok(state, C.ActivityNew(name="new", url="u", now=NOW))
    ok(state, C.InstallAssign(assignments=[["new", "n1"]], now=NOW))
    assert [a["name"] for a in run(state, "n1").install] == ["new"]
    ok(state, C.ActivityDelete(name="new", now=NOW))
    out = run(state, "n1", installing={"new"})
    assert out.install == [] and out.uninstall == ["new"]


def test_unknown_node_gets_nothing():
    state = cluster()
    a = new_exec(state)
    place(state, a, "n1")
    assert not run(state, "ghost")


def scan_reference(state: State, node: str, *, running: dict[int, int], done: set, incarnation: str) -> tuple:
    """What reconcile answered when it read every execution (before the slots-by-node index): start and lost."""
    start, lost = [], []
    for exec_id, record in sorted(state.executions.items()):
        mine = (record.get("workerId") == node and exec_id not in running
                and (exec_id, record.get("attempt", 0)) not in done)
        if record["status"] == "in progress" and mine:
            (start if record.get("workerIncarnation", "") == incarnation else lost).append(exec_id)
        elif record.get("outputPending") and mine and record.get("workerIncarnation", "") != incarnation:
            lost.append(exec_id)
    return start, lost


def test_reading_only_this_nodes_executions_answers_what_a_scan_of_all_did():
    import random

    from .test_placement import random_state

    for seed in range(60):
        state = random_state(seed)
        rng = random.Random(seed)
        ok(state, C.NodeUp(node="n1", raftAddr="n1:1", httpUrl="h", slots=3, now=NOW, incarnation="again"))
        for node in ("n1", "n2", "n3", "ghost"):
            on_node = sorted(i for i, e in state.executions.items() if e.get("workerId") == node)
            running = {i: 1 for i in rng.sample(on_node, k=len(on_node) // 2)}
            done = {(i, 1) for i in rng.sample(on_node, k=len(on_node) // 3)}
            for incarnation in ("", "again"):
                out = reconcile(state, node, running=running, done=done, installing=set(), uninstalling=set(),
                                incarnation=incarnation)
                got = ([r["id"] for r in out.start], [r["id"] for r in out.lost])
                assert got == scan_reference(state, node, running=running, done=done, incarnation=incarnation), seed
