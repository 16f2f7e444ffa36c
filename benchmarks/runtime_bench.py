"""Shared by the runtime benchmarks: a daemon on free ports, hello functions built and deployed on it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from hks_runtime import harness

REPO = Path(__file__).resolve().parent.parent
LAYERS = REPO / "var" / "test-layers"  # the runtime layers the tests cache (built on first use)

HELLO = {
    "namespace": "bench",
    # knative/func's `http` templates answer OK; these are the same functions without the template's extras.
    "node": {
        "index.js": "const handle = async (context, body) => 'OK';\nmodule.exports = { handle };\n",
        "package.json": '{"name": "hello", "version": "0.1.0", "main": "index.js", "dependencies": {}}\n',
    },
    "python": {
        "function/__init__.py": "from .func import new\n",
        "function/func.py": (
            "def new():\n    return Function()\n\n\nclass Function:\n"
            "    async def handle(self, scope, receive, send):\n"
            "        await send({'type': 'http.response.start', 'status': 200,\n"
            "                    'headers': [[b'content-type', b'text/plain']]})\n"
            "        await send({'type': 'http.response.body', 'body': b'OK'})\n"
        ),
    },
}


@dataclass
class BenchDaemon:
    control_url: str
    gateway_url: str
    token: str
    data_dir: Path

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.control_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(30, read=1800),
        )


@contextlib.contextmanager
def bench_daemon(*, idle_seconds: float, extra: tuple[str, ...] = ()):
    base = REPO / "var" / "test-runtime"
    base.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    data_dir.chmod(0o755)  # sandboxes run as unprivileged uids and must reach the artifacts
    token = secrets.token_urlsafe(16)
    args = (
        "--idle-seconds",
        str(idle_seconds),
        "--layers-dir",
        str(LAYERS),
        "--log-level",
        "WARNING",
        *extra,
    )
    process, info = harness.start_daemon(data_dir, token, *args)
    try:
        yield BenchDaemon(info["control_url"], info["gateway_url"], token, data_dir)
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(data_dir, ignore_errors=True)


def _archive(files: dict[str, str], dest: Path) -> tuple[Path, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in sorted(files.items()):
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    dest.write_bytes(buffer.getvalue())
    return dest, hashlib.sha256(buffer.getvalue()).hexdigest()


def build_hello(
    daemon: BenchDaemon, runtime: str, *, namespace: str = HELLO["namespace"], files: dict | None = None
) -> str:
    """Build the hello function of ``runtime`` (or ``files``) for ``namespace``; the artifact's path."""
    files = {
        **(files or HELLO[runtime]),
        "func.yaml": f"specVersion: 0.36.0\nname: hello\nruntime: {runtime}\n",
    }
    source = hashlib.sha256(json.dumps([namespace, files], sort_keys=True).encode()).hexdigest()[:12]
    archive, content_hash = _archive(files, daemon.data_dir / f"hello-{runtime}-{source}.tar.gz")
    payload = {"runtime": runtime, "archive_path": str(archive), "content_hash": content_hash}
    payload["namespace"] = namespace  # as the portal does: the artifact is the project's own
    with daemon.client() as client, client.stream("POST", "/v1/builds", json=payload) as response:
        for line in response.iter_lines():
            item = json.loads(line) if line.strip() else {}
            if "artifact" in item:
                return item["artifact"]
            if "error" in item:
                raise SystemExit(f"build failed: {item['error']}")
    raise SystemExit(f"build failed: HTTP {response.status_code}")


def deploy_hello(
    daemon: BenchDaemon,
    runtime: str,
    name: str,
    *,
    min_scale: int = 0,
    revision: int = 1,
    cpu_millicores: int = 500,
    namespace: str = HELLO["namespace"],
    files: dict | None = None,
    max_scale: int = 10,
    target_concurrency: int = 100,
) -> dict:
    artifact = build_hello(daemon, runtime, namespace=namespace, files=files)
    spec = {
        "revision": f"{name}-{revision:05d}",
        "runtime": runtime,
        "kind": "http",
        "artifact": artifact,
        "scale": {"min": min_scale, "max": max_scale, "target_concurrency": target_concurrency},
        "resources": {"cpu_millicores": cpu_millicores, "memory_mb": 256},
    }
    path = f"/v1/namespaces/{namespace}/functions/{name}"
    with daemon.client() as client:
        client.put(path, json=spec).raise_for_status()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = client.get(path).json()
            if status["ready"] and status["latest_ready_revision"] == spec["revision"]:
                if status["replicas"] >= max(1, min_scale):
                    return status
            time.sleep(0.05)
    raise SystemExit(f"{name} did not become ready: {status}")
