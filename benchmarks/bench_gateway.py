"""Warm request latency and throughput through the runtime gateway versus straight to the instance.

Starts a runtime daemon (python -m hks_runtime) on free ports, deploys Node and Python hello functions with
one warm instance each, then runs ``wrk`` (Debian package) against 127.0.0.1 only, in the same run: direct
to the instance's socket, then through the gateway (Host header, Knative's URL shape), at concurrency 1
and 32 - for each data path: the Python gateway alone, and HAProxy in front of it (--data-path haproxy).

    .venv/bin/python benchmarks/bench_gateway.py [--duration 5] [--runtimes node,python]

Goals (issue 3): the gateway adds < 1 ms at p50, and keeps >= 50 % of direct throughput at concurrency 32.
Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.runtime_bench import HELLO, bench_daemon, deploy_hello  # noqa: E402

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(output: str) -> dict:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        return round(float(match.group(1)) * UNITS[match.group(2)], 3)

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "rps": round(rps),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def wrk(url: str, connections: int, duration: float, host: str = "") -> dict:
    threads = 1 if connections == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url]
    argv += ["-H", f"Host: {host}"] if host else []
    return parse_wrk(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--runtimes", default="node,python")
    parser.add_argument(
        "--cpu-millicores",
        type=int,
        default=2000,
        help="the instance's CPU limit (2000 = both cores: measure the proxy, not the cgroup cap)",
    )
    parser.add_argument("--data-paths", default="python,haproxy", help="gateway data paths to measure")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    results: dict = {}
    for data_path in args.data_paths.split(","):
        with bench_daemon(idle_seconds=600, extra=("--data-path", data_path)) as daemon:
            for runtime in args.runtimes.split(","):
                name = f"bench-{runtime}"
                status = deploy_hello(daemon, runtime, name, min_scale=1, cpu_millicores=args.cpu_millicores)
                port = next(i["port"] for i in status["instances"] if i["state"] == "ready")
                direct = f"http://127.0.0.1:{port}/"
                host = f"{name}.{HELLO['namespace']}.localhost"  # Knative's URL shape, by Host header
                for connections in (1, 32):
                    wrk(daemon.gateway_url + "/", connections, 1, host)  # warm both paths
                    d = wrk(direct, connections, args.duration)
                    g = wrk(daemon.gateway_url + "/", connections, args.duration, host)
                    results[f"{data_path}_{runtime}_c{connections}"] = {
                        "direct": d,
                        "gateway": g,
                        "added_p50_ms": round(g["p50_ms"] - d["p50_ms"], 3),
                        "throughput_ratio": round(g["rps"] / d["rps"], 3) if d["rps"] else 0.0,
                    }
    print(f"{'case':<22}{'path':<9}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'non-2xx':>9}")
    for case, figures in results.items():
        for path in ("direct", "gateway"):
            f = figures[path]
            print(f"{case:<22}{path:<9}{f['p50_ms']:>9}{f['p99_ms']:>9}{f['rps']:>9}{f['non_2xx']:>9}")
        print(
            f"{'':<22}added p50 {figures['added_p50_ms']} ms, throughput ratio {figures['throughput_ratio']}"
        )
    print(json.dumps({"benchmark": "gateway", "results": results}))


if __name__ == "__main__":
    main()
