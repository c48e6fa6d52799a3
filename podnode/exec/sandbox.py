"""Where executions and install scripts run: as an unprivileged user, in a clean environment, in a cgroup.

One `Sandbox` per node, chosen at start (`Sandbox.create`): the run-as user (when the node is root), the cgroup
backend (v2 where it has the memory and pids controllers, else v1 pids + memory, else none: a session of its own
plus rlimits) and the node-wide default `Limits`. Each execution or install gets a `Cell`: its cgroup, created
before the spawn, and the argv that puts the process into it.

The spawn stays on Popen's fast (vfork) path: no preexec_fn, no user= (Popen falls back to fork() for those, a
copy of the node's page tables on its event loop). Instead the argv starts with `pod-spawn` (spawn.c, built
on first use with the machine's C compiler): it writes its own pid into the cell's cgroup.procs (or sets
rlimits where there is no cgroup), drops to the run-as user (setgroups, setresgid, setresuid, no_new_privs) and
execs main.sh: one exec more than main.sh alone. Where it cannot be built (no compiler), the argv is a root
`sh` wrapper that does the same and execs `setpriv`, which execs main.sh: two execs more, about 1.5 ms of CPU
more per execution than the helper. Either joins before main.sh exists, so nothing main.sh starts can escape
the cgroup, nor runs as root.

A node keeps one pod-spawn per slot armed ahead (exec/armed.py, `pod-spawn -a`): it has joined a cell already,
which on cgroup v1 takes an RCU grace period (8-11 ms) when no move happened lately, and waits as root for its
job; an execution that finds one ready skips the spawn and the move (`Sandbox.armed`, used by the runner).

A node SIGKILLed cannot clean up, so `Sandbox.create` starts one reaper per node (exec/reaper.py) that waits
for the node's death and then kills every process in the node's cgroups.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import pwd
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .reaper import session_members

log = logging.getLogger(__name__)

SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_RUN_AS = "pod"
WRAPPER_FAILED = 125   # the wrapper's (and pod-spawn's) exit code when it could not join the cgroup or set a limit
SPAWN_SOURCE = Path(__file__).with_name("spawn.c")
SPAWN_ENV = "POD_SANDBOX_SPAWN"   # "wrapper": use the sh + setpriv wrapper even where pod-spawn builds
COMPILERS = ("cc", "gcc", "clang")
COMPILE_TIMEOUT_S = 120.0
CGROUP_MODES = ("auto", "v2", "v1", "none")
POOL_MAX = 64          # empty cells a node keeps for reuse
V2_CONTROLLERS = ("memory", "pids")


# ---------------------------------------------------------------------------------------------------- limits

@dataclass(frozen=True)
class Limits:
    """What one execution (or install script) may use. None: no limit. A per-activity value overrides the node's
    default with `Limits.over`."""
    timeout_s: float | None = None       # wall-clock seconds, then it is killed and ends "error"
    memory_mb: int | None = None         # memory.max / memory.limit_in_bytes; RLIMIT_AS without a cgroup
    max_processes: int | None = None     # pids.max (processes and threads); RLIMIT_NPROC without a cgroup

    def over(self, defaults: Limits) -> Limits:
        """These values where set, else `defaults`'."""
        return Limits(**{f: getattr(defaults, f) if getattr(self, f) is None else getattr(self, f)
                         for f in ("timeout_s", "memory_mb", "max_processes")})

    @classmethod
    def parse(cls, *, timeout_s: float | None = None, memory_mb: int | None = None,
              max_processes: int | None = None) -> Limits:
        """From config values where 0 (or None) means no limit; negative values are refused."""
        for name, value in (("timeout_s", timeout_s), ("memory_mb", memory_mb), ("max_processes", max_processes)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (0: no limit), got {value}")
        return cls(timeout_s=float(timeout_s) if timeout_s else None, memory_mb=int(memory_mb) if memory_mb else None,
                   max_processes=int(max_processes) if max_processes else None)


# ---------------------------------------------------------------------------------------------------- environment

def build_env(home: Path, pod_vars: dict[str, str], *, lang: str | None = None) -> dict[str, str]:
    """The whole environment of an execution or install script: a fixed PATH, HOME (the activity's directory),
    LANG, and the POD_* variables given. Nothing of the node's own environment (its secret, tokens) gets in."""
    env = {"PATH": SANE_PATH, "HOME": str(home), "LANG": lang or os.environ.get("LANG") or "C.UTF-8"}
    env.update({k: str(v) for k, v in pod_vars.items()})
    return env


# ---------------------------------------------------------------------------------------------------- run-as user

@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int


def resolve_run_as(name: str | None, *, create: bool = True) -> RunAs | None:
    """The user executions run as when the node is root: `name` (default pod), created as a system user if
    missing. None when the node is not root (executions run as the node's user) or `name` is root. Raises
    SystemExit, saying why, when the user does not exist and cannot be created."""
    if os.geteuid() != 0:
        return None
    name = name or DEFAULT_RUN_AS
    if name == "root":
        log.warning("--run-as root: executions and install scripts run as root")
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if not create:
            raise SystemExit(f"podnode: the run-as user {name!r} does not exist") from None
        pw = _create_user(name)
    if pw.pw_uid == 0:
        raise SystemExit(f"podnode: the run-as user {name!r} has uid 0; pick an unprivileged user")
    return RunAs(name=name, uid=pw.pw_uid, gid=pw.pw_gid)


def _create_user(name: str) -> pwd.struct_passwd:
    nologin = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(p)), "/bin/false")
    useradd = shutil.which("useradd", path=SANE_PATH)
    if useradd is None:
        raise SystemExit(f"podnode: the run-as user {name!r} does not exist and there is no useradd to create "
                         "it; create it, or pass --run-as USER")
    proc = subprocess.run([useradd, "--system", "--no-create-home", "--user-group", "--shell", nologin, name],
                          capture_output=True, text=True)
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise SystemExit(f"podnode: could not create the run-as user {name!r}: "
                         f"{(proc.stderr or proc.stdout).strip() or f'useradd exited {proc.returncode}'}; "
                         "create it, or pass --run-as USER") from None
    log.info("created the run-as user %s (uid %d)", name, pw.pw_uid)
    return pw


