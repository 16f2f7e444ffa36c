"""End-to-end log delay: from a function's print to the line arriving on a dashboard websocket client.

Starts a platform here (portal, worker, local runtime), deploys the Node template with the real CLI, signs
in to the portal like a browser (session cookie), opens the live-log websocket
(``/ws/p/<project>/f/<name>/logs/``), then sends requests through the gateway whose bodies carry a marker
the function prints. Two figures per line:

- ``request_to_arrival_ms``: from sending the request to the line arriving (includes handling the request);
- ``logged_to_arrival_ms``: from the runtime's timestamp on the line (taken when it read the function's
  output) to its arrival on the websocket: the log pipeline itself (log store, runtime stream, portal
  consumer, Channels, websocket).

Baseline, in the same run and for the same lines: the runtime's own follow stream (its control API), which
the portal's websocket relays - so the ratio is what the portal's part of the pipeline adds.

Requests are spaced ``--interval`` apart (0.25 s), as a function's lines come in normal use: the live-log
consumer sends at most 20 messages a second per client (a burst of 5 at once), so requests sent back to back
would measure that pacing instead of the pipeline.

    .venv/bin/python benchmarks/bench_log_latency.py [--requests 50] [--interval 0.25] [--keep]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_deploy import BIN, PASSWORD, cli, start_platform  # noqa: E402


def deploy_function(work: Path, platform) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HKS_")}
    env.update(XDG_CONFIG_HOME=str(work / "xdg"), HKS_URL=platform.portal_url, HKS_PROJECT="bench")
    cli(str(BIN / "hks"), "login", "-u", "bench", "--password-stdin", env=env, stdin=PASSWORD + "\n")
    name = f"logs-{uuid.uuid4().hex[:6]}"
    cli(str(BIN / "hks-func"), "create", "-l", "node", name, env=env, cwd=work)
    cli(str(BIN / "hks-func"), "deploy", env=env, cwd=work / name)
    return name


def session_cookie(portal: str) -> str:
    with httpx.Client(base_url=portal, follow_redirects=False) as client:
        client.get("/accounts/login/")
        csrf = client.cookies["csrftoken"]
        response = client.post(
            "/accounts/login/",
            data={"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": csrf},
            headers={"Referer": portal + "/accounts/login/"},
        )
        if response.status_code != 302:
            raise SystemExit(f"sign-in failed: HTTP {response.status_code}")
        return client.cookies["sessionid"]


def _parse_ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def measure(
    platform, name: str, count: int, interval: float
) -> tuple[list[float], list[float], list[float]]:
    portal = platform.portal_url
    ws_url = portal.replace("http://", "ws://") + f"/ws/p/bench/f/{name}/logs/"
    headers = {"Cookie": f"sessionid={session_cookie(portal)}", "Origin": portal}
    target = f"{platform.gateway_url}/bench/{name}/"
    request_to_arrival, logged_to_arrival, runtime_logged_to_arrival = [], [], []
    runtime_lines: asyncio.Queue = asyncio.Queue()
    async with connect(ws_url, additional_headers=headers) as socket, httpx.AsyncClient(timeout=30) as http:
        follower = asyncio.create_task(_follow_runtime(platform, name, runtime_lines))
        await http.post(target, json={"warm": True})  # start an instance; its lines are not measured
        for _ in range(count):
            await asyncio.sleep(interval)
            marker = uuid.uuid4().hex
            sent = time.time()
            response = await http.post(target, json={"marker": marker})
            response.raise_for_status()
            line, arrived = await _wait_for(socket, marker)
            request_to_arrival.append((arrived - sent) * 1000)
            logged_to_arrival.append((arrived - _parse_ts(line["ts"])) * 1000)
            record, runtime_arrived = await _wait_in(runtime_lines, marker)
            runtime_logged_to_arrival.append((runtime_arrived - _parse_ts(record["ts"])) * 1000)
        follower.cancel()
    return request_to_arrival, logged_to_arrival, runtime_logged_to_arrival


async def _follow_runtime(platform, name: str, into: asyncio.Queue) -> None:
    """The baseline: the runtime's follow stream of the same function, each line with its arrival time."""
    token = (platform.data_dir / "runtime-token").read_text().strip()
    url = f"{platform.runtime_url}/v1/namespaces/bench/functions/{name}/logs"
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(30, read=None)
    async with httpx.AsyncClient(timeout=timeout) as client:
        async with client.stream(
            "GET", url, params={"follow": "1", "tail": "0"}, headers=headers
        ) as response:
            async for raw in response.aiter_lines():
                if raw.strip():
                    into.put_nowait((json.loads(raw), time.time()))


async def _wait_in(lines: asyncio.Queue, marker: str, timeout: float = 30) -> tuple[dict, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record, arrived = await asyncio.wait_for(lines.get(), deadline - time.monotonic())
        if marker in record.get("text", ""):
            return record, arrived
    raise SystemExit(f"the line with {marker} never came on the runtime's stream")


async def _wait_for(socket, marker: str, timeout: float = 30) -> tuple[dict, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(await asyncio.wait_for(socket.recv(), deadline - time.monotonic()))
        arrived = time.time()
        for line in message.get("lines", []):
            if marker in line["text"]:
                return line, arrived
    raise SystemExit(f"the line with {marker} never arrived")


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
        "max_ms": round(ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between requests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hks-bench-logs-"))
    platform = start_platform(work / "platform")
    try:
        name = deploy_function(work, platform)
        request_to_arrival, logged_to_arrival, baseline = asyncio.run(
            measure(platform, name, args.requests, args.interval)
        )
    finally:
        platform.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    figures = {
        "request_to_arrival": summary(request_to_arrival),
        "logged_to_arrival": summary(logged_to_arrival),
        "baseline_runtime_logged_to_arrival": summary(baseline),
    }
    ratio = round(
        figures["logged_to_arrival"]["median_ms"]
        / max(figures["baseline_runtime_logged_to_arrival"]["median_ms"], 0.01),
        1,
    )
    print(f"{'figure':<36}{'median ms':>11}{'p95 ms':>9}{'max ms':>9}")
    for label, values in figures.items():
        print(f"{label:<36}{values['median_ms']:>11}{values['p95_ms']:>9}{values['max_ms']:>9}")
    print(f"websocket / runtime stream, median: {ratio}")
    print(
        json.dumps(
            {
                "benchmark": "log_latency",
                "lines": len(request_to_arrival),
                **figures,
                "ratio_websocket_to_runtime_stream": ratio,
            }
        )
    )


if __name__ == "__main__":
    main()
