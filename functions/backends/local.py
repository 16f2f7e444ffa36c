"""The ``local`` backend: a client of the hks_runtime daemon's control API (see hks_runtime/control.py).

Settings: ``HKS_RUNTIME_URL`` (control API), ``HKS_RUNTIME_TOKEN`` (its bearer token). Connection errors and
5xx answers are transient (the task retries); 4xx answers and build errors are permanent. Schedules are
fired by the portal's beat on this backend, so ``apply_schedule``/``delete_schedule`` hold nothing here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from django.conf import settings

from functions.backends.base import (
    BackendError,
    BuildResult,
    BuildSpec,
    FunctionBackend,
    FunctionRef,
    LogLine,
    LogSink,
    OwnedFunction,
    ScheduleSpec,
    ServiceSpec,
    ServiceStatus,
)

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
BUILD_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=1800.0)  # a dependency install may be slow
_client: tuple[int, httpx.Client] | None = None  # (the process it was made in, the client)
_client_lock = threading.Lock()


def runtime_http() -> httpx.Client:
    """The process's one HTTP client to the runtime, shared by its threads (the backend's calls, agents'
    executions and sessions): ``httpx.request`` builds a client - and a TLS context, tens of milliseconds -
    per call and keeps no connection for the next. Made again in a forked child (a worker process)."""
    global _client
    pid = os.getpid()
    if _client is None or _client[0] != pid:
        with _client_lock:
            if _client is None or _client[0] != pid:
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
                _client = (pid, httpx.Client(limits=limits, timeout=TIMEOUT))
    return _client[1]


def spec_payload(spec: ServiceSpec) -> dict:
    """The control API's JSON form of a ServiceSpec."""
    return {
        "revision": spec.revision,
        "runtime": spec.runtime,
        "kind": spec.kind,
        "artifact": spec.artifact,
        "env": {**spec.env, **spec.secret_env},  # the runtime keeps specs on the host only
        "scale": {
            "min": spec.scale.min,
            "max": spec.scale.max,
            "target_concurrency": spec.scale.target_concurrency,
            "container_concurrency": spec.scale.container_concurrency,
        },
        "resources": {"cpu_millicores": spec.resources.cpu_millicores, "memory_mb": spec.resources.memory_mb},
        "timeout_seconds": spec.timeout_seconds,
        "profile": spec.sandbox_profile,
        "visibility": spec.visibility,
        "labels": dict(spec.labels),
        "project_max_instances": spec.project_max_instances,  # the runtime keeps the namespace's latest
    }


