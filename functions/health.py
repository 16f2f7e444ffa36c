"""What the platform is running without, and what that costs: one list for ``/healthz`` and the operators'
page. The runtime reports its own parts (bubblewrap, seccomp, HAProxy) in its ``/healthz``; the database,
Redis and Prometheus are probed here. Probes have short timeouts, so this answers when the parts are down.
On a cluster (``HKS_LOCAL_RUNTIME=0``, deploy/) there is no local runtime to ask about."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import httpx
from django.conf import settings

from functions import metrics

PROBE_TIMEOUT = 2.0
# Without these no local function runs at all, or the portal cannot serve (sessions, sign-in limits, tasks).
REQUIRED = {"local runtime", "bubblewrap", "database", "Redis"}
COSTS = {
    "database": "nothing can be read or written: the portal cannot serve",
    "Redis": "no sign-in (its limits), no tasks, no live pushes",
    "local runtime": "functions of local projects cannot be built, deployed or invoked",
    "Prometheus": "no requests, latency, errors, CPU or memory figures on the dashboard; functions still run "
    "and scale (install Debian's prometheus, or set HKS_PROMETHEUS_URL)",
}


@dataclass(frozen=True)
class Missing:
    part: str
    problem: str
    cost: str

    @property
    def required(self) -> bool:
        return self.part in REQUIRED


def missing_parts() -> list[Missing]:
    missing = _services_missing()
    if settings.HKS_LOCAL_RUNTIME:
        missing += _runtime_missing()
    if not metrics.prometheus_healthy():
        missing.append(
            Missing("Prometheus", f"{settings.HKS_PROMETHEUS_URL} does not answer", COSTS["Prometheus"])
        )
    return missing


def _services_missing() -> list[Missing]:
    from django.core.cache import cache
    from django.db import connection

    def database():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    missing = []
    for part, probe in (("database", database), ("Redis", lambda: cache.get("healthz"))):
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - any failure is the state to report
            missing.append(Missing(part, f"{type(exc).__name__}: {exc}"[:200], COSTS[part]))
    return missing


def _runtime_missing() -> list[Missing]:
    url = settings.HKS_RUNTIME_URL.rstrip("/") + "/healthz"
    try:
        response = httpx.get(url, timeout=PROBE_TIMEOUT, trust_env=False)
        response.raise_for_status()
        reported = response.json().get("missing", [])
    except (httpx.HTTPError, ValueError) as exc:
        return [Missing("local runtime", f"{url}: {type(exc).__name__}", COSTS["local runtime"])]
    return [Missing(item["part"], item.get("problem", ""), item["cost"]) for item in reported]


def healthz_body(missing: list[Missing]) -> dict:
    return {
        "ok": not any(m.required for m in missing),
        "missing": [{**asdict(m), "required": m.required} for m in missing],
    }
