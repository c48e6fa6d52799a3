"""getAllExecutions' pages: parameters checked, pages by increasing id that join up to the whole list under any
filter, and counts per status from the state's counters."""

from __future__ import annotations

import pytest

from podnode.api import params as P
from podnode.api.actions import execution_page
from podnode.errors import BadRequest
from podnode.raft import commands as C

from .builders import NOW, activity_new, approved_state, assign, install_done, ok


def all_pages(state, *, limit: int, **filters) -> list[list[int]]:
    pages, after = [], 0
    while True:
        page = execution_page(state, after=after, limit=limit, **filters)
        pages.append([v["id"] for v in page["executions"]])
        if page["nextCursor"] is None:
            return pages
        after = P.page_cursor({"cursor": page["nextCursor"]})


def busy_state():
    state = approved_state({"n1": 2})
    ok(state, activity_new("b"))
    ok(state, assign(("b", "n1")))
    ok(state, install_done("b", "n1"))
    for i in range(7):
        ok(state, C.ExecNew(name="act" if i % 3 else "b", now=NOW + i))
    ok(state, C.ExecPlace(placements=[[1, "n1"], [2, "n1"]], now=NOW))
    ok(state, C.ExecFinish(now=NOW, reports=[C.Report(id=2, node="n1", attempt=1, exitCode=3)]))
    ok(state, C.ExecTerminate(id=5, now=NOW))
    ok(state, C.ExecForget(id=2))
    return state


def test_pages_join_up_to_the_whole_list_under_every_filter():
    state = busy_state()
    assert sorted(state.executions) == [1, 3, 4, 5, 6, 7]
    for activity in (None, "act", "b", "nope"):
        for status in (None, "waiting", "in progress", "finished", "error", "terminated"):
            want = [i for i, e in sorted(state.executions.items())
                    if activity in (None, e["activityName"]) and status in (None, e["status"])]
            for limit in (1, 2, 5, 100):
                pages = all_pages(state, limit=limit, activity=activity, status=status)
                assert [i for page in pages for i in page] == want, (activity, status, limit)
                assert all(len(page) == limit for page in pages[:-1])
                assert len(pages[-1]) <= limit


def test_counts_per_status_cluster_wide_or_of_the_activity():
    state = busy_state()
    page = execution_page(state, activity=None, status="waiting", after=0, limit=1)
    assert page["counts"] == {"waiting": 4, "in progress": 1, "finished": 0, "error": 0, "terminated": 1}
    assert [v["id"] for v in page["executions"]] == [3] and page["nextCursor"] == "i3"
    assert execution_page(state, activity="b", status=None, after=0, limit=9)["counts"] == {
        "waiting": 2, "in progress": 1, "finished": 0, "error": 0, "terminated": 0}
    empty = execution_page(state, activity="nope", status=None, after=0, limit=9)
    assert empty == {"executions": [], "nextCursor": None, "counts": dict.fromkeys(empty["counts"], 0)}


def test_a_page_holds_the_old_views():
    state = busy_state()
    view = execution_page(state, activity=None, status=None, after=0, limit=1)["executions"][0]
    assert {"id", "stdin", "status", "activityId", "activityName", "startTime", "finishTime"} <= set(view)


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "10001"}, {"limit": "-1"}, {"limit": "x"},
                                    {"limit": "1.5"}, {"cursor": "12"}, {"cursor": "ix"}, {"status": "done"},
                                    {"status": "Waiting"}, {"activity": "../x"}])
def test_bad_page_parameters_are_refused(params):
    with pytest.raises(BadRequest):
        P.page_limit(params)
        P.page_cursor(params)
        P.execution_status(params)
        P.activity_filter(params)


def test_page_parameters_and_their_defaults():
    assert (P.page_limit({}), P.page_cursor({}), P.execution_status({}), P.activity_filter({})) == (1000, 0, None, None)
    assert P.page_limit({"limit": "10000"}) == 10_000
    assert P.page_cursor({"cursor": P.cursor_of(41)}) == 41
    assert P.execution_status({"status": "in progress"}) == "in progress"
    assert P.activity_filter({"activity": "act"}) == "act"