# ---------------------------------------------------------------------------------------------------- cgroups

def cgroup_name(node_id: str, pid: int) -> str:
    """The node's own cgroup directory name: unique on the host while the node runs (several nodes, of several
    clusters, may run on one machine)."""
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in node_id)
    return f"pod-{safe}-{pid}"


def own_cgroup(proc_cgroup_text: str, *, v2: bool, controller: str = "") -> str:
    """This process's cgroup path in one hierarchy, from /proc/self/cgroup ('/' when not listed)."""
    for line in proc_cgroup_text.splitlines():
        num, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if v2 and num == "0" and ctrls == "":
            return path or "/"
        if not v2 and controller in ctrls.split(","):
            return path or "/"
    return "/"


def mounts(mounts_text: str) -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of every cgroup or cgroup2 mount in /proc/self/mounts."""
    out = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
            out.append((fields[1], fields[2], set(fields[3].split(","))))
    return out


class Cgroups:
    """A cgroup backend: one directory per hierarchy for the node, a subdirectory per cell."""
    version = "none"

    def __init__(self, node_dirs: list[Path]):
        self.node_dirs = node_dirs          # the node's own directory in each hierarchy used
        self._free: list[str] = []          # empty cells kept for the next run: no mkdir/rmdir per execution
        self._applied: dict[str, Limits] = {}
        self._dirs: dict[str, list[Path]] = {}   # each cell's directories, kept with it: no path joins per run
        self._procs: dict[str, list[str]] = {}   # and its cgroup.procs files, as the spawn's arguments
        self._seq = 0

    def acquire(self, limits: Limits, name: str | None = None) -> tuple[str, list[Path]]:
        """A cell for one run: an empty one kept from an earlier run, else a new one; with these limits. `name`:
        a cell acquired before (an armed spawn's, exec/armed.py), now given the run's limits."""
        if name is not None:
            pass
        elif self._free:
            name = self._free.pop()
        else:
            self._seq += 1
            name = f"cell-{self._seq}"
        before = self._applied.get(name)
        if before == limits:   # a kept cell with these very limits: nothing to write
            return name, self._dirs[name]
        try:
            dirs = self.create(name, limits, before or Limits(), make=before is None)
        except OSError:
            self._applied.pop(name, None)
            self._dirs.pop(name, None)
            self.remove([n / name for n in self.node_dirs])
            raise
        self._applied[name] = limits
        self._dirs[name] = dirs
        self._procs[name] = [str(f) for f in self.procs_files(dirs)]
        return name, dirs

    def cell_procs(self, name: str) -> list[str]:
        """The cgroup.procs files of an acquired cell."""
        return self._procs[name]

    def release(self, name: str, dirs: list[Path], *, empty: bool = False) -> bool:
        """Kill what is left in the cell and keep it for the next run (or remove it, past POOL_MAX); False while
        a dying process is still in it (call again). `empty`: the caller has just seen it empty (after main's
        exit nothing can enter it again but a spawn into it), so it is not read again."""
        if not empty and self.kill(dirs, signal.SIGKILL):   # some were still there (dying now)
            return False
        if len(self._free) < POOL_MAX:
            self._free.append(name)
            return True
        if self.remove(dirs):
            self._applied.pop(name, None)
            self._dirs.pop(name, None)
            self._procs.pop(name, None)
            return True
        return False

    def oom_count(self, dirs: list[Path]) -> int:
        return 0

    def setup(self) -> None:
        for d in self.node_dirs:
            d.mkdir(exist_ok=True)

    def create(self, name: str, limits: Limits, before: Limits = Limits(), *, make: bool = True) -> list[Path]:
        """Make (`make`) or reuse the cell's directories and write the limits that differ from `before`'s."""
        raise NotImplementedError

    def procs_files(self, dirs: list[Path]) -> list[Path]:
        return [d / "cgroup.procs" for d in dirs]

    def kill(self, dirs: list[Path], sig: int = signal.SIGKILL) -> int:
        """Signal every process in the cell; how many were signalled."""
        return signal_pids(read_pids(dirs[0]), sig)

    def remove(self, dirs: list[Path]) -> bool:
        """rmdir the cell's directories; False while a process (dying) is still in one."""
        ok = True
        for d in dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok


class CgroupV2(Cgroups):
    version = "v2"

    def setup(self) -> None:
        node = self.node_dirs[0]
        _enable_controllers(node.parent)
        node.mkdir(exist_ok=True)
        _enable_controllers(node)

    def create(self, name: str, limits: Limits, before: Limits = Limits(), *, make: bool = True) -> list[Path]:
        d = self.node_dirs[0] / name
        if make:
            d.mkdir(exist_ok=True)
        if limits.memory_mb != before.memory_mb:
            _write(d / "memory.max", str(limits.memory_mb * 1024 * 1024) if limits.memory_mb else "max")
            with contextlib.suppress(OSError):   # no swap accounting: nothing to cap
                _write(d / "memory.swap.max", "0" if limits.memory_mb else "max")
        if limits.max_processes != before.max_processes:
            _write(d / "pids.max", str(limits.max_processes or "max"))
        return [d]

    def kill(self, dirs: list[Path], sig: int = signal.SIGKILL) -> int:
        pids = read_pids(dirs[0])
        if not pids:   # empty: nothing can enter it but a spawn into it, so there is nothing to kill
            return 0
        if sig == signal.SIGKILL:
            with contextlib.suppress(OSError):
                _write(dirs[0] / "cgroup.kill", "1")
                return len(pids)
        return signal_pids(pids, sig)

    def oom_count(self, dirs: list[Path]) -> int:
        return _counter(dirs[0] / "memory.events", "oom_kill")


class CgroupV1(Cgroups):
    """pids and memory hierarchies; node_dirs = [pids dir, memory dir]."""
    version = "v1"

    def create(self, name: str, limits: Limits, before: Limits = Limits(), *, make: bool = True) -> list[Path]:
        pids_dir, mem_dir = (d / name for d in self.node_dirs)
        if make:
            pids_dir.mkdir(exist_ok=True)
            mem_dir.mkdir(exist_ok=True)
        if limits.max_processes != before.max_processes:
            _write(pids_dir / "pids.max", str(limits.max_processes or "max"))
        if limits.memory_mb != before.memory_mb:
            size = str(limits.memory_mb * 1024 * 1024) if limits.memory_mb else "-1"
            # memory + swap (where swap is accounted) may never be below memory: write in the order that keeps it
            files = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            if not limits.memory_mb or (before.memory_mb and limits.memory_mb > before.memory_mb):
                files.reverse()
            for fname in files:
                try:
                    _write(mem_dir / fname, size)
                except OSError:
                    if fname == "memory.limit_in_bytes":
                        raise
        return [pids_dir, mem_dir]

    def oom_count(self, dirs: list[Path]) -> int:
        return _counter(dirs[1] / "memory.oom_control", "oom_kill")


def _write(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _enable_controllers(d: Path) -> None:
    have = set((d / "cgroup.subtree_control").read_text().split())
    want = [c for c in V2_CONTROLLERS if c not in have]
    if want:
        _write(d / "cgroup.subtree_control", " ".join("+" + c for c in want))


def read_pids(d: Path) -> list[int]:
    """The pids in cgroup directory `d` ([] if none or unreadable). Read with os calls: once or twice per run."""
    try:
        fd = os.open(f"{d}/cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        return [int(p) for p in data.split()]
    except (OSError, ValueError):
        return []
    finally:
        os.close(fd)


def signal_pids(pids: Iterable[int], sig: int) -> int:
    n = 0
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            n += 1
    return n


def detect_cgroups(mode: str, node_dir_name: str, *, mounts_text: str | None = None,
                   self_cgroup: str | None = None) -> tuple[Cgroups | None, str]:
    """The backend to use and a sentence saying why: v2 where its root offers the memory and pids controllers,
    else v1 pids + memory (nested in the node's own cgroups), else None."""
    if mode not in CGROUP_MODES:
        raise ValueError(f"cgroups must be one of {', '.join(CGROUP_MODES)}, got {mode!r}")
    if mode == "none":
        return None, "cgroups off (--cgroups none)"
    mounts_text = Path("/proc/self/mounts").read_text() if mounts_text is None else mounts_text
    self_cgroup = Path("/proc/self/cgroup").read_text() if self_cgroup is None else self_cgroup
    found = mounts(mounts_text)
    reasons = []
    if mode in ("auto", "v2"):
        v2 = next((m for m, t, _ in found if t == "cgroup2"), None)
        if v2 is None:
            reasons.append("no cgroup2 mount")
        else:
            base = Path(v2) / "pod"
            try:
                have = set((Path(v2) / "cgroup.controllers").read_text().split())
                missing = [c for c in V2_CONTROLLERS if c not in have]
                if missing:
                    raise OSError(f"its root lacks the {' and '.join(missing)} controller")
                backend = CgroupV2([base / node_dir_name])
                base.mkdir(exist_ok=True)
                backend.setup()
                return backend, f"cgroup v2 at {base / node_dir_name}"
            except OSError as exc:
                reasons.append(f"cgroup v2 at {v2} unusable: {exc}")
    if mode in ("auto", "v1"):
        dirs = []
        for ctrl in ("pids", "memory"):
            point = next((m for m, t, opts in found if t == "cgroup" and ctrl in opts), None)
            if point is None:
                reasons.append(f"no cgroup v1 {ctrl} hierarchy")
                break
            dirs.append(Path(point + own_cgroup(self_cgroup, v2=False, controller=ctrl).rstrip("/"))
                        / node_dir_name)
        if len(dirs) == 2:
            backend = CgroupV1(dirs)
            try:
                backend.setup()
                return backend, f"cgroup v1 at {dirs[0]} and {dirs[1]}"
            except OSError as exc:
                reasons.append(f"cgroup v1 unusable: {exc}")
    return None, "; ".join(reasons) or "no cgroups"


# ---------------------------------------------------------------------------------------------------- the wrapper

def wrapper_argv(command: list[str], *, procs_files: list[Path | str], rlimits: Limits | None,
                 run_as: RunAs | None, setpriv: str | None, as_root: bool) -> list[str]:
    """argv that joins the cgroups (writing its own pid into each cgroup.procs), sets the rlimits, drops to the
    run-as user and execs `command`. Paths and the command are positional arguments, never spliced into the
    script; the script is built from integers and constants only. Just `command` when there is nothing to do."""
    lines = []
    for i in range(len(procs_files)):
        lines.append(f'echo $$ > "${i + 1}" || exit {WRAPPER_FAILED}')
    if rlimits is not None and rlimits.memory_mb:
        lines.append(f"ulimit -v {rlimits.memory_mb * 1024} || exit {WRAPPER_FAILED}")
    if rlimits is not None and rlimits.max_processes and (run_as is not None or not as_root):
        lines.append(f"ulimit -p {rlimits.max_processes} || exit {WRAPPER_FAILED}")
    drop = []
    if run_as is not None:
        drop = [setpriv, f"--reuid={run_as.uid}", f"--regid={run_as.gid}", "--clear-groups", "--no-new-privs",
                "--"]
    if not lines:
        return drop + command
    lines.append(f"shift {len(procs_files)}")
    lines.append('exec "$@"')
    return ["/bin/sh", "-c", "\n".join(lines), "pod-sandbox", *map(str, procs_files), *drop, *command]


def helper_argv(command: list[str], *, helper: str, procs_files: list[Path | str], rlimits: Limits | None,
                run_as: RunAs | None, as_root: bool) -> list[str]:
    """argv that has `pod-spawn` (spawn.c) do in one exec what `wrapper_argv`'s sh and setpriv do in two: join
    the cgroups, set the rlimits, drop to the run-as user, exec `command`. Just `command` when there is nothing
    to do."""
    args: list[str] = []
    for f in procs_files:
        args += ["-c", str(f)]
    args += spawn_options(rlimits=rlimits, run_as=run_as, as_root=as_root)
    if not args:
        return command
    return [helper, *args, "--", *command]


def spawn_options(*, rlimits: Limits | None, run_as: RunAs | None, as_root: bool) -> list[str]:
    """pod-spawn's options after the cgroups: the rlimits (where there is no cgroup) and the user switch."""
    args: list[str] = []
    if rlimits is not None and rlimits.memory_mb:
        args += ["-v", str(rlimits.memory_mb * 1024)]
    if rlimits is not None and rlimits.max_processes and (run_as is not None or not as_root):
        args += ["-p", str(rlimits.max_processes)]
    if run_as is not None:
        args += ["-u", str(run_as.uid), "-g", str(run_as.gid)]
    return args


_helper_cache: dict[str, tuple[str | None, str]] = {}


def spawn_helper() -> tuple[str | None, str]:
    """The path of `pod-spawn`, built from spawn.c on first use (once per machine and version of spawn.c), and
    a sentence saying how executions are spawned; (None, why) where it cannot be had: then the sh + setpriv
    wrapper does the same in two execs. $POD_SANDBOX_SPAWN=wrapper keeps the wrapper (for comparisons)."""
    mode = os.environ.get(SPAWN_ENV, "auto")
    if mode == "wrapper":
        return None, f"sh + setpriv wrapper (${SPAWN_ENV}=wrapper)"
    if mode not in _helper_cache:
        _helper_cache[mode] = _find_or_build_helper()
    return _helper_cache[mode]


def _find_or_build_helper() -> tuple[str | None, str]:
    try:
        source = SPAWN_SOURCE.read_bytes()
    except OSError as exc:
        return None, f"sh + setpriv wrapper (no pod-spawn source: {exc})"
    name = f"pod-spawn-{hashlib.sha256(source).hexdigest()[:16]}-{platform.machine() or 'unknown'}"
    reasons = []
    dirs = _helper_dirs()
    for d in dirs:   # built before (by this node's user, or at an earlier start)
        path = d / name
        if path.exists():
            why = _unsafe(path) or _smoke_test(path)
            if why is None:
                return str(path), f"pod-spawn helper {path}"
            reasons.append(why)
    compiler = next((c for c in map(shutil.which, COMPILERS) if c), None)
    if compiler is None:
        return None, "sh + setpriv wrapper (no C compiler to build pod-spawn: install cc or gcc)"
    for d in dirs:
        path = d / name
        if path.exists():
            continue   # there but unusable (above)
        why = _build(compiler, d, path)
        if why is None:
            why = _unsafe(path) or _smoke_test(path)
        if why is None:
            log.info("built %s with %s", path, compiler)
            return str(path), f"pod-spawn helper {path}, built now"
        reasons.append(why)
    return None, f"sh + setpriv wrapper (pod-spawn unusable: {'; '.join(reasons)})"


def _helper_dirs() -> list[Path]:
    """Where pod-spawn is kept: beside the package's bytecode, else in the user's cache directory. The node runs
    it as root: both are its user's own (checked after building, `_unsafe`)."""
    dirs = [SPAWN_SOURCE.parent / "__pycache__"]
    try:
        dirs.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "podnode")
    except (RuntimeError, KeyError):   # no home directory
        pass
    return dirs


def _build(compiler: str, d: Path, path: Path) -> str | None:
    """Compile spawn.c to `path` (statically where the C library allows: one exec less to link it); None on
    success, else why not. Built under a temporary name and renamed: nodes starting together may both build."""
    tmp = d / f".{path.name}.{os.getpid()}.tmp"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        return f"cannot create {d}: {exc}"
    err = ""
    try:
        for static in (["-static"], []):
            try:
                proc = subprocess.run([compiler, "-O2", *static, "-o", str(tmp), str(SPAWN_SOURCE)],
                                      capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S,
                                      stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"{compiler} failed: {exc}"
            if proc.returncode == 0:
                os.chmod(tmp, 0o755)
                os.replace(tmp, path)
                return None
            err = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            err = err[0]
        return f"{compiler} could not build {SPAWN_SOURCE.name}: {err}"
    except OSError as exc:
        return f"cannot write {path}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _unsafe(path: Path) -> str | None:
    """Why `path` may not be run by the node (as root), or None: it and its directory must belong to the node's
    user (or root) and be writable by no one else."""
    for p in (path, path.parent):
        try:
            st = os.lstat(p)
        except OSError as exc:
            return f"{p}: {exc}"
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or \
                (p == path and not stat.S_ISREG(st.st_mode)):
            return f"{p} is not the node user's own, or is writable by others"
    return None


def _smoke_test(path: Path) -> str | None:
    """Run the helper once (`pod-spawn -- true`): a build that cannot run is not used."""
    true = shutil.which("true", path=SANE_PATH) or "/bin/true"
    try:
        proc = subprocess.run([str(path), "--", true], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL, env={"PATH": SANE_PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} does not run: {exc}"
    return None if proc.returncode == 0 else f"{path} does not run: exit {proc.returncode} {proc.stderr.strip()}"


# ---------------------------------------------------------------------------------------------------- the sandbox

class Cell:
    """One execution's (or install's) place in the sandbox: its cgroup directories (none without cgroups)."""

    def __init__(self, sandbox: Sandbox, name: str, limits: Limits, cgroup: str | None = None):
        """`cgroup`: the cell an armed spawn has joined (exec/armed.py), given these limits now; else a cell is
        acquired."""
        self.sandbox = sandbox
        self.name = name
        self.limits = limits
        self.dirs: list[Path] = []
        self.pgid: int | None = None
        self._oom_before = 0
        self._seen_empty = False   # a SIGKILL found the cgroup empty: close() need not look again
        cg = sandbox.cgroups
        if cg is not None:
            self.cgroup, self.dirs = cg.acquire(limits, cgroup)
            if limits.memory_mb:   # the OOM killer's count before this run, to tell whether it killed in it
                self._oom_before = cg.oom_count(self.dirs)

    def argv(self, command: list[str]) -> list[str]:
        sb = self.sandbox
        files = sb.cgroups.cell_procs(self.cgroup) if sb.cgroups is not None and self.dirs else []
        rlimits = None if sb.cgroups is not None else self.limits
        if sb.helper is not None:
            return helper_argv(command, helper=sb.helper, procs_files=files, rlimits=rlimits, run_as=sb.run_as,
                               as_root=os.geteuid() == 0)
        return wrapper_argv(command, procs_files=files, rlimits=rlimits, run_as=sb.run_as, setpriv=sb.setpriv,
                            as_root=os.geteuid() == 0)

    def started(self, pid: int) -> None:
        """main's pid (the leader of its own session)."""
        self.pgid = pid
        self.sandbox.reaper_note("+", pid)

    def signal(self, sig: int, *, thorough: bool = False, exited: bool = False) -> None:
        """Signal every process of the cell: its cgroup, else its session (`thorough`: and every descendant of
        main still in the process tree, and their groups; a walk of /proc, so for terminate and timeouts, not
        for every exit). `exited`: main has exited (and was reaped): a cgroup found empty now stays empty (only
        main's own spawn could enter it), so close() need not read it again."""
        if self.sandbox.cgroups is not None and self.dirs:
            self._killpg(sig)   # main's group first: main ends by the signal, not by seeing its child killed
            n = self.sandbox.cgroups.kill(self.dirs, sig)
            self._seen_empty = exited and n == 0
            return
        if thorough and self.pgid is not None:   # main's descendants are found through main: it goes last
            signal_pids(session_members({self.pgid}), sig)
        self._killpg(sig)

    def _killpg(self, sig: int) -> None:
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)

    def empty(self) -> bool:
        if self.sandbox.cgroups is not None and self.dirs:
            return not read_pids(self.dirs[0])
        return True

    def oom_killed(self) -> bool:
        """Did the kernel's OOM killer kill a process of this run (its memory limit)?"""
        return bool(self.dirs) and bool(self.limits.memory_mb) and \
            self.sandbox.cgroups.oom_count(self.dirs) > self._oom_before

    def close(self) -> bool:
        """Kill what is left and remove the cgroup; False while it still holds a dying process (call again)."""
        if self.pgid is not None:
            self.sandbox.reaper_note("-", self.pgid)
            self.pgid = None
        if not self.dirs:
            return True
        if self.sandbox.cgroups.release(self.cgroup, self.dirs, empty=self._seen_empty):
            self.dirs = []
            return True
        self._seen_empty = False
        return False


class Sandbox:
    """The node's sandbox: who runs executions, in which cgroups, with which default limits."""

    def __init__(self, *, run_as: RunAs | None = None, cgroups: Cgroups | None = None,
                 defaults: Limits = Limits(), setpriv: str | None = None, lang: str | None = None,
                 helper: str | None = None, spawn: str = "sh + setpriv wrapper"):
        self.run_as = run_as
        self.cgroups = cgroups
        self.defaults = defaults
        self.setpriv = setpriv
        self.helper = helper   # pod-spawn's path; None: the sh + setpriv wrapper
        self.spawn = spawn     # how executions are spawned, in words (the log, /status)
        self.lang = lang
        self.armed = None      # the spawns armed ahead of executions (exec/armed.py's ArmedPool), if any
        self._reaper: subprocess.Popen | None = None

    @property
    def description(self) -> str:
        who = f"as user {self.run_as.name} (uid {self.run_as.uid})" if self.run_as else f"as uid {os.geteuid()}"
        where = f"cgroup {self.cgroups.version}" if self.cgroups else "own session + rlimits"
        return f"executions run {who}, {where}, spawned by {self.spawn}"

    @classmethod
    def create(cls, *, node_id: str, run_as: str | None, cgroups: str, defaults: Limits,
               reaper: bool = True) -> Sandbox:
        """Detect and set up the node's sandbox (logging which); start its reaper."""
        user = resolve_run_as(run_as)
        helper, spawn = spawn_helper()
        setpriv = None
        if user is not None and helper is None:
            setpriv = shutil.which("setpriv", path=SANE_PATH)
            if setpriv is None:
                raise SystemExit(f"podnode: running as root needs setpriv (util-linux) to run executions as "
                                 f"{user.name} without pod-spawn ({spawn}); install one of them")
        backend, why = detect_cgroups(cgroups, cgroup_name(node_id, os.getpid())) if os.geteuid() == 0 or \
            cgroups != "auto" else (None, "not root: no cgroups of its own")
        if cgroups in ("v1", "v2") and (backend is None or backend.version != cgroups):
            raise SystemExit(f"podnode: --cgroups {cgroups} is not available here: {why}")
        if backend is not None:
            sweep_stale(backend.node_dirs)
        sb = cls(run_as=user, cgroups=backend, defaults=defaults, setpriv=setpriv, helper=helper, spawn=spawn)
        log.info("sandbox: %s (%s); default limits %s", sb.description, why, defaults)
        if reaper:
            sb.start_reaper()
        return sb

    def cell(self, name: str, limits: Limits | None = None, *, cgroup: str | None = None) -> Cell:
        return Cell(self, name, (limits or Limits()).over(self.defaults), cgroup)

    def env(self, home: Path, pod_vars: dict[str, str]) -> dict[str, str]:
        return build_env(home, pod_vars, lang=self.lang)

    def own(self, path: Path) -> None:
        """Give `path` (an activity's directory) to the run-as user."""
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid, follow_symlinks=False)

    def open_to_run_as(self, path: Path) -> None:
        """Let the run-as user pass through `path` (the data dir, the activities dir), nothing more: root:GROUP
        0710. Without a run-as user: 0700."""
        path.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            os.chown(path, 0, self.run_as.gid)
            path.chmod(0o710)
        else:
            path.chmod(0o700)

    # ---- the reaper -------------------------------------------------------------------------------------
    def start_reaper(self) -> None:
        """One process per node that kills every process of the node's cells once the node is gone (even
        SIGKILLed): it waits on a pidfd of the node and on EOF of a pipe only the node holds."""
        dirs = [str(d) for d in self.cgroups.node_dirs] if self.cgroups is not None else []
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "podnode.exec.reaper", str(os.getpid()), *dirs],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, close_fds=True, start_new_session=True,
            env={"PATH": SANE_PATH, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})

    def reaper_note(self, op: str, pgid: int) -> None:
        """Without cgroups, the reaper kills the sessions (and their descendants) the node has told it of."""
        if self.cgroups is None and self._reaper is not None and self._reaper.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self._reaper.stdin.write(f"{op}{pgid}\n".encode())
                self._reaper.stdin.flush()

    def disarm(self) -> None:
        """The armed spawns go (in the loop's thread: the pool is the loop's)."""
        if self.armed is not None:
            self.armed.close()
            self.armed = None

    def close(self) -> None:
        """At the node's stop: the armed spawns go (if `disarm` was not called); the reaper cleans up (kills what
        is left, removes the cgroups) and exits."""
        self.disarm()
        if self._reaper is None:
            return
        with contextlib.suppress(OSError):
            self._reaper.stdin.close()
        try:
            self._reaper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._reaper.kill()
            self._reaper.wait()
        self._reaper = None


