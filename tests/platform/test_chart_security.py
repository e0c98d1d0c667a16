"""The chart's closed doors, checked on what it renders: the NetworkPolicies evaluated connection by
connection (tests/platform/netpol.py) over every pod of the release, the gateway's training jobs
included, and pods outside it; restricted pods; no secret in a ConfigMap, a pod spec or a custom
resource; generated secrets never replaced by a render; /metrics not routed by the Ingress; the
Role against the gateway's own Kubernetes calls; KubeRay's name rules."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .chart import CHART, FULL_VALUES, KUBE_VERSION, NAMESPACE, RELEASE, by_kind, helm, render, template
from .netpol import Cluster, Pod

ROOT = Path(__file__).resolve().parents[2]
DEFAULT: tuple[str, ...] = ()
FULL = ("-f", str(FULL_VALUES))
NAME_OVERRIDE = ("-f", str(FULL_VALUES), "--set", "nameOverride=llm")
SANDBOX_NS = "cf-sandbox"
OWN_SANDBOX_NS = ("-f", str(FULL_VALUES), "--set", f"sandbox.namespace={SANDBOX_NS}")
SERVE_PORT, DASHBOARD_PORT, GCS_PORT = 8000, 8265, 6379
OPERATOR_NS, MONITORING_NS = "kuberay-system", "monitoring"


# --- the pods of a rendered release, and some outside it -----------------------------------------


def _ports(spec: dict[str, Any]) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p
    }


def _ray_pods(obj: dict[str, Any], prefix: str) -> list[Pod]:
    spec = obj["spec"]
    cluster = spec.get("rayClusterConfig") or spec["rayClusterSpec"]
    pods = [(f"{prefix}-head", cluster["headGroupSpec"]["template"])]
    pods += [
        (f"{prefix}-worker-{g['groupName']}", g["template"]) for g in cluster.get("workerGroupSpecs", [])
    ]
    if "submitterPodTemplate" in spec:
        pods.append((f"{prefix}-submitter", spec["submitterPodTemplate"]))
    return [Pod(name, NAMESPACE, t["metadata"]["labels"], _ports(t["spec"])) for name, t in pods]


def gateway_job(
    objects: tuple[dict[str, Any], ...], stage: str = "base", preset: str = "d20"
) -> dict[str, Any]:
    """The RayJob the gateway creates for a job under this render's job clusters file."""
    from gateway.jobs.job_clusters import JobClusters
    from gateway.jobs.kuberay import fit_spec, rayjob_manifest
    from gateway.jobs.spec import JobRecord, entrypoint
    from gateway.settings import load_settings

    from chatforge.contracts.jobs import JobSpec

    (cm,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-job-clusters")]
    clusters = JobClusters.model_validate(yaml.safe_load(cm["data"]["clusters.yaml"]))
    spec = fit_spec(JobSpec.model_validate({"stage": stage, "config": {"preset": preset}}), clusters)
    record = JobRecord(
        id="job-0123456789ab", stage=stage, run="demo", backend="kuberay", owner="k",
        config=spec.config.model_dump(mode="json", exclude_unset=True),
        entrypoint=entrypoint("chatforge train", spec, "job-0123456789ab"),
    )  # fmt: skip
    settings = load_settings(kube_namespace=NAMESPACE, auth="off")
    return rayjob_manifest(record, {"CHATFORGE_ARTIFACTS": "/artifacts"}, settings, clusters)


def release_pods(objects: tuple[dict[str, Any], ...]) -> list[Pod]:
    pods: list[Pod] = []
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] in ("Deployment", "StatefulSet"):
            tmpl = obj["spec"]["template"]
            namespace = obj["metadata"].get("namespace", NAMESPACE)
            pods.append(Pod(name, namespace, tmpl["metadata"]["labels"], _ports(tmpl["spec"])))
        elif obj["kind"] == "Pod":
            pods.append(Pod(name, NAMESPACE, obj["metadata"]["labels"], _ports(obj["spec"])))
        elif obj["kind"] in ("RayService", "RayJob"):
            pods += _ray_pods(obj, name)
    return pods + _ray_pods(gateway_job(objects), "gateway-job")


