"""Real pysyncobj replicas on loopback, a voter leading and an observer: with the leader's rounds to observers
capped (replica.observers_due), the observer still gets every entry, and its own writes commit."""

from __future__ import annotations

import threading
import time

import pytest
from pysyncobj import FAIL_REASON

from podnode.config import RaftTiming
from podnode.local.procs import free_port
from podnode.raft import commands as C
from podnode.raft.replica import Replica

from ..conftest import wait_until


@pytest.fixture
def leader_and_observer(tmp_path):
    replicas: list[Replica] = []
    try:
        addr = f"127.0.0.1:{free_port()}"
        replicas.append(Replica(self_addr=addr, peers=[], data_dir=str(tmp_path / "leader"), password="pw",
                                timing=RaftTiming(), on_change=lambda touched: None))
        wait_until(replicas[0].is_leader, timeout_s=15, what="the single voter elected")
        replicas.append(Replica(self_addr=None, peers=[addr], data_dir=str(tmp_path / "observer"), password="pw",
                                timing=RaftTiming(), on_change=lambda touched: None))
        assert replicas[1].observer
        yield replicas[0], replicas[1]
    finally:
        for replica in replicas:
            replica.destroy_synchronous()


def _activity(name: str) -> bytes:
    return C.encode({"t": C.ACTIVITY_NEW, "name": name, "url": f"http://x/{name}.sh", "now": time.time()})


def _names(replica: Replica) -> set[str]:
    with replica.lock:
        return set(replica.state.activities)


def test_an_observer_gets_every_entry_of_a_burst_and_its_writes_commit(leader_and_observer):
    leader, observer = leader_and_observer
    wait_until(lambda: observer.has_quorum() or observer.leader_addr(), timeout_s=15, what="the observer connected")
    committed = []
    for i in range(60):     # a burst: many entries between two rounds to the observer
        leader.submit(_activity(f"a{i}"), lambda res, err: committed.append(err))
    wait_until(lambda: len(committed) == 60, timeout_s=15, what="the burst committed on the leader")
    assert set(committed) == {FAIL_REASON.SUCCESS}
    wait_until(lambda: {f"a{i}" for i in range(60)} <= _names(observer), timeout_s=15,
               what="the observer applied the whole burst")

    done = threading.Event()
    result: dict = {}
    observer.submit(_activity("from-the-observer"),
                    lambda res, err: (result.update(res=res, err=err), done.set()))
    assert done.wait(15), "the observer's write did not commit"
    assert result["err"] == FAIL_REASON.SUCCESS, result
    assert "from-the-observer" in _names(leader) and "from-the-observer" in _names(observer)

