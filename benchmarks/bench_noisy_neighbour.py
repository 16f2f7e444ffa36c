"""One tenant's load against another tenant's latency on the local runtime: the noisy neighbour.

Starts a runtime daemon on free ports and deploys, in two projects (namespaces), tenant B's Node hello
function (one warm instance) and tenant A's "burner" - a Node function that spends ``--burn-ms`` of CPU per
request, allowed to scale out to ``--max-scale`` instances of a full core each. In the same run it measures
B's latency with ``wrk`` at concurrency 1 (Debian package), first alone (the baseline), then while A's
function is flooded at ``--load-connections`` and has scaled out across every core. Prints B's figures in
both phases, their ratio and A's throughput, then one JSON line.

    .venv/bin/python benchmarks/bench_noisy_neighbour.py [--duration 5] [--burn-ms 20]

There is no goal figure: it shows how much of the machine one tenant can take from another (CPU shares
between sandboxes; see docs/runtime.md, Limits).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_gateway import parse_wrk, wrk  # noqa: E402
from benchmarks.runtime_bench import HELLO, bench_daemon, deploy_hello  # noqa: E402


def burner(ms: int) -> dict:
    return {
        "index.js": (
            "const handle = async () => {\n"
            f"  const end = Date.now() + {ms}; let x = 0;\n"
            "  while (Date.now() < end) { x += Math.sqrt(x + 1); }\n"
            "  return 'burnt';\n"
            "};\nmodule.exports = { handle };\n"
        ),
        "package.json": HELLO["node"]["package.json"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--burn-ms", type=int, default=20)
    parser.add_argument("--max-scale", type=int, default=6)
    parser.add_argument("--load-connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    load_average = os.getloadavg()
    with bench_daemon(idle_seconds=600) as daemon:
        deploy_hello(daemon, "node", "hello", namespace="tenant-b", min_scale=1)
        deploy_hello(
            daemon,
            "node",
            "burner",
            namespace="tenant-a",
            files=burner(args.burn_ms),
            min_scale=1,
            max_scale=args.max_scale,
            target_concurrency=2,
            cpu_millicores=1000,
        )
        gateway = daemon.gateway_url + "/"
        victim, noisy = "hello.tenant-b.localhost", "burner.tenant-a.localhost"
        wrk(gateway, 1, 1, victim)  # warm
        alone = wrk(gateway, 1, args.duration, victim)
        # A's flood: long enough to scale out first, then to cover B's whole measurement.
        load_seconds = round(args.duration + 8)
        argv = ["wrk", "-t2", f"-c{args.load_connections}", f"-d{load_seconds}s", "--latency", gateway]
        flood = subprocess.Popen([*argv, "-H", f"Host: {noisy}"], stdout=subprocess.PIPE, text=True)
        time.sleep(5)
        with daemon.client() as client:
            instances = len(client.get("/v1/namespaces/tenant-a/functions/burner").json()["instances"])
        loaded = wrk(gateway, 1, args.duration, victim)
        flood_figures = parse_wrk(flood.communicate(timeout=load_seconds + 30)[0])
    results = {
        "victim_alone": alone,
        "victim_under_load": loaded,
        "p50_ratio": round(loaded["p50_ms"] / alone["p50_ms"], 2) if alone["p50_ms"] else None,
        "p99_ratio": round(loaded["p99_ms"] / alone["p99_ms"], 2) if alone["p99_ms"] else None,
        "noisy_tenant": {**flood_figures, "instances": instances, "burn_ms": args.burn_ms},
    }
    print(f"{'tenant B (hello), c=1':<34}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for label, key in (
        ("alone", "victim_alone"),
        ("while tenant A floods its function", "victim_under_load"),
    ):
        f = results[key]
        print(f"{label:<34}{f['p50_ms']:>9}{f['p99_ms']:>9}{f['rps']:>9}")
    print(f"ratio under load / alone: p50 {results['p50_ratio']}, p99 {results['p99_ratio']}")
    a = results["noisy_tenant"]
    print(
        f"tenant A: {a['instances']} instances, {a['rps']} req/s of {args.burn_ms} ms CPU each, "
        f"p50 {a['p50_ms']} ms"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in load_average)} ({os.cpu_count()} cores)")
    print(json.dumps({"benchmark": "noisy_neighbour", "load_average": load_average, "results": results}))


if __name__ == "__main__":
    main()
