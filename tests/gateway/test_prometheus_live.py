"""Every dashboard panel and every alert rule, evaluated by a real Prometheus scraping a running stack.

The stack: a Ray head (its metrics export port scraped like KubeRay's pods: once as the inference
pods, once as the training pods) running the engine's Serve app with two replicas and a real Ray
Train run with two workers (the trainer's tiny base stage); two gateways in remote mode (like two
gateway pods); the tokenizer service and the sandbox service, each with its /metrics. Load goes
through all of them: chats, a refused deployment (a 5xx), tokenizer RPCs (one refused), sandbox runs.
Debian's `prometheus` scrapes them every second.

Then every panel query of charts/chatforge/dashboards/*.json (Grafana's variables filled in) is run
as a range query over the test's window, as Grafana draws it: each must return data, unless it
needs a condition this stack does not create (GPUs, a full KV cache, a rate-limited key, a failing
replica), listed in CONDITIONAL with the reason; those must still be accepted by Prometheus. Every
alert expression of the rendered PrometheusRule must be accepted, and every metric it names must
exist in Prometheus (the same exceptions).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from gateway.jobs.ray_jobs import ray_auth_headers
from gateway.remote_inference import RemoteInference
from gateway.runtime import build_inference
from inference_svc.serve import serve_config
from inference_svc.settings import load_settings as inference_settings

from chatforge.artifacts import ArtifactStore
from chatforge.raylocal import free_port, init_local_ray, shutdown_ray, start_head
from tests.gateway.conftest import wait_until
from tests.gateway.test_deploy_serve import make_store
from tests.platform.chart import CHART, FULL_VALUES, NAMESPACE, by_kind, render

pytestmark = pytest.mark.slow  # Ray, Serve, a Ray Train run, Prometheus: a few minutes

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
# Metrics that exist only under a condition this stack does not create, and why.
CONDITIONAL = {
    "ray_node_gpus_utilization": "needs GPUs (Ray reports GPU metrics of nodes that have them)",
    "ray_node_gram_used": "needs GPUs",
    "ray_chatforge_inference_preemptions_total": "needs a KV cache too small for the load",
    "chatforge_gateway_rate_limited_total": "needs a request over a key's rate",
    "ray_serve_deployment_error_counter_total": "needs a request that raises inside a replica",
}
NAME = re.compile(r"\b((?:ray_)?chatforge_[a-z0-9_]+|ray_[a-z0-9_]+)\b")


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        pytest.skip("prometheus is not installed: `make deps` installs it (Debian's `prometheus` package)")
    return found


@pytest.fixture(scope="module")
def ray_stack(tmp_path_factory, tiny_tokenizer) -> Iterator[dict[str, Any]]:
    """A Ray head with a fixed metrics port, the engine's Serve app with two replicas."""
    prometheus_binary()
    root = make_store(tmp_path_factory.mktemp("prom-artifacts"), tiny_tokenizer)
    metrics_port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_metrics_report_interval_ms", "1000")  # Ray's agent: every second, not ten
        env.setenv("RAY_AUTH_MODE", "token")  # this process joins the head as a driver (training)
        head = start_head(
            tempfile.mkdtemp(prefix="cf-prom-", dir="/tmp"), num_cpus=2, metrics_export_port=metrics_port
        )
        try:
            settings = inference_settings(
                checkpoint="tiny/sft", artifacts_root=str(root), device="cpu", num_blocks=64,
                max_num_seqs=4, num_cpus=0, min_replicas=2, max_replicas=2,
            )  # fmt: skip
            config = serve_config(settings)
            serve_port = free_port()
            config["http_options"] = {"host": "127.0.0.1", "port": serve_port}
            r = httpx.put(
                f"{head.dashboard_url}/api/serve/applications/", json=config, timeout=60,
                headers=ray_auth_headers(),
            )  # fmt: skip
            assert r.status_code == 200, r.text

            def running() -> bool:
                apps = httpx.get(
                    f"{head.dashboard_url}/api/serve/applications/", timeout=10, headers=ray_auth_headers()
                ).json()["applications"]
                return apps.get("inference", {}).get("status") == "RUNNING"

            wait_until("the Serve app", running)
            import ray

            if ray.is_initialized():  # another module's Ray in this process: this one joins the head
                shutdown_ray()
            init_local_ray("/tmp", address=head.gcs_address)
            yield {
                "root": root, "head": head, "metrics_port": metrics_port,
                "serve_url": f"http://127.0.0.1:{serve_port}",
            }  # fmt: skip
        finally:
            shutdown_ray()
            head.stop()


