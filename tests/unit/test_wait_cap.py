"""getExecutionStatus wait=S is capped (README: "wait? (seconds, at most 60)"): the parameter, and the action."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from podnode.api import actions
from podnode.api import params as P
from podnode.changes import Changes
from podnode.config import NodeConfig
from podnode.errors import BadRequest


@pytest.mark.parametrize("raw, expected", [(None, 0.0), ("", 0.0), ("0", 0.0), ("2.5", 2.5), ("60", 60.0),
                                           ("61", 60.0), ("3600", 60.0), ("1e9", 60.0)])
def test_wait_seconds_is_capped(raw, expected):
    assert P.wait_seconds({} if raw is None else {"wait": raw}, 60.0) == expected


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf", "-inf"])
def test_wait_seconds_refuses_what_is_not_a_duration(raw):
    with pytest.raises(BadRequest, match="wait"):
        P.wait_seconds({"wait": raw}, 60.0)


def test_the_node_caps_wait_at_60_seconds_by_default():
    assert NodeConfig(node_id="n1").max_wait_s == 60.0


class RunningForever:
    """Just enough of a node for getExecutionStatus: one execution that stays in progress."""

    def __init__(self, max_wait_s: float):
        self.cfg = SimpleNamespace(max_wait_s=max_wait_s, kill_grace_s=1.0)
        self.changes = Changes(asyncio.get_running_loop())
        self.record = {"id": 7, "stdin": "", "status": "in progress", "activityId": 1, "activityName": "a",
                       "workerId": "n2", "attempt": 1, "startTime": 1000.0}

    async def read_execution(self, exec_id):
        return dict(self.record) if exec_id == 7 else None

    def read(self, fn):
        return dict(self.record)

    async def wait_execution(self, exec_id, timeout_s):
        await self.changes.wait_execution(exec_id, timeout_s)

    async def live_output(self, record):
        return "so far\n", ""


async def test_get_execution_status_answers_by_the_cap_when_asked_to_wait_longer():
    node = RunningForever(max_wait_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = await asyncio.wait_for(actions.ACTIONS["getExecutionStatus"](node, {"executionId": "7", "wait": "3600"}),
                                  5.0)
    took = loop.time() - started
    assert body["execution"]["status"] == "in progress" and body["execution"]["stdout"] == "so far\n"
    assert 0.25 <= took < 2.0, f"answered after {took:.2f} s; the cap is 0.3 s"
