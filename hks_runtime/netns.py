"""A network namespace of its own for every sandbox that may reach the internet (``standard`` functions and
dependency builds): outbound to the internet only, never the host, private ranges or another sandbox.

How: the daemon (root) creates a persistent namespace (``unshare --net=FILE`` under ``/run/hks-netns``, a
private mount), loads an nftables ruleset into it, and starts Debian's ``slirp4netns`` on it - user-mode
networking, so nothing changes on the host (no bridge, no forwarding, no NAT rule), and the namespace's
only way out is a process that opens ordinary sockets on the host. slirp4netns parses the sandbox's
packets, so it runs with ``--enable-sandbox`` (its own mount namespace, an empty root, capabilities
dropped) and ``--enable-seccomp``; that sandbox unmounts what it inherited, which is why the namespace files
live under a mount of their own with private propagation rather than ``ip netns``' shared ``/run/netns``.

Since slirp's connections leave from the host's own stack, they could reach whatever the host
reaches (its loopback through 10.0.2.2, its own addresses, the LAN, the cloud metadata service); the
ruleset inside the namespace refuses all that before a packet reaches slirp:

- loopback inside the namespace: allowed (the sandbox's own);
- 10.0.2.3 port 53: slirp's DNS forwarder (the sandbox's resolv.conf points there);
- 10.0.2.2 (the host's loopback through slirp): only the one port given as ``gateway_port`` - the
  gateway's listener for this very sandbox, which is how the gateway knows who is calling; builds get
  none, and slirp runs with ``--disable-host-loopback`` for them;
- the operator's allow list (``HKS_SANDBOX_EGRESS_ALLOW``, comma-separated CIDRs, e.g. a package mirror);
- refused (TCP reset, so a connect fails at once with ECONNREFUSED): 0/8, 10/8, 100.64/10, 127/8,
  169.254/16 (metadata), 172.16/12, 192.168/16, 192.0.0/24, 198.18/15, multicast and reserved, and every
  address of the host's own interfaces; IPv6 other than loopback (slirp offers none);
- everything else: allowed.

The namespace belongs to the host's user namespace, so nothing inside a sandbox (no capabilities, its own
user namespace) can change the ruleset. ``slirp4netns`` gets an ``--exit-fd``: it exits when its creator
closes the fd or dies. ``sweep_stale()`` removes namespaces a crashed daemon left behind.

``HKS_SANDBOX_NETWORK=host`` brings back the old behaviour (the sandbox shares the host's network) for an
operator who knowingly wants it; ``check()`` reports why isolation cannot work here.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import re
import select
import shutil
import subprocess
import threading
from pathlib import Path

from .processes import pid_alive

NETNS_DIR = Path("/run/hks-netns")
SLIRP_GATEWAY = "10.0.2.2"
SLIRP_DNS = "10.0.2.3"
RESOLV_CONF = f"nameserver {SLIRP_DNS}\noptions ndots:0\n"
BLOCKED_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
)
READY_TIMEOUT = 10.0
_PREFIX = "hks-"
_counter = itertools.count()
_lock = threading.Lock()


class NetworkUnavailable(RuntimeError):
    """Isolated networking cannot be set up here (tools missing, not root); never silently skipped."""


def mode() -> str:
    """``isolated`` (the default) or ``host`` (``HKS_SANDBOX_NETWORK=host``: the old shared network)."""
    value = os.environ.get("HKS_SANDBOX_NETWORK", "isolated").strip() or "isolated"
    if value not in ("isolated", "host"):
        raise NetworkUnavailable(f"HKS_SANDBOX_NETWORK must be isolated or host, not {value!r}")
    return value


def check() -> str | None:
    """None when isolated networks can be made here, else what is missing."""
    tools = ("ip", "nft", "slirp4netns", "nsenter", "unshare", "mount", "umount")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 nftables slirp4netns util-linux)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    return None


def allowed_networks() -> list[str]:
    """The operator's allow list (``HKS_SANDBOX_EGRESS_ALLOW``), validated."""
    items = [item.strip() for item in os.environ.get("HKS_SANDBOX_EGRESS_ALLOW", "").split(",")]
    try:
        return [str(ipaddress.ip_network(item, strict=False)) for item in items if item]
    except ValueError as exc:
        raise NetworkUnavailable(f"HKS_SANDBOX_EGRESS_ALLOW: {exc}") from exc


def host_addresses() -> tuple[str, ...]:
    """IPv4 addresses of the host's own interfaces (a sandbox must not reach the host through them).

    Read for every namespace, not cached: an address the host gains later is blocked for sandboxes
    started after it (a running sandbox keeps the ruleset it started with)."""
    result = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, timeout=10)
    found = set()
    for link in json.loads(result.stdout or "[]"):
        for addr in link.get("addr_info", []):
            if addr.get("local"):
                found.add(addr["local"])
    return tuple(sorted(found))


