"""What a set of NetworkPolicies allows, evaluated as the Kubernetes documentation defines it
(https://kubernetes.io/docs/concepts/services-networking/network-policies/): a pod selected by no policy
of a direction is open in that direction; a selected pod accepts exactly what some rule of some selecting
policy matches; a peer's ``podSelector`` alone means pods of the policy's own namespace, a
``namespaceSelector`` alone every pod of the matching namespaces, both together the matching pods of
matching namespaces, and an ``ipBlock`` its CIDR minus ``except``; a rule's ports, when given, must match.

A test-side model of what a conforming CNI enforces, used to test the policies the backend writes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """A pod (``namespace`` set) or an address outside the cluster (``namespace`` empty)."""

    ip: str
    namespace: str = ""
    labels: dict = field(default_factory=dict)
    port: int = 443
    protocol: str = "TCP"


def _selects(selector: dict, labels: dict) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _namespace_labels(name: str) -> dict:
    return {"kubernetes.io/metadata.name": name}  # set by the API server on every namespace


def _peer_matches(peer: dict, policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address in ipaddress.ip_network(cidr)
            for cidr in block.get("except", [])
            if ipaddress.ip_network(cidr).version == address.version
        )
    if not other.namespace:  # pod and namespace selectors only ever match pods
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], _namespace_labels(other.namespace)):
            return False
    elif other.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), other.labels)


def _ports_match(rule: dict, other: Endpoint) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == other.protocol and p.get("port") in (None, other.port) for p in ports
    )


def allowed(policies: list[dict], pod: Endpoint, other: Endpoint, direction: str) -> bool:
    """Whether ``pod`` may send to (``direction="Egress"``) or receive from (``"Ingress"``) ``other``."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if not _ports_match(rule, other):
                continue
            if not peers or any(
                _peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers
            ):
                return True
    return False
