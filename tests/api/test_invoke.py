"""Invoking a function through the portal: the answer comes back, and the caller cannot steer the request
anywhere but the function (SSRF). The function here is a real HTTP server on a local port."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from functions.models import Function

JSON = "application/json"
INVOKE = "/api/v1/projects/acme/functions/hello/invoke"


class _Handler(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )
        route = self.server.routes.get(self.path.split("?")[0], (200, {"X-Fn": "hello"}, b"OK"))
        if callable(route):
            route = route()
        status, headers, payload = route
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.seen, server.routes = [], {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(built_revision, upstream):
    """``hello`` ready and served by ``upstream``."""
    host, port = upstream.server_address
    Function.objects.filter(pk=built_revision.function_id).update(internal_url=f"http://{host}:{port}")
    return upstream


def invoke(client, **payload):
    return client.post(INVOKE, payload, content_type=JSON)


def test_invoke_returns_the_functions_answer(project, developer, served, api_client_for):
    response = invoke(
        api_client_for(developer), method="PUT", path="/items?x=1", headers={"X-Trace": "7"}, body="hello"
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["body"], body["body_encoding"], body["truncated"]) == (
        200,
        "OK",
        "utf-8",
        False,
    )
    assert body["headers"]["x-fn"] == "hello" and body["duration_ms"] > 0
    [seen] = served.seen
    assert (seen["method"], seen["path"], seen["body"]) == ("PUT", "/items?x=1", b"hello")
    assert seen["headers"]["X-Trace"] == "7"


def test_a_binary_answer_comes_back_base64(project, developer, served, api_client_for):
    served.routes["/bin"] = (200, {}, b"\xff\x00\xfe")
    body = invoke(api_client_for(developer), method="GET", path="/bin").json()
    assert (body["body"], body["body_encoding"]) == ("/wD+", "base64")


def test_a_large_answer_is_truncated(project, developer, served, api_client_for):
    served.routes["/big"] = (200, {}, b"x" * (1024 * 1024 + 10))
    body = invoke(api_client_for(developer), method="GET", path="/big").json()
    assert body["truncated"] is True and len(body["body"]) == 1024 * 1024


def test_redirects_are_returned_not_followed(project, developer, served, api_client_for):
    served.routes["/go"] = (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    body = invoke(api_client_for(developer), method="GET", path="/go").json()
    assert body["status"] == 302
    assert len(served.seen) == 1


def test_routing_headers_from_the_caller_are_dropped(project, developer, served, api_client_for):
    headers = {"Host": "secret.globex.localhost", "X-Forwarded-Host": "evil", "Forwarded": "host=evil"}
    invoke(api_client_for(developer), method="GET", path="/", headers=headers)
    [seen] = served.seen
    host, port = served.server_address
    assert seen["headers"]["Host"] == f"{host}:{port}"
    assert "X-Forwarded-Host" not in seen["headers"] and "Forwarded" not in seen["headers"]


@pytest.mark.parametrize(
    "path",
    [
        "http://169.254.169.254/latest/meta-data/",
        "//evil.example/x",
        "evil.example/x",
        "/../globex/secret/",
        "/a/%2e%2e/%2E%2E/globex/secret",
        "/./x",
        "/a\\..\\b",
        "/a b",
        "/x\r\nHost: evil",
    ],
)
def test_a_path_that_could_leave_the_function_is_refused(path, project, developer, served, api_client_for):
    response = invoke(api_client_for(developer), method="GET", path=path)
    assert response.status_code == 400
    assert "path" in response.json()["detail"]
    assert served.seen == []


def test_invoking_a_function_that_was_never_deployed_is_409(project, developer, hello, api_client_for):
    response = invoke(api_client_for(developer), path="/")
    assert response.status_code == 409 and "no deployed revision" in response.json()["detail"]


def test_an_unreachable_function_is_502(project, developer, built_revision, api_client_for):
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    Function.objects.filter(pk=built_revision.function_id).update(internal_url=f"http://127.0.0.1:{port}")
    response = invoke(api_client_for(developer), path="/")
    assert response.status_code == 502 and "could not reach function hello" in response.json()["detail"]


def test_a_function_slower_than_its_timeout_is_504(project, developer, served, api_client_for, settings):
    """The backend enforces the timeout; the portal gives up too, a grace period later."""
    settings.HKS_INVOKE_GRACE_SECONDS = 1
    Function.objects.filter(name="hello").update(timeout_seconds=1)
    served.routes["/slow"] = lambda: (time.sleep(2.5), (200, {}, b"late"))[1]
    response = invoke(api_client_for(developer), method="GET", path="/slow")
    assert response.status_code == 504 and "within 1 s" in response.json()["detail"]


def test_viewer_cannot_invoke(project, viewer, served, api_client_for):
    assert invoke(api_client_for(viewer), path="/").status_code == 403
    assert served.seen == []


def test_local_functions_without_urls_go_through_the_gateway_path_form(
    project, developer, built_revision, upstream, api_client_for, settings
):
    host, port = upstream.server_address
    settings.HKS_GATEWAY_URL = f"http://{host}:{port}"
    invoke(api_client_for(developer), method="GET", path="/ping")
    assert [s["path"] for s in upstream.seen] == ["/acme/hello/ping"]
