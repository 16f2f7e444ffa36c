"""The portal bounds request heads as the gateway does: size in the HTTP parser, count in the app."""

import os
import socket
from urllib.parse import urlsplit

import httpx
import psutil


def _raw(url: str, head: bytes, *, chunk: int = 1 << 16, body=()) -> bytes:
    """Send ``head`` (then each piece of ``body``) as fast as the server takes it; return what it answered
    (possibly early)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        try:
            for start in range(0, len(head), chunk):
                sock.sendall(head[start : start + chunk])
            for piece in body:
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it all arrived: what we want
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def test_a_huge_request_header_is_refused_before_it_is_buffered(live_platform):  # noqa: F811
    portal = psutil.Process(live_platform.procs["portal"].pid)
    before = portal.memory_info().rss
    head = b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (64 << 20) + b"\r\n\r\n"
    answer = _raw(live_platform.portal_url, head)
    assert answer.split(b"\r\n", 1)[0] in (
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 431 Request Header Fields Too Large",
    )
    assert portal.memory_info().rss - before < 32 << 20  # not 64 MB more
    assert httpx.get(f"{live_platform.portal_url}/accounts/login/", timeout=10).status_code == 200


def test_too_many_request_headers_get_a_431_with_the_reason(live_platform):  # noqa: F811
    headers = {f"X-H{i}": "1" for i in range(150)}
    response = httpx.get(f"{live_platform.portal_url}/accounts/login/", headers=headers, timeout=10)
    assert response.status_code == 431
    assert "header lines; the limit is 100" in response.json()["detail"]


def _post_endless(url: str, path: str, size: int, *, chunked: bool) -> bytes:
    """POST ``size`` bytes (declared, or chunked without a length) as fast as the server takes them."""
    length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n\r\n" % (path.encode(), length)
    piece = b"x" * (1 << 20)
    if chunked:
        piece = b"%x\r\n" % len(piece) + piece + b"\r\n"
    return _raw(url, head, body=(piece for _ in range(size >> 20)))


def _spooled(pid: int) -> int:
    """Bytes of the files the portal process holds open (Django spools big bodies to temporary files)."""
    total = 0
    for f in psutil.Process(pid).open_files():
        try:
            total += os.stat(f.path).st_size
        except OSError:
            pass
    return total


def test_a_huge_body_to_any_url_is_refused_before_it_is_stored(live_platform):  # noqa: F811
    """Signed out, a POST far over the limit (declared, or chunked with no length) gets a 413; the portal
    neither holds it in memory nor spools it to disk, and serves the next request."""
    portal = psutil.Process(live_platform.procs["portal"].pid)
    before = portal.memory_info().rss
    declared = _post_endless(live_platform.portal_url, "/accounts/login/", 200 << 20, chunked=False)
    assert declared.split(b"\r\n", 1)[0] == b"HTTP/1.1 413 Request Entity Too Large", declared[:200]
    assert b"over the limit of" in declared
    chunked = _post_endless(live_platform.portal_url, "/api/v1/auth/token", 200 << 20, chunked=True)
    assert chunked.split(b"\r\n", 1)[0] == b"HTTP/1.1 413 Request Entity Too Large", chunked[:200]
    assert portal.memory_info().rss - before < 64 << 20
    assert _spooled(portal.pid) < 64 << 20
    assert httpx.get(f"{live_platform.portal_url}/accounts/login/", timeout=10).status_code == 200
