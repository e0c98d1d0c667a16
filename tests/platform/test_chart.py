"""The Helm chart: lint, render with default and full values, validate every object, refuse bad values."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from chatforge.cli import build_parser

from .chart import (
    CHART,
    FULL_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    by_kind,
    crd_schema,
    helm,
    pod_specs,
    render,
    template,
)

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (the dev extra) checks built-in kinds offline"
)

DEFAULT: tuple[str, ...] = ()
FULL = ("-f", str(FULL_VALUES))
# Every optional part off, the other branch of each switch.
MINIMAL = (
    *("--set", "networkPolicy.enabled=false", "--set", "gateway.auth=off"),
    *("--set", "redis.enabled=false", "--set", "redis.url=redis://redis.example.internal:6379/0"),
    *("--set", "redis.auth.enabled=false"),
    *("--set", "artifacts.persistence.enabled=false", "--set", "redis.persistence.enabled=false"),
)
INFERENCE = ("--set", "inference.enabled=true", "--set", "inference.checkpoint=demo/sft")
# The floor of the chart's defaults (the sandbox's user namespace) and the newest schema
# kubernetes-validate ships.
KUBE_VERSIONS = (KUBE_VERSION, "1.37.0")
CUSTOM_GROUPS = ("ray.io/", "monitoring.coreos.com/")


@pytest.mark.parametrize("values", [DEFAULT, FULL], ids=["default", "full"])
def test_helm_lint_is_clean(values: tuple[str, ...]) -> None:
    out = helm(
        "lint", str(CHART), "--strict", "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, *values
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_default_values_render_the_core_services() -> None:
    objects = render(*DEFAULT)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for kind, name in [
        ("Deployment", f"{RELEASE}-chatforge-gateway"),
        ("Deployment", f"{RELEASE}-chatforge-tokenizer"),
        ("Deployment", f"{RELEASE}-chatforge-sandbox"),
        ("StatefulSet", f"{RELEASE}-chatforge-redis"),
        ("PersistentVolumeClaim", f"{RELEASE}-chatforge-artifacts"),
        ("Role", f"{RELEASE}-chatforge-gateway"),
        ("NetworkPolicy", f"{RELEASE}-chatforge-default-deny"),
    ]:
        assert (kind, name) in kinds, f"{kind}/{name} missing from the default render"
    # Optional integrations stay off by default.
    for kind in ("RayService", "RayJob", "ServiceMonitor", "PodMonitor", "PrometheusRule", "Ingress"):
        assert not by_kind(objects, kind), f"{kind} rendered although its feature is off by default"


def test_full_values_render_every_optional_feature() -> None:
    objects = render(*FULL)
    counts = {kind: len(by_kind(objects, kind)) for kind in {o["kind"] for o in objects}}
    assert counts["RayJob"] == 1
    assert counts["ServiceMonitor"] == 3  # gateway, tokenizer, sandbox
    assert (
        counts["PodMonitor"] == 2
    )  # Ray pods of inference and training (the engine's metrics via Ray's export)
    assert counts["PrometheusRule"] == 1
    assert counts["Ingress"] == 1
    dashboards = [
        o for o in by_kind(objects, "ConfigMap") if o["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert len(dashboards) == len(list((CHART / "dashboards").glob("*.json"))) >= 3
    for cm in dashboards:
        for body in cm["data"].values():
            json.loads(body)


@pytest.mark.parametrize(
    ("values", "kube_version"),
    [(v, k) for v in (DEFAULT, FULL) for k in KUBE_VERSIONS] + [(MINIMAL, KUBE_VERSIONS[-1])],
    ids=[f"{n}-{k}" for n in ("default", "full") for k in KUBE_VERSIONS] + ["minimal"],
)
def test_builtin_objects_validate_against_kubernetes_schemas(
    values: tuple[str, ...], kube_version: str
) -> None:
    checked = 0
    for obj in render(*values):
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {kube_version}: {e}"
            )
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("values", [INFERENCE, FULL], ids=["inference", "full"])
def test_custom_resources_validate_against_their_crds(values: tuple[str, ...]) -> None:
    custom = [o for o in render(*values) if o["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert custom, "no custom resources rendered"
    for obj in custom:
        schema = crd_schema(obj["apiVersion"], obj["kind"])
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: " + "; ".join(
            f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5]
        )


def test_rayservice_serve_config_names_the_serve_app_and_gpu_pool() -> None:
    (service,) = by_kind(render(*FULL), "RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    module, _, attr = app["import_path"].partition(":")
    assert module == "inference_svc.serve"
    # What Serve does with the config: import the builder and call it with the args.
    builder = getattr(
        pytest.importorskip(module, reason="the serve extra (torch, ray) is not installed"), attr
    )
    application = builder(app["args"])
    assert type(application).__name__ == "Application"
    assert app["args"]["checkpoint"] == "example/sft"
    assert app["args"]["sandbox_url"] == f"http://{RELEASE}-chatforge-sandbox:8092"
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    (workers,) = cluster["workerGroupSpecs"]
    pod = workers["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert (workers["minReplicas"], workers["maxReplicas"]) == (2, 8)


def test_probes_use_http_or_grpc_on_declared_ports() -> None:
    """No exec probes (slim images lack curl/wget, and KubeRay's injected ones shell out to wget);
    a named probe port must be one the container declares."""
    for obj in render(*FULL):
        for pod in pod_specs(obj):
            for container in pod["containers"]:
                ports = {p["name"] for p in container.get("ports", []) if "name" in p}
                probes = [container.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")]
                assert probes[1] and probes[2], f"{obj['metadata']['name']}/{container['name']}: no probes"
                for probe in filter(None, probes):
                    if obj["kind"] == "StatefulSet":
                        continue  # Redis's image has redis-cli for an exec probe
                    handler = probe.get("httpGet") or probe.get("grpc")
                    assert handler, f"{obj['metadata']['name']}/{container['name']}: {probe}"
                    port = handler["port"]
                    assert isinstance(port, int) or port in ports, f"{container['name']}: no port {port}"


def test_every_pod_mounts_the_artifact_store_at_one_path() -> None:
    mount_path = yaml.safe_load((CHART / "values.yaml").read_text())["artifacts"]["mountPath"]
    objects = render(*FULL)
    for obj in objects:
        if obj["metadata"]["name"].endswith(("-sandbox", "-redis")):
            continue  # the sandbox must not see artifacts; Redis has its own volume
        for pod in pod_specs(obj):
            (container,) = pod["containers"]
            mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
            assert mounts.get("artifacts") == mount_path, f"{obj['kind']}/{obj['metadata']['name']}"
            claims = [
                v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] == "artifacts"
            ]
            assert claims == [f"{RELEASE}-chatforge-artifacts"]


def test_services_select_pods_that_expose_their_target_ports() -> None:
    objects = render(*FULL)
    workloads = by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet")
    for service in by_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matching = [
            w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {len(matching)} workloads"
        (workload,) = matching
        assert workload["spec"]["selector"]["matchLabels"].items() <= selector.items()
        ports = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (
                f"{service['metadata']['name']}: no container port {port['targetPort']}"
            )


def test_sandbox_pod_trades_runtime_profiles_for_a_user_namespace() -> None:
    (deployment,) = [
        d for d in by_kind(render(*DEFAULT), "Deployment") if d["metadata"]["name"].endswith("-sandbox")
    ]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["hostUsers"] is False and pod["automountServiceAccountToken"] is False
    ctx = pod["containers"][0]["securityContext"]
    assert ctx["procMount"] == "Unmasked" and ctx["seccompProfile"]["type"] == "Unconfined"
    assert ctx["capabilities"]["drop"] == ["ALL"] and "SYS_ADMIN" not in ctx["capabilities"]["add"]
    assert ctx["allowPrivilegeEscalation"] is False
    # With host users the pod must not ask for an unmasked /proc (the API server would refuse it).
    (hosted,) = [
        d
        for d in by_kind(
            render("--set", "sandbox.hostUsers=true", "--set", "sandbox.uidBase=200000"), "Deployment"
        )
        if d["metadata"]["name"].endswith("-sandbox")
    ]
    assert "procMount" not in hosted["spec"]["template"]["spec"]["containers"][0]["securityContext"]


def test_minimal_values_turn_every_switch_off() -> None:
    objects = render(*MINIMAL)
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"NetworkPolicy", "StatefulSet", "PersistentVolumeClaim", "Secret"}
    (redis_env,) = [e for e in deployment_container_env(objects, "gateway") if e["name"] == "REDIS_URL"]
    assert redis_env == {"name": "REDIS_URL", "value": "redis://redis.example.internal:6379/0"}
    (gateway,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-gateway")]
    pod = gateway["spec"]["template"]["spec"]
    assert "CHATFORGE_GATEWAY_KEY_PEPPER" not in {e["name"] for e in pod["containers"][0]["env"]}
    assert {"name": "artifacts", "emptyDir": {}} in pod["volumes"]


def test_helm_test_checks_the_gateway_through_its_service() -> None:
    (pod,) = by_kind(render(*DEFAULT), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert f"http://{RELEASE}-chatforge-gateway:80/healthz" in script
    compile(script, "helm-test", "exec")


def test_external_redis_replaces_the_bundled_one() -> None:
    url = "redis://redis.example.internal:6379/2"
    objects = render(
        *("--set", "redis.enabled=false", "--set", f"redis.url={url}"),
        *("--set", "redis.auth.existingSecret=ext-redis", "--set", "redis.auth.passwordKey=pw"),
    )
    assert not by_kind(objects, "StatefulSet")
    (settings,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-settings")]
    assert "REDIS_URL" not in settings["data"]  # no secret, and no URL that could carry one, in a ConfigMap
    env = deployment_container_env(objects, "gateway")
    assert env[0] == {
        "name": "REDIS_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "ext-redis", "key": "pw"}},
    }
    assert env[1] == {
        "name": "REDIS_URL",
        "value": "redis://:$(REDIS_PASSWORD)@redis.example.internal:6379/2",
    }


def deployment_container_env(objects: tuple[dict, ...], component: str) -> list[dict]:
    """The env of the component's container from CHATFORGE's own variables on: Redis's first."""
    (deployment,) = [
        d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith(f"-{component}")
    ]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return [e for e in env if e["name"].startswith("REDIS")]


INVALID = [
    (["--set", "redis.enabled=false"], "set redis.enabled=true or give an external redis.url"),
    (["--set", "redis.url=redis://r:6379/0"], "redis.url is only for an external Redis"),
    (["--set", "redis.url=http://r"], "redis.url: Does not match pattern"),
    (  # a password in the URL would land in pod specs and the RayJobs
        ["--set", "redis.enabled=false", "--set", "redis.url=redis://:pw@r:6379/0"],
        "redis.url: Does not match pattern",
    ),
    (
        ["--set", "redis.enabled=false", "--set", "redis.url=redis://r:6379/0"],
        "set redis.auth.existingSecret",
    ),
    (["--kube-version", "1.32.0"], "sandbox.hostUsers=false needs Kubernetes >= 1.33"),
    (["--set", "gateway.jobs.defaultPreset=d99"], "gateway.jobs.defaultPreset"),
    (["--set", "gateway.jobs.presets.d12.gpusPerWorker=-1"], "gpusPerWorker"),
    (["--set", "gateway.auth=maybe"], "gateway.auth must be one of the following"),
    (["--set", "sandbox.uidBase=65534"], "must stay below 65536 when sandbox.hostUsers is false"),
    (["--set", "inference.enabled=true"], "inference.enabled needs inference.checkpoint"),
    (
        [*INFERENCE, "--set", "inference.replicas.min=5", "--set", "inference.replicas.max=2"],
        "must not exceed",
    ),
    ([*INFERENCE, "--set", "inference.gpusPerReplica=4"], "no worker pod could host an engine replica"),
    (["--set", "inference.checkpoint=../etc"], "inference.checkpoint: Does not match pattern"),
    (["--set", "artifacts.persistence.accessModes={ReadWriteOnce}"], "must include ReadWriteMany"),
    (
        ["--set", "gateway.replicaCount=3", "--set", "artifacts.persistence.enabled=false"],
        "run one gateway replica",
    ),
    (["--set", "tokenizer.port=70000"], "tokenizer.port: Must be less than or equal to 65535"),
    (["--set", "gatway.port=80"], "Additional property gatway is not allowed"),
    (["--set", "metrics.prometheusRule.kvCacheUsageRatio=1.5"], "kvCacheUsageRatio"),
]


@pytest.mark.parametrize(("args", "message"), INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_values_fail_with_a_clear_message(args: list[str], message: str) -> None:
    out = template(*args)
    assert out.returncode != 0, f"helm template {' '.join(args)} rendered although the values are invalid"
    assert message in out.stderr, out.stderr


def test_every_value_is_documented_and_covered_by_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    undocumented = []
    documented_at: list[int] = []  # indents of enclosing keys that carry a `# --` comment
    for i, line in enumerate(lines):
        match = re.match(r"^( *)(- )?([A-Za-z][A-Za-z0-9./-]*):( .*)?$", line)
        if not match:
            continue
        indent = len(match.group(1))
        documented_at = [d for d in documented_at if d < indent]
        if documented_at or match.group(2):
            continue  # inside a documented value (its contents are the example) or a list item
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#") and not lines[j].lstrip().startswith("# --"):
            j -= 1  # a `# --` comment may go on over several lines
        if j >= 0 and lines[j].lstrip().startswith("# --"):
            documented_at.append(indent)
            continue
        has_children = i + 1 < len(lines) and lines[i + 1].startswith(match.group(1) + "  ")
        if (match.group(4) or "").strip() or not has_children:
            undocumented.append(match.group(3))
    assert not undocumented, f"values without a '# --' comment: {undocumented}"
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(text), schema)


def render_notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it: helm template skips NOTES, so a copy of the chart
    renders the same text inside a ConfigMap."""
    chart = tmp_path / "chatforge"
    shutil.copytree(CHART, chart)
    notes = chart / "templates" / "NOTES.txt"
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "chatforge.notes" -}}\n' + notes.read_text() + "{{- end }}\n"
    )
    notes.unlink()
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ include "chatforge.notes" . | quote }}\n'
    )
    out = helm(
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "--show-only",
        "templates/zz-notes.yaml",
        *args,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["data"]["notes"]


def test_notes_tell_the_next_steps_with_real_commands(tmp_path: Path) -> None:
    notes = render_notes(tmp_path)
    assert f"port-forward svc/{RELEASE}-chatforge-gateway 8000:80" in notes
    (key_command,) = [line.split(" -- ", 1)[1] for line in notes.splitlines() if "keys create" in line]
    argv = shlex.split(key_command)
    assert argv[0] == "chatforge" and callable(build_parser().parse_args(argv[1:]).func)
    assert "--set inference.enabled=true" in notes  # how to start serving once a checkpoint exists
    full = render_notes(tmp_path / "full", "-f", str(FULL_VALUES))
    assert "https://chat.example.com/" in full
    assert f"RayService {RELEASE}-chatforge-inference with checkpoint example/sft" in full


def test_each_template_holds_one_kind_of_object() -> None:
    out = template(*FULL, "--set", "inference.enabled=true")
    kinds: dict[str, set[str]] = {}
    for doc in out.stdout.split("\n---\n"):
        source = re.search(r"^# Source: chatforge/(\S+)$", doc, re.M)
        body = yaml.safe_load(doc)
        if source and body:
            kinds.setdefault(source.group(1), set()).add(body["kind"])
    mixed = {path: sorted(k) for path, k in kinds.items() if len(k) > 1}
    assert not mixed, f"templates mixing kinds: {mixed}"
    # Generated Secrets render only where `lookup` sees a cluster (test_chart_security.py renders them).
    rendered = {path.removeprefix("templates/") for path in kinds} | {"secret.yaml"}
    on_disk = {str(p.relative_to(CHART / "templates")) for p in (CHART / "templates").rglob("*.yaml")}
    assert rendered == on_disk, f"templates that render nothing with every feature on: {on_disk - rendered}"
