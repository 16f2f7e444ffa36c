"""One running copy of a revision: a sandboxed process serving on a socket the daemon opened for it.

The daemon binds ``127.0.0.1:<free port>``, hands the listening fd to the sandbox (socket activation: the
function needs no network of its own) and closes its own copy, so once the process is gone a connect is
refused at once (-> 502) instead of hanging in a backlog nobody reads.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

STARTING, READY, DRAINING, STOPPED = "starting", "ready", "draining", "stopped"


@dataclass(eq=False)
class Instance:
    id: str
    namespace: str
    function: str
    revision: str
    port: int = 0
    state: str = STARTING
    proc: object = None  # hks_runtime.sandbox.SandboxedProcess
    inflight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.monotonic)
    stopping: bool = False  # stopped on purpose: its exit is not a crash
    cold_since: float | None = None  # set when this start was a cold start: when the first request arrived
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=20))
    exit_code: int | None = None
    probing: bool = False  # a liveness check is under way
    external: int = 0  # requests in flight through HAProxy (the Python gateway counts its own in inflight)
    haproxy_server: tuple[str, str] | None = None
    slot: Path | None = None  # the pre-warmed slot dir holding its code, when it came from the pool
    caller_port: int | None = None  # its own gateway listener (gateway.SandboxCallers), when it has one
    cpu_at_claim: float = 0.0  # a pre-started sandbox's CPU seconds when it became this instance

    @classmethod
    def new(cls, namespace: str, function: str, revision: str) -> Instance:
        # The shape of a Knative pod name: <revision>-deployment-<hash>-<id>
        return cls(
            id=f"{revision}-deployment-{secrets.token_hex(3)}",
            namespace=namespace,
            function=function,
            revision=revision,
        )

    @property
    def alive(self) -> bool:
        return self.state in (STARTING, READY, DRAINING)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def listening_socket() -> socket.socket:
    """A loopback listening socket on a free port, inheritable, for one instance."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def watch_exit(loop: asyncio.AbstractEventLoop, proc, on_exit) -> None:
    """Call ``on_exit(returncode)`` on the loop when ``proc`` ends, without a thread (pidfd) when possible."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        loop.run_in_executor(None, lambda: loop.call_soon_threadsafe(on_exit, proc.wait()))
        return

    def readable() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        code = proc.poll()
        on_exit(code if code is not None else proc.wait())

    loop.add_reader(pidfd, readable)


def backoff_seconds(crashes: int) -> float:
    """No wait for a first crash, then 0.5 s doubling up to 30 s (a CrashLoopBackOff in small)."""
    if crashes <= 1:
        return 0.0
    return min(30.0, 0.5 * 2 ** (crashes - 2))


def cleanup(inst: Instance) -> None:
    """Release what an exited instance holds: its sandbox (cgroups, pipes, network), its pre-warmed slot."""
    safe(inst.proc.cleanup)
    if inst.slot is not None:
        shutil.rmtree(inst.slot, ignore_errors=True)


def safe(call):
    """``call()``, or None when it raises: reading metrics and cleaning up must never take the daemon down."""
    try:
        return call()
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def pipe_file(loop: asyncio.AbstractEventLoop, fd: int, mode: str = "rb"):
    """A file object over ``fd`` for ``loop.connect_read_pipe`` (``mode`` "wb": ``connect_write_pipe``) that
    gets ``fd`` closed exactly once.

    uvloop hands the fd to libuv, which closes it when the transport ends, and then closes the file object
    as well. That second close(2) of the same number is harmless only in a single-threaded process: here
    the builder's and spawner's threads open files all the time, and one that got the number in between
    lost its fd ("[Errno 9] Bad file descriptor" in 1 of 150 concurrent agent builds, and in a one-shot
    kernel's start in a burst of 50). Under uvloop the file object therefore never closes the fd; under
    asyncio's own loop the transport closes it through the file. Give it an fd of its own (``os.dup`` of a
    pipe something else also closes, such as a Popen's)."""
    owned_by_loop = type(loop).__module__.startswith("uvloop")
    return os.fdopen(fd, mode, buffering=0, closefd=not owned_by_loop)
