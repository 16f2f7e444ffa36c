"""Sessions: a sandbox that lives across calls - a kernel keeping state, files, commands, streaming.

    from hks_sdk import functions

    with functions.session(timeout=300) as s:
        s.run("x = 41")
        s.run("print('hi'); x + 1", on_stdout=print).result    # 42
        s.files.write("data.csv", "a,b\\n1,2\\n")
        s.commands.run("wc -l data.csv").stdout
    # killed on leaving the block; the platform also kills it at its deadline

    async with functions.session() as s:                      # the same, with awaitables
        await s.run("1 + 1")

    with functions.session(language="node") as s:             # a Node kernel (node:vm context) instead
        s.run("const x = 41")
        s.run("await Promise.resolve(x + 1)").result          # 42

Control calls (create, timeout, kill) use the internal API with the agent's JWT; code, files and commands
go to the session's data plane (the same endpoints E2B's SDK uses) with the session's access token.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .client import Client, HksError, quota_wait
from .execution import Execution, ExecutionError

ENVD, INTERPRETER = "49983", "49999"
# what the data plane calls each language; TypeScript is the Node kernel, each cell's types stripped
LANGUAGES = {
    "python": "python",
    **dict.fromkeys(("node", "javascript", "js"), "javascript"),
    **dict.fromkeys(("typescript", "ts"), "typescript"),
}
Callback = Callable[[str], Any] | None


@dataclass(frozen=True)
class SessionExecution(Execution):
    """One ``run()``: as ``Execution``, plus every rich result (``png``, ``html``... as E2B's)."""

    results: list[dict] = field(default_factory=list)
    execution_count: int = 0


@dataclass(frozen=True)
class CommandResult:
    stdout: str
    stderr: str
    exit_code: int
    pid: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _Collector:
    """Turns a session's event stream into callbacks and, at the end, a result."""

    def __init__(self, on_stdout: Callback, on_stderr: Callback, on_result=None, on_error=None):
        self.callbacks = {"stdout": on_stdout, "stderr": on_stderr, "result": on_result, "error": on_error}
        self.out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.events: list[dict] = []

    def feed(self, line: bytes | str) -> None:
        if not line.strip():
            return
        event = json.loads(line)
        self.events.append(event)
        kind = event.get("type")
        if kind in self.out:
            self.out[kind].append(event.get("text", ""))
        callback = self.callbacks.get(kind)
        if callback is not None:
            callback(event.get("text", "") if kind in self.out else event)

    def execution(self, started: float) -> SessionExecution:
        error = next((e for e in self.events if e["type"] == "error"), None)
        results = [e for e in self.events if e["type"] == "result"]
        main = next((r for r in results if r.get("is_main_result")), None)
        count = next((e["execution_count"] for e in self.events if e["type"] == "number_of_executions"), 0)
        return SessionExecution(
            stdout="".join(self.out["stdout"]),
            stderr="".join(self.out["stderr"]),
            result=None if main is None else main.get("value", main.get("text")),
            error=None
            if error is None
            else ExecutionError(error["name"], error["value"], error["traceback"]),
            exit_code=1 if error else 0,
            duration_ms=(time.perf_counter() - started) * 1000,
            results=results,
            execution_count=count,
        )

    def command(self) -> CommandResult:
        end = next((e for e in self.events if e["type"] == "end"), {"exit_code": -1})
        start = next((e for e in self.events if e["type"] == "start"), {"pid": 0})
        return CommandResult(
            "".join(self.out["stdout"]), "".join(self.out["stderr"]), end["exit_code"], start["pid"]
        )


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: building one (loading the CA bundle) costs ~100 ms per client."""
    return ssl.create_default_context()


def _data_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=httpx.Timeout(None, connect=10.0), verify=_tls())


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise HksError(f"{what}: {message}", status=response.status_code)


def _language(language: str) -> str:
    """What the session's data plane calls ``language`` ("python", "node", "ts"...): "python", "javascript"
    or "typescript"."""
    try:
        return LANGUAGES[language.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"language must be one of {sorted(LANGUAGES)}, not {language!r}") from None


class _Base:
    def __init__(self, client: Client, info: dict, own_client: bool, language: str = "python"):
        self.client = client
        self.language = _language(language)
        self.id: str = info["id"]
        self.info = info
        self._own_client = own_client
        self._token = info["access_token"]
        self._url = info["data_url"].rstrip("/")

    def _headers(self, port: str) -> dict[str, str]:
        return {"E2b-Sandbox-Id": self.id, "E2b-Sandbox-Port": port, "X-Access-Token": self._token}

    def _run_body(self, code: str, env: dict | None, timeout: float | None) -> dict:
        language = None if self.language == "python" else self.language
        return {"code": code, "context_id": None, "language": language, "env_vars": env, "timeout": timeout}


class Session(_Base):
    """A running session; use it as a context manager, or call ``kill()``."""

    def __init__(self, client: Client, info: dict, own_client: bool = False, language: str = "python"):
        super().__init__(client, info, own_client, language)
        self._http = _data_client(self._url)
        self.files = Files(self)
        self.commands = Commands(self)

    @classmethod
    def create(
        cls,
        *,
        timeout: int = 300,
        metadata: dict[str, str] | None = None,
        client: Client | None = None,
        language: str = "python",
        wait_for_quota: float = 0.0,
    ) -> Session:
        """A new session; ``language`` "node" makes ``run()`` take JavaScript (its Node kernel), "typescript"
        TypeScript (the same kernel, each cell's types stripped). Past the project's session quota the
        platform answers 429 with ``Retry-After``: ``wait_for_quota`` seconds makes this wait as it says and
        try again, for that long at most."""
        body = {"timeout_seconds": timeout, "metadata": metadata or {}, "language": _language(language)}
        own = client is None
        client = client or Client()
        try:
            info = quota_wait(lambda: client._call("POST", "/sessions", json=body), wait_for_quota)
        except HksError:
            if own:
                client.close()
            raise
        return cls(client, info, own, language)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def _stream(self, path: str, port: str, body: dict, collector: _Collector, what: str) -> None:
        with self._http.stream("POST", path, json=body, headers=self._headers(port)) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response, what)
            for line in response.iter_lines():
                collector.feed(line)

    def run(
        self,
        code: str,
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        on_result: Callable[[dict], Any] | None = None,
        on_error: Callable[[dict], Any] | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> SessionExecution:
        """Run code in the session's kernel (Python, or JavaScript with ``language="node"``; state is kept);
        callbacks get output as it is printed. The value of the last expression is ``result`` (a promise is
        awaited first in JavaScript)."""
        started = time.perf_counter()
        collector = _Collector(on_stdout, on_stderr, on_result, on_error)
        self._stream("/execute", INTERPRETER, self._run_body(code, env, timeout), collector, "run")
        return collector.execution(started)

    def interrupt(self) -> None:
        response = self._http.post("/hks/interrupt", headers=self._headers(INTERPRETER))
        _raise_for(response, "interrupt")

    def set_timeout(self, seconds: int) -> dict:
        self.info.update(
            self.client._call("POST", f"/sessions/{self.id}/timeout", json={"timeout_seconds": seconds})
        )
        return self.info

    def kill(self) -> None:
        try:
            self.client._call("DELETE", f"/sessions/{self.id}")
        except HksError as exc:
            if exc.status != 404:  # already gone: killed, or past its deadline
                raise
        finally:
            self._http.close()
            if self._own_client:
                self.client.close()


class Files:
    def __init__(self, session: Session):
        self._s = session

    def write(self, path: str, data: str | bytes) -> dict:
        body = data.encode() if isinstance(data, str) else data
        headers = {**self._s._headers(ENVD), "Content-Type": "application/octet-stream"}
        response = self._s._http.post("/files", params={"path": path}, content=body, headers=headers)
        _raise_for(response, f"write {path}")
        return response.json()[0]

    def read(self, path: str, *, format: str = "text") -> str | bytes:
        response = self._s._http.get("/files", params={"path": path}, headers=self._s._headers(ENVD))
        _raise_for(response, f"read {path}")
        return response.text if format == "text" else response.content

    def list(self, path: str = ".", *, depth: int = 1) -> list[dict]:
        response = self._s._http.post(
            "/filesystem.Filesystem/ListDir",
            json={"path": path, "depth": depth},
            headers=self._s._headers(ENVD),
        )
        _raise_for(response, f"list {path}")
        return response.json()["entries"]


class Commands:
    def __init__(self, session: Session):
        self._s = session

    def run(
        self,
        cmd: str,
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        envs: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = 60,
    ) -> CommandResult:
        """Run ``cmd`` with bash in the session; output streams to the callbacks. Killed after ``timeout``."""
        collector = _Collector(on_stdout, on_stderr)
        body = {"cmd": cmd, "envs": envs or {}, "cwd": cwd, "timeout": timeout}
        self._s._stream("/hks/commands", ENVD, body, collector, "command")
        return collector.command()


# --- async --------------------------------------------------------------------------------------------


class AsyncSession(_Base):
    """The same as ``Session`` with awaitables (``async with functions.session() as s``)."""

    def __init__(self, client: Client, info: dict, own_client: bool = False, language: str = "python"):
        super().__init__(client, info, own_client, language)
        self._http = httpx.AsyncClient(
            base_url=self._url, timeout=httpx.Timeout(None, connect=10.0), verify=_tls()
        )
        self.files = AsyncFiles(self)
        self.commands = AsyncCommands(self)

    @classmethod
    async def create(
        cls,
        *,
        timeout: int = 300,
        metadata: dict[str, str] | None = None,
        client: Client | None = None,
        language: str = "python",
        wait_for_quota: float = 0.0,
    ) -> AsyncSession:
        body = {"timeout_seconds": timeout, "metadata": metadata or {}, "language": _language(language)}
        own = client is None
        client = client or Client()
        give_up = time.monotonic() + wait_for_quota
        while True:  # quota_wait's loop, with an await for the pause
            try:
                info = await asyncio.to_thread(client._call, "POST", "/sessions", json=body)
                break
            except HksError as exc:
                pause = 1.0 if exc.retry_after is None else max(0.05, exc.retry_after)
                if exc.status != 429 or pause > give_up - time.monotonic():
                    if own:
                        client.close()
                    raise
                await asyncio.sleep(pause)
        return cls(client, info, own, language)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.kill()

    async def _stream(self, path: str, port: str, body: dict, collector: _Collector, what: str) -> None:
        async with self._http.stream("POST", path, json=body, headers=self._headers(port)) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response, what)
            async for line in response.aiter_lines():
                collector.feed(line)

    async def run(
        self,
        code: str,
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        on_result: Callable[[dict], Any] | None = None,
        on_error: Callable[[dict], Any] | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> SessionExecution:
        started = time.perf_counter()
        collector = _Collector(on_stdout, on_stderr, on_result, on_error)
        await self._stream("/execute", INTERPRETER, self._run_body(code, env, timeout), collector, "run")
        return collector.execution(started)

    async def interrupt(self) -> None:
        _raise_for(await self._http.post("/hks/interrupt", headers=self._headers(INTERPRETER)), "interrupt")

    async def set_timeout(self, seconds: int) -> dict:
        path, body = f"/sessions/{self.id}/timeout", {"timeout_seconds": seconds}
        self.info.update(await asyncio.to_thread(self.client._call, "POST", path, json=body))
        return self.info

    async def kill(self) -> None:
        try:
            await asyncio.to_thread(self.client._call, "DELETE", f"/sessions/{self.id}")
        except HksError as exc:
            if exc.status != 404:
                raise
        finally:
            await self._http.aclose()
            if self._own_client:
                self.client.close()


class AsyncFiles:
    def __init__(self, session: AsyncSession):
        self._s = session

    async def write(self, path: str, data: str | bytes) -> dict:
        body = data.encode() if isinstance(data, str) else data
        headers = {**self._s._headers(ENVD), "Content-Type": "application/octet-stream"}
        response = await self._s._http.post("/files", params={"path": path}, content=body, headers=headers)
        _raise_for(response, f"write {path}")
        return response.json()[0]

    async def read(self, path: str, *, format: str = "text") -> str | bytes:
        response = await self._s._http.get("/files", params={"path": path}, headers=self._s._headers(ENVD))
        _raise_for(response, f"read {path}")
        return response.text if format == "text" else response.content

    async def list(self, path: str = ".", *, depth: int = 1) -> list[dict]:
        response = await self._s._http.post(
            "/filesystem.Filesystem/ListDir",
            json={"path": path, "depth": depth},
            headers=self._s._headers(ENVD),
        )
        _raise_for(response, f"list {path}")
        return response.json()["entries"]


class AsyncCommands:
    def __init__(self, session: AsyncSession):
        self._s = session

    async def run(
        self,
        cmd: str,
        *,
        on_stdout: Callback = None,
        on_stderr: Callback = None,
        envs: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = 60,
    ) -> CommandResult:
        collector = _Collector(on_stdout, on_stderr)
        body = {"cmd": cmd, "envs": envs or {}, "cwd": cwd, "timeout": timeout}
        await self._s._stream("/hks/commands", ENVD, body, collector, "command")
        return collector.command()


class _Starter:
    """What ``functions.session()`` returns: ``with`` gives a Session, ``async with`` an AsyncSession."""

    def __init__(self, **options):
        self.options = options
        self.session: Session | None = None
        self.async_session: AsyncSession | None = None

    def __enter__(self) -> Session:
        self.session = Session.create(**self.options)
        return self.session

    def __exit__(self, *exc) -> None:
        if self.session is not None:
            self.session.kill()

    async def __aenter__(self) -> AsyncSession:
        self.async_session = await AsyncSession.create(**self.options)
        return self.async_session

    async def __aexit__(self, *exc) -> None:
        if self.async_session is not None:
            await self.async_session.kill()


def session(
    *,
    timeout: int = 300,
    metadata: dict[str, str] | None = None,
    client: Client | None = None,
    language: str = "python",
    wait_for_quota: float = 0.0,
) -> _Starter:
    """A session for a ``with`` (or ``async with``) block; ``Session.create(...)`` for one without.

    ``language``: "python" (the default), "node" ("javascript", "js") or "typescript" ("ts"): the kernel
    ``run()`` uses.
    ``wait_for_quota``: seconds to wait (as the 429's ``Retry-After`` says) for a slot of the project's
    session quota."""
    _language(language)
    return _Starter(
        timeout=timeout, metadata=metadata, client=client, language=language, wait_for_quota=wait_for_quota
    )


def execute_fast(
    code: str,
    *,
    language: str = "python",
    env: dict[str, str] | None = None,
    timeout: int = 60,
    client: Client,
    wait_for_quota: float = 0.0,
) -> Execution | None:
    """One run (Python, or Node with ``language="node"``, TypeScript with "typescript") in a pre-started
    sandbox (no deploy); None when the platform has no fast path (for that language).

    Past the project's quota the platform answers 429 with ``Retry-After``; with ``wait_for_quota`` seconds
    this waits as it says and tries again, for that long at most, else raises HksError (status 429)."""
    started = time.perf_counter()
    body = {"code": code, "env": env or {}, "timeout_seconds": timeout}
    no_fast_path = (404, 405, 501)
    if language != "python":
        body["language"] = language
        no_fast_path += (422,)  # a platform whose fast path is Python's alone refuses the language
    try:
        data = quota_wait(
            lambda: client._call("POST", "/operations/execute", json=body, timeout=timeout + 30),
            wait_for_quota,
        )
    except HksError as exc:
        if exc.status in no_fast_path:
            return None
        raise
    timings = {"execute_ms": (time.perf_counter() - started) * 1000}
    return Execution.from_response(data, function="", timings=timings)
