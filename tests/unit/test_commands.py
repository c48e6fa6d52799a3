"""The typed commands (podnode/raft/commands.py) against their wire form: the types are append-only, every class
round-trips, a decoded command is read as the dicts were, and a journal written by the code before the classes
(commit c28b53c, commands as dicts) replays to the same state.

data/journal_c28b53c.msgpack.gz: three random traces of that code (400 steps each: random commands of every type,
3% of them malformed, some batched, and the scheduler's plans, applied to one State), recorded as the wire dicts
applied, each one's result, and State.to_dict() at the end. Generated once; never edit."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import pytest

from podnode.raft import commands as C
from podnode.raft.state import State

JOURNAL = Path(__file__).parent / "data" / "journal_c28b53c.msgpack.gz"

# Every wire type ever written, in the order they were added: the log outlives the code, so never rename one.
WIRE_TYPES = [
    "node_up", "activity_new", "activity_delete", "install_assign", "install_done", "uninstall_done", "exec_new",
    "exec_place", "exec_finish", "exec_terminate", "exec_forget", "exec_expire", "sync", "node_lost", "exec_lost",
    "reinstall", "policy_new", "policy_delete", "policy_apply", "policy_reset", "node_drain", "node_left",
    "node_launched", "node_launch_failed", "batch", "node_launch_ref", "token_new", "token_delete",
    "exec_new_many", "exec_forget_many", "exec_settle",
]


def test_every_wire_type_has_its_class_and_none_was_renamed():
    assert set(C.TYPES) == set(WIRE_TYPES)
    assert all(cls.t == t for t, cls in C.TYPES.items())


def test_the_state_machine_has_an_apply_case_for_every_class():
    assert set(State()._cases) == set(C.TYPES)


def test_to_wire_writes_t_and_the_fields_leaving_out_optional_nones():
    assert C.ExecNew(name="a", now=1.0).to_wire() == {"t": "exec_new", "name": "a", "now": 1.0}
    assert C.ExecForget(id=3).to_wire() == {"t": "exec_forget", "id": 3}
    assert C.NodeUp(node="n", raftAddr="r", httpUrl="h", slots=2, now=1.0).to_wire() == {
        "t": "node_up", "node": "n", "raftAddr": "r", "httpUrl": "h", "slots": 2, "now": 1.0,
        "version": "", "incarnation": ""}
    finish = C.ExecFinish(now=2.0, pull="n1", reports=[C.Report(id=1, node="n1", attempt=1, exitCode=0)])
    assert finish.to_wire() == {"t": "exec_finish", "now": 2.0,
                                "reports": [{"id": 1, "node": "n1", "attempt": 1, "exitCode": 0}], "pull": "n1"}
    assert C.decode(C.encode(finish.to_wire())) == finish.to_wire()


@pytest.mark.parametrize("kind", sorted(C.TYPES.values(), key=lambda cls: cls.t), ids=lambda cls: cls.t)
def test_from_wire_reads_back_what_to_wire_wrote(kind):
    values = {f.name: f"v-{f.name}" for f in dataclasses.fields(kind) if f.default is dataclasses.MISSING}
    cmd = kind(**values)
    assert kind.from_wire(C.decode(C.encode(cmd.to_wire()))) == cmd


def test_from_wire_takes_the_dict_as_it_is():
    """A missing required key raises KeyError (State.apply records it as a refusal); a missing optional one is
    its default, as the apply cases' get() gave; values are neither converted nor checked."""
    with pytest.raises(KeyError, match="name"):
        C.ExecNew.from_wire({"t": "exec_new", "now": 1.0})
    up = C.NodeUp.from_wire({"node": 5, "raftAddr": None, "httpUrl": [], "slots": "x", "now": 1.0, "version": None})
    assert (up.node, up.slots, up.version, up.incarnation, up.role) == (5, "x", None, "", None)
    assert C.ExecForget.from_wire({"t": "exec_forget", "id": 3}).now is None


def test_a_malformed_command_is_a_refusal_not_an_exception():
    state = State()
    assert state.apply({"t": C.EXEC_NEW})["error"] == "internal"
    assert state.apply({"t": C.NODE_UP, "node": "n"})["error"] == "internal"
    assert state.apply(C.ExecFinish(now=1.0, reports=[{"id": 1}]))["error"] == "bad_request"  # not Reports
    assert state.to_dict() == State().to_dict()


def both_refuse(old: object, new: object) -> bool:
    """Equal results, or both refusals (also item by item in a batch's results)."""
    if old == new:
        return True
    if isinstance(old, dict) and isinstance(new, dict):
        if "error" in old and "error" in new:
            return True
        if old.keys() == new.keys() == {"ok", "results"} and len(old["results"]) == len(new["results"]):
            return all(map(both_refuse, old["results"], new["results"]))
    return False


def test_a_journal_written_before_the_classes_replays_to_the_same_state():
    """Every result is the one recorded, except that a malformed command the old code refused (a conflict found
    before it read the missing key) may now be refused for the missing key instead; the state is the same."""
    recorded = C.decode(gzip.decompress(JOURNAL.read_bytes()))
    assert recorded["recordedWith"] == "c28b53c"
    for trace in recorded["traces"]:
        state = State()
        refused_otherwise = 0
        for i, (cmd, result) in enumerate(trace["applied"]):
            got = C.decode(C.encode(state.apply(cmd)))
            if got != result:
                assert both_refuse(result, got), (trace["seed"], i, cmd, result, got)
                refused_otherwise += 1
        snapshot = C.decode(C.encode(state.to_dict()))
        # A waiting execution that never ran is now kept without the fields it gains when it runs (their
        # values until then are RUN_FIELDS') and its activity's id: the same state, in fewer bytes.
        snapshot["executions"] = {i: state.execution(i) for i in snapshot["executions"]}
        assert {k: v for k, v in snapshot.items() if k in trace["state"]} == trace["state"], trace["seed"]
        assert refused_otherwise <= 3, "only a few malformed commands differ in how they are refused"
        assert len(trace["applied"]) > 400
