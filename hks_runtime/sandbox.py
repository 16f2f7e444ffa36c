"""Run untrusted code under bubblewrap with resource limits.

The contract (used by the builder and the runtime daemon):

- ``check_sandbox()`` raises ``SandboxUnavailable`` when bubblewrap is missing or cannot run, and otherwise
  returns the limits mode in force: ``"cgroup-v2"``, ``"cgroup-v1"`` or ``"rlimit"``.
- ``spawn(SandboxSpec(...))`` starts a process in fresh mount/pid/ipc/uts/user/network namespaces with
  read-only system dirs, a private ``/tmp``, no capabilities and exactly ``spec.env`` as environment, and
  returns a ``SandboxedProcess``. A profile with network (``standard``, builds) gets a namespace of its own
  that reaches the internet only (``netns.py``; entered with ``nsenter`` before privileges are dropped);
  the others only their own loopback.

How a process gets its limits without ``preexec_fn`` (unsafe with threads): the spawned program is a tiny
``/bin/sh`` wrapper that writes its own pid into the sandbox's cgroups and then execs ``prlimit`` (rlimits:
open files, file size, and data size / process count when no cgroup enforces them), ``setpriv`` (drop to an
unprivileged uid where the kernel lets bubblewrap run unprivileged) and finally ``bwrap``. The pid never
changes along that chain, so everything the user code starts is inside the cgroup before it runs.

Environment values are handed to bwrap through a memfd (``--args FD``), never on its command line, because
``/proc/PID/cmdline`` is readable by every process on the host.

Where the kernel allows unprivileged user namespaces, sandboxed code runs as its project's own host uid and
gid (``spec.identity``, ``identities.py``; the host's ``nobody`` without one), so an escape lands on an
unprivileged uid that owns nothing of another tenant's; bind sources must then be reachable by that uid,
otherwise that one sandbox runs as root without capabilities (``SandboxedProcess.unprivileged`` says
which). Creating user namespaces inside is refused (``--disable-userns``) where bwrap supports it. A
seccomp filter refuses the system calls no function needs (``seccomp.py``) where libseccomp's binding is
installed.

Bind sources are mounted through per-sandbox overlayfs views (``views.py``) where the daemon can, so that
``/proc/self/mountinfo`` inside shows no host path.

A function instance's sandbox (``spec.group``) goes under its project's own cgroup,
``<parent>/project-<namespace>/<sandbox>``, whose memory limit bounds the project's sandboxes together: past
it the kernel's OOM killer takes one of them (under v2 ``memory.oom.group`` on each sandbox: the whole of
that one), never another project's. Its CPU weight (v2 ``cpu.weight``, v1 ``cpu.shares``) is left at the
default, so CPU under contention is shared per project, not per process. Under cgroup v1 the group is made
in each controller's hierarchy (the limit in the memory one). Under rlimits there is no such group.

Caller duties: spawn from a long-lived thread (``--die-with-parent`` is tied to the spawning thread), drain
the pipes, and call ``terminate()`` for wall-time limits. Cgroups are removed when ``poll()``/``wait()`` first
see the exit (``cleanup()`` waits for it); ``sweep_stale_cgroups()`` clears a crashed predecessor's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import netns, seccomp, views
from .identities import Identity
from .processes import pid_alive

_log = logging.getLogger(__name__)
SANDBOX_UID = 65534  # "nobody": the probes' uid, and sandboxes' without an identity of their own
NOBODY = Identity(SANDBOX_UID, SANDBOX_UID)
CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP_PREFIX = "project-"  # a project's cgroup (Group), beside the sandboxes' own under the parent
_SYSTEM_BINDS = (("/usr", "/usr"),)
_SYSTEM_SYMLINKS = (("usr/lib", "/lib"), ("usr/lib64", "/lib64"), ("usr/bin", "/bin"), ("usr/sbin", "/sbin"))
# What language runtimes need from /etc (DNS, TLS roots, time zone); never shadow, passwd databases etc.
_ETC_FILES = (
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "localtime",
    "ssl",
    "ca-certificates",
)
_WRAPPER = 'p=$$; while [ "$1" != -- ]; do echo "$p" > "$1" || exit 125; shift; done; shift; exec "$@"'


class SandboxUnavailable(RuntimeError):
    """Bubblewrap is missing or cannot create a sandbox here; code is never run unsandboxed instead."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    max_pids: int
    max_open_files: int
    max_file_size_mb: int
    cpu_millicores: int