def ruleset(gateway_port: int | None) -> str:
    blocked = ", ".join([*BLOCKED_V4, *host_addresses()])
    allowed = allowed_networks()
    allow_v4 = [n for n in allowed if ":" not in n]
    allow_v6 = [n for n in allowed if ":" in n]
    lines = [
        "table inet hks {",
        "  chain output {",
        "    type filter hook output priority 0; policy accept;",
        '    oifname "lo" accept',
        f"    ip daddr {SLIRP_DNS} meta l4proto {{ tcp, udp }} th dport 53 accept",
    ]
    if gateway_port:
        lines.append(f"    ip daddr {SLIRP_GATEWAY} tcp dport {int(gateway_port)} accept")
    if allow_v4:
        lines.append(f"    ip daddr {{ {', '.join(allow_v4)} }} accept")
    if allow_v6:
        lines.append(f"    ip6 daddr {{ {', '.join(allow_v6)} }} accept")
    lines += [
        f"    ip daddr {{ {blocked} }} meta l4proto tcp reject with tcp reset",
        f"    ip daddr {{ {blocked} }} reject with icmp type admin-prohibited",
        "    meta nfproto ipv6 meta l4proto tcp reject with tcp reset",
        "    meta nfproto ipv6 reject",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


class NetNamespace:
    """One sandbox's network namespace and the slirp4netns process that connects it to the internet."""

    def __init__(self, name: str):
        self.name = name
        self.path = str(NETNS_DIR / name)
        self.slirp: subprocess.Popen | None = None
        self._exit_w: int | None = None

    @classmethod
    def create(cls, label: str, *, gateway_port: int | None = None) -> NetNamespace:
        problem = check()
        if problem:
            raise NetworkUnavailable(f"cannot isolate the sandbox's network: {problem}")
        clean = re.sub(r"[^A-Za-z0-9_.-]", "-", label)[:24] or "sandbox"
        with _lock:
            name = f"{_PREFIX}{clean}-{os.getpid()}-{next(_counter):x}"
        ns = cls(name)
        _private_dir()
        try:
            Path(ns.path).touch()
            _run(["unshare", f"--net={ns.path}", "true"])
            _run(
                ["nsenter", f"--net={ns.path}", "sh", "-c", "ip link set lo up && nft -f -"],
                stdin=ruleset(gateway_port),
            )
            ns._start_slirp(host_loopback=gateway_port is not None)
        except BaseException:
            ns.close()
            raise
        return ns

    def _start_slirp(self, *, host_loopback: bool) -> None:
        ready_r, ready_w = os.pipe()
        exit_r, self._exit_w = os.pipe()
        argv = ["slirp4netns", "--configure", "--mtu=65520", "--netns-type=path"]
        argv += ["--enable-sandbox", "--enable-seccomp"]
        argv += [] if host_loopback else ["--disable-host-loopback"]
        argv += [f"--ready-fd={ready_w}", f"--exit-fd={exit_r}", self.path, "tap0"]
        try:
            self.slirp = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(ready_w, exit_r),
                close_fds=True,
            )
            os.close(ready_w)
            ready_w = -1
            readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT)
            if not readable or not os.read(ready_r, 1):
                self.slirp.kill()
                detail = self.slirp.stderr.read().decode(errors="replace").strip()
                raise NetworkUnavailable(f"slirp4netns did not come up: {detail or 'timed out'}")
        finally:
            for fd in (ready_r, ready_w, exit_r):
                if fd >= 0:
                    os.close(fd)

    def release(self) -> None:
        """Tell slirp4netns to exit (without waiting): for when the sandbox has ended. Safe to call twice."""
        if self._exit_w is not None:
            with contextlib.suppress(OSError):
                os.close(self._exit_w)
            self._exit_w = None

    def close(self) -> None:
        """Stop slirp4netns and remove the namespace. Safe to call twice."""
        self.release()
        if self.slirp is not None:
            try:
                self.slirp.wait(2)
            except subprocess.TimeoutExpired:
                self.slirp.kill()
                self.slirp.wait()
            if self.slirp.stderr is not None:
                self.slirp.stderr.close()
            self.slirp = None
        _remove(Path(self.path))


def sweep_stale() -> int:
    """Remove namespaces whose creating daemon is gone (a crash leaves their mount behind)."""
    removed = 0
    if not NETNS_DIR.is_dir():
        return 0
    for entry in NETNS_DIR.iterdir():
        parts = entry.name.rsplit("-", 2)
        if not entry.name.startswith(_PREFIX) or len(parts) != 3 or not parts[1].isdigit():
            continue
        if pid_alive(int(parts[1])):
            continue
        removed += _remove(entry)
    return removed


def _remove(path: Path) -> bool:
    if not path.exists():
        return False
    subprocess.run(["umount", str(path)], capture_output=True, timeout=10)
    with contextlib.suppress(OSError):
        path.unlink()
        return True
    return False


def _private_dir() -> None:
    """``NETNS_DIR`` as a mount of its own with private propagation (once; daemons on one host share it)."""
    with _lock:
        if _is_private_mount(NETNS_DIR):
            return
        NETNS_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        with open(NETNS_DIR.parent / ".hks-netns.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if not _is_mount(NETNS_DIR):
                _run(["mount", "--bind", str(NETNS_DIR), str(NETNS_DIR)])
            _run(["mount", "--make-private", str(NETNS_DIR)])


def _mount_fields(path: Path) -> list[list[str]]:
    with open("/proc/self/mountinfo") as handle:
        return [line.split() for line in handle if line.split()[4] == str(path)]


def _is_mount(path: Path) -> bool:
    return bool(_mount_fields(path))


def _is_private_mount(path: Path) -> bool:
    fields = _mount_fields(path)
    # optional fields (6th onwards, up to "-") name the peer group of a shared mount: none means private
    return bool(fields) and not any(f.startswith("shared:") for f in fields[-1][6 : fields[-1].index("-")])


def _run(argv: list[str], stdin: str | None = None) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise NetworkUnavailable(f"{' '.join(argv[:3])} failed: {result.stderr.strip()}")
