"""The Knative image recipe, proved without a container engine.

1. Nothing the image needs lies under a path the build pod mounts: Kaniko leaves every mount point of its
   container out of the image (osscontainertools/kaniko pkg/util/fs_util.go DetectFilesystemIgnoreList),
   so code copied under one would be missing from the pushed image.
2. The image's start command - the Dockerfile's CMD and ENV, run in its WORKDIR laid out as COPY and the
   install steps leave it - answers requests, for Node and Python, HTTP and CloudEvents. The layout comes
   from the local runtime's builder (the same source, the same dependencies installed by npm/pip) and the
   runtimes from its layers (the same faas-js-runtime and func-python versions the Dockerfiles install).
   The command runs as a plain process, not in the sandbox: like in the image, it binds its own TCP port.
   The only thing changed is the port number (8080 is not free on a shared machine).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest

from functions.backends import k8s_images, k8s_manifests
from functions.backends.base import BuildSpec, FunctionRef
from hks_runtime import builder
from tests.support.needs import require_binary
from tests.support.ports import free_port

REF = FunctionRef(project="acme", namespace="acme", function="hello")
SHAPES = [(runtime, kind) for runtime in ("node", "python") for kind in ("http", "cloudevents")]
CE_HEADERS = {
    "content-type": "application/json",
    "ce-id": "evt-1",
    "ce-source": "/tests",
    "ce-type": "com.example.test",
    "ce-specversion": "1.0",
}
# What the kubelet mounts into every container besides the pod's volumes.
KUBELET_MOUNTS = ["/dev/termination-log", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]


def build_spec(runtime: str, kind: str) -> BuildSpec:
    return BuildSpec(
        ref=REF,
        revision="hello-00001",
        runtime=runtime,
        kind=kind,
        archive_path="/dev/null",
        archive_url="https://portal.example.test/a/",
        content_hash="ab" * 32,
    )


def parse_dockerfile(text: str) -> dict:
    """WORKDIR, COPY destinations, ENV and CMD of a Dockerfile (the instructions ours use)."""
    recipe: dict = {"workdir": "/", "copies": [], "env": {}, "cmd": [], "runs": []}
    for line in text.replace("\\\n", " ").splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "WORKDIR":
            recipe["workdir"] = os.path.join(recipe["workdir"], rest.strip())
        elif instruction in ("COPY", "ADD"):
            recipe["copies"].append(os.path.normpath(os.path.join(recipe["workdir"], rest.split()[-1])))
        elif instruction == "ENV":
            recipe["env"].update(dict(item.split("=", 1) for item in shlex.split(rest)))
        elif instruction == "CMD":
            recipe["cmd"] = json.loads(rest)
        elif instruction == "RUN":
            recipe["runs"].append(rest)
    return recipe


def needed_paths(recipe: dict) -> list[str]:
    """Where the image keeps what it needs: the code and its dependencies in WORKDIR, the runtimes that
    ``npm install --global`` and ``pip install`` put under /usr/local."""
    return [recipe["workdir"], *recipe["copies"], "/usr/local"]


def under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


@pytest.mark.parametrize(("runtime", "kind"), SHAPES)
def test_nothing_the_image_needs_lies_under_a_path_the_build_pod_mounts(runtime, kind):
    spec = build_spec(runtime, kind)
    cluster = k8s_manifests.ClusterSettings(registry_secret="push", registry_ca_configmap="ca")
    recipe = parse_dockerfile(k8s_manifests.build_config_map(spec)["data"]["Dockerfile"])
    pod = k8s_manifests.kaniko_job(spec, cluster)["spec"]["template"]["spec"]
    kaniko = next(c for c in pod["containers"] if c["name"] == "kaniko")
    mounts = [m["mountPath"] for m in kaniko["volumeMounts"]] + KUBELET_MOUNTS
    assert recipe["copies"], "the Dockerfile copies the function in"
    for path in needed_paths(recipe):
        for mount in mounts:
            assert not under(path, mount), f"{path} is under the mount point {mount}: Kaniko leaves it out"
    # the build context Kaniko unpacks (tar://...) is read from a mount, which is fine: it is input only
    context = next(a for a in kaniko["args"] if a.startswith("--context=tar://"))
    assert any(under(context.removeprefix("--context=tar://"), m) for m in mounts)


# --- the start command answers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def work():
    require_binary("bwrap", hint="apt-get install bubblewrap")  # the builder installs sandboxed
    from tests.support.sample_functions import remove_dir, scratch_dir

    path = scratch_dir("image-recipe-")
    yield path
    remove_dir(path)


def host_path(layer_dir, path: str) -> str:
    """A layer path as the sandbox names it (/layer/...) -> where it is on this machine."""
    return str(layer_dir / path.removeprefix("/layer/")) if path.startswith("/layer/") else path


def image_process(runtime: str, kind: str, work):
    """Lay the WORKDIR out and start the Dockerfile's CMD there with its ENV; return (url, process)."""
    from tests.support.sample_functions import LAYERS_DIR, build_fixture

    recipe = parse_dockerfile(k8s_images.dockerfile(runtime, kind))
    layer = builder.ensure_layer(runtime, LAYERS_DIR, lambda line: None)
    workdir = build_fixture(f"{runtime}-{kind}", runtime, work)  # COPY . . and the dependency install
    port = free_port()
    env = {
        key: value.replace(str(k8s_images.FUNCTION_PORT), str(port)) for key, value in recipe["env"].items()
    }
    env |= {"HOME": str(work), "K_SERVICE": "hello", "K_REVISION": "hello-00001"}
    if runtime == "node":
        node = host_path(layer, builder.layer_info(layer)["node"])
        # npm install --global put faas-js-runtime's command on the image's PATH
        env["PATH"] = f"{layer / 'runtime' / 'node_modules' / '.bin'}:{os.path.dirname(node)}:/usr/bin:/bin"
    else:
        env["PATH"] = f"{layer / 'bin'}:/usr/bin:/bin"  # the python with func-python installed
        env["PYTHONPATH"] = str(workdir / ".hks" / "site-packages")  # where pip -r requirements.txt put six
    process = subprocess.Popen(
        recipe["cmd"], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return f"http://127.0.0.1:{port}", process


@pytest.mark.runtime
@pytest.mark.parametrize(("runtime", "kind"), SHAPES)
def test_the_image_start_command_answers(runtime, kind, work):
    from tests.support.sample_functions import request, wait_ready

    url, process = image_process(runtime, kind, work)
    try:
        wait_ready(url, process)
        if kind == "http":
            status, _, body = request(url + "/")
            assert (status, body) == (200, b"OK")
            return
        status, headers, body = request(url + "/", data=b'{"n": 42}', headers=CE_HEADERS)
        assert status == 200, body
        if headers["content-type"].startswith("application/cloudevents+json"):
            event = json.loads(body)  # structured mode (func-python)
            data, event_type = event["data"], event["type"]
        else:
            data, event_type = json.loads(body), headers["ce-type"]  # binary mode (faas-js-runtime)
        assert event_type == "function.response"
        assert data == {"message": "OK", "received": {"n": 42}}
    finally:
        process.terminate()
        process.wait(10)
