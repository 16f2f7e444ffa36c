"""``cluster-local`` on one machine: as on Knative, where such a function has no route on the external
gateway, it answers only to clients on this machine; from any other address it does not exist (404), in
both URL forms and on both data paths. Debian packages: bubblewrap (and haproxy for its data path).
"""

from __future__ import annotations

import secrets
import socket

import httpx
import pytest

from functions.backends.local import LocalBackend
from tests.support.daemon import start_daemon, stop_daemon
from tests.support.daemon_helpers import NS, build, deploy, service
from tests.support.sample_functions import remove_dir, scratch_dir

pytestmark = pytest.mark.runtime


def _address_off_loopback() -> str:
    """This machine's address on its default route: a client there is not on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # no packet is sent: this only picks the route
        except OSError:
            pytest.skip("no network interface besides loopback")
        return probe.getsockname()[0]


@pytest.fixture(scope="module", params=["haproxy", "python"])
def open_daemon(request):
    """A daemon whose gateway listens on every address (``--host 0.0.0.0``), on one data path."""
    if request.param == "haproxy":
        from tests.support.needs import require_binary

        require_binary("haproxy", hint="apt-get install haproxy")
    data_dir = scratch_dir("visibility-")
    daemon = start_daemon(
        data_dir, secrets.token_urlsafe(16), "--host", "0.0.0.0", "--data-path", request.param
    )
    yield daemon
    stop_daemon(daemon)
    remove_dir(data_dir)


def _get(base: str, name: str, form: str, **headers) -> httpx.Response:
    port = base.rsplit(":", 1)[1]
    if form == "host":
        return httpx.get(f"{base}/", headers={"Host": f"{name}.{NS}.localhost:{port}", **headers}, timeout=60)
    return httpx.get(f"{base}/{NS}/{name}/", headers=headers, timeout=60)


def test_a_cluster_local_function_answers_only_on_this_machine(open_daemon, tmp_path):
    backend = LocalBackend(open_daemon.control_url.replace("0.0.0.0", "127.0.0.1"), open_daemon.token)
    artifact = build(backend, tmp_path, "shared", "python")
    deploy(backend, service("open", "python", artifact))
    deploy(backend, service("inner", "python", artifact, visibility="cluster-local"))
    port = open_daemon.gateway_url.rsplit(":", 1)[1]
    local, remote = f"http://127.0.0.1:{port}", f"http://{_address_off_loopback()}:{port}"

    for form in ("host", "path"):
        assert _get(local, "open", form).status_code == 200
        assert _get(local, "inner", form).status_code == 200
        assert _get(remote, "open", form).status_code == 200
        assert _get(remote, "inner", form).status_code == 404, form
        # a client cannot pass itself off as local, whatever it sends
        assert _get(remote, "inner", form, **{"X-HKS-External": "0"}).status_code == 404, form

    # visibility follows the latest spec, both ways
    deploy(backend, service("inner", "python", artifact, revision=2))
    assert _get(remote, "inner", "host").status_code == 200
    deploy(backend, service("inner", "python", artifact, revision=3, visibility="cluster-local"))
    assert _get(remote, "inner", "host").status_code == 404
    assert _get(local, "inner", "host").status_code == 200
