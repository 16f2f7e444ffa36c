"""One-shot executions (``execute()``'s fast path): a bare kernel in a sandbox of its own, no agent.

A one-shot run needs a kernel and nothing of what a session's agent serves (files, commands, contexts, the
E2B protocols), yet starting the agent was two thirds of a standby's start: its interpreter's imports (the
HTTP server and what it pulls in) before it forks its kernel. Measured on this 2-core machine, an agent
sandbox took ~85 ms of CPU from spawn to ready, so a burst of fifty executions on an empty pool spent four
seconds of CPU starting agents. Here the sandbox's only program is the kernel itself
(``session_kernel.standalone()``, or ``session_kernel.js`` on the runtime's Node), and the runtime speaks
the kernel's own protocol over two pipes: a request line in, JSON event lines out, with its stdout and
stderr (what is written below ``print``: ``os.write``, child processes) read as stdout/stderr events, as
the agent does. What the agent did for a one-shot run is done here, the same way: the timeout (a
TimeoutError at the deadline, SIGINT, then at most ``INTERRUPT_GRACE`` seconds for the code to stop), a
kernel that dies (KernelDied with its exit code; a JavaScript ``process.exit(n)`` is SystemExit n; V8 out of
heap is MemoryError), the output bound.

Isolation is the session agents' (sessions.py): the same ``restricted`` profile and limits, a uid of its
own, ``/tmp`` and the home a capped tmpfs, stdin /dev/null, no network; the kernel holds only its two
pipes and stdio. Each standby is used once and torn down after its answer, off the caller's path.

Standbys are kept per language in a ``StandbyPool`` (standbys.py) sized by its ``PoolPolicy``
(``pool_policy.py``): at least its minimum, grown toward recent concurrent demand, trimmed back after; a
claim on an empty pool takes the next kernel up (one is started for it). Starts share the session
manager's bound (``STARTS_AT_ONCE`` per core) with the agents.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field

from . import background, identities, sandbox
from .instances import pipe_file
from .pool_policy import PoolPolicy
from .standbys import StandbyPool, StandbyUnavailable

log = logging.getLogger("hks_runtime.oneshot")

# what session_agent.py gives its kernel (ENV there), and the two pipes
KERNEL_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/home/user",
    "LANG": "C.UTF-8",
    "MPLBACKEND": "Agg",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}
# the kernel from its bytecode (a script is compiled at every start), /hks/launchers first on its path and
# the working directory (its writable home) not on it at all, as when the agent forks it
_PYTHON_BOOT = (
    "import sys; sys.path[:] = ['/hks/launchers'] + [p for p in sys.path if p not in ('', '/hks/launchers')];"
    " import session_kernel; session_kernel.standalone()"
)
INTERRUPT_GRACE = 2.0  # seconds a timed-out run has after its SIGINT (the agent's figure)
EXIT_GRACE = 1.0  # seconds a dead kernel's last output has to arrive (the agent's figure)
MAX_OUTPUT_BYTES = 32 * 1024 * 1024  # events and output one run may send; past it the run is stopped
JS_HEAP_OOM = "JavaScript heap out of memory"
NODE_HEAP_MB = 192  # --max-old-space-size, as the agent starts its JavaScript kernel


@dataclass
class Standby:
    """One started kernel sandbox, used for one run."""

    proc: object
    name: str
    language: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    up: asyncio.Future | None = None  # done at the kernel's "ready" event (or when its events end)
    requests: asyncio.WriteTransport | None = None
    transports: list = field(default_factory=list)
    early: list[bytes] = field(default_factory=list)  # what it printed before its run (why it died)
    cpu_at_claim: float | None = None
    claimed: bool = False
    received: int = 0  # bytes of events and output since its claim (bounded: MAX_OUTPUT_BYTES)
    ended: bool = False  # its event pipe has ended: the kernel is gone (its sandbox may not have exited yet)

    def alive(self) -> bool:
        return not self.ended and self.proc.poll() is None

    def took(self, data: bytes, transport) -> None:
        """Count what a pipe brought; past the bound, stop reading and end the run."""
        if self.claimed:
            self.received += len(data)
            if self.received > MAX_OUTPUT_BYTES:
                transport.pause_reading()
                self.events.put_nowait({"type": "_overflow"})

    def said(self) -> str:
        """The last of what it printed before its run (why a standby died)."""
        return b"".join(self.early)[-500:].decode(errors="replace")

    def cpu_used(self) -> float | None:
        return self.proc.cpu_since(self.cpu_at_claim)


class _Events(asyncio.Protocol):
    """The kernel's event pipe: JSON lines into the standby's queue; its first "ready" marks it up."""

    def __init__(self, standby: Standby):
        self.standby = standby
        self.buffer = bytearray()  # the line being received (grown in place: a long line costs no copies)
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.standby.took(data, self.transport)
        self.buffer += data
        if b"\n" not in data:  # (a line up to 32 MiB arrives in 64 KiB reads: no split of it per read)
            return
        end = self.buffer.rfind(b"\n")
        lines = bytes(self.buffer[:end]).split(b"\n")
        del self.buffer[: end + 1]
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("type") == "ready" and not self.standby.up.done():
                self.standby.up.set_result(None)
                continue
            self.standby.events.put_nowait(event)

    def connection_lost(self, exc) -> None:
        self.standby.ended = True
        if not self.standby.up.done():
            self.standby.up.set_result(None)
        self.standby.events.put_nowait({"type": "_exit"})


class _Output(asyncio.Protocol):
    """The kernel's stdout or stderr (output below ``print``): stdout/stderr events once it is claimed;
    before that, kept (the last few chunks) to say why a standby died."""

    def __init__(self, standby: Standby, name: str):
        self.standby = standby
        self.name = name
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.standby.took(data, self.transport)
        if not self.standby.claimed:
            self.standby.early.append(data)
            del self.standby.early[:-8]
            return
        text = self.decoder.decode(data)
        if text:
            self.standby.events.put_nowait({"type": self.name, "text": text})

    def connection_lost(self, exc) -> None:
        self.standby.events.put_nowait({"type": "_eof"})


class OneShot:
    """The one-shot kernels of a session manager (sessions.py), which gives its spawning thread, layer,
    Node, launchers and bounds."""

    def __init__(self, manager, *, pool_size: int, pool_max: int, pool_window: float, node_pool_size: int):
        self.manager = manager
        self.pools = {
            language: StandbyPool(
                f"{language} kernel",
                PoolPolicy(size, pool_max, pool_window),
                spawn=lambda language=language: self._spawn(language),
                destroy=self.destroy,
                starts=lambda: manager._starts,  # made on the loop, after this
            )
            for language, size in (("python", pool_size), ("javascript", node_pool_size))
        }
        self.running = dict.fromkeys(self.pools, 0)  # runs in progress per language: the pools' demand

    def refill(self) -> None:
        for language, pool in self.pools.items():
            if language == "python" or self.manager.node is not None:
                pool.refill()

    def trim(self) -> None:
        for pool in self.pools.values():
            pool.trim()

    def tick(self) -> None:
        """On the reaper's tick: runs still in progress are demand until they end (a long burst is
        remembered from its end)."""
        for language, pool in self.pools.items():
            if self.running[language]:
                pool.policy.claimed(self.running[language])

    def view(self) -> dict:
        return {language: pool.view() for language, pool in self.pools.items()}

    async def close(self) -> None:
        idle = [standby for pool in self.pools.values() for standby in pool.close()]
        await asyncio.gather(*(self.destroy(s) for s in idle), return_exceptions=True)

    # standbys -------------------------------------------------------------------------------------------

    def _spawn_blocking(self, language: str) -> tuple[object, str, int, int]:
        manager = self.manager
        name = secrets.token_hex(8)
        layer = manager.layer
        binds = [(str(manager.launchers), "/hks/launchers")] + ([(str(layer), "/layer")] if layer else [])
        req_r, req_w = os.pipe()
        ev_r, ev_w = os.pipe()
        env = {**KERNEL_ENV, "HKS_KERNEL_IN": str(req_r), "HKS_KERNEL_OUT": str(ev_w)}
        if language == "javascript":
            node_root, node = manager.node
            if node_root:
                binds.append((node_root, "/hks/node"))
            argv = [node, f"--max-old-space-size={NODE_HEAP_MB}", "/hks/launchers/session_kernel.js"]
        else:
            python = "/layer/bin/python" if layer else manager.python()
            argv = [python, "-u", "-c", _PYTHON_BOOT]
        try:
            spec = sandbox.SandboxSpec(
                argv=argv,
                env=env,
                profile="restricted",
                limits=sandbox.limits_for("restricted", max_pids=128),
                ro_binds=binds,
                memory_dirs=("/home/user",),  # in memory and capped, as /tmp: never the host's disk
                cwd="/home/user",
                pass_fds=(req_r, ev_w),
                name=f"oneshot-{name}",
                identity=identities.project_identity(manager.layers_dir, f"session:{name}"),
            )
            proc = sandbox.spawn(spec, stdin=subprocess.DEVNULL)
        except BaseException:
            os.close(req_w)
            os.close(ev_r)
            identities.release(manager.layers_dir, f"session:{name}")
            raise
        finally:
            os.close(req_r)
            os.close(ev_w)
        return proc, name, req_w, ev_r

    async def _spawn(self, language: str) -> Standby:
        loop = asyncio.get_running_loop()
        proc, name, req_w, ev_r = await loop.run_in_executor(
            self.manager.spawner, self._spawn_blocking, language
        )
        standby = Standby(proc=proc, name=name, language=language, up=loop.create_future())
        try:  # every fd closed exactly once, by its transport (pipe_file); Popen's pipes by the cleanup
            events = pipe_file(loop, ev_r)
            transport, _ = await loop.connect_read_pipe(lambda: _Events(standby), events)
            standby.transports.append(transport)
            for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
                copy = pipe_file(loop, os.dup(pipe.fileno()))
                transport, _ = await loop.connect_read_pipe(lambda s=stream: _Output(standby, s), copy)
                standby.transports.append(transport)
            requests = pipe_file(loop, req_w, "wb")
            standby.requests, _ = await loop.connect_write_pipe(asyncio.Protocol, requests)
            standby.transports.append(standby.requests)
        except BaseException:
            background.start(self.destroy(standby))
            raise
        return standby

    async def destroy(self, standby: Standby) -> float | None:
        """Kill the standby's sandbox (every process in it) and release its uid, on the manager's teardown
        thread (in order, off the loop); its CPU seconds since it was claimed."""
        for transport in standby.transports:
            transport.close()
        manager = self.manager

        def work():
            with contextlib.suppress(Exception):
                standby.proc.terminate(grace=0)
            with contextlib.suppress(Exception):
                standby.proc.cleanup()
            identities.release(manager.layers_dir, f"session:{standby.name}")
            with contextlib.suppress(Exception):
                return standby.cpu_used()
            return None

        return await asyncio.get_running_loop().run_in_executor(manager._teardown, work)

    # a run ----------------------------------------------------------------------------------------------

    async def run(
        self, *, code: str, timeout: float, env: dict[str, str], language: str
    ) -> tuple[list[dict], Standby]:
        """Claim a standby, run ``code`` in it; (its events, the standby - the caller tears it down).
        ``language`` "typescript" takes a JavaScript standby, whose kernel strips the code's types."""
        kernel = "python" if language == "python" else "javascript"
        request = {"code": code, "env": env}
        if language == "typescript":
            request["typescript"] = True
        self.running[kernel] += 1
        try:
            return await self._run(kernel, request, timeout)
        finally:
            self.running[kernel] -= 1

    async def _run(self, language: str, request: dict, timeout: float) -> tuple[list[dict], Standby]:
        try:
            standby = await self.pools[language].claim(self.running[language])
        except StandbyUnavailable as exc:
            raise self.manager.error(str(exc), 503) from exc
        standby.claimed = True
        with contextlib.suppress(Exception):
            standby.cpu_at_claim = standby.proc.cpu_seconds()
        self.manager.refill()  # (deferred while runs are in progress: sessions.py)
        try:
            standby.requests.write((json.dumps(request) + "\n").encode())
        except (OSError, RuntimeError, AttributeError):
            pass  # a kernel already gone: its events end, and the run reports it
        return await self._events(standby, timeout), standby

    async def _events(self, standby: Standby, timeout: float) -> list[dict]:
        """The run's events, as the agent's Kernel.execute yields them for a one-shot run."""
        loop = asyncio.get_running_loop()
        events: list[dict] = []
        deadline = loop.time() + timeout
        interrupted = False
        heap_oom, eofs = False, 0
        while True:
            try:
                event = await asyncio.wait_for(standby.events.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                if interrupted:
                    break  # it ignored the interrupt: the teardown kills it
                events.append(_timeout_error(timeout))
                interrupted = True
                self._interrupt(standby)
                deadline = loop.time() + INTERRUPT_GRACE
                continue
            kind = event.get("type")
            if kind == "_exit":
                events += await self._died(standby, heap_oom, eofs)
                break
            if kind == "_eof":
                eofs += 1
                continue
            if kind == "number_of_executions" or (interrupted and kind == "error"):
                continue  # (the KeyboardInterrupt our own interrupt caused: the timeout was reported)
            if kind == "_overflow":
                mib = MAX_OUTPUT_BYTES // (1024 * 1024)
                value = f"the run's output exceeded {mib} MiB; it was stopped"
                events.append(
                    {"type": "error", "name": "OutputLimitExceeded", "value": value, "traceback": ""}
                )
                break
            if kind == "stderr" and JS_HEAP_OOM in event.get("text", ""):
                heap_oom = True
            events.append(event)
            if kind == "end_of_execution":
                break
        return events

    def _interrupt(self, standby: Standby) -> None:
        """SIGINT to the sandbox's kernel (KeyboardInterrupt in Python; Node's kernel ends its run)."""
        with contextlib.suppress(Exception):
            for pid in standby.proc.pids():
                with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as comm:
                    name = comm.read().strip()
                if name in ("session_kernel", "node"):
                    os.kill(pid, signal.SIGINT)
                    return

    async def _died(self, standby: Standby, heap_oom: bool, eofs: int) -> list[dict]:
        """The kernel's event pipe ended before its run did: the rest of its output (until both its pipes
        end, at most EXIT_GRACE), then why."""
        loop = asyncio.get_running_loop()
        events: list[dict] = []
        until = loop.time() + EXIT_GRACE
        while eofs < 2 and (left := until - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(standby.events.get(), left)
            except TimeoutError:
                break
            eofs += event.get("type") == "_eof"
            if event.get("type") in ("stdout", "stderr"):
                heap_oom = heap_oom or (event["type"] == "stderr" and JS_HEAP_OOM in event["text"])
                events.append(event)
        code = standby.proc.poll()
        while code is None and loop.time() < until + EXIT_GRACE:  # bwrap exits with its program's status
            await asyncio.sleep(0.01)
            code = standby.proc.poll()
        if heap_oom:
            value = "out of memory: the JavaScript heap limit was reached"
            events.append({"type": "error", "name": "MemoryError", "value": value, "traceback": ""})
        elif standby.proc.oom_killed():  # the sandbox's memory limit (its exit code is the kill's)
            value = "out of memory: the sandbox's memory limit was reached"
            events.append({"type": "error", "name": "MemoryError", "value": value, "traceback": ""})
        elif standby.language == "javascript" and code is not None and code >= 0:
            events.append({"type": "error", "name": "SystemExit", "value": str(code), "traceback": ""})
        else:
            value = f"the kernel exited ({code})"
            events.append({"type": "error", "name": "KernelDied", "value": value, "traceback": ""})
        events.append({"type": "end_of_execution"})
        return events


def _timeout_error(timeout: float) -> dict:
    return {
        "type": "error",
        "name": "TimeoutError",
        "value": f"execution exceeded {timeout or 0:g} s and was interrupted",
        "traceback": "",
    }
