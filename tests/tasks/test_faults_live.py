"""Pulling plugs on a running platform (real worker, real Redis, real runtime): a build whose worker is
killed, and a deploy during a Redis outage, each end ready or failed with a message - without a new
deploy - because the reconciler (beat, on a short interval here) finds the task that was lost."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from functions.sources.archives import pack_files
from hks_portal.platform import Ports
from tests.support.archive_samples import func_yaml
from tests.support.live import LivePlatform
from tests.support.needs import require_binary
from tests.support.ports import free_port

pytestmark = pytest.mark.runtime

SETTLE_SECONDS = 300  # "within minutes": the reconciler runs every 2 s here, a task is lost after 10 s
PY_FUNC = (
    b"def new():\n    return Hello()\n\nclass Hello:\n    async def handle(self, scope, receive, send):\n"
    b"        await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
    b"        await send({'type': 'http.response.body', 'body': b'OK'})\n"
)


@pytest.fixture(scope="module")
def platform():
    require_binary("bwrap", hint="apt-get install bubblewrap")
    data_dir = Path(tempfile.mkdtemp(prefix="hks-faults-"))
    data_dir.chmod(0o711)
    env = {
        "HKS_ADMIN_PASSWORD": LivePlatform.admin_password,
        "HKS_CELERY_QUEUE": f"hks-faults-{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
        "REDIS_URL": "",  # an embedded Redis of its own, whatever REDIS_URL says: this test stops it
        "HKS_RECONCILE_INTERVAL_SECONDS": "2",
        "HKS_TASK_STALE_SECONDS": "10",
        "HKS_TASK_HEARTBEAT_SECONDS": "2",
    }
    ports = Ports(portal=free_port(), runtime=free_port(), gateway=free_port(), prometheus=free_port())
    live = LivePlatform(data_dir=data_dir, ports=ports, env=env, quiet=True, with_prometheus=False)
    live.start()
    stop = threading.Event()

    def supervise():  # what the run command's main loop (and systemd or Kubernetes) does
        while not stop.wait(1):
            live.restart_dead()

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    try:
        live.manage("bootstrap", capture=True)
        yield live
    finally:
        stop.set()
        supervisor.join()
        live.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def api(platform):
    out = platform.manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; from functions.models import ApiToken;"
        "print(ApiToken.issue(user=get_user_model().objects.get(username='admin'), name='t')[1])",
        capture=True,
    )
    token = out.strip().splitlines()[-1]
    with httpx.Client(
        base_url=f"{platform.portal_url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        yield client


def _archive(name: str, marker: str) -> bytes:
    # A fresh dependency makes the build long enough to be interrupted (and never a cached artifact).
    return pack_files(
        {
            "func.yaml": func_yaml(name, "python"),
            "function/func.py": PY_FUNC + f"# {marker}\n".encode(),
            "requirements.txt": b"six\n",
        }
    )


def _deploy(api, name: str) -> httpx.Response:
    return api.post(
        f"/projects/demo/functions/{name}/revisions?create=true&runtime=python",
        content=_archive(name, uuid.uuid4().hex),
        headers={"Content-Type": "application/gzip"},
    )


def _logs(platform) -> str:
    return "\n".join(
        f"--- {name}.log\n" + (platform.data_dir / f"{name}.log").read_text(errors="replace")[-1500:]
        for name in ("worker", "beat", "portal")
        if (platform.data_dir / f"{name}.log").exists()
    )


def _settled(api, name: str, platform=None) -> dict:
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        function = api.get(f"/projects/demo/functions/{name}").json()
        if function["status"] == "ready" or (function["status"] == "failed" and function["status_message"]):
            return function
        time.sleep(1)
    pytest.fail(
        f"{name} still {function['status']!r} ({function['status_message']!r}) after {SETTLE_SECONDS}s\n"
        + (_logs(platform) if platform else "")
    )


def _wait_build_running(api, name: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        revisions = api.get(f"/projects/demo/functions/{name}/revisions").json()
        if revisions and revisions[0]["build"]["status"] == "running":
            return
        time.sleep(0.2)
    pytest.fail("the build never started")


def test_a_build_whose_worker_is_killed_ends_ready_or_failed_without_a_new_deploy(platform, api):
    assert _deploy(api, "killed").status_code == 201
    _wait_build_running(api, "killed")
    worker = platform.procs["worker"]
    os.killpg(worker.pid, signal.SIGKILL)  # no warm shutdown: the task stays unacknowledged
    worker.wait()  # the platform's supervisor starts a new worker, which knows nothing of the old task
    function = _settled(api, "killed", platform)
    assert function["status"] in ("ready", "failed")
    revisions = api.get("/projects/demo/functions/killed/revisions").json()
    assert len(revisions) == 1  # no new deploy was made


def test_a_deploy_during_a_redis_outage_ends_ready_or_failed_without_a_new_deploy(platform, api):
    assert _deploy(api, "outage").status_code == 201
    redis_proc = platform.procs["redis"]
    redis_proc.terminate()  # the embedded Redis keeps nothing: the queued task is gone with it
    redis_proc.wait()
    try:
        refused = _deploy(api, "during")
        assert refused.status_code == 503, refused.text
        assert "task queue" in refused.json()["detail"]
        time.sleep(5)
    finally:
        platform.start_embedded_redis()
    assert api.get("/projects/demo/functions/during").status_code == 404  # nothing half-made
    function = _settled(api, "outage", platform)
    assert function["status"] in ("ready", "failed")
    assert len(api.get("/projects/demo/functions/outage/revisions").json()) == 1