def plain() -> Sandbox:
    """No user switch, no cgroup, no default limit: a clean environment and a session of its own."""
    return Sandbox()


def sweep_stale(node_dirs: list[Path]) -> list[Path]:
    """Remove what nodes no longer running left beside this node's cgroup directories (their reaper was killed
    with them): `pod-ID-PID` whose PID is no podnode, after killing anything still in them."""
    from ..local.procs import is_node_process
    from .reaper import cleanup
    stale = []
    for parent in {d.parent for d in node_dirs}:
        with contextlib.suppress(OSError):
            for d in parent.glob("pod-*-*"):
                pid = d.name.rpartition("-")[2]
                if d.is_dir() and d not in node_dirs and pid.isdigit() and not is_node_process(int(pid)):
                    stale.append(d)
    if stale:
        log.warning("removing the cgroups of nodes no longer running: %s", ", ".join(map(str, stale)))
        cleanup(stale, set())
    return stale


def node_limits(cfg) -> Limits:
    """The node-wide default limits of a NodeConfig (its exec_* fields)."""
    return Limits.parse(timeout_s=cfg.exec_timeout_s, memory_mb=cfg.exec_memory_mb,
                        max_processes=cfg.exec_max_processes)


def secure_data_dir(data_dir: Path, activities_dir: Path, sandbox: Sandbox) -> None:
    """The data dir and the activities dir: root's, passable (not readable) by the run-as user's group, 0710
    (0700 without a run-as user); the journal and the snapshot 600, also when an older node made them."""
    sandbox.open_to_run_as(data_dir)
    sandbox.open_to_run_as(activities_dir)
    for path in data_dir.glob("raft.*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                path.chmod(0o600)
