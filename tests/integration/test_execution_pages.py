"""getAllExecutions pages on a real cluster: filters, cursors, counts, refusals, from any node."""

from __future__ import annotations

from ..conftest import approved, install_script, wait_until


def test_pages_of_one_activity_join_up_and_carry_its_counts(client, scripts):
    url = scripts.add("paged.sh", install_script('exit "$1"'))
    approved(client, "paged", url)
    ids = [client.ok("newExecution", i % 3, name="paged", input=str(i % 2))["execution"]["id"] for i in range(5)]

    def ended():
        counts = client.ok("getAllExecutions", activity="paged", limit=1)["counts"]
        return counts if counts["finished"] + counts["error"] == 5 else None
    counts = wait_until(ended, what="the five executions ended")
    assert counts == {"waiting": 0, "in progress": 0, "finished": 3, "error": 2, "terminated": 0}

    seen, cursor, node = [], None, 0
    while True:
        params = {"activity": "paged", "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.ok("getAllExecutions", node % 3, **params)
        assert len(page["executions"]) <= 2 and page["counts"] == counts
        assert all("stdout" not in view and view["activityName"] == "paged" for view in page["executions"])
        seen += [view["id"] for view in page["executions"]]
        cursor, node = page["nextCursor"], node + 1
        if cursor is None:
            break
    assert seen == ids and node == 3

    errors = client.ok("getAllExecutions", activity="paged", status="error")
    assert [view["id"] for view in errors["executions"]] == ids[1::2] and errors["nextCursor"] is None
    for bad in ({"limit": "0"}, {"limit": "10001"}, {"cursor": "nope"}, {"status": "done"}, {"activity": "../x"}):
        code, body = client.call("getAllExecutions", **bad)
        assert code == 400 and "error" in body, (bad, code, body)
