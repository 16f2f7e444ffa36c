from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


class HksError(Exception):
    """The platform refused a request; ``status`` is the HTTP status, the message its reason.
    ``retry_after``: the seconds its ``Retry-After`` header gave (a 429 over a quota), else None."""

    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class DeployError(HksError):
    """The code could not be deployed (build failed, quota, bad input)."""


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the platform sends whole seconds; an HTTP date is not used)."""
    try:
        value = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def quota_wait(call: Callable[[], T], wait_for_quota: float) -> T:
    """``call()``, tried again while the platform answers 429 (a quota) and ``wait_for_quota`` seconds have
    not passed: each wait is the answer's ``Retry-After`` (1 s without one). When that is longer than what
    is left of the wait the 429 is raised at once, since the platform said no sooner would do."""
    give_up = time.monotonic() + wait_for_quota
    while True:
        try:
            return call()
        except HksError as exc:
            if exc.status != 429:
                raise
            pause = 1.0 if exc.retry_after is None else max(0.05, exc.retry_after)
            if pause > give_up - time.monotonic():
                raise
            time.sleep(pause)


class Client:
    """Talks to the internal Operations API with a JWT minted from the agent credential, renewed as needed."""

    def __init__(self, url: str | None = None, credential: str | None = None, *, timeout: float = 30.0):
        self.url = (url or os.environ.get("HKS_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.credential = credential or os.environ.get("HKS_AGENT_CREDENTIAL", "")
        if not self.credential:
            raise HksError("no agent credential: pass credential=... or set HKS_AGENT_CREDENTIAL")
        self._http = httpx.Client(base_url=f"{self.url}/internal/v1", timeout=timeout)
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _bearer(self) -> str:
        with self._lock:
            if time.time() > self._expires - 30:
                data = self._call("POST", "/token", json={"credential": self.credential}, auth=False)
                self._token = data["token"]
                expires = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
                self._expires = expires.astimezone(UTC).timestamp()
            return self._token

    def _call(
        self, method: str, path: str, *, auth: bool = True, timeout: float | None = None, **kwargs
    ) -> Any:
        headers = {"Authorization": f"Bearer {self._bearer()}"} if auth else {}
        try:
            response = self._http.request(
                method, path, headers=headers, timeout=timeout or self._http.timeout, **kwargs
            )
        except httpx.HTTPError as exc:
            raise HksError(f"cannot reach HKS Functions at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise HksError(
                f"{method} {path}: {detail}",
                status=response.status_code,
                retry_after=_retry_after(response),
            )
        return response.json()

    # Operations ------------------------------------------------------------------------------------

    def deploy(
        self,
        *,
        code: str,
        runtime: str = "python",
        env: dict[str, str] | None = None,
        files: dict[str, str] | None = None,
        ttl_seconds: int = 600,
        timeout_seconds: int = 60,
    ) -> dict:
        payload = {
            "runtime": runtime,
            "code": code,
            "env": env or {},
            "files": files or {},
            "ttl_seconds": ttl_seconds,
            "timeout_seconds": timeout_seconds,
        }
        try:
            return self._call("POST", "/operations/deploy-function", json=payload)
        except HksError as exc:
            raise DeployError(str(exc), status=exc.status, retry_after=exc.retry_after) from exc

    def status(self, name: str) -> dict:
        return self._call("GET", f"/operations/functions/{name}")

    def wait_ready(self, name: str, *, timeout: float = 180.0, interval: float = 0.5) -> dict:
        """Poll until ready: every 50 ms for the first 3 s (a pooled start takes tens of ms), then every
        ``interval``."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            state = self.status(name)
            if state["ready"]:
                return state
            if state["status"] in ("failed", "deleting", "deleted"):
                raise DeployError(f"function {name} is {state['status']}: {state['message']}")
            if time.monotonic() > deadline:
                raise DeployError(
                    f"function {name} was not ready after {timeout:g} s (status {state['status']})"
                )
            time.sleep(min(0.05, interval) if time.monotonic() - started < 3 else interval)

    def invoke(self, name: str, *, body: str = "", method: str = "POST", timeout: float = 660.0) -> dict:
        return self._call(
            "POST",
            "/operations/invoke-function",
            timeout=timeout,
            json={"name": name, "method": method, "path": "/", "body": body},
        )

    def delete(self, name: str) -> dict:
        return self._call("POST", "/operations/delete-function", json={"name": name})
