"""The host uid/gid a project's sandboxes run as: one unprivileged identity per project.

Every sandbox of a project - its dependency builds (and the owner's build hooks in them), its function
instances, its pre-warmed standbys - runs as that project's own uid and gid, so code that escaped one
tenant's sandbox lands on a uid that owns nothing of another tenant's and cannot signal its processes.
Per project rather than per function because the project is the tenant boundary everywhere else
(``cluster-local``, its dependency cache, a Knative namespace): functions of one project share a
cache, call each other and are deployed by the same people; a uid per function would multiply pre-warmed
standbys and cache entries without separating tenants.

The map: ``UID_BASE + sha256(project) mod UID_COUNT`` (default 2,000,000,000 + [0, 1,000,000), above the
range Debian gives users and systemd's container ranges, below 2^31; ``HKS_SANDBOX_UID_BASE`` and
``HKS_SANDBOX_UID_COUNT`` move it), the gid the same number. Collisions are checked: the first choice is
taken unless another project holds it or a host account (``/etc/passwd``, ``/etc/group``) uses it, else the
next free number. What was handed out is recorded in ``sandbox-ids.json`` next to the dependency caches
(the layers dir; under a lock, shared by daemons that share the dir), because files on disk carry these
ids: a project keeps its uid across restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import json
import os
import pwd
import threading
from dataclasses import dataclass
from pathlib import Path

TABLE_NAME = "sandbox-ids.json"
_DEFAULT_BASE, _DEFAULT_COUNT = 2_000_000_000, 1_000_000
_cache: dict[tuple[str, str], Identity] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Identity:
    """An unprivileged host uid and gid a sandbox runs as."""

    uid: int
    gid: int


def uid_range() -> tuple[int, int]:
    """(first uid, how many) of the reserved range, from the environment or the defaults."""
    base = int(os.environ.get("HKS_SANDBOX_UID_BASE", _DEFAULT_BASE))
    count = int(os.environ.get("HKS_SANDBOX_UID_COUNT", _DEFAULT_COUNT))
    if base < 1000 or count < 1 or base + count > 2**31 - 1:
        raise ValueError(f"HKS_SANDBOX_UID_BASE/COUNT must lie within [1000, 2^31): {base}+{count}")
    return base, count


def project_identity(table_dir: Path, project: str) -> Identity:
    """The identity of ``project``'s sandboxes, recorded in ``table_dir`` the first time it is asked for."""
    table = Path(table_dir) / TABLE_NAME
    key = (str(table), project)
    with _lock:
        if key in _cache:
            return _cache[key]
        identity = _allocate(table, project)
        _cache[key] = identity
        return identity


def _allocate(table: Path, project: str) -> Identity:
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table.parent / f".{TABLE_NAME}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        held = _read(table)
        if project in held:
            return Identity(held[project], held[project])
        base, count = uid_range()
        taken = set(held.values())
        start = int.from_bytes(hashlib.sha256(project.encode()).digest()[:8], "big") % count
        for step in range(count):
            uid = base + (start + step) % count
            if uid not in taken and not _host_account(uid):
                break
        else:
            raise RuntimeError(f"no free uid left in {base}+{count} for sandbox identities")
        held[project] = uid
        _write(table, held)
        return Identity(uid, uid)


def _host_account(number: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        with contextlib.suppress(KeyError):
            lookup(number)
            return True
    return False


def _read(table: Path) -> dict[str, int]:
    try:
        data = json.loads(table.read_text())
    except FileNotFoundError:
        return {}
    return {str(k): int(v) for k, v in data.items()}


def _write(table: Path, held: dict[str, int]) -> None:
    tmp = table.with_name(f".{table.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(held, indent=1, sort_keys=True))
    os.chmod(tmp, 0o600)
    tmp.rename(table)


def restrict_to(path: Path, identity: Identity) -> None:
    """Make ``path`` a dir only ``identity``'s group (and the platform, root) may enter: root:gid, 0750.

    What lies below it may stay world-readable (hard links into shared caches must); no other tenant's uid
    gets past this dir. A no-op for a daemon that is not root (it cannot give files away; see
    docs/runtime.md)."""
    if os.geteuid() != 0:
        return
    os.chown(path, 0, identity.gid)
    os.chmod(path, 0o750)


def release(table_dir: Path, name: str) -> None:
    """Give ``name``'s uid back: a sandbox identity of its own that ended (its files and processes gone)."""
    table = Path(table_dir) / TABLE_NAME
    with _lock:
        _cache.pop((str(table), name), None)
        with open(table.parent / f".{TABLE_NAME}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            held = _read(table)
            if held.pop(name, None) is not None:
                _write(table, held)
