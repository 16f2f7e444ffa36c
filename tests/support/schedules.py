"""Fixtures for schedule tests: a function in "acme", and a plain HTTP server standing in as its target."""

import datetime as dt
import http.server
import select
import socket
import threading
import time

import pytest

from functions.models import Schedule
from functions.services import schedules as services_schedules
from tests.support.factories import FunctionFactory

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday; the controlled clock starts here


@pytest.fixture
def hello(project):
    return FunctionFactory(project=project, name="hello", runtime="node", status="ready")


@pytest.fixture
def make_schedule(hello, owner):
    def make(name="tick", cron="*/5 * * * *", now=T0, **fields) -> Schedule:
        return services_schedules.schedule_create(
            function=hello, user=owner, name=name, cron=cron, now=now, **fields
        )

    return make


class Target:
    """A tiny real HTTP server that records requests and answers what the path says:
    ``/status/NNN`` answers NNN, ``/slow`` waits until released (or 30 s)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.arrived = threading.Semaphore(0)
        self.disconnected = threading.Event()
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                target.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                target.arrived.release()
                if self.path.startswith("/slow") and not self._wait_or_hang_up():
                    target.disconnected.set()
                    return
                status = int(self.path.split("/status/")[1]) if "/status/" in self.path else 200
                payload = b"boom" if status >= 400 else b"OK"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    target.disconnected.set()

            def _wait_or_hang_up(self) -> bool:
                """Wait for ``release``; False when the client closed the connection first."""
                deadline = time.monotonic() + 30
                while not target.release.is_set() and time.monotonic() < deadline:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return False
                return True

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for_requests(self, count: int, timeout: float = 30) -> None:
        for _ in range(count):
            assert self.arrived.acquire(timeout=timeout), f"only {len(self.requests)} requests arrived"


@pytest.fixture
def target():
    server = Target()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()
