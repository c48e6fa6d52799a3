"""The status page in a real headless Chromium (Debian's, driven by Playwright; no browser is downloaded) against
a real 3-node cluster: it asks for the token, shows the nodes and the leader, follows an execution from running to
finished without a reload, terminates one with its button, and shows a SIGKILLed node as lost.

Screenshots go to the test's tmp dir; with POD_STATUS_SCREENSHOT=PATH set, the one with running executions and a
queue is also saved there (docs/status-page.png is made so: POD_STATUS_SCREENSHOT=docs/status-page.png
./dev.sh test tests/browser).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from ..conftest import FAST_RAFT, Client, approved, install_script, start_cluster, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOST_AFTER_S = 1.5
UI_TIMEOUT_MS = 30_000   # every wait on the page polls up to this long (expect's and the page's actions')
MAIN = """echo "start $1"
if [ "$1" = long ]; then sleep 120; else sleep 3; fi
echo "done $1"
"""

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ui_cluster(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("ui-cluster"), nodes=3, slots=2,
                            extra_args=[*FAST_RAFT, "--node-lost-after-s", str(LOST_AFTER_S)])
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def ui_client(ui_cluster, scripts) -> Client:
    client = Client(ui_cluster.urls, ui_cluster.token)
    approved(client, "sleepy", scripts.add("sleepy.sh", install_script(MAIN)))
    return client


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for the module, with a fresh user data dir (Playwright's launch makes a new temporary
    one each time and deletes it at close); each test opens its own context (its own sessionStorage). Closed, its
    processes with it, whatever the tests did."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)   # CI installs it: its absence there is a failure, not a skip
        pytest.skip(message)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium, tmp_path):
    expect.set_options(timeout=UI_TIMEOUT_MS)
    context = chromium.new_context(viewport={"width": 1280, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield page
    finally:
        page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
        context.close()


def log_in(page, url: str, token: str) -> None:
    """Open the page, give it the token it asks for, and wait until it is live."""
    page.goto(url + "/")
    expect(page.locator("#token-form")).to_be_visible()
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")


def node_row(page, node_id: str):
    return page.locator(f'#nodes tbody tr[data-node="{node_id}"]')


def leader_id(cluster) -> str:
    return wait_until(cluster.leader, what="a leader").node_id


def test_page_asks_for_the_token_once_and_shows_the_nodes_and_the_leader(page, ui_cluster, ui_client, tmp_path):
    url = ui_cluster.urls[0]
    page.goto(url + "/")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#main")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "token.png"))
    page.fill("#token-input", "pod_00000000_" + "A" * 43)   # well formed, wrong: refused, asked again
    page.click("#token-form button[type=submit]")
    expect(page.locator("#token-problem")).to_contain_text("refused")
    page.fill("#token-input", ui_cluster.token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    for node in ui_cluster.nodes:
        expect(node_row(page, node.node_id)).to_have_attribute("data-status", "up")
    leader = leader_id(ui_cluster)
    expect(node_row(page, leader)).to_have_attribute("data-role", "leader")
    expect(page.locator('#nodes tbody tr[data-role="leader"]')).to_have_count(1)
    expect(page.locator('#activities article[data-activity="sleepy"]')).to_contain_text("installed")
    # The token was asked for once: a reload in the same tab does not ask again, and never put it in a URL.
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#token-form")).to_be_hidden()
    assert ui_cluster.token not in page.url
    assert page.evaluate("sessionStorage.getItem('podToken')") == ui_cluster.token
    page.screenshot(path=str(tmp_path / "nodes.png"), full_page=True)


def test_an_execution_appears_and_finishes_without_a_reload(page, ui_cluster, ui_client, tmp_path):
    log_in(page, ui_cluster.urls[0], ui_cluster.token)
    page.evaluate("window.__sameDocument = true")   # gone if the page reloaded
    exec_id = ui_client.ok("newExecution", node=1, name="sleepy", input="hello")["execution"]["id"]
    card = page.locator(f'#running article[data-exec="{exec_id}"]')
    expect(card).to_contain_text("start hello")   # the tail of its live output, from whichever node runs it
    page.screenshot(path=str(tmp_path / "running.png"), full_page=True)
    ended = page.locator(f'#ended tbody tr[data-exec="{exec_id}"]')
    expect(ended).to_have_attribute("data-status", "finished")
    expect(ended).to_contain_text("done hello")
    expect(card).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(tmp_path / "finished.png"), full_page=True)
    final = ui_client.ok("getExecutionStatus", executionId=exec_id)["execution"]
    assert (final["status"], final["stdout"]) == ("finished", "start hello\ndone hello\n")


def test_the_terminate_button_terminates_a_running_execution(page, ui_cluster, ui_client, tmp_path):
    log_in(page, ui_cluster.urls[0], ui_cluster.token)
    slots = 2 * len(ui_cluster.nodes)
    ids = [ui_client.ok("newExecution", name="sleepy", input="long")["execution"]["id"] for _ in range(slots + 2)]
    try:
        expect(page.locator("#running article")).to_have_count(slots)
        expect(page.locator("#queue tbody tr")).to_have_count(2)
        victim = int(page.locator("#running article").first.get_attribute("data-exec"))
        expect(page.locator(f'#running article[data-exec="{victim}"]')).to_contain_text("start long")
        shot = page.screenshot(path=str(tmp_path / "busy.png"), full_page=True)
        if os.environ.get("POD_STATUS_SCREENSHOT"):
            Path(os.environ["POD_STATUS_SCREENSHOT"]).write_bytes(shot)
        page.click(f'#running button.terminate[data-exec="{victim}"]')
        expect(page.locator(f'#ended tbody tr[data-exec="{victim}"]')).to_have_attribute("data-status", "terminated")
        assert page.locator("#action-problem").text_content() == ""
        final = wait_until(lambda: _ended(ui_client, victim), what=f"execution {victim} terminated")
        assert final["status"] == "terminated"
        others = [i for i in ids if i != victim]
        assert all(ui_client.ok("getExecutionStatus", executionId=i)["execution"]["status"] in
                   ("in progress", "waiting") for i in others)   # only that one
    finally:
        for exec_id in ids:
            ui_client.call("terminateExecution", executionId=exec_id)


def _ended(client: Client, exec_id: int) -> dict | None:
    execution = client.ok("getExecutionStatus", executionId=exec_id)["execution"]
    return execution if execution["status"] not in ("waiting", "in progress") else None


def test_a_killed_node_shows_as_lost_and_up_again_when_back(page, ui_cluster, ui_client, tmp_path):
    log_in(page, ui_cluster.urls[0], ui_cluster.token)
    leader = leader_id(ui_cluster)
    victim = next(n for n in ui_cluster.nodes[1:] if n.node_id != leader)   # neither the page's node nor the leader
    expect(node_row(page, victim.node_id)).to_have_attribute("data-status", "up")
    try:
        ui_cluster.stop_node(victim, sig=signal.SIGKILL)
        expect(node_row(page, victim.node_id)).to_have_attribute("data-status", "lost")
        expect(node_row(page, victim.node_id).locator("td.status")).to_contain_text("lost")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        page.screenshot(path=str(tmp_path / "lost.png"), full_page=True)
    finally:   # the module's cluster is whole again for whatever runs next
        if victim.proc is None or victim.proc.poll() is not None:
            ui_cluster.start_node(victim)
            ui_cluster.wait_ready(timeout_s=60)
    expect(node_row(page, victim.node_id)).to_have_attribute("data-status", "up")
