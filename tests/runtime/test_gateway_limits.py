"""One client cannot starve the gateway: slowloris, kept-alive idlers and HTTP/1.0 clients, on both data
paths (HAProxy in front, or the Python gateway facing clients itself)."""

from __future__ import annotations

import resource
import secrets
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.needs import require_binary

from .daemon import start_daemon, stop_daemon
from .fixtures import remove_dir, scratch_dir

HALF_OPEN = 4500  # more than the old HAProxy cap of 4096 connections
HEADER_TIMEOUT = 3


@pytest.fixture(params=["haproxy", "python"])
def gateway(request, monkeypatch):
    require_binary("bwrap", hint="apt-get install bubblewrap")
    if request.param == "haproxy":
        require_binary("haproxy", hint="apt-get install haproxy")
    monkeypatch.setenv("HKS_GATEWAY_HEADER_TIMEOUT", str(HEADER_TIMEOUT))
    monkeypatch.setenv("HKS_GATEWAY_KEEPALIVE_TIMEOUT", str(HEADER_TIMEOUT))
    monkeypatch.setenv("HKS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT", "1000")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, HALF_OPEN + 1000)), hard))
    data_dir = scratch_dir("gwlimits-")
    daemon = start_daemon(data_dir, secrets.token_urlsafe(16), "--data-path", request.param)
    parts = urlsplit(daemon.gateway_url)
    yield parts.hostname, parts.port
    stop_daemon(daemon)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    remove_dir(data_dir)


def _healthz(address, *, version: str = "1.1", source: str = "127.0.0.1") -> tuple[bytes, socket.socket]:
    sock = socket.create_connection(address, timeout=15, source_address=(source, 0))
    sock.sendall(f"GET /healthz HTTP/{version}\r\nHost: nothing.here\r\n\r\n".encode())
    answer = sock.recv(65536)
    return answer, sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_slowloris_of_thousands_of_half_open_connections_does_not_stop_another_client(gateway):
    attackers = []
    try:
        for _ in range(HALF_OPEN):
            try:
                sock = socket.create_connection(gateway, timeout=5, source_address=("127.0.0.2", 0))
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: nothing.here\r\nX-Slow: ")  # never finished
            except OSError:
                continue  # refused past the per-client limit: what should happen
            attackers.append(sock)
        answer, sock = _healthz(gateway)  # another client is served while the attack holds on
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        # The attack's connections are let go once the header timeout passes.
        time.sleep(HEADER_TIMEOUT + 1)
        assert _closed_within(attackers[0], 5)
        assert _closed_within(attackers[-1], 5)
    finally:
        for sock in attackers:
            sock.close()


def test_an_http_1_0_connection_is_closed_after_the_answer(gateway):
    answer, sock = _healthz(gateway, version="1.0")
    with sock:
        assert b" 200 " in answer.split(b"\r\n", 1)[0]
        assert _closed_within(sock, 2)


def test_an_idle_kept_alive_connection_is_let_go(gateway):
    answer, sock = _healthz(gateway)
    with sock:
        assert answer.startswith(b"HTTP/1.1 200")
        assert _closed_within(sock, HEADER_TIMEOUT + 5)
