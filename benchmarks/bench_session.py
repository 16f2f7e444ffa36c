"""Agent sessions on a platform started here: create to first result, and a warm ``run()``.

Measured through hks_sdk's ``Session`` and through E2B's own SDK (``e2b-code-interpreter``, pointed at the
platform). Baseline, in the same run: the same trivial expression posted straight to the session's agent
(bypassing the portal), i.e. what the portal's data plane adds on top of the kernel.

    .venv/bin/python benchmarks/bench_session.py [--runs 10] [--warm 50] [--keep] [--language node]

``--language node`` measures the Node kernel: hks_sdk ``session(language="node")`` and E2B's SDK with
``run_code(..., language="js")`` (both sandboxes come from the runtime's Node-ready pool, whose Node kernel is
started ahead).

Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_deploy import start_platform  # noqa: E402
from benchmarks.bench_execute import _credential  # noqa: E402
from hks_sdk import Client  # noqa: E402
from hks_sdk.sessions import Session  # noqa: E402


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def hks_sdk_figures(
    platform, client: Client, runs: int, warm: int, language: str = "python"
) -> tuple[dict, dict]:
    """hks_sdk's create to first result, then warm runs interleaved with the baseline (the same /execute
    posted straight to the session's agent), so both see the same machine load."""
    creates = []
    for _ in range(runs):
        started = time.perf_counter()
        session = Session.create(client=client, timeout=120, language=language)
        if session.run("1 + 1").result != 2:
            raise SystemExit("unexpected result")
        creates.append(_ms(started))
        session.kill()
        time.sleep(0.5)  # the pool refills between an agent's sessions
    session = Session.create(client=client, timeout=600, language=language)
    port, agent_token = _agent(platform, session.id)
    times, direct = [], []
    body = {"code": "1 + 1", "language": None if language == "python" else "javascript"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as agent:
        for _ in range(warm):
            started = time.perf_counter()
            session.run("1 + 1")
            times.append(_ms(started))
            started = time.perf_counter()
            response = agent.post("/execute", json=body, headers={"X-HKS-Agent-Token": agent_token})
            response.raise_for_status()
            direct.append(_ms(started))
    session.kill()
    figures = {
        "create_to_first_result_ms_p50": round(statistics.median(creates), 1),
        "create_to_first_result_ms_p95": _p(creates, 0.95),
        "warm_run_ms_p50": round(statistics.median(times), 2),
        "warm_run_ms_p95": _p(times, 0.95),
    }
    baseline = {"warm_run_ms_p50": round(statistics.median(direct), 2), "warm_run_ms_p95": _p(direct, 0.95)}
    return figures, baseline


def _agent(platform, session_id: str) -> tuple[int, str]:
    token = (platform.data_dir / "runtime-token").read_text().strip()
    held = httpx.get(
        f"{platform.runtime_url}/v1/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"}
    ).json()
    agent_token = (
        platform.manage(
            "shell",
            "-c",
            f"from functions.agents.sessions import agent_token; print(agent_token({session_id!r}))",
            capture=True,
        )
        .strip()
        .splitlines()[-1]
    )
    return held["port"], agent_token


def e2b_figures(platform, secret: str, runs: int, warm: int, language: str = "python") -> dict:
    from e2b_code_interpreter import Sandbox

    os.environ.update(
        E2B_API_KEY=secret,
        E2B_API_URL=f"{platform.portal_url}/e2b",
        E2B_SANDBOX_URL=f"{platform.portal_url}/e2b",
    )
    kernel = "js" if language == "node" else None
    creates = []
    for _ in range(runs):
        started = time.perf_counter()
        sandbox = Sandbox.create(timeout=120)
        if sandbox.run_code("1 + 1", language=kernel).text != "2":
            raise SystemExit("unexpected E2B result")
        creates.append(_ms(started))
        sandbox.kill()
        time.sleep(0.5)
    sandbox = Sandbox.create(timeout=600)
    times = []
    for _ in range(warm):
        started = time.perf_counter()
        sandbox.run_code("1 + 1", language=kernel)
        times.append(_ms(started))
    sandbox.kill()
    return {
        "create_to_first_result_ms_p50": round(statistics.median(creates), 1),
        "create_to_first_result_ms_p95": _p(creates, 0.95),
        "warm_run_ms_p50": round(statistics.median(times), 2),
        "warm_run_ms_p95": _p(times, 0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--language", choices=("python", "node"), default="python")
    args = parser.parse_args()
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="hks-bench-session-"))
    work.chmod(0o711)
    platform = start_platform(work / "platform")
    try:
        secret = _credential(platform)
        client = Client(url=platform.portal_url, credential=secret, timeout=120)
        time.sleep(2)  # the runtime's pool of pre-started agents
        hks, direct = hks_sdk_figures(platform, client, args.runs, args.warm, args.language)
        e2b = e2b_figures(platform, secret, args.runs, args.warm, args.language)
    finally:
        platform.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results = {"hks_sdk": hks, "e2b_sdk": e2b, "baseline_direct_to_agent": direct}
    print(f"{'client':<26}{'create->1st p50':>16}{'p95':>9}{'warm run p50':>14}{'p95':>9}")
    for name, r in results.items():
        print(
            f"{name:<26}{r.get('create_to_first_result_ms_p50', '-'):>16}"
            f"{r.get('create_to_first_result_ms_p95', '-'):>9}"
            f"{r['warm_run_ms_p50']:>14}{r['warm_run_ms_p95']:>9}"
        )
    overhead = round(hks["warm_run_ms_p50"] - direct["warm_run_ms_p50"], 2)
    print(f"portal overhead on a warm run (p50): {overhead} ms")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
    results["portal_overhead_warm_run_ms_p50"] = overhead
    summary = {"benchmark": "session", "language": args.language, "load_average": load, "results": results}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
