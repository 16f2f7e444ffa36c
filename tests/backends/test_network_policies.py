"""What the Knative backend's NetworkPolicies allow, evaluated with the documented semantics
(tests/support/netpol.py): a standard function reaches the internet, DNS and its own project, never the
cluster's private ranges or other namespaces; agent code reaches nothing; builds reach the registry,
mirrors and the internet only. Their schemas are checked in test_k8s_manifests.py."""

import pytest

from functions.backends import k8s_manifests as m
from functions.backends.base import FunctionRef
from tests.support.netpol import Endpoint, allowed

REF = FunctionRef(project="acme", namespace="acme", function="hello")
FUNCTION = Endpoint("10.42.0.7", "acme", {"serving.knative.dev/service": "hello"})
BUILD_POD = Endpoint("10.42.0.9", "acme", {m.LABEL_COMPONENT: "build"})
DNS = Endpoint("10.42.0.2", "kube-system", {"k8s-app": "kube-dns"}, port=53, protocol="UDP")
SAME_PROJECT = Endpoint("10.42.0.8", "acme", {"serving.knative.dev/service": "other"}, port=8080)
OTHER_PROJECT = Endpoint("10.42.1.5", "beta", {"serving.knative.dev/service": "hello"}, port=8080)
PUBLIC = [Endpoint("1.1.1.1"), Endpoint("93.184.215.14", port=80), Endpoint("2606:4700:4700::1111")]
PRIVATE = [
    Endpoint("10.43.0.1"),  # the API server's ClusterIP
    Endpoint("169.254.169.254", port=80),  # cloud metadata
    Endpoint("192.168.1.10", port=5432),  # the LAN
    Endpoint("172.17.0.1", port=6379),
    Endpoint("100.100.100.100", port=53),
    Endpoint("127.0.0.1", port=10250),
    Endpoint("fd00::1"),
    Endpoint("fe80::1"),
]


def standard(**knobs):
    return [m.function_network_policy(REF, restricted=False, **knobs)]


@pytest.mark.parametrize("target", PUBLIC, ids=lambda e: e.ip)
def test_a_standard_function_reaches_the_internet(target):
    assert allowed(standard(), FUNCTION, target, "Egress")


@pytest.mark.parametrize("target", PRIVATE, ids=lambda e: e.ip)
def test_a_standard_function_reaches_no_private_address(target):
    assert not allowed(standard(), FUNCTION, target, "Egress")


def test_a_standard_function_resolves_names_through_cluster_dns_only():
    assert allowed(standard(), FUNCTION, DNS, "Egress")
    tcp = Endpoint(DNS.ip, DNS.namespace, DNS.labels, port=53, protocol="TCP")
    assert allowed(standard(), FUNCTION, tcp, "Egress")
    metrics = Endpoint("10.42.0.3", "kube-system", {"k8s-app": "metrics-server"}, port=443)
    assert not allowed(standard(), FUNCTION, metrics, "Egress")
    assert not allowed(standard(), FUNCTION, Endpoint(DNS.ip, DNS.namespace, DNS.labels, port=9153), "Egress")


def test_cluster_local_means_the_project_namespace():
    assert allowed(standard(), FUNCTION, SAME_PROJECT, "Egress")
    assert not allowed(standard(), FUNCTION, OTHER_PROJECT, "Egress")
    kourier = Endpoint("10.42.0.4", "kourier-system", {"app": "3scale-kourier-gateway"}, port=8081)
    assert not allowed(standard(), FUNCTION, kourier, "Egress")  # the shared gateway: only if widened


def test_operators_can_widen_a_standard_function_egress():
    widened = standard(egress_cidrs=("192.168.1.0/24",), egress_namespaces=("kourier-system",))
    assert allowed(widened, FUNCTION, Endpoint("192.168.1.10", port=5432), "Egress")
    kourier = Endpoint("10.42.0.4", "kourier-system", {"app": "3scale-kourier-gateway"}, port=8081)
    assert allowed(widened, FUNCTION, kourier, "Egress")
    assert not allowed(widened, FUNCTION, Endpoint("10.43.0.1"), "Egress")
    assert not allowed(widened, FUNCTION, OTHER_PROJECT, "Egress")


@pytest.mark.parametrize("target", [*PUBLIC, *PRIVATE, DNS, SAME_PROJECT, OTHER_PROJECT], ids=lambda e: e.ip)
def test_agent_code_reaches_nothing(target):
    agent = [m.function_network_policy(REF, restricted=True)]
    assert not allowed(agent, FUNCTION, target, "Egress")


@pytest.mark.parametrize("restricted", [False, True])
def test_functions_take_traffic_from_knative_and_their_project_only(restricted):
    policies = [m.function_network_policy(REF, restricted=restricted)]
    for namespace in ("knative-serving", "kourier-system", "contour-internal"):
        assert allowed(policies, FUNCTION, Endpoint("10.42.2.1", namespace, {"app": "x"}), "Ingress")
    assert allowed(policies, FUNCTION, SAME_PROJECT, "Ingress")
    assert not allowed(policies, FUNCTION, OTHER_PROJECT, "Ingress")
    assert not allowed(policies, FUNCTION, Endpoint("10.42.3.3", "default", {}), "Ingress")


def test_the_policy_selects_only_its_function():
    other = Endpoint("10.42.0.8", "acme", {"serving.knative.dev/service": "other"})
    assert allowed([m.function_network_policy(REF, restricted=True)], other, Endpoint("1.1.1.1"), "Egress")


REGISTRY = Endpoint("10.43.0.50", port=5000)
PORTAL = Endpoint("192.168.1.2", port=8000)


def test_builds_reach_the_registry_and_portal_listed_and_the_internet():
    policies = [m.build_network_policy("acme", "acme", egress_cidrs=("10.43.0.50/32", "192.168.1.2/32"))]
    for target in (REGISTRY, PORTAL, DNS, *PUBLIC):
        assert allowed(policies, BUILD_POD, target, "Egress"), target
    for target in (Endpoint("10.43.0.1"), Endpoint("169.254.169.254", port=80), OTHER_PROJECT, SAME_PROJECT):
        assert not allowed(policies, BUILD_POD, target, "Egress"), target


def test_builds_from_mirrors_only_reach_nothing_else():
    policies = [m.build_network_policy("acme", "acme", egress_cidrs=("10.43.0.50/32",), internet=False)]
    assert allowed(policies, BUILD_POD, REGISTRY, "Egress")
    for target in PUBLIC:
        assert not allowed(policies, BUILD_POD, target, "Egress"), target


def test_nothing_connects_to_a_build():
    policies = [m.build_network_policy("acme", "acme")]
    assert not allowed(policies, BUILD_POD, SAME_PROJECT, "Ingress")
    assert not allowed(policies, BUILD_POD, Endpoint("10.42.2.1", "knative-serving", {}), "Ingress")
