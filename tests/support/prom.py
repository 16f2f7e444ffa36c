"""A real Prometheus for tests: /usr/bin/prometheus on a free port, scraping the targets it is given."""

from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.needs import require_binary
from tests.support.ports import free_port


def _config(targets: list[str], interval: str) -> str:
    quoted = ", ".join(f"'{t}'" for t in targets)
    return (
        f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        f"scrape_configs:\n  - job_name: hks\n    static_configs:\n      - targets: [{quoted}]\n"
    )


@contextmanager
def running_prometheus(tmp_path: Path, targets: list[str], interval: str = "1s"):
    """Yield the base URL of a fresh Prometheus; stops it (and only it) afterwards."""
    binary = require_binary("prometheus", hint="apt-get install -y prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(_config(targets, interval))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}")
        try:
            if requests.get(f"{url}/-/ready", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError("prometheus did not become ready")


def wait_for(predicate, *, deadline: float = 30, interval: float = 0.25):
    """Poll ``predicate`` until it returns something truthy; return that (fail after ``deadline``)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError("condition not met before the deadline")