PROFILES: dict[str, Limits] = {
    "standard": Limits(
        memory_mb=512, max_pids=256, max_open_files=1024, max_file_size_mb=256, cpu_millicores=1000
    ),
    "restricted": Limits(
        memory_mb=256, max_pids=64, max_open_files=256, max_file_size_mb=32, cpu_millicores=500
    ),
}
_NETWORK_DEFAULT = {"standard": True, "restricted": False}


@dataclass(frozen=True)
class Group:
    """A cgroup sandboxes share (a project's function instances): ``memory_mb`` bounds them together."""

    name: str
    memory_mb: int


def host_memory_mb() -> int:
    """The machine's memory (MemTotal), 0 when it cannot be read."""
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


@dataclass
class SandboxSpec:
    """What to run and what it may see. ``ro_binds``/``rw_binds`` are (host path, sandbox path) pairs."""

    argv: list[str]
    env: dict[str, str]
    profile: str
    limits: Limits
    ro_binds: list[tuple[str, str]]
    rw_binds: list[tuple[str, str]] = field(default_factory=list)
    cwd: str = "/app"
    pass_fds: tuple[int, ...] = ()
    name: str = ""
    network: bool | None = None
    gateway_port: int | None = None  # with network: the one host loopback port it may reach (netns.py)
    identity: Identity | None = None  # the project's own uid/gid (identities.py); None: nobody
    # writable dirs kept in memory, like /tmp (e.g. a session's home): size-capped, never on the host's disk
    memory_dirs: tuple[str, ...] = ()
    group: Group | None = None  # the project's cgroup it goes under (v1 and v2; see the module's doc)


def memory_dir_bytes(limits: Limits) -> int:
    """The size cap of /tmp and of each of ``memory_dirs``: half the memory limit. Their pages count in the
    sandbox's memory (as Cloud Run's in-memory filesystem and an emptyDir of medium Memory do), so a full
    one answers ENOSPC before the memory limit is reached, and without cgroups (the rlimit fallback) the
    cap is still a hard bound: no sandbox can fill the host's disk or memory through them."""
    return limits.memory_mb * 1024 * 1024 // 2


def _bwrap_path() -> str:
    path = shutil.which("bwrap")
    if not path:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    return path


