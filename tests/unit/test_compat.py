"""podnode.raft.compat: every pysyncobj private member POD uses is checked when a replica starts, and a missing
one stops the start with a message naming it and the installed pysyncobj version."""

from __future__ import annotations

import subprocess
import sys
import time
import types

import pytest
from pysyncobj import SyncObj
from pysyncobj.node import TCPNode
from pysyncobj.version import VERSION

from podnode.config import RaftTiming
from podnode.errors import IncompatibleDependency
from podnode.local.procs import free_port
from podnode.raft import compat
from podnode.raft.replica import Replica


def _owner(member: compat.Member):
    return SyncObj if member.owner == "SyncObj" else compat._OWNERS[member.owner]


def _replica(tmp_path, self_addr: str | None = None) -> Replica:
    return Replica(self_addr=self_addr, peers=[], data_dir=str(tmp_path), password="pw", timing=RaftTiming(),
                   on_change=lambda touched: None)


@pytest.fixture
def replica(tmp_path):
    """A single-member voter on loopback: it elects itself."""
    r = _replica(tmp_path, f"127.0.0.1:{free_port()}")
    try:
        yield r
    finally:
        r.destroy_synchronous()


def test_every_member_is_there_on_the_installed_pysyncobj(replica):
    assert compat.missing(replica) == []
    compat.check(replica)


def test_the_list_names_each_access_the_module_makes():
    """Each accessor in compat goes through a listed member (a new access must be added to MEMBERS)."""
    source = open(compat.__file__).read().split("# ---- the accesses themselves")[1]
    for member in compat.MEMBERS:
        assert member.name in source or member.name == compat.PICKLE_PROTOCOL_GLOBAL, member.label
    assert "PICKLE_PROTOCOL_GLOBAL" in source


@pytest.mark.parametrize("member", [m for m in compat.MEMBERS if m.owner != "replica"], ids=lambda m: m.label)
def test_a_missing_class_or_module_member_refuses_the_start(member, monkeypatch, tmp_path):
    monkeypatch.delattr(_owner(member), member.name)
    assert compat.missing() == [member]
    with pytest.raises(IncompatibleDependency) as err:
        _replica(tmp_path)
    assert member.label in str(err.value)
    assert f"pysyncobj {VERSION}" in str(err.value)
    assert member.needed_for in str(err.value)


@pytest.mark.parametrize("member", [m for m in compat.MEMBERS if m.owner == "replica"], ids=lambda m: m.label)
def test_a_missing_instance_member_refuses_the_start(member, monkeypatch, tmp_path):
    """Instance members are set in SyncObj.__init__: drop this one there; the replica built must not stay up."""
    built = []
    original = SyncObj.__init__

    def init_without(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)
        delattr(self, member.name)
    monkeypatch.setattr(SyncObj, "__init__", init_without)
    with pytest.raises(IncompatibleDependency) as err:
        _replica(tmp_path)
    assert member.label in str(err.value) and f"pysyncobj {VERSION}" in str(err.value)
    assert len(built) == 1 and not built[0].tick_thread_alive()  # stopped, not left running


def test_a_member_that_changed_shape_counts_as_missing(monkeypatch):
    from pysyncobj import pickle as pysyncobj_pickle
    monkeypatch.setattr(pysyncobj_pickle, compat.PICKLE_PROTOCOL_GLOBAL, "4")
    assert [m.name for m in compat.missing()] == [compat.PICKLE_PROTOCOL_GLOBAL]


def test_instance_members_are_only_checked_on_a_replica():
    assert compat.missing(None) == []
    bare = types.SimpleNamespace()
    assert {m.label for m in compat.missing(bare)} == {m.label for m in compat.MEMBERS if m.owner == "replica"}


def test_response_ages_reads_the_leaders_table(replica):
    """A single-member replica leads; its table is the one compat reads."""
    deadline = time.monotonic() + 10
    while not replica.is_leader() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replica.is_leader()
    assert replica.response_ages() == {}  # no peers
    compat.last_response_times(replica)[TCPNode("127.0.0.1:1")] = compat.now() - 5
    ages = replica.response_ages()
    assert 4.5 < ages["127.0.0.1:1"] < 10


def test_a_node_process_refuses_to_start_and_says_why(tmp_path):
    """The podnode command itself, on a pysyncobj without one member: it exits with the message."""
    http, raft = free_port(), free_port()
    code = ("from pysyncobj import SyncObj; del SyncObj._SyncObj__sendAppendEntries\n"
            "from podnode.server.main import main\n"
            f"main(['--id', 'c1', '--http', '127.0.0.1:{http}', '--raft', '127.0.0.1:{raft}', '--no-announce', "
            f"'--data-dir', {str(tmp_path)!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"podnode: pysyncobj {VERSION} lacks private members POD relies on: " \
           "SyncObj._SyncObj__sendAppendEntries" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
