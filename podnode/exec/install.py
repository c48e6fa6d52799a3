"""Installing activities on a node.

An activity is installed by downloading an install script and running it with
bash inside the activity's own directory.  The script must leave an executable
``main.sh`` at the root of that directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

from .sandbox import Limits, Sandbox, plain

INSTALL_SCRIPT_NAME = ".pod-install.sh"
INSTALL_LOG_NAME = ".pod-install.log"
MAIN_SCRIPT_NAME = "main.sh"


class InstallError(Exception):
    """Installing an activity failed.

    ``str(e)`` is a message a person can act on; for a failed script it ends
    with the tail of the install log.
    """


def check_script_url(url: str, *, allow_file_urls: bool) -> None:
    """Raise ValueError if ``url`` is not an acceptable install script URL.

    Accepted: ``http``/``https`` URLs with a host, and ``file`` URLs with a
    path when ``allow_file_urls`` is true.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port number
    except ValueError as exc:
        raise ValueError(f"malformed install script URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"install script URL {url!r} has no host")
        return
    if scheme == "file":
        if not allow_file_urls:
            raise ValueError(
                f"file:// install script URLs are not allowed on this node: {url!r}"
            )
        if not parts.path:
            raise ValueError(f"install script URL {url!r} has no path")
        return
    shown = scheme or "(none)"
    raise ValueError(
        f"unsupported install script URL scheme {shown!r} in {url!r}; "
        "use http:// or https://"
    )


async def fetch_script(
    url: str, *, allow_file_urls: bool, timeout_s: float, max_bytes: int
) -> bytes:
    """Download the install script at ``url`` (http/https) or read it (file).

    Raises InstallError on a bad URL, a network failure or timeout, an HTTP
    error status, a missing file, or a script larger than ``max_bytes``.
    """
    try:
        check_script_url(url, allow_file_urls=allow_file_urls)
    except ValueError as exc:
        raise InstallError(str(exc)) from None
    if urlsplit(url).scheme.lower() == "file":
        return _read_file_script(url, max_bytes)
    try:
        return await asyncio.wait_for(_http_get(url, max_bytes), timeout_s)
    except asyncio.TimeoutError:
        reason = f"timed out after {timeout_s:g} s"
    except aiohttp.ClientError as exc:
        reason = str(exc) or type(exc).__name__
    except OSError as exc:
        reason = str(exc) or type(exc).__name__
    raise InstallError(f"could not download install script from {url}: {reason}")


def _read_file_script(url: str, max_bytes: int) -> bytes:
    """Read a ``file://`` install script, enforcing ``max_bytes``."""
    path = Path(unquote(urlsplit(url).path))
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise InstallError(
            f"could not read install script {path}: {exc.strerror or exc}"
        ) from None
    if len(data) > max_bytes:
        raise InstallError(
            f"install script {url} is larger than the limit of {max_bytes} bytes"
        )
    return data


async def _http_get(url: str, max_bytes: int) -> bytes:
    """GET ``url``; raise InstallError on HTTP >= 400 or an oversize body."""
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            if resp.status >= 400:
                raise InstallError(
                    f"could not download install script from {url}: "
                    f"HTTP {resp.status} {resp.reason or ''}".rstrip()
                )
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise _too_large(url, max_bytes)
            buf = bytearray()
            async for chunk in resp.content.iter_chunked(65536):
                buf += chunk
                if len(buf) > max_bytes:
                    raise _too_large(url, max_bytes)
            return bytes(buf)


def _too_large(url: str, max_bytes: int) -> InstallError:
    return InstallError(
        f"install script at {url} is larger than the limit of {max_bytes} bytes"
    )


def _read_tail(path: Path, tail_bytes: int) -> str:
    """The last ``tail_bytes`` bytes of ``path`` as text ('' if unreadable). The directory belongs to the
    run-as user: a symlink or a FIFO put there is not followed or opened for reading."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return ""
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - tail_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").strip()
    return text if text else "(no output)"


def _prepare_dir(activity_dir: Path, sandbox: Sandbox) -> None:
    """Create ``activity_dir`` (0700, the run-as user's), clearing it first if it already exists."""
    if activity_dir.exists() or activity_dir.is_symlink():
        remove_activity(activity_dir)
    activity_dir.parent.mkdir(parents=True, exist_ok=True)
    activity_dir.mkdir(mode=0o700)
    sandbox.own(activity_dir)


async def _run_script(
    name: str, activity_dir: Path, timeout_s: float, sandbox: Sandbox, limits: Limits | None = None
) -> int | None:
    """Run the install script in the sandbox; return its exit code, or None on timeout."""
    env = sandbox.env(activity_dir, {"POD_ACTIVITY": name, "POD_ACTIVITY_DIR": str(activity_dir)})
    log_path = activity_dir / INSTALL_LOG_NAME
    script = activity_dir / INSTALL_SCRIPT_NAME
    sandbox.own(script)
    # The node writes the log (the run-as user cannot swap it for a link to a file of root's).
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    cell = sandbox.cell(f"install-{name}", limits)
    try:
        with os.fdopen(fd, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *cell.argv(["bash", INSTALL_SCRIPT_NAME]),
                cwd=activity_dir, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
    except BaseException:
        cell.close()
        raise
    cell.started(proc.pid)
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s)
    except asyncio.TimeoutError:
        return None
    finally:
        # Kill leftovers (background children, or everything on timeout or
        # cancellation) so nothing from the install outlives it.
        cell.signal(signal.SIGKILL, thorough=True)
        if proc.returncode is None:
            await asyncio.shield(proc.wait())
        for _ in range(100):
            if cell.close():
                break
            await asyncio.sleep(0.02)


def _ensure_main_executable(main: Path) -> bool:
    """Make ``main`` executable; return False if it is not a regular file. Never follows a symlink: the
    directory is the run-as user's, and the node (root) must not chmod a file it points to."""
    try:
        fd = os.open(main, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        want = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        if st.st_mode & want != want:
            os.fchmod(fd, st.st_mode | want)
        return True
    finally:
        os.close(fd)


async def install_activity(
    *,
    name: str,
    url: str,
    activity_dir: Path,
    allow_file_urls: bool,
    fetch_timeout_s: float,
    install_timeout_s: float,
    log_tail_bytes: int = 2000,
    max_script_bytes: int = 1024 * 1024,
    sandbox: Sandbox | None = None,
    limits: Limits | None = None,
) -> None:
    """Install activity ``name`` into ``activity_dir`` from the script at ``url``.

    The directory is (re)created, the script is fetched, saved as
    ``.pod-install.sh`` and run with bash in its own process group, with
    output going to ``.pod-install.log``.  Raises InstallError if fetching
    fails, the script fails or times out, or no ``main.sh`` is left behind.
    """
    activity_dir = Path(activity_dir).absolute()
    sandbox = sandbox or plain()
    script = await fetch_script(
        url, allow_file_urls=allow_file_urls,
        timeout_s=fetch_timeout_s, max_bytes=max_script_bytes,
    )
    try:
        _prepare_dir(activity_dir, sandbox)
        (activity_dir / INSTALL_SCRIPT_NAME).write_bytes(script)
        code = await _run_script(name, activity_dir, install_timeout_s, sandbox, limits)
    except OSError as exc:
        raise InstallError(f"could not run install script in {activity_dir}: {exc}") from None
    tail = _read_tail(activity_dir / INSTALL_LOG_NAME, log_tail_bytes)
    if code is None:
        raise InstallError(
            f"install script timed out after {install_timeout_s:g} s; last output: {tail}"
        )
    if code != 0:
        raise InstallError(f"install script exited with code {code}; last output: {tail}")
    if not _ensure_main_executable(activity_dir / MAIN_SCRIPT_NAME):
        raise InstallError(
            "install script finished but left no main.sh in the activity "
            f"directory; last output: {tail}"
        )


def remove_activity(activity_dir: Path) -> None:
    """Delete ``activity_dir`` and everything in it; a missing dir is fine."""
    path = Path(activity_dir)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
        return
    shutil.rmtree(path, ignore_errors=True)
