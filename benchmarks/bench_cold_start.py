"""Cold-start latency of Node and Python hello functions through the runtime gateway.

Two runtime daemons in the same run, each with a short idle period and a hello function per language:

- ``pooled``: the default, one pre-warmed sandbox per function shape (the language runtime already loaded,
  waiting to be given a function), as after any real idle period;
- ``baseline``: ``--pool-size 0``, every cold start spawns a sandbox and loads the runtime from nothing.

For each, repeatedly: wait until the function is scaled to zero (and, when pooled, the pool refilled), then
time one request from send to answer (the gateway holds it while an instance starts). Every sample is
checked against the daemon's own ``hks_cold_starts_total`` so that a warm answer cannot pass for a cold one.

    .venv/bin/python benchmarks/bench_cold_start.py [--samples 15] [--runtimes node,python]

Goal (issue 3): pooled p50 under 100 ms for both languages. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.runtime_bench import HELLO, bench_daemon, deploy_hello  # noqa: E402

IDLE_SECONDS = 0.5
GOAL_P50_MS = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_for_zero(client: httpx.Client, path: str, runtime: str, pooled: bool) -> None:
    """Until the function is at zero and, as after a real idle period, the pre-warmed pool is refilled."""
    deadline = time.monotonic() + 60
    while client.get(path).json()["replicas"] > 0 or (pooled and not _pool_ready(client, runtime)):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never scaled to zero (or the pool never refilled)")
        time.sleep(0.05)
    time.sleep(0.3)  # let the stopped instance's teardown finish so it does not compete for the CPU


def _pool_ready(client: httpx.Client, runtime: str) -> bool:
    pool = client.get("/healthz").json().get("prewarmed", {})
    return any(shape.startswith(f"{runtime}/") and count for shape, count in pool.items())


def cold_starts_counted(client: httpx.Client, name: str) -> int:
    """The daemon's hks_cold_starts_total for this function, summed over its revisions."""
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples
            if sample.name == "hks_cold_starts_total" and sample.labels.get("kn_service_name") == name
        )
    )


def measure(daemon, runtime: str, samples: int, *, pooled: bool) -> dict:
    name = f"cold-{runtime}"
    deploy_hello(daemon, runtime, name)
    path = f"/v1/namespaces/{HELLO['namespace']}/functions/{name}"
    url = f"{daemon.gateway_url}/{HELLO['namespace']}/{name}/"
    times = []
    with daemon.client() as control, httpx.Client(timeout=60) as client:
        counted_before = cold_starts_counted(control, name)
        for _ in range(samples):
            wait_for_zero(control, path, runtime, pooled)
            started = time.perf_counter()
            response = client.get(url)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"cold request failed: {response.status_code} {response.text}")
            times.append(elapsed)
        counted = cold_starts_counted(control, name) - counted_before
    if counted != samples:
        raise SystemExit(f"{runtime}: {samples} samples but the daemon counted {counted} cold starts")
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
    runtimes = args.runtimes.split(",")
    results: dict[str, dict] = {runtime: {} for runtime in runtimes}
    for mode, extra in (("pooled", ()), ("baseline", ("--pool-size", "0"))):
        with bench_daemon(idle_seconds=IDLE_SECONDS, extra=extra) as daemon:
            for runtime in runtimes:
                results[runtime][mode] = measure(daemon, runtime, args.samples, pooled=mode == "pooled")
    print(f"{'runtime':<9}{'mode':<10}{'samples':>8}{'p50 ms':>9}{'p95 ms':>9}{'min ms':>9}{'max ms':>9}")
    for runtime, modes in results.items():
        for mode, r in modes.items():
            print(
                f"{runtime:<9}{mode:<10}{r['samples']:>8}{r['p50_ms']:>9}{r['p95_ms']:>9}"
                f"{r['min_ms']:>9}{r['max_ms']:>9}"
            )
        modes["p50_ratio_pooled_to_baseline"] = round(
            modes["pooled"]["p50_ms"] / modes["baseline"]["p50_ms"], 3
        )
        modes["meets_goal"] = modes["pooled"]["p50_ms"] < GOAL_P50_MS
        print(
            f"{runtime}: pooled p50 is {modes['p50_ratio_pooled_to_baseline']} of the baseline's; "
            f"goal p50 < {GOAL_P50_MS} ms {'met' if modes['meets_goal'] else 'NOT met'}"
        )
    print(json.dumps({"benchmark": "cold_start", "goal_p50_ms": GOAL_P50_MS, "results": results}))


if __name__ == "__main__":
    main()
