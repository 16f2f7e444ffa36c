"""Starting a daemon on free ports from another process (tests, benchmarks): ``python -m hks_runtime`` with
``--control-port 0 --gateway-port 0``, then its first stdout line, which names the URLs it bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_daemon(data_dir: Path, token: str, *extra: str, stderr=None) -> tuple[subprocess.Popen, dict]:
    """The daemon process and its ``listening`` line (``control_url``, ``gateway_url``), once both are up."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hks_runtime", "--data-dir", str(data_dir)]
        + ["--control-port", "0", "--gateway-port", "0", *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "HKS_RUNTIME_TOKEN": token},
    )
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        raise RuntimeError(f"runtime daemon did not start (exit {process.returncode})")
    return process, json.loads(line)
