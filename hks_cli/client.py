"""A thin httpx client for the portal's JSON API that turns every failure into a ``CliError`` with the
right exit code and the server's reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx

from . import __version__
from .config import Config
from .errors import ERROR, NOT_LOGGED_IN, STATUS_EXIT, UNREACHABLE, CliError

API = "/api/v1"


def server_reason(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # request validation errors: [{"loc": [...], "msg": "..."}]
        parts = []
        for item in detail:
            where = ".".join(str(p) for p in item.get("loc", [])[1:]) if isinstance(item, dict) else ""
            message = item.get("msg", item) if isinstance(item, dict) else item
            parts.append(f"{where}: {message}" if where else str(message))
        detail = "; ".join(parts)
    return str(detail or response.text.strip()[:300] or response.reason_phrase)


class Api:
    """Calls ``{url}/api/v1``; with ``token`` unless the caller says the endpoint needs none."""

    def __init__(self, config: Config, *, timeout: float = 30):
        self.config = config
        self.http = httpx.Client(
            base_url=config.url + API, timeout=timeout, headers={"User-Agent": f"hks-cli/{__version__}"}
        )

    def request(self, method: str, path: str, *, auth: bool = True, ok=(200, 201, 202, 204), **kwargs):
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            if not self.config.token:
                raise CliError("not logged in: run `hks login` first (or set HKS_TOKEN)", NOT_LOGGED_IN)
            headers["Authorization"] = f"Bearer {self.config.token}"
        try:
            response = self.http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the portal at {self.config.url}: {exc}", UNREACHABLE) from exc
        if response.status_code not in ok:
            raise self.error_for(response)
        return response

    def stream_lines(
        self, path: str, *, params: dict, on_open: Callable[[], None] = lambda: None
    ) -> Iterator:
        """GET a newline-delimited JSON stream; yields each object (blank keep-alive lines are skipped).
        A connection that breaks, or stays silent past the keep-alive, raises ``CliError`` (UNREACHABLE)."""
        if not self.config.token:
            raise CliError("not logged in: run `hks login` first (or set HKS_TOKEN)", NOT_LOGGED_IN)
        headers = {"Authorization": f"Bearer {self.config.token}", "Accept": "application/x-ndjson"}
        timeout = httpx.Timeout(30, read=60)  # the portal sends a keep-alive line every 15 s
        try:
            with self.http.stream("GET", path, params=params, headers=headers, timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    raise self.error_for(response)
                on_open()
                for raw in response.iter_lines():
                    if raw.strip():
                        yield json.loads(raw)
        except httpx.TransportError as exc:
            raise CliError(f"lost the portal at {self.config.url}: {exc}", UNREACHABLE) from exc

    def error_for(self, response: httpx.Response) -> CliError:
        reason = server_reason(response)
        if response.status_code == 401:
            return CliError(f"not logged in or the token expired ({reason}): run `hks login`", NOT_LOGGED_IN)
        if response.status_code == 403:
            reason = f"permission denied: {reason}"
        code = STATUS_EXIT.get(response.status_code, ERROR)
        return CliError(reason, code)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, **kwargs):
        return _json_or_none(self.request("POST", path, **kwargs))

    def put(self, path: str, **kwargs):
        return _json_or_none(self.request("PUT", path, **kwargs))

    def patch(self, path: str, **kwargs):
        return _json_or_none(self.request("PATCH", path, **kwargs))

    def delete(self, path: str, **kwargs):
        return _json_or_none(self.request("DELETE", path, **kwargs))


def _json_or_none(response: httpx.Response):
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None
