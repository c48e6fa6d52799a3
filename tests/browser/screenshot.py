"""Make docs/status-page.png: a 3-node cluster under a changing load for a minute and a half, one activity whose
install fails, one node SIGKILLed near the end, and the page photographed in Debian's headless Chromium.

    .venv/bin/python -m tests.browser.screenshot docs/status-page.png   # from a venv with the test extras

Everything it starts (nodes, the script server, the browser) is stopped when it ends, also on an error.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from ..conftest import FAST_RAFT, Client, ScriptServer, approved, install_script, start_cluster, wait_until
from .test_status_page import CHROMIUM, CHROMIUM_ARGS

LOAD_S = 80.0
MAIN = """echo "rendering frame $1"
for i in 1 2 3; do sleep 1.$((RANDOM % 9)); echo "frame $1: pass $i of 3"; done
[ $(( $1 % 7 )) -ne 0 ] || { echo "frame $1: texture missing" >&2; exit 2; }
echo "frame $1 done"
"""


def main(out: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="pod-screenshot-"))
    (root / "scripts").mkdir()
    scripts = ScriptServer(root / "scripts")
    cluster = start_cluster(root / "cluster", nodes=3, slots=2,
                            extra_args=[*FAST_RAFT, "--node-lost-after-s", "1.5"])
    try:
        client = Client(cluster.urls, cluster.token)
        approved(client, "render", scripts.add("render.sh", install_script(MAIN)))
        client.ok("newActivity", name="transcode", installationScriptLocation=scripts.add(
            "transcode.sh", "#!/usr/bin/env bash\necho 'ffmpeg: not found' >&2\nexit 3\n"))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
                page.goto(cluster.urls[0] + "/")
                page.fill("#token-input", cluster.token)
                page.click("#token-form button[type=submit]")
                expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
                frame, start = 0, time.monotonic()
                while time.monotonic() - start < LOAD_S:   # waves: a burst, then a pause to drain
                    wave = 2 if int(time.monotonic() - start) % 30 < 15 else 0
                    for _ in range(wave):
                        frame += 1
                        client.ok("newExecution", name="render", input=str(frame))
                    time.sleep(1.0)
                victim = cluster.nodes[2]
                cluster.stop_node(victim, sig=signal.SIGKILL)
                row = page.locator(f'#nodes tbody tr[data-node="{victim.node_id}"]')
                expect(row).to_have_attribute("data-status", "lost", timeout=30_000)
                live = Client(cluster.urls[:2], cluster.token)   # the nodes still up
                for _ in range(12):
                    frame += 1
                    live.ok("newExecution", name="render", input=str(frame))
                wait_until(lambda: page.locator("#running article").count() >= 4 and
                           page.locator("#queue tbody tr").count() >= 4, what="work running and queued")
                page.screenshot(path=str(out), full_page=True)
            finally:
                browser.close()
    finally:
        cluster.stop()
        scripts.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/status-page.png"))
