"""``hks_sdk.functions.execute(code=...)`` end to end: an agent's throwaway function deployed into the
restricted sandbox, invoked once and deleted, against a platform started here.

For each language, a run of sequential executions (as an agent working through a task makes them), split
into the SDK's own timings - deploy (until ready) and invoke (the call, cold start included) - and the total
with the deletion. Baseline, in the same run: the same code invoked again through the portal in a function
that is already deployed and warm, i.e. what the throwaway function costs on top of running the code.

    .venv/bin/python benchmarks/bench_execute.py [--runs 8] [--keep]

Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_deploy import start_platform  # noqa: E402
from hks_sdk import Client, functions  # noqa: E402

CODE = {"python": "sum(range(1000))", "node": "[...Array(1000).keys()].reduce((a, b) => a + b, 0)"}


def _credential(platform) -> str:
    out = platform.manage(
        "shell",
        "-c",
        "from functions.models import AgentCredential, Project;"
        "print(AgentCredential.issue(project=Project.objects.get(slug='bench'), name='bench')[1])",
        capture=True,
    )
    return out.strip().splitlines()[-1]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def run(platform, runs: int) -> dict:
    client = Client(url=platform.portal_url, credential=_credential(platform), timeout=120)
    results = {}
    for language, code in CODE.items():
        totals, deploys, invokes = [], [], []
        for _ in range(runs):
            started = time.perf_counter()
            execution = functions.execute(code=code, language=language, client=client)
            totals.append((time.perf_counter() - started) * 1000)
            if execution.error is not None or execution.result != 499500:
                raise SystemExit(f"{language}: unexpected execution {execution}")
            deploys.append(execution.timings["deploy_ms"])
            invokes.append(execution.timings["invoke_ms"])
        warm = _warm_invokes(client, language, code, runs)
        results[language] = {
            "runs": runs,
            "first_total_ms": round(totals[0], 1),
            "total_ms_p50": _median(totals[1:] or totals),
            "deploy_ms_p50": _median(deploys[1:] or deploys),
            "invoke_ms_p50": _median(invokes[1:] or invokes),
            "baseline_warm_invoke_ms_p50": _median(warm),
            "ratio_total_to_warm_invoke": round(_median(totals[1:] or totals) / _median(warm), 1),
        }
    return results


def _warm_invokes(client: Client, language: str, code: str, runs: int) -> list[float]:
    """The baseline: the same code in one function deployed once, invoked again and again."""
    name = client.deploy(code=code, runtime=language, timeout_seconds=60)["name"]
    try:
        client.wait_ready(name, timeout=180)
        client.invoke(name, timeout=90)  # its cold start is not part of the baseline
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            client.invoke(name, timeout=90)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        client.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hks-bench-execute-"))
    work.chmod(0o711)
    platform = start_platform(work / "platform")
    try:
        results = run(platform, args.runs)
    finally:
        platform.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    header = f"{'language':<10}{'first ms':>10}{'p50 total':>11}{'p50 deploy':>12}{'p50 invoke':>12}"
    print(header + f"{'warm invoke':>13}{'ratio':>7}")
    for language, r in results.items():
        print(
            f"{language:<10}{r['first_total_ms']:>10}{r['total_ms_p50']:>11}{r['deploy_ms_p50']:>12}"
            f"{r['invoke_ms_p50']:>12}{r['baseline_warm_invoke_ms_p50']:>13}{r['ratio_total_to_warm_invoke']:>7}"
        )
    print(json.dumps({"benchmark": "execute", "results": results}))


if __name__ == "__main__":
    main()