@functools.cache
def _probe(unprivileged: bool, extra: tuple[str, ...] = ()) -> str | None:
    """Run a trivial sandbox; return None when it works, else bwrap's complaint."""
    argv = [_bwrap_path(), "--unshare-all", *extra, "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += _system_args() + ["--", "/bin/true"]
    if unprivileged:
        argv = _setpriv_args() + argv
    try:
        result = subprocess.run(argv, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    return result.stderr.decode(errors="replace").strip() or f"bwrap exited with code {result.returncode}"


def _setpriv_args(identity: Identity = NOBODY) -> list[str]:
    return ["setpriv", f"--reuid={identity.uid}", f"--regid={identity.gid}", "--clear-groups", "--"]


@functools.cache
def runs_unprivileged() -> bool:
    """True when sandboxed code runs as the host's ``nobody`` (needs unprivileged user namespaces)."""
    return os.geteuid() == 0 and bool(shutil.which("setpriv")) and _probe(True) is None


_NO_NESTED_USERNS = ("--unshare-user", "--disable-userns")


@functools.cache
def _userns_flags(unprivileged: bool) -> tuple[str, ...]:
    """Forbid creating user namespaces inside (a favourite kernel attack surface) where the kernel allows."""
    return _NO_NESTED_USERNS if _probe(unprivileged, _NO_NESTED_USERNS) is None else ()


def check_sandbox() -> str:
    """Raise SandboxUnavailable unless bubblewrap works here; return the limits mode in force."""
    error = _probe(False)
    if error is not None and not runs_unprivileged():
        raise SandboxUnavailable(f"bubblewrap cannot create a sandbox on this machine: {error}")
    return _cgroups().mode


# --- cgroups -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CgroupLayout:
    mode: str  # "cgroup-v2" | "cgroup-v1" | "rlimit"
    parents: dict[str, Path]  # controller (v1) or "unified" (v2) -> parent dir for sandbox cgroups


def _own_cgroup_paths() -> dict[str, str]:
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["unified"]:
            paths[controller] = path
    return paths


def _parent_candidates(base: Path, own: str) -> list[Path]:
    """Our own cgroup first (sandboxes stay inside this service's accounting), then the hierarchy root."""
    candidates = [base / own.lstrip("/") / "hks", base / "hks"]
    return list(dict.fromkeys(candidates))


def _writable_parent(base: Path, own: str) -> Path | None:
    for candidate in _parent_candidates(base, own):
        try:
            candidate.mkdir(exist_ok=True)
            return candidate
        except OSError:
            continue
    return None


def _v2_layout(own: dict[str, str]) -> _CgroupLayout | None:
    if not (CGROUP_ROOT / "cgroup.controllers").exists():
        return None
    for parent in _parent_candidates(CGROUP_ROOT, own.get("unified", "/")):
        try:
            parent.mkdir(exist_ok=True)
            # Our children need the controllers; this fails unless the subtree is delegated to us (or we
            # are at the root, which the no-internal-processes rule exempts).
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
        except OSError:
            continue
        with contextlib.suppress(OSError):
            (parent / "cgroup.subtree_control").write_text("+cpu")  # cpu accounting and quota are optional
        return _CgroupLayout("cgroup-v2", {"unified": parent})
    return None


def _v1_layout(own: dict[str, str]) -> _CgroupLayout | None:
    parents = {}
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        base = CGROUP_ROOT / controller
        if (base / "cgroup.procs").exists() and controller in own:
            parent = _writable_parent(base, own[controller])
            if parent is not None:
                parents[controller] = parent
    if "memory" in parents and "pids" in parents:
        return _CgroupLayout("cgroup-v1", parents)
    return None


def _cgroups() -> _CgroupLayout:
    if os.environ.get("HKS_SANDBOX_LIMITS") == "rlimit":  # lets tests and odd hosts force the fallback
        return _CgroupLayout("rlimit", {})  # (never cached: unsetting it brings the machine's layout back)
    return _detected_cgroups()


@functools.cache
def _detected_cgroups() -> _CgroupLayout:
    try:
        own = _own_cgroup_paths()
    except OSError:
        return _CgroupLayout("rlimit", {})
    return _v2_layout(own) or _v1_layout(own) or _CgroupLayout("rlimit", {})


def _cgroup_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:60] or "sandbox"
    return f"{clean}-{os.getpid()}-{time.monotonic_ns():x}"  # the creator's pid: see sweep_stale_cgroups


def sweep_stale_cgroups() -> int:
    """Kill what is left in sandbox cgroups whose creating process is gone, and remove them.

    For a daemon's start: a crashed predecessor's sandboxes die with it (``--die-with-parent``), but its
    cgroup dirs stay. Cgroups of live processes (another daemon, a test run) are left alone.
    Returns how many cgroups were removed.
    """
    removed = 0
    for parent in _cgroups().parents.values():
        for child in parent.iterdir():
            if child.is_dir() and child.name.startswith(GROUP_PREFIX):  # a project's group: its sandboxes
                removed += _sweep_dir(child)
                with contextlib.suppress(OSError):
                    child.rmdir()  # empty: no daemon runs that project's sandboxes now (the next remakes it)
        removed += _sweep_dir(parent)
    return removed


def _sweep_dir(parent: Path) -> int:
    removed = 0
    for child in parent.iterdir():
        if child.name.startswith(GROUP_PREFIX):
            continue  # a project's group (its name may end like a sandbox's: "project-a-123-b")
        creator = child.name.rsplit("-", 2)[-2] if child.name.count("-") >= 2 else ""
        if not child.is_dir() or not creator.isdigit() or pid_alive(int(creator)):
            continue
        for pid in (_read(child / "cgroup.procs") or "").split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
        for _ in range(50):
            try:
                child.rmdir()
                removed += 1
                break
            except OSError:
                time.sleep(0.02)
    return removed


def _group_dir(mode: str, key: str, parent: Path, group: Group) -> Path:
    """The project's cgroup under ``parent``, made on first use and kept (a sandbox of the project may be
    spawned at any moment: only the sweep at a daemon's start removes an empty one). Its limit is written
    each time, so a changed setting applies with the project's next sandbox."""
    path = parent / f"{GROUP_PREFIX}{group.name}"
    path.mkdir(exist_ok=True)
    memory = group.memory_mb * 1024 * 1024
    if mode == "cgroup-v2":
        _write(path / "cgroup.subtree_control", "+memory +pids")
        _write(path / "cgroup.subtree_control", "+cpu", optional=True)
        if memory:
            _write(path / "memory.max", memory)
            _write(path / "memory.swap.max", 0, optional=True)
    elif key == "memory" and memory:
        # memsw must stay >= the memory limit: first when raising it, after when lowering it
        _write(path / "memory.memsw.limit_in_bytes", memory, optional=True)
        _write(path / "memory.limit_in_bytes", memory)
        _write(path / "memory.memsw.limit_in_bytes", memory, optional=True)
    return path


def _create_cgroups(
    layout: _CgroupLayout, name: str, limits: Limits, group: Group | None = None
) -> dict[str, Path]:
    parents = dict(layout.parents)
    if group is not None:
        parents = {key: _group_dir(layout.mode, key, parent, group) for key, parent in parents.items()}
    dirs = {key: parent / name for key, parent in parents.items()}
    for path in dirs.values():
        path.mkdir()
    memory = limits.memory_mb * 1024 * 1024
    quota = f"{limits.cpu_millicores * 100} 100000"
    if layout.mode == "cgroup-v2":
        cg = dirs["unified"]
        _write(cg / "memory.max", memory)
        _write(cg / "memory.swap.max", 0, optional=True)
        _write(cg / "memory.oom.group", 1, optional=True)  # an OOM kill takes the whole sandbox down
        _write(cg / "pids.max", limits.max_pids)
        _write(cg / "cpu.max", quota, optional=True)
        return dirs
    _write(dirs["memory"] / "memory.limit_in_bytes", memory)
    _write(dirs["memory"] / "memory.memsw.limit_in_bytes", memory, optional=True)  # no swapping around it
    _write(dirs["pids"] / "pids.max", limits.max_pids)
    if "cpu" in dirs:
        _write(dirs["cpu"] / "cpu.cfs_period_us", 100000, optional=True)
        _write(dirs["cpu"] / "cpu.cfs_quota_us", limits.cpu_millicores * 100, optional=True)
    return dirs


def _write(path: Path, value, optional: bool = False) -> None:
    try:
        path.write_text(str(value))
    except OSError:
        if not optional:
            raise


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _stat_value(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


# --- the command line --------------------------------------------------------------------------------


def _system_args(tmp_bytes: int | None = None) -> list[str]:
    args = []
    for src, dst in _SYSTEM_BINDS:
        args += ["--ro-bind", src, dst]
    for target, link in _SYSTEM_SYMLINKS:
        if os.path.exists("/" + target):
            args += ["--symlink", target, link]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(tmp_bytes), "--tmpfs", "/tmp"] if tmp_bytes else ["--tmpfs", "/tmp"]
    for name in _ETC_FILES:
        path = os.path.realpath("/etc/" + name)
        if os.path.exists(path):
            args += ["--ro-bind", path, "/etc/" + name]
    return args


def _wants_network(spec: SandboxSpec) -> bool:
    return _NETWORK_DEFAULT[spec.profile] if spec.network is None else spec.network


def _bwrap_args(
    spec: SandboxSpec,
    env_fd: int,
    unprivileged: bool,
    seccomp_fd: int | None = None,
    resolv_fd: int | None = None,
    view: views.View | None = None,
) -> list[str]:
    network = _wants_network(spec)
    args = [_bwrap_path(), "--unshare-all", *_userns_flags(unprivileged)]
    args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    args += ["--share-net"] if network else []
    args += ["--hostname", "sandbox", "--clearenv", "--args", str(env_fd)]
    args += ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
    size = memory_dir_bytes(spec.limits)
    args += _system_args(size)
    if resolv_fd is not None:  # its own network: DNS through slirp's forwarder, not the host's resolver
        args += ["--ro-bind-data", str(resolv_fd), "/etc/resolv.conf"]
    for src, dst in spec.ro_binds:
        args += ["--ro-bind", view.path_for(str(src)) if view else str(src), dst]
    for src, dst in spec.rw_binds:
        args += ["--bind", view.path_for(str(src)) if view else str(src), dst]
    for dst in spec.memory_dirs:
        args += ["--size", str(size), "--tmpfs", dst]
    return args + ["--chdir", spec.cwd, "--", *spec.argv]


def _prlimit_args(limits: Limits, mode: str, unprivileged: bool) -> list[str]:
    fsize = limits.max_file_size_mb * 1024 * 1024
    args = ["prlimit", f"--nofile={limits.max_open_files}", f"--fsize={fsize}", "--core=0"]
    if mode == "rlimit":
        # Last resort: RLIMIT_DATA (not AS, which breaks V8's address-space reservations) bounds the heap;
        # RLIMIT_NPROC counts per host uid, so it only helps when sandboxes run as their own uid.
        args.append(f"--data={limits.memory_mb * 1024 * 1024}")
        if unprivileged:
            args.append(f"--nproc={limits.max_pids * 4}")
    return args + ["--"]


def _env_memfd(env: dict[str, str]) -> int:
    fd = os.memfd_create("hks-sandbox-env")  # close-on-exec; pass_fds hands it over
    payload = b"".join(b"--setenv\0%s\0%s\0" % (k.encode(), v.encode()) for k, v in env.items())
    os.write(fd, payload)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _validate(spec: SandboxSpec) -> None:
    if spec.profile not in PROFILES:
        raise ValueError(f"unknown sandbox profile {spec.profile!r}; expected one of {sorted(PROFILES)}")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"invalid environment variable name or value: {key!r}")
    if not spec.argv:
        raise ValueError("argv must not be empty")
    for dst in spec.memory_dirs:
        if not dst.startswith("/") or dst in ("/", "/usr", "/proc", "/dev"):
            raise ValueError(f"a memory dir must be an absolute path of its own: {dst!r}")


