"""Tests for podnode.exec.install with real scripts and a local HTTP server."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from podnode.exec.install import (
    InstallError,
    check_script_url,
    fetch_script,
    install_activity,
    remove_activity,
)

DEADLINE_S = 15.0
GOOD_SCRIPT = 'printf \'#!/bin/bash\\necho "main:$1"\\n\' > main.sh\necho installed $POD_ACTIVITY\n'


def write_script(tmp_path: Path, body: str, name: str = "install.sh") -> str:
    """Write an install script and return its file:// URL."""
    path = tmp_path / name
    path.write_text(body)
    return path.as_uri()


async def install(tmp_path: Path, url: str, **kw) -> Path:
    adir = tmp_path / "activities" / "demo"
    params = dict(
        name="demo", url=url, activity_dir=adir, allow_file_urls=True,
        fetch_timeout_s=5.0, install_timeout_s=5.0,
    )
    params.update(kw)
    await asyncio.wait_for(install_activity(**params), DEADLINE_S)
    return adir


async def install_error(tmp_path: Path, url: str, **kw) -> str:
    with pytest.raises(InstallError) as info:
        await install(tmp_path, url, **kw)
    return str(info.value)


@pytest.fixture
async def http_base() -> AsyncIterator[str]:
    """A local aiohttp server serving a few install scripts."""

    async def good(_: web.Request) -> web.Response:
        return web.Response(text=GOOD_SCRIPT)

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"#" * 5000)

    app = web.Application()
    app.router.add_get("/good.sh", good)
    app.router.add_get("/big.sh", big)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A local port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_file_install_makes_main_executable(tmp_path: Path) -> None:
    body = 'echo "dir=$POD_ACTIVITY_DIR name=$POD_ACTIVITY"\necho "echo hi" > main.sh\n'
    adir = await install(tmp_path, write_script(tmp_path, body))
    main = adir / "main.sh"
    mode = main.stat().st_mode
    assert mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) == 0o111
    log = (adir / ".pod-install.log").read_text()
    assert f"dir={adir} name=demo" in log
    assert (adir / ".pod-install.sh").read_text() == body


async def test_reinstall_clears_existing_dir(tmp_path: Path) -> None:
    url = write_script(tmp_path, "echo x > main.sh\n")
    adir = tmp_path / "activities" / "demo"
    adir.mkdir(parents=True)
    (adir / "stale.txt").write_text("old")
    await install(tmp_path, url)
    assert not (adir / "stale.txt").exists()
    assert (adir / "main.sh").exists()


async def test_failing_script_reports_code_and_tail(tmp_path: Path) -> None:
    body = "for i in $(seq 1 500); do echo line$i; done\necho 'apt failed' >&2\nexit 4\n"
    msg = await install_error(tmp_path, write_script(tmp_path, body), log_tail_bytes=100)
    assert msg.startswith("install script exited with code 4; last output:")
    assert msg.endswith("apt failed")
    assert "line500" in msg and "line1\n" not in msg


async def test_no_main_sh(tmp_path: Path) -> None:
    msg = await install_error(tmp_path, write_script(tmp_path, "echo nothing here\n"))
    assert "left no main.sh" in msg and msg.endswith("nothing here")


async def test_main_sh_directory_is_not_enough(tmp_path: Path) -> None:
    msg = await install_error(tmp_path, write_script(tmp_path, "mkdir main.sh\n"))
    assert "left no main.sh" in msg


async def test_timeout_kills_script_and_children(tmp_path: Path) -> None:
    body = "echo starting\nsleep 100 &\necho $! > child.pid\nsleep 100\n"
    msg = await install_error(tmp_path, write_script(tmp_path, body), install_timeout_s=0.5)
    assert msg.startswith("install script timed out after 0.5 s; last output:")
    assert msg.endswith("starting")
    child = int((tmp_path / "activities" / "demo" / "child.pid").read_text())
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("install child survived the timeout")


async def test_file_url_refused_when_not_allowed(tmp_path: Path) -> None:
    url = write_script(tmp_path, "echo x > main.sh\n")
    msg = await install_error(tmp_path, url, allow_file_urls=False)
    assert "file://" in msg and "not allowed" in msg
    with pytest.raises(ValueError):
        check_script_url(url, allow_file_urls=False)
    check_script_url(url, allow_file_urls=True)


async def test_missing_file(tmp_path: Path) -> None:
    msg = await install_error(tmp_path, (tmp_path / "nope.sh").as_uri())
    assert "could not read install script" in msg


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x.sh", "javascript:alert(1)", "example.com/x.sh", "",
     "http:///x.sh", "https://", "file://", "http://host:99999/x"],
)
def test_check_script_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        check_script_url(url, allow_file_urls=True)


@pytest.mark.parametrize(
    "url", ["http://example.com/x.sh", "HTTPS://example.com:8443/a/b?c=d"]
)
def test_check_script_url_accepts(url: str) -> None:
    check_script_url(url, allow_file_urls=False)


async def test_http_install(tmp_path: Path, http_base: str) -> None:
    adir = await install(tmp_path, f"{http_base}/good.sh", allow_file_urls=False)
    assert os.access(adir / "main.sh", os.X_OK)
    assert "installed demo" in (adir / ".pod-install.log").read_text()


async def test_http_404(tmp_path: Path, http_base: str) -> None:
    msg = await install_error(tmp_path, f"{http_base}/missing.sh")
    assert "could not download install script" in msg and "HTTP 404" in msg
    assert not (tmp_path / "activities" / "demo").exists()


async def test_unreachable_host(tmp_path: Path) -> None:
    msg = await install_error(tmp_path, f"http://127.0.0.1:{free_port()}/x.sh")
    assert msg.startswith("could not download install script from http://127.0.0.1:")


async def test_oversize_http_and_file(tmp_path: Path, http_base: str) -> None:
    with pytest.raises(InstallError, match="larger than"):
        await asyncio.wait_for(
            fetch_script(f"{http_base}/big.sh", allow_file_urls=False,
                         timeout_s=5, max_bytes=4000),
            DEADLINE_S,
        )
    assert await fetch_script(f"{http_base}/big.sh", allow_file_urls=False,
                              timeout_s=5, max_bytes=5000) == b"#" * 5000
    url = write_script(tmp_path, "#" * 5000)
    with pytest.raises(InstallError, match="larger than"):
        await fetch_script(url, allow_file_urls=True, timeout_s=5, max_bytes=4000)
    msg = await install_error(tmp_path, url, max_script_bytes=100)
    assert "larger than" in msg


async def test_fetch_timeout(tmp_path: Path) -> None:
    # A server that accepts the connection but never answers.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(InstallError, match="timed out"):
            await asyncio.wait_for(
                fetch_script(f"http://127.0.0.1:{port}/x", allow_file_urls=False,
                             timeout_s=0.3, max_bytes=1000),
                DEADLINE_S,
            )
    finally:
        server.close()


async def test_cancel_kills_install(tmp_path: Path) -> None:
    body = "echo $$ > self.pid\nsleep 100\n"
    task = asyncio.create_task(install(tmp_path, write_script(tmp_path, body)))
    pid_file = tmp_path / "activities" / "demo" / "self.pid"
    for _ in range(250):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, DEADLINE_S)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_remove_activity(tmp_path: Path) -> None:
    adir = tmp_path / "a" / "b"
    adir.mkdir(parents=True)
    (adir / "f").write_text("x")
    remove_activity(adir)
    assert not adir.exists()
    remove_activity(adir)  # missing is fine
