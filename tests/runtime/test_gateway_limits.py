"""One client cannot starve the gateway: slowloris, kept-alive idlers and HTTP/1.0 clients, on both data
paths (HAProxy in front, or the Python gateway facing clients itself)."""

from __future__ import annotations

import json
import re
import resource
import secrets
import socket
import time
from urllib.parse import urlsplit

import pytest

from functions.backends.base import Scale
from functions.backends.local import LocalBackend
from tests.support.daemon import start_daemon, stop_daemon
from tests.support.daemon_helpers import NS, build, deploy, service
from tests.support.needs import require_binary
from tests.support.sample_functions import remove_dir, scratch_dir

HALF_OPEN = 4500  # more than the old HAProxy cap of 4096 connections
HEADER_TIMEOUT = 3


@pytest.fixture(params=["haproxy", "python"])
def gateway_daemon(request, monkeypatch):
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
    yield daemon
    stop_daemon(daemon)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    remove_dir(data_dir)


@pytest.fixture
def gateway(gateway_daemon):
    parts = urlsplit(gateway_daemon.gateway_url)
    return parts.hostname, parts.port


@pytest.fixture
def functions(gateway_daemon, settings, tmp_path):
    """A Python and a Node function on the gateway's daemon, one warm instance each."""
    settings.HKS_RUNTIME_URL = gateway_daemon.control_url
    settings.HKS_RUNTIME_TOKEN = gateway_daemon.token
    settings.HKS_GATEWAY_URL = gateway_daemon.gateway_url
    backend = LocalBackend()
    for runtime in ("python", "node"):
        artifact = build(backend, tmp_path, f"plain-{runtime}", runtime)
        deploy(backend, service(f"plain-{runtime}", runtime, artifact, scale=Scale(min=1)))
    return ("python", "node")


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


def _answer_and_close(address, request: bytes, *, after: float) -> tuple[bytes, bool]:
    """Send ``request``, wait for the answer's first bytes, then read on: (everything read, whether the
    server closed the connection within ``after`` seconds of those first bytes)."""
    with socket.create_connection(address, timeout=60) as sock:
        sock.sendall(request)
        data = sock.recv(65536)
        sock.settimeout(after)
        try:
            while chunk := sock.recv(65536):
                data += chunk
            return data, True
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True


def test_an_http_1_0_client_of_a_function_gets_its_whole_answer_and_the_close(gateway, functions):
    """HTTP/1.0 has no chunks: an answer without a length (func-python sends none for this function) ends
    where the connection ends. The Python gateway - the data path itself, or HAProxy's activator for a
    request routed by path - kept such a connection open (aiohttp keeps a kept-alive 1.0 connection even
    so, and HAProxy asks its servers for keep-alive), so the client waited for the rest of an answer that
    had already arrived, until the idle timeout. Closed well before that timeout (3 s here) now, for both
    languages and both routes; a client asking for keep-alive keeps its connection only when the answer
    has a length."""
    for runtime in functions:
        for route in ("path", "host"):
            target = f"/{NS}/plain-{runtime}/" if route == "path" else "/"
            host = "" if route == "path" else f"Host: plain-{runtime}.{NS}.localhost\r\n"
            for keep_alive in ("", "Connection: keep-alive\r\n"):
                request = f"GET {target} HTTP/1.0\r\n{host}{keep_alive}\r\n".encode()
                answer, closed = _answer_and_close(gateway, request, after=1.5)
                case = f"{runtime}, by {route}, {keep_alive.strip() or 'no keep-alive'}"
                head, _, body = answer.partition(b"\r\n\r\n")
                assert b" 200 " in head.split(b"\r\n", 1)[0], (case, answer[:300])
                assert b"transfer-encoding" not in head.lower(), case  # no chunks for HTTP/1.0
                assert json.loads(body)["method"] == "GET", (case, body)
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                # Without keep-alive the connection ends with the answer; with it (asked by the client),
                # only an answer with a length may leave it open - otherwise its end is the close.
                if not keep_alive or length is None:
                    assert closed, f"{case}: connection held open after the answer {answer[:300]!r}"
                else:
                    assert int(length.group(1)) == len(body), case


def test_an_idle_kept_alive_connection_is_let_go(gateway):
    answer, sock = _healthz(gateway)
    with sock:
        assert answer.startswith(b"HTTP/1.1 200")
        assert _closed_within(sock, HEADER_TIMEOUT + 5)