OUTSIDERS = [
    Pod("prometheus", MONITORING_NS, {"app.kubernetes.io/name": "prometheus"}),
    Pod("kuberay-operator", OPERATOR_NS, {"app.kubernetes.io/name": "kuberay-operator"}),
    # a pod anyone with a namespace can label as the operator
    Pod("operator-lookalike", "tenant", {"app.kubernetes.io/name": "kuberay-operator"}),
    Pod("ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    Pod("neighbour", NAMESPACE, {"app": "something-else"}),
    Pod("prometheus-in-namespace", NAMESPACE, {"app.kubernetes.io/name": "prometheus"}),
    # another release's training pod in the same namespace
    Pod(
        "other-release-training",
        NAMESPACE,
        {
            "app.kubernetes.io/name": "chatforge",
            "app.kubernetes.io/instance": "other",
            "app.kubernetes.io/component": "training",
        },
    ),  # fmt: skip
]


def cluster_of(objects: tuple[dict[str, Any], ...]) -> Cluster:
    policies = [
        {**p, "metadata": {**p["metadata"], "namespace": p["metadata"].get("namespace", NAMESPACE)}}
        for p in by_kind(objects, "NetworkPolicy")
    ]
    namespaces = {ns: {"kubernetes.io/metadata.name": ns}
                  for ns in (NAMESPACE, SANDBOX_NS, OPERATOR_NS, MONITORING_NS, "tenant", "ingress-nginx", "kube-system")}  # fmt: skip
    return Cluster(policies, namespaces)


def component(pod: Pod) -> str:
    return pod.labels.get("app.kubernetes.io/component", "")


# --- NetworkPolicies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [DEFAULT, FULL, NAME_OVERRIDE, OWN_SANDBOX_NS],
    ids=["default", "full", "nameOverride", "sandbox-ns"],
)
def test_only_the_intended_pods_reach_serve_the_dashboards_and_the_sandbox(values: tuple[str, ...]) -> None:
    objects = render(*values)
    cluster = cluster_of(objects)
    pods = release_pods(objects)
    everyone = pods + OUTSIDERS
    by_component: dict[str, list[Pod]] = {}
    for pod in pods:
        by_component.setdefault(component(pod), []).append(pod)
    ray_heads = [p for p in pods if p.name.endswith("-head")]
    targets: list[tuple[str, Pod, int, set[str]]] = []
    for head in ray_heads:
        own = {p.name for p in by_component[component(head)]}  # a Ray cluster's own pods talk freely
        if component(head) == "training":
            intended = own | {p.name for p in by_component["training-submitter"]} | {"kuberay-operator"}
        else:
            intended = own | {"kuberay-operator"}
        targets.append(("dashboard", head, DASHBOARD_PORT, intended))
    for pod in by_component.get("inference", []):
        intended = {p.name for p in by_component["inference"]} | {p.name for p in by_component["gateway"]}
        targets.append(("serve", pod, SERVE_PORT, intended))
    for pod in by_component["sandbox"]:
        intended = {p.name for p in by_component.get("inference", []) + by_component["training"]}
        targets.append(("sandbox", pod, pod.ports["http"], intended))
    assert {t[0] for t in targets} >= {"dashboard", "sandbox"}
    if values != DEFAULT:
        assert {t[0] for t in targets} == {"dashboard", "serve", "sandbox"}
        assert len([t for t in targets if t[0] == "dashboard"]) == 3  # inference, example job, gateway's job
    for what, dst, port, intended in targets:
        reached = {src.name for src in everyone if src is not dst and cluster.allowed(src, dst, port)}
        assert reached == intended - {dst.name}, (
            f"{what} port {port} of {dst.name}: unintended {sorted(reached - intended)}, "
            f"blocked {sorted(intended - reached - {dst.name})}"
        )


