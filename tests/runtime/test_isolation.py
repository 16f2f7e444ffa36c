"""Tenant isolation beyond the process, tried from the attacker's side in the real sandbox (issue 11).

A tenant's ``standard`` function gets a network of its own: the internet, but nothing on the host (its
loopback services, its own addresses), nothing private or link-local, no other tenant's instance; two
projects deploying the same template never see each other's code; a ``cluster-local`` function answers its
own project's functions only. The "internet" here is a host in a network namespace this test creates (a
veth pair on TEST-NET-2), reached as any outside address is. Debian packages: bubblewrap, slirp4netns,
nftables, iproute2 (and prometheus for its part).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from functions.backends.base import BuildSpec, FunctionRef, Scale, ServiceSpec
from functions.backends.local import LocalBackend
from hks_portal.platform import prometheus_config
from hks_runtime import netns
from tests.support.daemon_helpers import deploy, wait_for
from tests.support.needs import require_binary
from tests.support.sample_functions import REPO, archive_from_files, scratch_fixture

pytestmark = pytest.mark.runtime

TEMPLATE = REPO / "hks_cli" / "templates" / "python" / "http"
PEER_HOST, PEER_NS_ADDR = "198.51.100.1", "198.51.100.2"  # TEST-NET-2: an address outside this host

PROBE = '''
"""A tenant's function that looks around: connects, fetches through the gateway, searches the files."""
import json
import os
import socket
import urllib.error
import urllib.request

MARKER = "__MARKER__"


def new():
    return Probe()


def attempt(host, port):
    try:
        with socket.create_connection((host, port), timeout=5):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def find(needle):
    found = []
    for top in os.listdir("/"):
        if top in ("proc", "sys", "dev", "usr"):
            continue
        for root, _, files in os.walk("/" + top):
            for name in files:
                path = os.path.join(root, name)
                try:
                    with open(path, "rb") as handle:
                        if needle.encode() in handle.read(4 * 1024 * 1024):
                            found.append(path)
                except OSError:
                    pass
    return found


