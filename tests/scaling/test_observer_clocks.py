"""The leader's clocks of its observers (fed by their /internal/alive), on an in-process replica."""

from __future__ import annotations

import asyncio

import pytest

from podnode.changes import Changes
from podnode.config import NodeConfig
from podnode.errors import NotFound, Unavailable
from podnode.manager import Manager
from podnode.raft.bridge import CommandBridge

from ..unit.builders import node_up
from .fakes import FakeReplica


def manager_on(replica: FakeReplica) -> Manager:
    loop = asyncio.get_running_loop()
    changes = Changes(loop)
    return Manager(NodeConfig(node_id="n1"), replica, CommandBridge(replica, loop, timeout_s=5.0), changes)


async def test_the_leader_keeps_a_clock_per_observer_restarted_when_it_takes_over():
    replica = FakeReplica("n1", voters=("n1", "n2"))
    for node, role in (("n1", "voter"), ("n2", "voter"), ("wa", "observer"), ("wb", "observer")):
        replica.apply(node_up(node, role=role))
    manager = manager_on(replica)
    assert set(manager.silent_s()) == {"n2", "wa", "wb"}
    await asyncio.sleep(0.05)
    manager.observer_alive("wa")
    silent = manager.silent_s()
    assert silent["wa"] < silent["wb"]
    assert {"n1", "wa"} <= manager.live_nodes()
    for who in ("n2", "n1", "nobody"):     # voters are heard over Raft; the leader keeps no clock of itself
        with pytest.raises(NotFound):
            manager.observer_alive(who)

    replica.leader = False                 # another node leads: this one refuses and keeps no clock
    with pytest.raises(Unavailable):
        manager.observer_alive("wa")
    assert "wa" not in manager.silent_s()

    replica.leader = True                  # leading again: every observer's clock starts now
    await asyncio.sleep(0.05)
    before = manager.silent_s()["wb"]
    replica.leader = False
    manager.silent_s()
    replica.leader = True
    assert manager.silent_s()["wb"] < before