@pytest.mark.parametrize("values", [DEFAULT, FULL], ids=["default", "full"])
def test_every_other_path_is_the_intended_one(values: tuple[str, ...]) -> None:
    objects = render(*values)
    cluster = cluster_of(objects)
    pods = {p.name: p for p in release_pods(objects) + OUTSIDERS}
    gw, tok, sbx = (pods[f"{RELEASE}-chatforge-{c}"] for c in ("gateway", "tokenizer", "sandbox"))
    redis = pods[f"{RELEASE}-chatforge-redis"]
    job_head, job_worker = pods["gateway-job-head"], pods["gateway-job-worker-gpu-workers"]
    prom = pods["prometheus"]
    allowed = cluster.allowed
    # the chart's own wiring works
    assert allowed(gw, tok, tok.ports["grpc"]) and allowed(gw, redis, redis.ports["redis"])
    assert allowed(job_head, redis, redis.ports["redis"]) and allowed(job_worker, job_head, GCS_PORT)
    assert allowed(pods["gateway-job-submitter"], job_head, DASHBOARD_PORT)
    # the submitter reaches the dashboard and nothing else
    assert not allowed(pods["gateway-job-submitter"], job_head, GCS_PORT)
    assert not allowed(pods["gateway-job-submitter"], redis, redis.ports["redis"])
    # Prometheus reaches metrics ports only
    assert allowed(prom, tok, tok.ports["metrics"]) and not allowed(prom, tok, tok.ports["grpc"])
    assert allowed(prom, sbx, sbx.ports["metrics"]) and not allowed(prom, sbx, sbx.ports["http"])
    assert allowed(prom, job_head, 8080) and not allowed(prom, job_head, GCS_PORT)
    assert not allowed(prom, redis, redis.ports["redis"])
    # the sandbox reaches nothing, not even DNS; Redis answers only
    dns = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
    assert not any(allowed(sbx, p, port) for p in (*pods.values(), dns) for port in (53, 80, 443, 6379, 8265))
    assert allowed(gw, dns, 53, "UDP") and not allowed(redis, dns, 53, "UDP")
    # the neighbourhood and the other release reach none of our back doors
    for outsider in ("neighbour", "other-release-training", "operator-lookalike", "prometheus-in-namespace"):
        for dst in (redis, tok, job_head):
            ports = set(dst.ports.values()) | {GCS_PORT, DASHBOARD_PORT}
            if outsider.startswith("prometheus"):  # a scraper by its label: metrics ports only
                ports -= {dst.ports.get("metrics"), 8080}
            for port in ports:
                assert not allowed(pods[outsider], dst, port), (outsider, dst.name, port)
    # the front door: everyone by default, only gatewayFrom (and the helm test) when it is set
    test_pod = pods[f"{RELEASE}-chatforge-test-gateway"]
    assert allowed(test_pod, gw, gw.ports["http"])
    assert allowed(pods["neighbour"], gw, gw.ports["http"]) == (values == DEFAULT)
    assert allowed(pods["ingress-nginx"], gw, gw.ports["http"])
    assert allowed(prom, gw, gw.ports["http"])  # its /metrics, on the front door's port


def test_helm_test_reaches_the_gateway_when_gateway_from_is_set() -> None:
    """`helm test` used to fail once networkPolicy.gatewayFrom named the ingress controller."""
    objects = render("--set", "networkPolicy.gatewayFrom[0].namespaceSelector.matchLabels.team=web")
    cluster = cluster_of(objects)
    pods = {p.name: p for p in release_pods(objects)}
    gateway = pods[f"{RELEASE}-chatforge-gateway"]
    assert cluster.allowed(pods[f"{RELEASE}-chatforge-test-gateway"], gateway, gateway.ports["http"])
    assert not cluster.allowed(OUTSIDERS[4], gateway, gateway.ports["http"])


