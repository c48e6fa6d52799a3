"""A real (single-member) pysyncobj replica: the msgpack snapshot and the journal bring the state back."""

from __future__ import annotations

import copy
import os
import threading
import time

from pysyncobj import FAIL_REASON

from podnode.config import RaftTiming
from podnode.local.procs import free_port
from podnode.raft import commands as C
from podnode.raft.replica import Replica

from ..conftest import wait_until


def _replica(data_dir: str, port: int, changes: list) -> Replica:
    return Replica(self_addr=f"127.0.0.1:{port}", peers=[], data_dir=data_dir, password="pw",
                   timing=RaftTiming(), on_change=lambda touched: changes.append(touched))


def _apply(replica: Replica, cmd: dict) -> dict:
    done = threading.Event()
    box: dict = {}

    def cb(res, err):
        box.update(res=res, err=err)
        done.set()
    replica.apply_command(C.encode(cmd), callback=cb)
    assert done.wait(10), "no commit within 10 s"
    assert box["err"] == FAIL_REASON.SUCCESS, box
    return box["res"]


def _fill(replica: Replica) -> None:
    now = time.time()
    _apply(replica, {"t": C.NODE_UP, "node": "n1", "raftAddr": "127.0.0.1:1", "httpUrl": "http://x",
                     "slots": 1, "now": now})
    _apply(replica, {"t": C.ACTIVITY_NEW, "name": "a", "url": "http://x/a.sh", "now": now})
    _apply(replica, {"t": C.INSTALL_ASSIGN, "assignments": [["a", "n1"]], "now": now})
    _apply(replica, {"t": C.INSTALL_DONE, "name": "a", "node": "n1", "ok": True, "now": now})
    for i in range(3):
        _apply(replica, {"t": C.EXEC_NEW, "name": "a", "input": f"in{i}", "now": now})
    _apply(replica, {"t": C.EXEC_PLACE, "placements": [[1, "n1"]], "now": now})
    _apply(replica, {"t": C.EXEC_FINISH, "now": now, "reports": [
        {"id": 1, "attempt": 1, "node": "n1", "exitCode": 0, "stdout": "out\x00ü", "stderr": ""}]})


def _check(state) -> None:
    assert state.activities["a"]["status"] == "approved"
    assert state.executions[1]["status"] == "finished" and state.executions[1]["stdout"] == "out\x00ü"
    assert [state.executions[i]["status"] for i in (2, 3)] == ["waiting", "waiting"]
    assert state.next_execution_id == 4


def _state_data(replica: Replica) -> dict:
    with replica.lock:
        return copy.deepcopy(replica.state.to_dict())


def _first_run(tmp_path, port: int, *, snapshot: bool) -> dict:
    """Fill a fresh replica (snapshotting it if asked), stop it, and return the state it had."""
    first = _replica(str(tmp_path), port, [])
    try:
        wait_until(first.is_leader, timeout_s=15, what="single member elected")
        _fill(first)
        if snapshot:
            first.forceLogCompaction()
            wait_until(lambda: os.path.exists(tmp_path / "raft.snapshot"), timeout_s=15, what="snapshot written")
        return _state_data(first)
    finally:
        first.destroy_synchronous()


def _restart_and_check(tmp_path, port, before: dict) -> None:
    again = _replica(str(tmp_path), port, [])
    try:
        # The journal is replayed entry by entry: wait for all of it.
        wait_until(lambda: _state_data(again) == before, timeout_s=15, what="state restored")
        with again.lock:
            _check(again.state)
        # And it keeps working after the restart.
        wait_until(again.is_leader, timeout_s=15, what="re-elected")
        res = _apply(again, {"t": C.EXEC_NEW, "name": "a", "input": "after", "now": time.time()})
        assert res["execution"]["id"] == 4
    finally:
        again.destroy_synchronous()


def test_journal_alone_restores_the_state(tmp_path):
    port = free_port()
    before = _first_run(tmp_path, port, snapshot=False)
    assert not os.path.exists(tmp_path / "raft.snapshot")
    _restart_and_check(tmp_path, port, before)


def test_snapshot_restores_the_state(tmp_path):
    port = free_port()
    before = _first_run(tmp_path, port, snapshot=True)
    _restart_and_check(tmp_path, port, before)


def test_entries_applied_while_the_snapshot_is_written_are_kept(tmp_path):
    """The snapshot is written by a forked child while the replica goes on applying: what it holds is the state
    at the fork, the entries after it stay in the journal, and a restart brings back all of it."""
    import msgpack

    port = free_port()
    first = _replica(str(tmp_path), port, [])
    try:
        wait_until(first.is_leader, timeout_s=15, what="single member elected")
        _fill(first)
        for i in range(100):   # something to pack
            _apply(first, {"t": C.EXEC_NEW, "name": "a", "input": f"x{i}", "now": time.time()})
        first.forceLogCompaction()
        wait_until(lambda: first.snapshot_pauses_s, timeout_s=15, what="the snapshot started")
        for i in range(10):    # applied while the child packs, or after
            _apply(first, {"t": C.EXEC_NEW, "name": "a", "input": f"late{i}", "now": time.time()})
        wait_until(lambda: os.path.exists(tmp_path / "raft.snapshot"), timeout_s=15, what="snapshot written")
        before = _state_data(first)
    finally:
        first.destroy_synchronous()
    with open(tmp_path / "raft.snapshot", "rb") as f:
        written = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)["state"]
    assert written["next_execution_id"] - 1 == len(written["executions"])   # one consistent state
    assert 103 <= len(written["executions"]) <= 113
    assert not os.path.exists(tmp_path / "raft.snapshot.fork.tmp")
    again = _replica(str(tmp_path), port, [])
    try:
        wait_until(lambda: _state_data(again) == before, timeout_s=15, what="state restored")
    finally:
        again.destroy_synchronous()
