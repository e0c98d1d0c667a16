"""Evaluate Kubernetes NetworkPolicies offline: may pod A open a connection to pod B on a port?

The semantics of networking.k8s.io/v1 as the API reference states them:
- a pod is isolated for ingress (egress) when a policy in its namespace selects it and lists
  "Ingress" ("Egress") in policyTypes (policyTypes defaults to Ingress, plus Egress when the policy
  has an egress section); a pod that no such policy selects allows everything that way;
- an isolated pod allows a connection when any rule of any policy selecting it matches it: a rule
  matches when its peers (`from`/`to`) match the other pod (no peers: every pod) and its ports
  match the port (no ports: every port); peers are a podSelector alone (pods in the policy's
  namespace), a namespaceSelector alone (every pod of the matching namespaces), or both (pods
  matching the podSelector in matching namespaces); an empty selector matches everything;
- a named port is resolved against the destination pod's container ports (for ingress rules the
  selected pod's, for egress rules the peer's); protocol defaults to TCP; endPort makes a range;
- a connection needs both the source's egress and the destination's ingress to allow it.
ipBlock peers are never matched against pods here: the chart uses them only for addresses outside
the cluster (the API server), so a pod reached only through an ipBlock counts as unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # container port name -> number

    def __hash__(self) -> int:
        return hash((self.name, self.namespace))


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op}")
    return True


class Cluster:
    def __init__(self, policies: list[dict[str, Any]], namespaces: dict[str, dict[str, str]]):
        """`policies`: NetworkPolicy objects (metadata.namespace set); `namespaces`: labels by name."""
        self.policies = policies
        self.namespaces = namespaces

    def allowed(self, src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
        return self._direction(src, dst, port, protocol, "Egress") and self._direction(
            dst, src, port, protocol, "Ingress"
        )

    # --- helpers -----------------------------------------------------------------------------

    def _direction(self, subject: Pod, peer: Pod, port: int, protocol: str, kind: str) -> bool:
        """Does `subject` allow this direction of the connection with `peer`? For Egress the subject
        is the source and the port is the peer's; for Ingress the subject is the destination."""
        applying = [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == subject.namespace
            and kind in _policy_types(p)
            and selects(p["spec"].get("podSelector"), subject.labels)
        ]
        if not applying:
            return True
        destination = peer if kind == "Egress" else subject
        key = "egress" if kind == "Egress" else "ingress"
        peers_key = "to" if kind == "Egress" else "from"
        for policy in applying:
            for rule in policy["spec"].get(key) or []:
                if self._peers_match(
                    rule.get(peers_key), peer, policy["metadata"]["namespace"]
                ) and _ports_match(rule.get("ports"), port, protocol, destination):
                    return True
        return False

    def _peers_match(self, peers: list[dict[str, Any]] | None, pod: Pod, policy_ns: str) -> bool:
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                continue
            pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
            if ns_sel is None:
                in_ns = pod.namespace == policy_ns
            else:
                in_ns = selects(ns_sel, self.namespaces.get(pod.namespace, {}))
            if in_ns and (pod_sel is None or selects(pod_sel, pod.labels)):
                return True
        return False


def _policy_types(policy: dict[str, Any]) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _ports_match(ports: list[dict[str, Any]] | None, port: int, protocol: str, destination: Pod) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        value = entry["port"]
        number = destination.ports.get(value) if isinstance(value, str) else int(value)
        if number is None:
            continue
        if number == port or number <= port <= int(entry.get("endPort", number)):
            return True
    return False
