"""Is Knative Serving there? ``require_knative`` is the check the backend and provisioning make before they
write anything: a cluster that does not serve Knative Serving's API is refused with what to do - and when it
is a project's own cluster (a vCluster) while the platform's host cluster has Knative, with why Knative on
the host cannot serve it (docs/operations.md, "Tenancy on the cluster"). The preflight reports the same."""

from __future__ import annotations

from kubernetes import client

from functions.backends.base import BackendError
from functions.backends.k8s_api import api_client, backend_error, platform_kubeconfig

KNATIVE = ("serving.knative.dev", "v1")
KNATIVE_VERSION = "1.23.0"  # the release docs/install-k3s.md installs
RELEASES = f"https://github.com/knative/serving/releases/download/knative-v{KNATIVE_VERSION}"
INSTALL = f"kubectl apply -f {RELEASES}/serving-crds.yaml -f {RELEASES}/serving-core.yaml"
TENANCY = 'docs/operations.md, "Tenancy on the cluster"'
DISCOVERY_TIMEOUT = (2, 5)
HOST_KNATIVE = (
    "Knative on the host cannot run a vCluster's functions: vCluster syncs Knative Services to the host only "
    "with its paid custom-resource sync, and the pods host Knative makes never appear in the vCluster"
)
INSIDE = (
    "Install Knative Serving inside the vCluster (with its kubeconfig: {install}), or run the project in a "
    "namespace of the host cluster (a project without a kubeconfig of its own)"
)


def serves_knative(api: client.ApiClient) -> bool:
    """Does the cluster serve Knative Serving's API (are its CRDs installed)? Asks discovery, which every
    signed-in identity may read (the ClusterRole system:discovery); a group no CRD defines is a 404."""
    try:
        found = client.CustomObjectsApi(api).get_api_resources(*KNATIVE, _request_timeout=DISCOVERY_TIMEOUT)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise backend_error(exc) from exc
    except Exception as exc:  # unreachable, or not an API server
        raise backend_error(exc) from exc
    return any(resource.name == "services" for resource in found.resources or [])


def host_has_knative(server: str) -> bool:
    """The platform's own (host) cluster is another one than ``server`` and serves Knative; False when
    there is no platform identity or the host cannot be asked."""
    kubeconfig = platform_kubeconfig()
    if not kubeconfig:
        return False
    try:
        host = api_client(kubeconfig)
        return host.configuration.host != server and serves_knative(host)
    except BackendError:
        return False


def require_knative(api: client.ApiClient, *, own_kubeconfig: bool) -> None:
    """Raise a permanent ``BackendError`` saying what to do unless the cluster serves Knative Serving.
    ``own_kubeconfig``: the cluster is a project's own (a vCluster's), not the platform's."""
    if serves_knative(api):
        return
    server = api.configuration.host
    where = (
        f"the project's own cluster ({server}, from its kubeconfig)"
        if own_kubeconfig
        else f"the cluster {server}"
    )
    message = f"{where} does not have Knative Serving: no {'/'.join(KNATIVE)} API"
    if own_kubeconfig and host_has_knative(server):
        message += f", though the host cluster has it. {HOST_KNATIVE}. " + INSIDE.format(install=INSTALL)
    elif own_kubeconfig:
        message += f". If it is a vCluster: {INSIDE.format(install=INSTALL)}; {HOST_KNATIVE}"
    else:
        message += f". Install it: {INSTALL}"
    raise BackendError(f"{message}. See {TENANCY}.", permanent=True)
