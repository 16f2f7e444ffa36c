"""The platform says plainly which part it runs without and what that costs (/healthz, the operators'
page), and refuses to start at all when the sandbox cannot work."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.urls import reverse

from tests.support.daemon import start_daemon, stop_daemon
from tests.support.ports import free_port
from tests.support.sample_functions import scratch_dir

ROOT = Path(__file__).resolve().parents[2]


def test_a_machine_setup_installed_runs_without_nothing(live_platform):
    response = httpx.get(f"{live_platform.portal_url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "missing": []}
    runtime = httpx.get(f"{live_platform.runtime_url}/healthz", timeout=10).json()
    assert runtime["missing"] == [] and runtime["data_path"] == "haproxy" and runtime["seccomp"] is True


@pytest.fixture(scope="module")
def runtime_without_haproxy():
    daemon = start_daemon(
        scratch_dir("daemon-nohaproxy-"), secrets.token_urlsafe(16), "--data-path", "python"
    )
    yield daemon
    stop_daemon(daemon)


def test_healthz_names_each_missing_optional_part_and_its_cost(client, db, settings, runtime_without_haproxy):
    settings.HKS_RUNTIME_URL = runtime_without_haproxy.control_url
    settings.HKS_PROMETHEUS_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens: no Prometheus
    response = client.get("/healthz")
    assert response.status_code == 200  # functions still run
    body = response.json()
    assert body["ok"] is True
    missing = {m["part"]: m for m in body["missing"]}
    assert set(missing) == {"haproxy", "Prometheus"}
    assert "Python gateway" in missing["haproxy"]["cost"] and "latency" in missing["haproxy"]["cost"]
    assert "no requests, latency, errors, CPU or memory figures" in missing["Prometheus"]["cost"]
    assert not any(m["required"] for m in body["missing"])


def test_healthz_is_503_when_no_function_can_run(client, db, settings):
    settings.HKS_RUNTIME_URL = f"http://127.0.0.1:{free_port()}"  # no runtime
    response = client.get("/healthz")
    assert response.status_code == 503
    runtime = next(m for m in response.json()["missing"] if m["part"] == "local runtime")
    assert runtime["required"] is True and "cannot be built, deployed or invoked" in runtime["cost"]


def test_the_operators_page_says_what_is_missing(client, admin_user, settings, runtime_without_haproxy):
    settings.HKS_RUNTIME_URL = runtime_without_haproxy.control_url
    settings.HKS_PROMETHEUS_URL = f"http://127.0.0.1:{free_port()}"
    client.force_login(admin_user)
    html = client.get(reverse("operators_overview")).content.decode()
    assert 'id="missing-parts"' in html
    assert 'id="missing-haproxy"' in html and 'id="missing-prometheus"' in html
    assert "requests go through the Python gateway instead of HAProxy" in html


def _bin_with_broken_bwrap(tmp_path: Path) -> dict:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "bwrap").symlink_to("/bin/false")  # installed, but cannot make a sandbox
    return {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "HKS_DATA_DIR": str(tmp_path / "var"),
    }


def test_run_refuses_to_start_when_bubblewrap_does_not_work(tmp_path):
    result = subprocess.run(
        ["bash", "scripts/run"],
        cwd=ROOT,
        env=_bin_with_broken_bwrap(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "HKS Functions cannot start: bubblewrap cannot create a sandbox on this machine" in result.stderr
    assert "is running at" not in result.stdout
    assert not (tmp_path / "var").exists()  # nothing was started or created


def test_run_refuses_to_start_without_bubblewrap(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "HKS_DATA_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [sys.executable, "-m", "hks_portal.platform"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "bubblewrap (bwrap) is not installed" in result.stderr
    assert not (tmp_path / "var").exists()
