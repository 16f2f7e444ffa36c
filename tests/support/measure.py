"""Run a piece of portal code in a fresh interpreter and measure what it costs: peak memory and time.

Memory is read from the child's own peak resident set (``ru_maxrss``) before and after the call, so the
figure is the call's, not the test runner's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_RUNNER = """
import json, resource, sys, time, django
django.setup()
import importlib
module, name = sys.argv[1].rsplit(".", 1)
target = getattr(importlib.import_module(module), name)
payload = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    target(payload)
    outcome = "accepted"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
seconds = time.monotonic() - started
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_growth_kib": after - before}))
"""


def measured(dotted: str, payload: bytes, *, timeout: float = 300, memory_cap_mb: int = 4096) -> dict:
    """Call ``dotted(payload)`` in a child; returns outcome, seconds and peak memory growth in KiB.

    The child's address space is capped (``memory_cap_mb``) so a regression fails the test, not the machine.
    """
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hks_portal.settings"}
    cap = memory_cap_mb * 1024 * 1024
    result = subprocess.run(
        [sys.executable, "-c", _RUNNER, dotted],
        input=payload,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
        preexec_fn=lambda: __import__("resource").setrlimit(__import__("resource").RLIMIT_AS, (cap, cap)),
    )
    lines = result.stdout.decode().strip().splitlines()
    assert result.returncode == 0 and lines, result.stderr.decode()[-2000:]
    return json.loads(lines[-1])