class Probe:
    async def handle(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = json.loads(body or b"{}")
        out = {"gateway": os.environ.get("HKS_GATEWAY_URL", "")}
        out["connect"] = {f"{h}:{p}": attempt(h, p) for h, p in query.get("connect", [])}
        if "fetch" in query:
            base = out["gateway"] or query["fetch_fallback"]
            out["fetch"] = fetch(base + query["fetch"])
        if "find" in query:
            out["found"] = find(query["find"])
        payload = json.dumps(out).encode()
        headers = [[b"content-type", b"application/json"]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def alive(self):
        return True, "Alive"

    def ready(self):
        return True, "Ready"
'''


@pytest.fixture(scope="module", autouse=True)
def _tools():
    require_binary("bwrap", hint="apt-get install bubblewrap")
    problem = netns.check()
    if problem:
        pytest.skip(problem)


work = scratch_fixture("isolation-")


@pytest.fixture(scope="module")
def backend(runtime_daemon):
    return LocalBackend(runtime_daemon.control_url, runtime_daemon.token)


RUN = secrets.token_hex(4)  # both tenants' pyproject.toml are the same, and new to the dependency cache


def template_files(marker: str) -> dict[str, bytes]:
    """The default Python template (pyproject.toml and all) with this tenant's own code in func.py."""
    files = {
        str(path.relative_to(TEMPLATE)): path.read_bytes() for path in TEMPLATE.rglob("*") if path.is_file()
    }
    files["pyproject.toml"] += f"# test run {RUN}\n".encode()
    files["function/func.py"] = PROBE.replace("__MARKER__", marker).encode()
    files["func.yaml"] = b"specVersion: 0.36.0\nname: probe\nruntime: python\n"
    return files


def build_for(backend, work: Path, project: str, name: str, files: dict) -> str:
    archive, content_hash = archive_from_files(files, work / f"{project}-{name}.tar.gz")
    spec = BuildSpec(
        ref=FunctionRef(project=project, namespace=project, function=name),
        revision=f"{name}-00001",
        runtime="python",
        archive_path=str(archive),
        content_hash=content_hash,
    )
    return backend.build(spec).artifact


def deploy_probe(backend, work, project: str, name: str, marker: str, **fields) -> ServiceSpec:
    artifact = build_for(backend, work, project, name, template_files(marker))
    spec = ServiceSpec(
        ref=FunctionRef(project=project, namespace=project, function=name),
        revision=f"{name}-00001",
        runtime="python",
        kind="http",
        artifact=artifact,
        **fields,
    )
    deploy(backend, spec)
    return spec


def ask(runtime_daemon, project: str, name: str, **query) -> dict:
    response = httpx.post(f"{runtime_daemon.gateway_url}/{project}/{name}/", json=query, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


@contextlib.contextmanager
def listener(host: str):
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.contextmanager
def outside_host():
    """A TCP server on an address outside this host: a network namespace of its own behind a veth pair.

    The namespace is the server's own (``unshare --net``), named by its pid, not ``ip netns``' files under
    /run/netns: those are bind mounts, and in CI's mount namespace one was once not there when ``ip netns
    exec`` looked ("setting the network namespace ... failed: Invalid argument")."""
    veth = f"hkst{os.getpid() % 100000}"
    server = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", _ECHO_SERVER, PEER_NS_ADDR],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{server.pid}/ns/net") == own:  # until unshare(2) has run
            assert time.monotonic() < deadline, "the peer's namespace did not come up"
            time.sleep(0.01)
        inside = ["nsenter", f"--net=/proc/{server.pid}/ns/net"]
        for argv in (
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", "peer0", "netns", str(server.pid)],
            ["ip", "addr", "add", f"{PEER_HOST}/30", "dev", veth],
            ["ip", "link", "set", veth, "up"],
            [*inside, "ip", "addr", "add", f"{PEER_NS_ADDR}/30", "dev", "peer0"],
            [*inside, "ip", "link", "set", "peer0", "up"],
        ):
            subprocess.run(argv, check=True)
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
        subprocess.run(["ip", "link", "del", veth], capture_output=True)


# Binds once its address is there (the test adds it from outside after the namespace exists).
_ECHO_SERVER = """
import socket, sys, time
s = socket.socket()
for _ in range(200):
    try:
        s.bind((sys.argv[1], 0)); break
    except OSError:
        time.sleep(0.05)
s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    s.accept()[0].close()
"""


@contextlib.contextmanager
def prometheus(runtime_daemon, work: Path):
    """The platform's own Prometheus (its config, scraping this daemon with the token)."""
    binary = shutil.which("prometheus")
    if binary is None:
        yield None
        return
    with listener("127.0.0.1") as port:
        pass
    control_port = int(runtime_daemon.control_url.rsplit(":", 1)[1])
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    config.write_text(prometheus_config(control_port, runtime_daemon.token, interval="1s"))
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}"]
        + [f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: _answers(url + "/-/ready"), timeout=30), "prometheus did not start"
        yield url, port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def _host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("203.0.113.1", 9))  # picks the default route's source address; sends nothing
        return probe.getsockname()[0]


# --- the network -----------------------------------------------------------------------------------------


def test_a_standard_function_reaches_the_internet_but_nothing_on_the_host(backend, runtime_daemon, work):
    deploy_probe(backend, work, "tenant-b", "victim", "marker-of-b", scale=Scale(min=1))
    victim = httpx.get(
        f"{runtime_daemon.control_url}/v1/namespaces/tenant-b/functions/victim",
        headers=runtime_daemon.headers,
    ).json()
    victim_port = next(i["port"] for i in victim["instances"] if i["state"] == "ready")
    deploy_probe(backend, work, "tenant-a", "prober", "marker-of-a")
    control = int(runtime_daemon.control_url.rsplit(":", 1)[1])
    gateway = int(runtime_daemon.gateway_url.rsplit(":", 1)[1])
    with (
        outside_host() as peer_port,
        listener("127.0.0.1") as portal_port,
        listener("0.0.0.0") as on_every_address,
        prometheus(runtime_daemon, work) as prom,
    ):
        targets = {
            "a host loopback service (as the portal)": ("127.0.0.1", portal_port),
            "the same through slirp's host alias": ("10.0.2.2", portal_port),
            "the runtime control API and /metrics": ("10.0.2.2", control),
            "the gateway's public port": ("10.0.2.2", gateway),
            "Redis": ("10.0.2.2", 6379),
            "PostgreSQL": ("10.0.2.2", 5432),
            "MariaDB": ("10.0.2.2", 3306),
            "RabbitMQ": ("10.0.2.2", 5672),
            "NATS": ("10.0.2.2", 4222),
            "Mosquitto": ("10.0.2.2", 1883),
            "another tenant's instance": ("10.0.2.2", victim_port),
            "the host's own address": (_host_address(), on_every_address),
            "the metadata service": ("169.254.169.254", 80),
            "a private range": ("10.255.255.1", 80),
        }
        if prom is not None:
            targets["Prometheus"] = ("10.0.2.2", prom[1])
        for what in ("Redis", "PostgreSQL", "MariaDB", "RabbitMQ", "NATS", "Mosquitto"):  # when it runs them
            if not _listening("127.0.0.1", targets[what][1]):
                del targets[what]
        # the control: every host target answers a process on the host
        for what, (host, port) in targets.items():
            if host in ("127.0.0.1", "10.0.2.2"):
                assert _listening("127.0.0.1", port), what
        assert _listening(_host_address(), on_every_address)
        answer = ask(
            runtime_daemon,
            "tenant-a",
            "prober",
            connect=[*targets.values(), (PEER_NS_ADDR, peer_port)],
        )
    results = answer["connect"]
    assert results[f"{PEER_NS_ADDR}:{peer_port}"] == "connected"  # the internet works
    for what, (host, port) in targets.items():
        assert results[f"{host}:{port}"] == "refused", f"{what} ({host}:{port}): {results[f'{host}:{port}']}"


def test_the_operator_can_allow_a_private_range():
    os.environ["HKS_SANDBOX_EGRESS_ALLOW"] = "10.20.0.0/16, 192.168.7.1"
    try:
        rules = netns.ruleset(gateway_port=None)
    finally:
        del os.environ["HKS_SANDBOX_EGRESS_ALLOW"]
    allow = rules.index("ip daddr { 10.20.0.0/16, 192.168.7.1/32 } accept")
    assert allow < rules.index("reject")
    os.environ["HKS_SANDBOX_EGRESS_ALLOW"] = "not-a-network"
    try:
        with pytest.raises(netns.NetworkUnavailable, match="HKS_SANDBOX_EGRESS_ALLOW"):
            netns.ruleset(gateway_port=None)
    finally:
        del os.environ["HKS_SANDBOX_EGRESS_ALLOW"]


def test_metrics_need_the_token(runtime_daemon):
    assert httpx.get(runtime_daemon.control_url + "/metrics").status_code == 401
    with_token = httpx.get(runtime_daemon.control_url + "/metrics", headers=runtime_daemon.headers)
    assert with_token.status_code == 200 and "kn_revision_pods_count" in with_token.text


def test_prometheus_scrapes_the_runtime_with_the_token(runtime_daemon, work):
    with prometheus(runtime_daemon, work / "scrape") as prom:
        if prom is None:
            pytest.skip("prometheus is not installed (apt-get install prometheus)")

        def up():
            result = httpx.get(prom[0] + "/api/v1/query", params={"query": "up"}).json()["data"]["result"]
            return result and result[0]["value"][1] == "1"

        assert wait_for(up, timeout=30)


# --- code and caches -------------------------------------------------------------------------------------


def test_two_projects_with_the_same_template_never_see_each_others_code(backend, runtime_daemon, work):
    deploy_probe(backend, work, "tenant-c", "twin", "secret-code-of-c")
    deploy_probe(backend, work, "tenant-d", "twin", "secret-code-of-d")
    seen_by_d = ask(runtime_daemon, "tenant-d", "twin", find="secret-code-of-c")
    seen_by_c = ask(runtime_daemon, "tenant-c", "twin", find="secret-code-of-d")
    assert seen_by_d["found"] == [] and seen_by_c["found"] == []
    # the search works: each finds its own code
    assert (
        "/app/function/func.py" in ask(runtime_daemon, "tenant-d", "twin", find="secret-code-of-d")["found"]
    )


# --- function to function --------------------------------------------------------------------------------


def test_a_cluster_local_function_answers_its_own_project_only(backend, runtime_daemon, work):
    deploy_probe(backend, work, "tenant-e", "inner", "e-inner", visibility="cluster-local")
    deploy_probe(backend, work, "tenant-e", "caller", "e-caller")
    deploy_probe(backend, work, "tenant-f", "caller", "f-caller")
    fallback = runtime_daemon.gateway_url  # where a function on the host's network would call
    same = ask(runtime_daemon, "tenant-e", "caller", fetch="/tenant-e/inner/", fetch_fallback=fallback)
    other = ask(runtime_daemon, "tenant-f", "caller", fetch="/tenant-e/inner/", fetch_fallback=fallback)
    assert same["fetch"] == 200
    assert other["fetch"] == 404
    # public functions of another project answer, as on the internet
    assert ask(runtime_daemon, "tenant-f", "caller", fetch="/tenant-e/caller/", fetch_fallback=fallback)[
        "fetch"
    ] in (200, 405)
    # and the platform itself (a host process) still reaches the cluster-local one
    assert httpx.post(f"{runtime_daemon.gateway_url}/tenant-e/inner/", json={}, timeout=60).status_code == 200