@pytest.fixture(scope="module")
def services(ray_stack, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The tokenizer service and the sandbox service, each with its metrics endpoint."""
    from tokenizer_svc.server import TokenizerServer
    from tokenizer_svc.settings import load_settings as tokenizer_settings

    tokenizer_metrics = free_port()
    tokenizer = TokenizerServer(
        tokenizer_settings(artifacts_root=str(ray_stack["root"]), port=0, metrics_port=tokenizer_metrics)
    )
    sandbox_port = free_port()
    workdir = tmp_path_factory.mktemp("sandbox")
    log = open(workdir / "sandbox.log", "wb")
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "chatforge.cli", "sandbox", "serve", "--host", "127.0.0.1", "--port", str(sandbox_port)],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{sandbox_port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                assert sandbox.poll() is None, (workdir / "sandbox.log").read_text()
                return False

        wait_until("the sandbox service", up, 60)
        yield {
            "tokenizer": tokenizer, "tokenizer_metrics": f"127.0.0.1:{tokenizer_metrics}",
            "sandbox": url, "sandbox_target": f"127.0.0.1:{sandbox_port}",
        }  # fmt: skip
    finally:
        sandbox.terminate()
        sandbox.wait(20)
        log.close()
        tokenizer.stop(0)


def prometheus_config(targets: dict[str, tuple[str, dict[str, str]]]) -> str:
    jobs = [
        {
            "job_name": name,
            "scrape_interval": "1s",
            "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE, **labels}}],
        }
        for name, (target, labels) in targets.items()
    ]
    return yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs})


@pytest.fixture(scope="module")
def prometheus(ray_stack, services, launch, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Prometheus scraping the stack while load and a training run go through it."""
    gateway = launch(
        auth="off", artifacts_root=str(ray_stack["root"]), mode="remote", inference_url=ray_stack["serve_url"],
        inference=build_inference,
    )  # fmt: skip

    async def without_deploy(settings: Any) -> RemoteInference:  # a second gateway pod, no Serve admin
        client = RemoteInference(ray_stack["serve_url"], model_id=settings.model_id)
        await client.refresh()
        return client

    second = launch(auth="off", artifacts_root=str(ray_stack["root"]), inference=without_deploy)
    ray_target = f"127.0.0.1:{ray_stack['metrics_port']}"
    config = prometheus_config({
        "ray-inference": (ray_target, {"component": "inference"}),  # as the chart's two PodMonitors
        "ray-training": (ray_target, {"component": "training"}),
        "gateway-0": (f"127.0.0.1:{gateway.port}", {"pod": "gateway-0"}),
        "gateway-1": (f"127.0.0.1:{second.port}", {"pod": "gateway-1"}),
        "tokenizer": (services["tokenizer_metrics"], {}),
        "sandbox": (services["sandbox_target"], {}),
    })  # fmt: skip
    workdir = tmp_path_factory.mktemp("prometheus")
    (workdir / "prometheus.yml").write_text(config)
    port = free_port()
    log = open(workdir / "prometheus.log", "wb")
    process = subprocess.Popen(
        [prometheus_binary(), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("Prometheus", lambda: _ready(url, process, workdir), 60)
        started = time.time()
        _train(ray_stack["root"], tmp_path_factory.mktemp("corpus"))
        _load(gateway, second, services)
        # The engine's and trainer's series in (Ray's agent reports every second here).
        for name in ("ray_chatforge_inference_requests_running", "ray_chatforge_train_step"):
            wait_until(name, lambda n=name: _query(url, f"max_over_time({n}[10m])"))
        # Every panel's series scraped since the load (the sandbox's runs and the tokenizer's RPCs
        # come last; a loaded CI once ended the window after one scrape of the sandbox's counters,
        # too few for a rate). Not an assertion: the test reports what is still empty.
        deadline = time.monotonic() + 120
        while _panels({"url": url, "start": started, "end": time.time()})[1] and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)
        yield {"url": url, "start": started, "end": time.time()}
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def _ready(url: str, process: subprocess.Popen[bytes], workdir: Path) -> bool:
    assert process.poll() is None, (workdir / "prometheus.log").read_text()
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _train(root: Path, corpus: Path) -> None:
    """The trainer's tiny base stage on the head, two Ray Train workers (tests/trainer's config)."""
    from tests.trainer.conftest import TOKENIZER, tiny_config, write_corpus
    from trainer.driver import run_stage

    store = ArtifactStore.from_env(root)
    store.tokenizer_path(TOKENIZER).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(store.tokenizer_path("default"), store.tokenizer_path(TOKENIZER))
    cfg = tiny_config("base", root, write_corpus(corpus), num_steps=12, workers=2, checkpoint_every_steps=0)
    run_stage(cfg, launcher="ray")


def _load(gateway: Any, second: Any, services: dict[str, Any]) -> None:
    from chatforge.tokenizer_client import TokenizerClient, TokenizerServiceError

    long = "a prompt long enough to fill whole KV blocks, asked twice so the prefix cache hits " * 3
    for gw in (gateway, second, gateway, second):
        for content in ("hello", long, long):
            r = httpx.post(
                gw.url + "/v1/chat/completions",
                json={
                    "model": "chatforge",
                    "messages": [{"role": "user", "content": content}],
                    "max_tokens": 6,
                },
                timeout=60,
            )
            assert r.status_code == 200, r.text
        assert httpx.get(gw.url + "/v1/models", timeout=10).status_code == 200
    # a 5xx: the second gateway cannot switch checkpoints (no Serve admin address)
    refused = httpx.post(second.url + "/v1/deployments", json={"checkpoint": "tiny/mid"}, timeout=30)
    assert refused.status_code == 503
    with TokenizerClient(services["tokenizer"].address) as client:
        assert client.encode("hello world")
        with pytest.raises(TokenizerServiceError):
            client.decode([10**9])  # refused: INVALID_ARGUMENT
    for code in ("print(1 + 1)", "print('x' * 10)"):
        r = httpx.post(services["sandbox"] + "/v1/run", json={"code": code, "timeout_s": 10}, timeout=60)
        assert r.status_code == 200, r.text


def _query(url: str, expr: str) -> list[Any]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
    result: list[Any] = r.json()["data"]["result"]
    return result


def _range(prom: dict[str, Any], expr: str) -> tuple[int, str, list[Any]]:
    r = httpx.get(
        f"{prom['url']}/api/v1/query_range",
        params={"query": expr, "start": prom["start"], "end": prom["end"], "step": "2s"},
        timeout=60,
    )
    body = r.json()
    return r.status_code, body.get("error", ""), body.get("data", {}).get("result", [])


def grafana_expr(expr: str) -> str:
    """The query as Grafana sends it for this namespace, all stages, a 15 s rate window."""
    return expr.replace("$namespace", NAMESPACE).replace("$stage", ".*").replace("$__rate_interval", "15s")


def _why_empty(expr: str) -> str | None:
    for name, reason in CONDITIONAL.items():
        if name in expr:
            return reason
    return None


def panel_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                out.append((path.stem, panel["title"], grafana_expr(target["expr"])))
    return out


def _panels(prom: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The panels whose query Prometheus refuses, and those with no data in the window."""
    empty, refused = [], []
    for dashboard, title, expr in panel_queries():
        status, error, result = _range(prom, expr)
        if status != 200:
            refused.append(f"{dashboard} / {title}: {error}")
        elif not any(series["values"] for series in result) and _why_empty(expr) is None:
            empty.append(f"{dashboard} / {title}: {expr}")
    return refused, empty


def test_every_dashboard_query_returns_data(prometheus):
    refused, empty = _panels(prometheus)
    assert not refused, refused
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_engine_and_trainer_series_carry_replica_and_worker_labels(prometheus):
    url = prometheus["url"]
    replicas = _query(
        url,
        'count by (replica) (max_over_time(ray_chatforge_inference_requests_running{component="inference"}[10m]))',
    )
    assert len(replicas) == 2, replicas  # both engine replicas are scraped, each its own series
    served = _query(
        url,
        'sum by (replica) (max_over_time(ray_chatforge_inference_generation_tokens_total{component="inference"}[10m]))',
    )
    assert len(served) == 2 and all(float(r["value"][1]) > 0 for r in served), served  # both served load
    # Every worker of the run reports, and its own share: a worker's tokens are its steps times its
    # half of a step's 4 x 2 x 64 tokens (a worker's last values may end with the process before
    # Ray's agent exports them, so each is checked against itself, not against the run's end).
    steps = _query(url, 'max_over_time(ray_chatforge_train_step{component="training"}[10m])')
    tokens = _query(url, 'max_over_time(ray_chatforge_train_tokens_total{component="training"}[10m])')
    step_of = {s["metric"]["worker"]: float(s["value"][1]) for s in steps}
    tokens_of = {s["metric"]["worker"]: float(s["value"][1]) for s in tokens}
    assert set(step_of) == set(tokens_of) == {"0", "1"}, (steps, tokens)
    for worker, step in step_of.items():
        assert 1 <= step <= 12 and tokens_of[worker] == step * 4 * 2 * 64 / 2, (worker, step, tokens_of)


def test_every_alert_expression_is_valid_and_names_existing_metrics(prometheus):
    (rule,) = by_kind(render("-f", str(FULL_VALUES)), "PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(alerts) >= 8
    existing = set(httpx.get(f"{prometheus['url']}/api/v1/label/__name__/values", timeout=30).json()["data"])
    missing = []
    for alert in alerts:
        _query(prometheus["url"], alert["expr"])  # accepted by Prometheus's parser and evaluator
        for name in NAME.findall(alert["expr"]):
            if name not in existing and _why_empty(name) is None:
                missing.append(f"{alert['alert']}: {name}")
    assert not missing, missing
