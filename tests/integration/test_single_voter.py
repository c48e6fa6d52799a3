"""A cluster of one voter commits without waiting for a message that never comes.

pysyncobj advances the commit index at the start of a Raft tick and appends new commands at its end, so an entry
is committed in the tick after the one that appended it. With other voters, their acknowledgment wakes that tick;
alone, the leader used to wait out its poll (every commit of a one-node cluster took 50 to 100 ms: an execution
with newExecution&wait, 107 ms instead of 5). Here the poll's wait is made a minute long: a commit that waited for
it would miss the test's deadline by far, one that does not takes milliseconds.
"""

from __future__ import annotations

import os
import threading

from pysyncobj import FAIL_REASON

from podnode.config import RaftTiming
from podnode.local.procs import free_port
from podnode.raft import commands as C
from podnode.raft import compat
from podnode.raft.replica import Replica, commits_alone

from ..conftest import wait_until

LONG_POLL_S = 60.0
DEADLINE_S = 15.0


def test_only_a_lone_leader_with_entries_to_commit_ticks_again_at_once():
    assert commits_alone(5, 4, other_voters=0)
    assert not commits_alone(5, 5, other_voters=0)      # nothing to commit: wait as usual
    assert not commits_alone(5, 4, other_voters=2)      # the others' acknowledgments wake the next tick
    assert not commits_alone(5, 5, other_voters=2)


def test_a_lone_leader_commits_each_entry_without_waiting_out_its_poll(tmp_path):
    replica = Replica(self_addr=f"127.0.0.1:{free_port()}", peers=[], data_dir=str(tmp_path), password="pw",
                      timing=RaftTiming(), on_change=lambda touched: None)
    conf = replica._SyncObj__conf
    normal_period = conf.autoTickPeriod
    try:
        wait_until(lambda: compat.is_leader(replica), what="the lone replica to lead")
        assert compat.other_voters(replica) == 0
        conf.autoTickPeriod = LONG_POLL_S
        for i in range(5):
            done = threading.Event()
            box: dict = {}

            def cb(res, err, box=box, done=done):
                box.update(res=res, err=err)
                done.set()
            cmd = C.NodeUp(node=f"n{i}", raftAddr=f"127.0.0.1:{i + 1}", httpUrl=f"http://127.0.0.1:{i + 1}",
                           slots=1, now=1.0)
            replica.submit(C.encode(cmd.to_wire()), cb)
            assert done.wait(DEADLINE_S), f"entry {i} not committed within {DEADLINE_S} s: it waited for the poll"
            assert box["err"] == FAIL_REASON.SUCCESS and box["res"].get("ok"), box
        assert sorted(replica.state.nodes) == [f"n{i}" for i in range(5)]
    finally:
        conf.autoTickPeriod = normal_period
        os.write(replica._wake_w, b"!")   # end the long poll under way, if any, so that destroy is quick
        replica.destroy_synchronous()
