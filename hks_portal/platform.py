"""Runs the whole platform on one machine: Redis (embedded unless REDIS_URL), the portal, a Celery worker,
Celery beat, the local runtime daemon and Prometheus (when the binary exists and HKS_PROMETHEUS_URL is
unset). Used by ``scripts/run`` and by the tests' ``live_platform`` fixture.

    python -m hks_portal.platform [--host 127.0.0.1] [--port 8000] [--runtime-port 8070]
        [--gateway-port 8080] [--prometheus-port 9090] [--redis-port 0]

Every port can be moved (flags, or HKS_PORT, HKS_RUNTIME_PORT, HKS_GATEWAY_PORT, HKS_PROMETHEUS_PORT,
HKS_REDIS_PORT), so two platforms with their own data directories run side by side on one machine. The
embedded Redis listens on a unix socket in the data directory; ``--redis-port`` also opens it on loopback
TCP (0, the default: socket only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from . import embedded_redis

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Ports:
    portal: int = 8000
    runtime: int = 8070
    gateway: int = 8080
    prometheus: int = 9090
    redis: int = 0  # the embedded Redis's TCP port on loopback; 0 = its unix socket only


@dataclass
class Platform:
    """The platform's processes, started in order and stopped together."""

    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    with_prometheus: bool = True
    quiet: bool = False
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def portal_url(self) -> str:
        return f"http://{self.host}:{self.ports.portal}"

    @property
    def runtime_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.runtime}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def prometheus_url(self) -> str:
        return self.env.get("HKS_PROMETHEUS_URL") or f"http://127.0.0.1:{self.ports.prometheus}"

    @property
    def embeds_redis(self) -> bool:
        """No REDIS_URL (an empty one in ``env`` overrides the process's): the platform starts its own."""
        return not {**os.environ, **self.env}.get("REDIS_URL")

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.update(
            DJANGO_SETTINGS_MODULE="hks_portal.settings",
            HKS_DATA_DIR=str(self.data_dir),
            HKS_PUBLIC_URL=self.portal_url,
            HKS_RUNTIME_URL=self.runtime_url,
            HKS_GATEWAY_URL=self.gateway_url,
            HKS_PROMETHEUS_URL=self.prometheus_url,
            PYTHONUNBUFFERED="1",
        )
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = f"unix://{self.data_dir / 'redis.sock'}"
        env.setdefault("HKS_RUNTIME_TOKEN", _read_or_create(self.data_dir / "runtime-token"))
        return env

    # Lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self.child_env()
        try:
            if self.embeds_redis:
                self._start_embedded_redis()
            self.manage("migrate", "--noinput")
            self.manage("collectstatic", "--noinput")
            self._start_runtime(env)
            self._spawn(
                "portal",
                [
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "hks_portal.asgi:application",
                    "--host",
                    self.host,
                    "--port",
                    str(self.ports.portal),
                    "--log-level",
                    "warning",
                    # h11, not httptools: it bounds the bytes buffered for a request head (hks_portal/limits)
                    "--http",
                    "h11",
                    "--h11-max-incomplete-event-size",
                    str(int(env.get("HKS_MAX_REQUEST_HEADER_BYTES") or 32 * 1024)),
                ],
                env,
            )
            self.start_worker(env)
            self.start_beat(env)
            self._start_prometheus(env)
            self._wait_http("portal", f"{self.portal_url}/accounts/login/")
        except BaseException:
            self.stop()
            raise

    def start_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        """The Celery worker (also to start a new one after the last was killed, as a supervisor would)."""
        env = env or self.child_env()
        queue = env.get("HKS_CELERY_QUEUE", "hks")
        argv = [PYTHON, "-m", "celery", "-A", "hks_portal", "worker", "--pool", "threads"]
        argv += ["--concurrency", "8", "-Q", queue, "--loglevel", "WARNING", "--without-gossip"]
        argv += ["--without-mingle", "-n", f"worker-{os.getpid()}-{time.monotonic_ns():x}@%h"]
        return self._spawn("worker", argv, env)

    def start_beat(self, env: dict[str, str] | None = None) -> subprocess.Popen:
        argv = [PYTHON, "-m", "celery", "-A", "hks_portal", "beat", "--loglevel", "WARNING"]
        argv += ["--schedule", str(self.data_dir / "celerybeat-schedule")]
        return self._spawn("beat", argv, env or self.child_env())

    def manage(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run(
            [PYTHON, str(BASE_DIR / "manage.py"), *args],
            env=self.child_env(),
            cwd=BASE_DIR,
            check=True,
            text=True,
            stdout=subprocess.PIPE if (capture or self.quiet) else None,
        )
        return result.stdout or ""

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    RESTARTABLE = ("worker", "beat")

    def restart_dead(self) -> list[str]:
        """Start again a worker or beat that exited, as systemd or Kubernetes would (a worker also exits on
        its own when Celery 5.7 cannot restore unacknowledged tasks after losing Redis). The reconciler then
        resumes what the dead worker held. Returns the names restarted."""
        restarted = []
        for name in self.RESTARTABLE:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; starting it again", file=sys.stderr, flush=True)
                if name == "worker":
                    self.start_worker()
                else:
                    self.start_beat()
                restarted.append(name)
        return restarted

    # Parts ----------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=BASE_DIR,
            start_new_session=True,
            stdout=log if self.quiet else None,
            stderr=subprocess.STDOUT if self.quiet else None,
        )
        self.procs[name] = proc
        return proc

    def start_embedded_redis(self) -> None:
        """The embedded Redis (also to start it again after it was stopped: it keeps no data)."""
        self._start_embedded_redis()

    def _start_embedded_redis(self) -> None:
        socket_path = self.data_dir / "redis.sock"
        socket_path.unlink(missing_ok=True)
        self._spawn(
            "redis", embedded_redis.server_argv(socket_path, tcp_port=self.ports.redis), os.environ.copy()
        )
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if time.monotonic() > deadline or self.procs["redis"].poll() is not None:
                raise RuntimeError("the embedded redis-server did not start")
            time.sleep(0.05)

    def _start_runtime(self, env: dict[str, str]) -> None:
        if not (BASE_DIR / "hks_runtime" / "__main__.py").exists():
            return
        self._spawn(
            "runtime",
            [
                PYTHON,
                "-m",
                "hks_runtime",
                "--data-dir",
                str(self.data_dir / "runtime"),
                "--control-port",
                str(self.ports.runtime),
                "--gateway-port",
                str(self.ports.gateway),
            ],
            env,
        )
        self._wait_http("runtime", f"{self.runtime_url}/healthz")

    def _start_prometheus(self, env: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if not self.with_prometheus or self.env.get("HKS_PROMETHEUS_URL") or binary is None:
            return
        config = self.data_dir / "prometheus.yml"
        config.write_text(prometheus_config(self.ports.runtime, env["HKS_RUNTIME_TOKEN"]))
        config.chmod(0o600)
        self._spawn(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
                "--storage.tsdb.retention.time=2d",
                "--log.level=warn",
            ],
            env,
        )
        self._wait_http("prometheus", f"{self.prometheus_url}/-/ready")

    def _wait_http(self, name: str, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {self.procs[name].returncode}; see {self.data_dir}/{name}.log"
                )
            try:
                if httpx.get(url, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer at {url} within {timeout}s")


def prometheus_config(runtime_port: int, token: str, interval: str = "5s") -> str:
    return f"""global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: hks-runtime
    authorization:
      credentials: "{token}"
    static_configs:
      - targets: ["127.0.0.1:{runtime_port}"]
"""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        sys.exit(f"{name} must be an integer, not {raw!r}")


def _read_or_create(path: Path) -> str:
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def sandbox_problem() -> str:
    """Why functions cannot run on this machine (bubblewrap missing or not working), or ''."""
    from hks_runtime import sandbox

    try:
        sandbox.check_sandbox()
    except sandbox.SandboxUnavailable as exc:
        return str(exc)
    return ""


def main(argv: list[str] | None = None) -> None:
    problem = sandbox_problem()
    if problem:
        # A platform that cannot run a function is no platform: refuse before starting anything.
        sys.exit(
            f"HKS Functions cannot start: {problem}.\n"
            "Every function runs inside the bubblewrap sandbox, so without a working one nothing could run.\n"
            "`bash scripts/setup` installs bubblewrap (as root); see docs/operations.md for what it needs."
        )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("HKS_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=_env_int("HKS_PORT", 8000), help="the portal")
    parser.add_argument("--runtime-port", type=int, default=_env_int("HKS_RUNTIME_PORT", 8070))
    parser.add_argument("--gateway-port", type=int, default=_env_int("HKS_GATEWAY_PORT", 8080))
    parser.add_argument("--prometheus-port", type=int, default=_env_int("HKS_PROMETHEUS_PORT", 9090))
    parser.add_argument(
        "--redis-port", type=int, default=_env_int("HKS_REDIS_PORT", 0), help="0: unix socket only"
    )
    parser.add_argument("--data-dir", default=os.environ.get("HKS_DATA_DIR", str(BASE_DIR / "var")))
    args = parser.parse_args(argv)
    ports = Ports(
        portal=args.port,
        runtime=args.runtime_port,
        gateway=args.gateway_port,
        prometheus=args.prometheus_port,
        redis=args.redis_port,
    )
    platform = Platform(data_dir=Path(args.data_dir).resolve(), host=args.host, ports=ports)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        platform.start()
        login = platform.manage("bootstrap", capture=True).strip()
        print(f"\nHKS Functions is running at {platform.portal_url}/  ({login})")
        print(f"  functions:  http://<function>.<project>.localhost:{platform.ports.gateway}/")
        if "prometheus" in platform.procs:
            print(f"  prometheus: {platform.prometheus_url}")
        print("Press Ctrl-C to stop.\n", flush=True)
        while not stop["now"]:
            platform.restart_dead()
            dead = platform.dead()
            if dead:
                print(f"stopping: {', '.join(dead)} exited", file=sys.stderr)
                break
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        platform.stop()


if __name__ == "__main__":
    main()
