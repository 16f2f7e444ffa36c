"""The control API's session routes (same bearer token as the rest of control.py), see sessions.py.

    POST   /v1/sessions                 {id, namespace, token, timeout_seconds, labels, language}: 201
                                        session (``language`` "javascript" or "typescript": a Node-ready
                                        agent)
    GET    /v1/sessions[?namespace=ns]  {"sessions": [...]}
    GET    /v1/sessions/{id}            the session (404 when unknown)
    DELETE /v1/sessions/{id}            kill it: {"deleted": bool, "cpu_seconds": float | null} (the CPU
                                        time its sandbox used; also once for a session the reaper ended)
    POST   /v1/sessions/{id}/timeout    {timeout_seconds}: a new deadline counted from now
    POST   /v1/execute                  {code, timeout_seconds, env, namespace, max_concurrent, language}:
                                        one-shot run in a bare kernel (``language`` "python",
                                        "javascript", or "typescript": the JavaScript kernel stripping
                                        the code's types); 429 (Retry-After) past max_concurrent; the
                                        answer carries the sandbox's ``cpu_seconds`` (null without cgroups)
    GET    /v1/session-libraries        the library layer: {state, libraries: {name: version}, node: version}

A session is ``{id, namespace, host, port, deadline, created, labels}``; the portal talks to its agent at
``host:port`` with the token it chose. Errors are ``{"error": message, "permanent": bool}``.
"""

from __future__ import annotations

from aiohttp import web

from .sessions import SessionError, SessionManager


def _error(exc: SessionError) -> web.Response:
    return web.json_response({"error": str(exc), "permanent": exc.status < 500}, status=exc.status)


async def _json(request: web.Request) -> dict:
    try:
        data = await request.json()
    except ValueError as exc:
        raise SessionError("the body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise SessionError("the body must be a JSON object")
    return data


def _number(data: dict, key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SessionError(f"{key} must be a number")
    return float(value)


class SessionApi:
    def __init__(self, manager: SessionManager, sandbox_problem):
        self.manager = manager
        self.sandbox_problem = sandbox_problem

    def register(self, app: web.Application) -> None:
        app.router.add_post("/v1/sessions", self.create)
        app.router.add_get("/v1/sessions", self.list)
        app.router.add_get("/v1/sessions/{id}", self.get)
        app.router.add_delete("/v1/sessions/{id}", self.delete)
        app.router.add_post("/v1/sessions/{id}/timeout", self.timeout)
        app.router.add_post("/v1/execute", self.execute)
        app.router.add_get("/v1/session-libraries", self.libraries)
        app.router.add_get("/v1/session-pool", self.pool)

    async def libraries(self, request: web.Request) -> web.Response:
        return web.json_response(self.manager.status())

    async def pool(self, request: web.Request) -> web.Response:
        return web.json_response(self.manager.pool_view())

    def _unavailable(self) -> web.Response | None:
        problem = self.sandbox_problem()
        return _error(SessionError(problem, 503)) if problem else None

    async def create(self, request: web.Request) -> web.Response:
        if (refused := self._unavailable()) is not None:
            return refused
        try:
            data = await _json(request)
            labels = data.get("labels") or {}
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                raise SessionError("labels must map names to strings")
            session = await self.manager.create(
                session_id=str(data.get("id", "")),
                namespace=str(data.get("namespace", "")),
                token=str(data.get("token", "")),
                timeout=_number(data, "timeout_seconds", 300),
                labels=labels,
                language=str(data.get("language") or "python"),
            )
        except SessionError as exc:
            return _error(exc)
        return web.json_response(session.view(), status=201)

    async def list(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace")
        items = [
            s.view() for s in self.manager.sessions.values() if namespace is None or s.namespace == namespace
        ]
        return web.json_response({"sessions": items})

    async def get(self, request: web.Request) -> web.Response:
        session = self.manager.sessions.get(request.match_info["id"])
        if session is None:
            return _error(SessionError("session not found", 404))
        return web.json_response(session.view())

    async def delete(self, request: web.Request) -> web.Response:
        deleted, cpu = await self.manager.delete(request.match_info["id"])
        return web.json_response({"deleted": deleted, "cpu_seconds": cpu})

    async def timeout(self, request: web.Request) -> web.Response:
        try:
            data = await _json(request)
            session = self.manager.extend(request.match_info["id"], _number(data, "timeout_seconds", 300))
        except SessionError as exc:
            return _error(exc)
        return web.json_response(session.view())

    async def execute(self, request: web.Request) -> web.Response:
        if (refused := self._unavailable()) is not None:
            return refused
        try:
            data = await _json(request)
            code, env = data.get("code"), data.get("env") or {}
            if not isinstance(code, str) or not isinstance(env, dict):
                raise SessionError("code must be a string and env an object")
            timeout = _number(data, "timeout_seconds", 60)
            if not 1 <= timeout <= 600:
                raise SessionError("timeout_seconds must be between 1 and 600")
            result = await self.manager.execute(
                code=code,
                timeout=timeout,
                env={str(k): str(v) for k, v in env.items()},
                namespace=str(data.get("namespace", "")),
                max_concurrent=int(_number(data, "max_concurrent", 0)),
                language=str(data.get("language") or "python"),
            )
        except SessionError as exc:
            response = _error(exc)
            if exc.status == 429:
                response.headers["Retry-After"] = "1"
            return response
        return web.json_response(result)