class LocalBackend(FunctionBackend):
    def __init__(self, url: str | None = None, token: str | None = None):
        self.url = (url or settings.HKS_RUNTIME_URL).rstrip("/")
        self.token = token or settings.HKS_RUNTIME_TOKEN

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _path(self, ref: FunctionRef) -> str:
        return f"/v1/namespaces/{ref.namespace}/functions/{ref.function}"

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return runtime_http().request(method, self.url + path, headers=self._headers, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"local runtime unreachable at {self.url}: {exc}") from exc

    def build(self, spec: BuildSpec, on_log: LogSink | None = None) -> BuildResult:
        payload = {
            "runtime": spec.runtime,
            "archive_path": spec.archive_path,
            "content_hash": spec.content_hash,
            "profile": spec.sandbox_profile,  # agent code: no build hooks
            "namespace": spec.ref.namespace,  # what build hooks produce stays the project's own
        }
        lines: list[str] = []
        try:
            with runtime_http().stream(
                "POST", self.url + "/v1/builds", json=payload, headers=self._headers, timeout=BUILD_TIMEOUT
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise _error(response)
                for raw in response.iter_lines():
                    if not raw.strip():
                        continue
                    item = json.loads(raw)
                    if "log" in item:
                        lines.append(item["log"])
                        if on_log:
                            on_log(item["log"])
                    elif "artifact" in item:
                        size = _byte_count(item.get("bytes"))
                        return BuildResult(
                            artifact=item["artifact"], log="\n".join(lines), artifact_bytes=size
                        )
                    elif "error" in item:
                        raise BackendError(item["error"], permanent=bool(item.get("permanent")))
        except httpx.HTTPError as exc:
            raise BackendError(f"local runtime unreachable at {self.url}: {exc}") from exc
        raise BackendError("the build ended without an artifact")

    def apply(self, spec: ServiceSpec) -> None:
        response = self._request("PUT", self._path(spec.ref), json=spec_payload(spec))
        if response.status_code != 200:
            raise _error(response)

    def status(self, ref: FunctionRef) -> ServiceStatus:
        response = self._request("GET", self._path(ref))
        if response.status_code == 404:
            return ServiceStatus(ready=False, exists=False)
        if response.status_code != 200:
            raise _error(response)
        data = response.json()
        return ServiceStatus(
            ready=data["ready"],
            url=data.get("url", ""),
            internal_url=data.get("internal_url", ""),
            replicas=data.get("replicas", 0),
            latest_ready_revision=data.get("latest_ready_revision", ""),
            message=data.get("message", ""),
            failed=bool(data.get("failed")),
        )

    def delete(self, ref: FunctionRef) -> float | None:
        response = self._request("DELETE", self._path(ref))
        if response.status_code != 200:
            raise _error(response)
        try:
            cpu = response.json().get("cpu_seconds")
        except (ValueError, AttributeError):
            return None
        return float(cpu) if isinstance(cpu, int | float) and not isinstance(cpu, bool) else None

    def set_instance_quota(self, namespace: str, max_instances: int) -> None:
        response = self._request(
            "PUT", f"/v1/namespaces/{namespace}/quota", json={"max_instances": max_instances}
        )
        if response.status_code != 200:
            raise _error(response)

    def delete_artifact(self, artifact: str) -> bool:
        response = self._request("DELETE", f"/v1/artifacts/{Path(artifact).name}")
        if response.status_code == 409:  # a function or a fresh build uses it
            return False
        if response.status_code != 200:
            raise _error(response)
        return True

    async def logs(
        self,
        ref: FunctionRef,
        since: dt.datetime | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[LogLine]:
        params: dict[str, str] = {}
        if since is not None:
            params["since"] = since.isoformat()
        if tail is not None:
            params["tail"] = str(tail)
        if follow:
            params["follow"] = "1"
        timeout = httpx.Timeout(30.0, connect=5.0, read=None if follow else 30.0)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                async with client.stream(
                    "GET", self.url + self._path(ref) + "/logs", params=params, headers=self._headers
                ) as response:
                    if response.status_code == 404:
                        return
                    if response.status_code != 200:
                        await response.aread()
                        raise _error(response)
                    async for raw in response.aiter_lines():
                        if raw.strip():
                            yield _log_line(json.loads(raw))
        except httpx.HTTPError as exc:
            raise BackendError(f"local runtime unreachable at {self.url}: {exc}") from exc

    def apply_schedule(self, spec: ScheduleSpec) -> None:
        """Nothing to hold: the portal's beat fires local schedules (``fires_schedules_itself`` is False)."""

    def delete_schedule(self, ref: FunctionRef, name: str) -> None:
        """Nothing to remove, see ``apply_schedule``."""

    def list_owned(self, project: str, namespace: str) -> list[OwnedFunction]:
        response = self._request("GET", "/v1/functions", params={"namespace": namespace})
        if response.status_code != 200:
            raise _error(response)
        return [
            OwnedFunction(
                ref=FunctionRef(project=project, namespace=item["namespace"], function=item["name"]),
                revision=item["revision"],
                labels=item.get("labels", {}),
                replicas=item.get("replicas"),
                latest_ready_revision=item.get("latest_ready_revision", ""),
                message=item.get("message"),  # an older runtime gives none
            )
            for item in response.json()["functions"]
        ]


def _log_line(item: dict) -> LogLine:
    return LogLine(
        timestamp=dt.datetime.fromisoformat(item["ts"].replace("Z", "+00:00")),
        instance=item["instance"],
        stream=item["stream"],
        text=item["text"],
    )


def _byte_count(value) -> int:
    """A build answer's ``bytes``; 0 when there is none (a runtime older than the storage quota)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _error(response: httpx.Response) -> BackendError:
    try:
        data = response.json()
        message, permanent = data["error"], bool(data.get("permanent"))
    except (ValueError, KeyError, TypeError):
        message, permanent = response.text[:500] or f"HTTP {response.status_code}", False
    if response.status_code >= 500 and response.status_code != 503:
        permanent = False
    elif 400 <= response.status_code < 500:
        permanent = True
    return BackendError(f"local runtime: {message}", permanent=permanent)