def test_name_override_keeps_the_example_job_together() -> None:
    """With nameOverride the example RayJob's pods were outside the training policy, so the default
    deny cut its workers off from its head."""
    objects = render(*NAME_OVERRIDE)
    cluster = cluster_of(objects)
    (job,) = by_kind(objects, "RayJob")
    head, worker, submitter = _ray_pods(job, "example")
    assert head.labels["app.kubernetes.io/name"] == "llm"
    assert cluster.allowed(worker, head, GCS_PORT) and cluster.allowed(head, worker, 10002)
    assert cluster.allowed(submitter, head, DASHBOARD_PORT)
    # and the gateway's jobs carry the same labels as the example's
    job_head = _ray_pods(gateway_job(objects), "job")[0]
    assert {k: head.labels[k] for k in job_head.labels if k.startswith("app.")} == {
        k: v for k, v in job_head.labels.items() if k.startswith("app.")
    }


def test_the_evaluator_knows_the_semantics() -> None:
    """netpol.py on hand-made cases, so the tests above can fail for the right reasons."""
    a = Pod("a", "ns", {"app": "a"}, {"web": 80})
    b = Pod("b", "ns", {"app": "b"}, {"web": 80})
    c = Pod("c", "other", {"app": "a"})
    namespaces = {
        "ns": {"kubernetes.io/metadata.name": "ns"},
        "other": {"kubernetes.io/metadata.name": "other"},
    }

    def policy(spec: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}

    open_cluster = Cluster([], namespaces)
    assert open_cluster.allowed(a, b, 80) and open_cluster.allowed(c, b, 1)
    deny = policy({"podSelector": {}, "policyTypes": ["Ingress"]})
    assert not Cluster([deny], namespaces).allowed(a, b, 80)
    same_ns = policy({"podSelector": {"matchLabels": {"app": "b"}},
                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": "web"}]}]})  # fmt: skip
    cluster = Cluster([deny, same_ns], namespaces)
    assert cluster.allowed(a, b, 80) and not cluster.allowed(a, b, 81) and not cluster.allowed(c, b, 80)
    assert not cluster.allowed(a, b, 80, "UDP")
    any_ns = policy({"podSelector": {"matchLabels": {"app": "b"}},
                     "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}]}]})  # fmt: skip
    assert Cluster([deny, any_ns], namespaces).allowed(c, b, 1)
    egress_deny = policy({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["b"]}]},
                          "policyTypes": ["Egress"]})  # fmt: skip
    assert not Cluster([egress_deny], namespaces).allowed(a, b, 80)
    assert Cluster([egress_deny], namespaces).allowed(b, a, 80)


# --- pods, secrets, ingress, RBAC, names -------------------------------------------------------


RESTRICTED_CAPS = {"NET_BIND_SERVICE"}


@pytest.mark.parametrize("values", [DEFAULT, FULL], ids=["default", "full"])
def test_every_pod_but_the_sandbox_meets_the_restricted_standard(values: tuple[str, ...]) -> None:
    """So the namespace can enforce `restricted` once the sandbox's exception is made (chart README)."""
    objects = render(*values)
    specs: list[tuple[str, dict[str, Any]]] = []
    for obj in (*objects, gateway_job(objects)):
        name = obj["metadata"]["name"]
        if obj["kind"] in ("Deployment", "StatefulSet"):
            specs.append((name, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((name, obj["spec"]))
        elif obj["kind"] in ("RayService", "RayJob"):
            cluster = obj["spec"].get("rayClusterConfig") or obj["spec"]["rayClusterSpec"]
            groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
            specs += [(name, g["template"]["spec"]) for g in groups]
            if "submitterPodTemplate" in obj["spec"]:
                specs.append((name + "/submitter", obj["spec"]["submitterPodTemplate"]["spec"]))
    assert len(specs) >= 7
    for name, pod in specs:
        if name.endswith("-sandbox"):
            continue
        ctx = pod.get("securityContext", {})
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        assert pod.get("hostUsers", True) is True or name.endswith("-sandbox")
        for container in pod["containers"]:
            c = container.get("securityContext", {})
            non_root = c.get("runAsNonRoot", ctx.get("runAsNonRoot"))
            user = c.get("runAsUser", ctx.get("runAsUser"))
            seccomp = (c.get("seccompProfile") or ctx.get("seccompProfile") or {}).get("type")
            where = f"{name}/{container['name']}"
            assert non_root is True and isinstance(user, int) and user > 0, where
            assert seccomp in ("RuntimeDefault", "Localhost"), where
            assert c.get("allowPrivilegeEscalation") is False, where
            assert c.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not set(c.get("capabilities", {}).get("add", [])) - RESTRICTED_CAPS, where
            assert not c.get("privileged"), where
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, name


@pytest.mark.parametrize("values", [DEFAULT, FULL], ids=["default", "full"])
def test_no_secret_in_configmaps_pod_specs_or_custom_resources(values: tuple[str, ...]) -> None:
    objects = render(*values, "--set", "redis.enabled=false", "--set", "redis.url=redis://r.example:6380/1",
                     "--set", "redis.auth.existingSecret=ext")  # fmt: skip
    for obj in (*objects, gateway_job(objects)):
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        assert not re.search(r"rediss?://[^\"@/]*:[^\"@$/]+@", text), (
            f"{obj['kind']} {obj['metadata']['name']}"
        )
        for match in re.finditer(
            r'\{"name": "(REDIS_PASSWORD|CHATFORGE_GATEWAY_KEY_PEPPER)", "value": ', text
        ):
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} sets {match[1]} as a plain value")
    (cm,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-settings")]
    assert not any(k.startswith("REDIS") for k in cm["data"])


def test_generated_secrets_are_never_replaced_by_a_render(tmp_path: Path) -> None:
    """Offline (`helm template`, GitOps) the chart renders no generated Secret, so two renders are
    the same; online it creates each once and reads it back on upgrade."""
    first, second = template(), template()
    assert first.returncode == 0 and first.stdout == second.stdout
    assert not by_kind(render(), "Secret")
    # the pods still read the Secrets the chart would have made, under fixed names
    (gateway,) = [d for d in by_kind(render(), "Deployment") if d["metadata"]["name"].endswith("-gateway")]
    env = {e["name"]: e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (
        env["CHATFORGE_GATEWAY_KEY_PEPPER"]["valueFrom"]["secretKeyRef"]["name"]
        == f"{RELEASE}-chatforge-gateway-pepper"
    )
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"{RELEASE}-chatforge-redis"

    # online: lookup answers (a copy of the chart with the cluster's answers written in)
    def online(existing: str) -> dict[str, str]:
        chart = tmp_path / existing / "chatforge"
        shutil.copytree(CHART, chart)
        helpers = chart / "templates" / "_helpers.tpl"
        text = helpers.read_text()
        listing = 'lookup "v1" "Secret" .root.Release.Namespace ""'
        one = 'lookup "v1" "Secret" .root.Release.Namespace .name'
        assert listing in text and one in text
        found = (
            f'dict "data" (dict "key-pepper" "{existing}" "password" "{existing}")'
            if existing != "none"
            else "dict"
        )
        helpers.write_text(text.replace(listing, 'dict "kind" "SecretList"').replace(one, found))
        out = helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION)
        assert out.returncode == 0, out.stderr
        secrets = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Secret"]
        return {s["metadata"]["name"]: next(iter(s["data"].values())) for s in secrets}

    kept = online("S0VQVA==")
    assert kept == {
        f"{RELEASE}-chatforge-gateway-pepper": "S0VQVA==",
        f"{RELEASE}-chatforge-redis": "S0VQVA==",
    }
    created = online("none")
    assert set(created) == set(kept) and all(len(v) >= 40 for v in created.values())
    # given Secrets are used and none is generated
    given = render(
        "--set", "gateway.keyPepper.existingSecret=my-pepper", "--set", "redis.auth.existingSecret=my-redis"
    )
    (gateway,) = [d for d in by_kind(given, "Deployment") if d["metadata"]["name"].endswith("-gateway")]
    env = {e["name"]: e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CHATFORGE_GATEWAY_KEY_PEPPER"]["valueFrom"]["secretKeyRef"]["name"] == "my-pepper"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "my-redis"
    (redis,) = by_kind(given, "StatefulSet")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert {"name": "REDISCLI_AUTH", "value": "$(REDIS_PASSWORD)"} in container["env"]


def _gateway_paths() -> list[str]:
    """Every path the gateway serves: its API routes, the web UI's files and folders, FastAPI's docs."""
    paths: set[str] = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
    for module in (ROOT / "services" / "gateway" / "gateway" / "routes").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "router"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                paths.add(str(node.args[0].value))
    for entry in (ROOT / "web").iterdir():
        if entry.is_dir():
            paths.add(f"/{entry.name}/x.js")
        elif entry.name == "index.html":
            paths.add("/")
    return sorted(paths)


def test_the_ingress_routes_the_api_and_ui_but_not_metrics() -> None:
    (ingress,) = by_kind(render(*FULL), "Ingress")
    rules = [(p["path"], p["pathType"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]]

    def routed(path: str) -> bool:
        for prefix, kind in rules:
            if kind == "Exact" and path == prefix:
                return True
            if kind == "Prefix" and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
                return True
        return False

    paths = _gateway_paths()
    assert "/metrics" in paths and "/v1/chat/completions" in paths
    assert not routed("/metrics") and not routed("/metrics/")
    missing = [p for p in paths if p != "/metrics" and not p.startswith("/README") and not routed(p)]
    assert not missing, f"gateway paths the Ingress does not route: {missing}"


# What each kubernetes client method needs: (resource kind, verb).
CLIENT_VERBS = {
    "create_namespaced_custom_object": "create",
    "get_namespaced_custom_object": "get",
    "delete_namespaced_custom_object": "delete",
    "patch_namespaced_custom_object": "patch",
    "list_namespaced_custom_object": "list",
    "list_namespaced_pod": ("pods", "list"),
    "read_namespaced_pod_log": ("pods/log", "get"),
}


def _gateway_kube_calls() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes API call in the gateway's code; custom objects are
    named by the PLURAL constant of the module or class making the call."""
    calls: set[tuple[str, str]] = set()
    for module in (ROOT / "services" / "gateway" / "gateway").rglob("*.py"):
        text = module.read_text()
        plurals = re.findall(r'PLURAL\s*=\s*"([a-z]+)"|PLURAL = "ray\.io", "v1", "([a-z]+)"', text)
        plurals += re.findall(r'GROUP, VERSION, PLURAL = "ray\.io", "v1", "([a-z]+)"', text)
        names = {p for group in plurals for p in (group if isinstance(group, tuple) else (group,)) if p}
        for method, need in CLIENT_VERBS.items():
            if re.search(rf"\.{method}\b", text):
                if isinstance(need, tuple):
                    calls.add(need)
                else:
                    assert len(names) == 1, f"{module}: cannot tell which custom resource {method} is for"
                    calls.add((next(iter(names)), need))
    return calls


def test_the_role_grants_exactly_what_the_gateway_calls() -> None:
    used = _gateway_kube_calls()
    assert ("rayjobs", "create") in used and ("pods/log", "get") in used
    for values, inference in ((DEFAULT, False), (FULL, True)):
        (role,) = by_kind(render(*values), "Role")
        granted = {
            (res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]
        }
        expected = {c for c in used if inference or c[0] != "rayservices"}
        assert granted == expected, (
            f"granted but unused: {granted - expected}; used but not granted: {expected - granted}"
        )
        for rule in role["rules"]:
            if rule["resources"] == ["rayservices"]:
                assert rule["resourceNames"] == [f"{RELEASE}-chatforge-inference"]
    (binding,) = by_kind(render(), "RoleBinding")
    (gateway,) = [d for d in by_kind(render(), "Deployment") if d["metadata"]["name"].endswith("-gateway")]
    assert binding["subjects"][0]["name"] == gateway["spec"]["template"]["spec"]["serviceAccountName"]


DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


@pytest.mark.parametrize("release", ["my-team-llm-platform-prod", "9lives", "cf"])
def test_kuberay_objects_keep_kuberays_name_rules(release: str) -> None:
    """At most 47 characters and a letter first, or KubeRay refuses them; the same name each render."""
    args = ("--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, "-f", str(FULL_VALUES))
    outs = [helm("template", release, str(CHART), *args) for _ in range(2)]
    assert outs[0].returncode == 0, outs[0].stderr
    assert outs[0].stdout == outs[1].stdout
    objects = [d for d in yaml.safe_load_all(outs[0].stdout) if d]
    custom = [o for o in objects if o["kind"] in ("RayJob", "RayService")]
    assert len(custom) == 2
    for obj in custom:
        name = obj["metadata"]["name"]
        assert len(name) <= 47 and DNS_1035.fullmatch(name), name
    (service,) = [o for o in objects if o["kind"] == "RayService"]
    (settings,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-settings")
    ]
    assert settings["data"]["CHATFORGE_GATEWAY_INFERENCE_URL"].startswith(
        f"http://{service['metadata']['name']}-serve-svc:"
    )


def test_the_sandbox_may_live_in_a_namespace_of_its_own() -> None:
    """So the release's namespace can enforce `restricted`: everything else meets it (above)."""
    objects = render(*OWN_SANDBOX_NS)
    placed = {
        (o["kind"], o["metadata"].get("namespace", NAMESPACE))
        for o in objects
        if o["metadata"]["name"].endswith("-sandbox")
    }
    assert placed == {("Deployment", SANDBOX_NS), ("Service", SANDBOX_NS), ("NetworkPolicy", SANDBOX_NS),
                      ("ServiceMonitor", NAMESPACE)}  # fmt: skip
    others = [o for o in objects if not o["metadata"]["name"].endswith("-sandbox")]
    assert all(o["metadata"].get("namespace", NAMESPACE) == NAMESPACE for o in others)
    (service,) = by_kind(objects, "RayService")
    assert f"http://{RELEASE}-chatforge-sandbox.{SANDBOX_NS}.svc:8092" in service["spec"]["serveConfigV2"]
    (monitor,) = [m for m in by_kind(objects, "ServiceMonitor") if m["metadata"]["name"].endswith("-sandbox")]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [SANDBOX_NS]


def test_notes_say_which_secrets_to_create_when_none_was_rendered(tmp_path: Path) -> None:
    from .test_chart import render_notes

    notes = render_notes(tmp_path)
    for name, key in (
        (f"{RELEASE}-chatforge-gateway-pepper", "key-pepper"),
        (f"{RELEASE}-chatforge-redis", "password"),
    ):
        assert f"create secret generic {name} --from-literal={key}=" in notes
    assert "kuberay-system" in notes and "sandbox.namespace" in notes
    given = render_notes(tmp_path / "given", "--set", "gateway.keyPepper.existingSecret=p",
                         "--set", "redis.auth.existingSecret=r", "--set", "sandbox.namespace=sbx")  # fmt: skip
    assert "create secret" not in given and "namespace sbx" in given


@pytest.mark.parametrize("preset", ["tiny", "d12", "d26"])
def test_the_example_job_has_the_shape_the_gateway_gives_its_preset(preset: str) -> None:
    """One source for a preset's cluster: the example RayJob and the gateway's jobs agree."""
    objects = render(*FULL, "--set", f"trainingExample.preset={preset}")
    (example,) = by_kind(objects, "RayJob")
    job = gateway_job(objects, "base", preset)
    fields = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "securityContext")
    (ours,) = example["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (theirs,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert ours["replicas"] == theirs["replicas"] and ours["groupName"] == theirs["groupName"]
    mine, gateways = ours["template"]["spec"], theirs["template"]["spec"]
    assert {f: mine.get(f) for f in fields} == {f: gateways.get(f) for f in fields}

    def quantities(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
        return {kind: {k: str(v) for k, v in values.items()} for kind, values in resources.items()}

    assert quantities(mine["containers"][0]["resources"]) == quantities(
        gateways["containers"][0]["resources"]
    )
    workers = re.search(r"--workers (\d+)", example["spec"]["entrypoint"])
    assert workers and f"--workers {workers[1]}" in job["spec"]["entrypoint"]
    head = example["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    job_head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["containers"][0]["resources"] == job_head["containers"][0]["resources"]