# --- the process ---------------------------------------------------------------------------------------


class SandboxedProcess:
    """A running sandbox. ``pid`` is bubblewrap's pid on the host; killing it tears down the pid namespace."""

    def __init__(self, popen: subprocess.Popen, limits_mode: str, cgroups: dict[str, Path]):
        self._popen = popen
        self.pid = popen.pid
        self.limits_mode = limits_mode
        self.cgroups = cgroups
        self.stdin = popen.stdin
        self.stdout = popen.stdout
        self.stderr = popen.stderr
        self.unprivileged = False  # True when the code runs as an unprivileged uid rather than root
        self.identity: Identity | None = None  # that uid/gid
        self.netns: netns.NetNamespace | None = None  # its own network (standard profile, builds)
        self.view: views.View | None = None  # what its read-only binds are mounted from (views.py)
        # (oom_killed, cpu_seconds, hit_process_limit) once it has ended
        self._final: tuple[bool, float | None, bool] | None = None
        self._last_cpu: float | None = None  # the last process-tree CPU figure (no cgroup to read)

    def poll(self) -> int | None:
        code = self._popen.poll()
        if code is not None:
            self._finish()
        return code

    def wait(self, timeout: float | None = None) -> int:
        code = self._popen.wait(timeout)
        self._finish()
        return code

    def _finish(self) -> None:
        """On first sight of the exit: keep what metrics need, then drop the cgroups (without blocking)."""
        if self._final is None:
            cpu = self._read_cpu()
            if cpu is None:  # no cgroup, and the processes are gone: their figure as last read (terminate)
                cpu = self._last_cpu
            self._final = (self._read_oom(), cpu, self._read_pids_max())
        self._remove_cgroups(attempts=1)
        if self.netns is not None:
            self.netns.release()  # slirp4netns exits; cleanup() removes the namespace itself
        if self.view is not None:
            self.view.close()

    def _remove_cgroups(self, attempts: int) -> None:
        for path in list(self.cgroups.values()):
            for attempt in range(attempts):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # the last tasks of the torn-down pid namespace are still exiting
                    if attempt + 1 < attempts:
                        time.sleep(0.02)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def cpu_since(self, mark: float | None) -> float | None:
        """CPU seconds used since the sandbox's figure was ``mark`` (None: no CPU accounting)."""
        total = self.cpu_seconds()
        if total is None:
            return None
        return round(max(0.0, total - (mark or 0.0)), 6)

    def pids(self) -> list[int]:
        """The sandbox's processes as the host numbers them: bubblewrap's and its descendants'."""
        return _tree(self.pid)

    def terminate(self, grace: float = 5.0) -> None:
        """SIGTERM every process in the sandbox, then SIGKILL whatever is left after ``grace`` seconds
        (with ``grace=0``, SIGKILL at once: a SIGTERM nothing waits for would only cost a pass)."""
        if self._final is None and self._popen.returncode is None:
            with contextlib.suppress(Exception):
                self._read_cpu()  # without a cgroup, the processes' CPU can only be read while they live
        if self.poll() is None and grace > 0:
            self._signal_all(signal.SIGTERM)
            self._wait_quietly(grace)
        # Killing bwrap's init inside tears the pid namespace down; the outer bwrap then reaps it and exits.
        # (Killing the outer one first would leave the init to the host's pid 1 to reap.)
        self._signal_all(signal.SIGKILL)
        self._wait_quietly(2.0)
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait()
        self._wait_cgroup_empty(timeout=5.0)

    def _wait_quietly(self, timeout: float) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def _members(self, tree: dict[int, list[int]]) -> set[int]:
        """Everything of the sandbox: the outer bwrap's process tree and whatever its cgroups hold (a process
        cannot leave them: the sandbox has no cgroupfs, and its pid was in them before bwrap ran)."""
        pids = set(_descendants(self.pid, tree))
        for path in self.cgroups.values():
            pids.update(int(p) for p in (_read(path / "cgroup.procs") or "").split())
        pids.discard(os.getpid())
        return pids

    def _signal_all(self, sig: int) -> None:
        # The outer bwrap is never signalled here. bwrap's init inside the pid namespace gets only SIGKILL:
        # it ignores SIGTERM, and its death would SIGKILL the user's processes without a grace period.
        # The tree is read from the sandbox's own /proc/PID/task/TID/children files, not from a scan of
        # every process on the host (~90 ms with 500 processes, twice per teardown: a burst's fifty
        # teardowns held the daemon's interpreter lock for seconds); the scan is the fallback.
        tree = _process_tree(self.pid)
        spared = {self.pid} | (set(tree.get(self.pid, [])) if sig == signal.SIGTERM else set())
        for pid in self._members(tree) - spared:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _wait_cgroup_empty(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any((_read(p / "cgroup.procs") or "").split() for p in self.cgroups.values()):
                return
            time.sleep(0.01)

    def oom_killed(self) -> bool:
        """True when the kernel's OOM killer killed something in this sandbox (cgroup modes only)."""
        return self._final[0] if self._final is not None else self._read_oom()

    def _read_oom(self) -> bool:
        if self.limits_mode == "cgroup-v2":
            return bool(_stat_value(_read(self.cgroups["unified"] / "memory.events"), "oom_kill"))
        if self.limits_mode == "cgroup-v1":
            return bool(_stat_value(_read(self.cgroups["memory"] / "memory.oom_control"), "oom_kill"))
        return False

    def hit_process_limit(self) -> bool:
        """True when a fork in this sandbox failed at its process limit (cgroup modes only)."""
        return self._final[2] if self._final is not None else self._read_pids_max()

    def _read_pids_max(self) -> bool:
        cgroup = self.cgroups.get("unified" if self.limits_mode == "cgroup-v2" else "pids")
        return cgroup is not None and bool(_stat_value(_read(cgroup / "pids.events"), "max"))

    def memory_bytes(self) -> int | None:
        """Working set like cAdvisor's: usage minus inactive file cache. None once the sandbox has ended."""
        if self._final is not None:
            return None
        if self.limits_mode == "cgroup-v2":
            usage, stat, inactive = "memory.current", "memory.stat", "inactive_file"
            cg = self.cgroups["unified"]
        elif self.limits_mode == "cgroup-v1":
            usage, stat, inactive = "memory.usage_in_bytes", "memory.stat", "total_inactive_file"
            cg = self.cgroups["memory"]
        else:
            return None
        current = _read(cg / usage)
        if current is None:
            return None
        return max(0, int(current) - (_stat_value(_read(cg / stat), inactive) or 0))

    def cpu_seconds(self) -> float | None:
        """CPU time used by everything in the sandbox (the final figure once it has ended)."""
        return self._final[1] if self._final is not None else self._read_cpu()

    def _read_cpu(self) -> float | None:
        if self.limits_mode == "cgroup-v2":
            usec = _stat_value(_read(self.cgroups["unified"] / "cpu.stat"), "usage_usec")
            return None if usec is None else usec / 1e6
        if "cpuacct" in self.cgroups:
            nsec = _read(self.cgroups["cpuacct"] / "cpuacct.usage")
            return None if nsec is None else int(nsec) / 1e9
        figure = self._tree_cpu()  # the rlimit fallback (or cgroup v1 without cpuacct)
        if figure is not None:
            self._last_cpu = figure
        return figure

    def _tree_cpu(self) -> float | None:
        """CPU seconds of the sandbox's processes while it runs, by the kernel's per-process clocks: each
        live process's own (``utime``+``stime`` in /proc/PID/stat) plus that of the children it has reaped
        (``cutime``+``cstime``; the pid namespace's init reaps orphans). A process that exited unreaped
        and anything that escaped the process tree are not in it; None once the sandbox is gone."""
        if self._popen.returncode is not None:
            return None
        ticks, total, seen = os.sysconf("SC_CLK_TCK"), 0, False
        for pid in _tree(self.pid):
            stat = _read(Path("/proc", str(pid), "stat"))
            if not stat:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state): utime is field 14
            total += sum(int(v) for v in fields[11:15])
            seen = True
        return total / ticks if seen else None

    def cleanup(self) -> None:
        """Kill the sandbox if it still runs, remove its cgroups, close its pipes. Safe to call twice.

        The cgroups also go by themselves when ``poll()``/``wait()`` first see the exit; this call waits for
        the last tasks to leave, so nothing is left behind, and closes the pipes (stop reading them first).
        """
        if self.poll() is None:
            self.terminate(grace=0)
        self._wait_cgroup_empty(timeout=5.0)
        self._remove_cgroups(attempts=50)
        if self.netns is not None:
            self.netns.close()
        for pipe in (self.stdin, self.stdout, self.stderr):
            if pipe is not None:
                pipe.close()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(Path("/proc", entry, "stat"))
        if stat:
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    return children


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (see ``_process_tree``)."""
    return _descendants(root, _process_tree(root))


def _process_tree(root: int) -> dict[int, list[int]]:
    """``root``'s descendants as a children map, from the kernel's per-thread children lists (every thread:
    a child of a thread other than the main one is listed under that thread); ``_children_map()`` (a scan
    of all of /proc) where the kernel has no such lists. A process forking meanwhile may be missed, as by
    the scan: killing bwrap's init takes down the whole pid namespace, and the cgroups hold the rest."""
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        return _children_map()
    children: dict[int, list[int]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone
        kids = []
        for tid in tids:
            kids += [int(k) for k in (_read(Path(f"/proc/{pid}/task/{tid}/children")) or "").split()]
        if kids:
            children[pid] = kids
            todo.extend(kids)
    return children


def _descendants(root: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def spawn(spec: SandboxSpec, *, stdin: int | None = subprocess.DEVNULL) -> SandboxedProcess:
    """Start ``spec.argv`` in a new sandbox. Raises SandboxUnavailable rather than running unsandboxed.

    ``stdout``/``stderr`` of the result are binary pipes the caller must drain. Code runs as
    ``spec.identity`` (the project's own uid and gid; the host's ``nobody`` without one) when the kernel
    allows unprivileged bubblewrap and that identity can reach every bind source (otherwise as root without
    capabilities; ``proc.unprivileged`` says which); the host dirs in ``rw_binds`` are then chowned to it so
    the code can write to them.
    """
    _validate(spec)
    check_sandbox()
    identity = spec.identity or NOBODY
    layout = _cgroups()
    cgroups = (
        _create_cgroups(layout, _cgroup_name(spec.name), spec.limits, spec.group) if layout.parents else {}
    )
    binds = spec.ro_binds + spec.rw_binds
    unprivileged = runs_unprivileged() and all(_reachable(src, identity) for src, _ in binds)
    if runs_unprivileged() and not unprivileged:
        _log.warning(
            "sandbox %s runs as root (caps dropped): a bind source is out of its uid's reach", spec.name
        )
    if unprivileged:
        for src, _ in spec.rw_binds:
            os.chown(src, identity.uid, identity.gid)
    try:
        ns = _network_for(spec)
    except BaseException:
        for path in cgroups.values():
            path.rmdir()
        raise
    view = views.create([str(src) for src, _ in spec.ro_binds], [str(src) for src, _ in spec.rw_binds])
    env_fd = _env_memfd(spec.env)
    seccomp_fd = seccomp.memfd()
    resolv_fd = _data_memfd(netns.RESOLV_CONF) if ns is not None else None
    procs_files = [str(path / "cgroup.procs") for path in cgroups.values()]
    argv = ["/bin/sh", "-c", _WRAPPER, "hks-sandbox", *procs_files, "--"]
    argv += _prlimit_args(spec.limits, layout.mode, unprivileged)
    argv += ["nsenter", f"--net={ns.path}", "--"] if ns is not None else []
    argv += _setpriv_args(identity) if unprivileged else []
    argv += _bwrap_args(spec, env_fd, unprivileged, seccomp_fd, resolv_fd, view)
    filter_fds = tuple(fd for fd in (seccomp_fd, resolv_fd) if fd is not None)
    try:
        popen = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(env_fd, *filter_fds, *spec.pass_fds),
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            close_fds=True,
        )
    except BaseException:
        for path in cgroups.values():
            path.rmdir()
        if ns is not None:
            ns.close()
        if view is not None:
            view.close()
        raise
    finally:
        for fd in (env_fd, *filter_fds):
            os.close(fd)
    proc = SandboxedProcess(popen, layout.mode, cgroups)
    proc.unprivileged = unprivileged
    proc.identity = identity if unprivileged else None
    proc.netns = ns
    proc.view = view
    return proc


def _network_for(spec: SandboxSpec) -> netns.NetNamespace | None:
    """A namespace of its own when the sandbox may use the network (None: bwrap's empty one, or the host's
    under ``HKS_SANDBOX_NETWORK=host``). Raises SandboxUnavailable rather than share the host's network."""
    if not _wants_network(spec):
        return None
    try:
        if netns.mode() == "host":
            return None
        return netns.NetNamespace.create(spec.name or "sandbox", gateway_port=spec.gateway_port)
    except netns.NetworkUnavailable as exc:
        raise SandboxUnavailable(str(exc)) from exc


def _data_memfd(text: str) -> int:
    fd = os.memfd_create("hks-sandbox-data")
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _reachable(path: str, identity: Identity) -> bool:
    """Can ``identity`` reach ``path``? Unprivileged bwrap resolves bind sources with its own rights."""
    current = Path(os.path.realpath(path))
    for directory in [current, *current.parents]:
        try:
            st = directory.stat()
        except OSError:
            return False
        if st.st_uid == identity.uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid == identity.gid:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            return False
    return True


def limits_for(profile: str, **overrides: int) -> Limits:
    """A profile's limits with some fields replaced (e.g. a function's own memory setting)."""
    return dataclasses.replace(PROFILES[profile], **overrides)


def isolated_network(profile: str) -> bool:
    """Does a sandbox of this profile get a network namespace of its own (netns.py)?"""
    return _NETWORK_DEFAULT[profile] and netns.mode() == "isolated"


def sweep_stale_networks() -> int:
    """Network namespaces a crashed daemon left behind (see netns.sweep_stale), and its sandboxes' views
    (views.sweep_stale: mounts, not networks, but left behind the same way and swept at the same time)."""
    return netns.sweep_stale() + views.sweep_stale()


_cgroups.cache_clear = _detected_cgroups.cache_clear  # what tests that re-probe the machine call
