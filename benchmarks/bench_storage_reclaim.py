"""Storage after many agent executions: 100 ``execute(...)`` calls that each send files, against a platform
started here; disk use of the portal's archives (media/) and the runtime's artifacts before, at the peak, and
once the deletions have been reclaimed (an agent's function is reclaimed as soon as it is deleted).

    .venv/bin/python benchmarks/bench_storage_reclaim.py [--runs 100] [--parallel 4] [--keep]

Prints the figures, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_deploy import start_platform  # noqa: E402
from benchmarks.bench_execute import _credential  # noqa: E402
from hks_sdk import Client, functions  # noqa: E402

CODE = "len(open('data.txt').read())"
FILE_BYTES = 512 * 1024


def disk_bytes(*roots: Path) -> int:
    return sum(
        p.stat().st_size
        for r in roots
        if r.exists()
        for p in r.rglob("*")
        if p.is_file() and not p.is_symlink()
    )


def function_rows(platform) -> int:
    out = platform.manage(
        "shell", "-c", "from functions.models import Function; print(Function.objects.count())", capture=True
    )
    return int(out.strip().splitlines()[-1])


def run(platform, runs: int, parallel: int, peak_probe) -> dict:
    client = Client(url=platform.portal_url, credential=_credential(platform), timeout=120)
    functions.execute(code="1", client=client)  # the first one builds the runtime layer: not counted

    def one(n: int) -> None:
        files = {"data.txt": (f"{n:08d}" * (FILE_BYTES // 8))}
        execution = functions.execute(code=CODE, files=files, client=client)
        if execution.result != FILE_BYTES:
            raise SystemExit(f"execution {n}: unexpected {execution}")
        peak_probe()

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(runs)))
    return {"runs": runs, "parallel": parallel, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=4, help="at most the project's agent quota (5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hks-bench-storage-"))
    work.chmod(0o711)
    platform = start_platform(work / "platform")
    roots = (platform.data_dir / "media", platform.data_dir / "runtime" / "artifacts")
    peak = {"bytes": 0}

    def probe() -> None:
        peak["bytes"] = max(peak["bytes"], disk_bytes(*roots))

    try:
        before_rows = function_rows(platform)
        before = disk_bytes(*roots)
        figures = run(platform, args.runs, args.parallel, probe)
        deadline = time.monotonic() + 300
        while (rows := function_rows(platform)) > before_rows and time.monotonic() < deadline:
            time.sleep(2)
        after = disk_bytes(*roots)
        figures.update(
            {
                "bytes_before": before,
                "bytes_peak": peak["bytes"],
                "bytes_after": after,
                "function_rows_before": before_rows,
                "function_rows_after": rows,
                "reclaimed": after <= before,
            }
        )
    finally:
        platform.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"{figures['runs']} executions with a {FILE_BYTES // 1024} KiB file, {figures['parallel']} at a time"
    )
    print(f"  disk (archives + artifacts) before: {figures['bytes_before']:>12,} bytes")
    print(f"  peak while running:                 {figures['bytes_peak']:>12,} bytes")
    print(f"  after the reclaim:                  {figures['bytes_after']:>12,} bytes")
    print(
        f"  function rows before / after:       "
        f"{figures['function_rows_before']} / {figures['function_rows_after']}"
    )
    print(json.dumps({"benchmark": "storage_reclaim", "results": figures}))


if __name__ == "__main__":
    main()
