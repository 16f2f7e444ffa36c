"""Every port the run command opens can be moved, so two platforms run side by side on one machine."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def _start(data_dir: Path, ports: dict[str, int]) -> subprocess.Popen:
    env = {
        **os.environ,
        "HKS_ADMIN_PASSWORD": "two-platforms",
        "HKS_CELERY_QUEUE": f"hks-ports-{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
    }
    env.pop("REDIS_URL", None)
    argv = [sys.executable, "-m", "hks_portal.platform", "--data-dir", str(data_dir)]
    for flag, port in ports.items():
        argv += [f"--{flag}", str(port)]
    log = open(data_dir / "platform.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_running(proc: subprocess.Popen, data_dir: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (data_dir / "platform.log").read_text(errors="replace")
        if "HKS Functions is running" in text:
            return
        if proc.poll() is not None:
            pytest.fail(f"platform exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.5)
    pytest.fail("platform did not start")


def test_two_platforms_run_side_by_side_on_their_own_ports():
    platforms = []
    try:
        for _ in range(2):
            data_dir = Path(tempfile.mkdtemp(prefix="hks-ports-"))
            data_dir.chmod(0o711)
            ports = {
                "port": free_port(),
                "runtime-port": free_port(),
                "gateway-port": free_port(),
                "prometheus-port": free_port(),
                "redis-port": free_port(),
            }
            platforms.append((_start(data_dir, ports), data_dir, ports))
            _wait_running(*platforms[-1][:2])
        for proc, data_dir, ports in platforms:
            assert proc.poll() is None
            assert (
                httpx.get(f"http://127.0.0.1:{ports['port']}/accounts/login/", timeout=10).status_code == 200
            )
            assert (
                httpx.get(f"http://127.0.0.1:{ports['runtime-port']}/healthz", timeout=10).status_code < 500
            )
            gateway = httpx.get(f"http://127.0.0.1:{ports['gateway-port']}/", timeout=10)
            assert gateway.status_code in (404, 400), gateway.text
            log = (data_dir / "platform.log").read_text()
            assert f":{ports['gateway-port']}/" in log  # the banner names the gateway it uses
            if "prometheus:" in log:
                ready = httpx.get(f"http://127.0.0.1:{ports['prometheus-port']}/-/ready", timeout=10)
                assert ready.status_code == 200
            import redis

            assert redis.Redis(port=ports["redis-port"], socket_timeout=5).ping()
    finally:
        for proc, _, _ in platforms:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _, _ in platforms:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
