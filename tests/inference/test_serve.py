"""The Ray Serve application for real: a local Ray on 127.0.0.1, Serve's HTTP proxy on a free port."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile

import httpx
import pytest
from inference_svc.serve import build_app
from inference_svc.settings import load_settings
from prometheus_client.parser import text_string_to_metric_families

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.contracts.errors import ErrorDetail, ErrorKind
from chatforge.contracts.generate import FinishEvent, GenerateRequest, StreamItem
from chatforge.contracts.sampling import SamplingParams
from chatforge.model import GPTConfig
from chatforge.raylocal import free_port, local_ray

from .conftest import make_tiny_model, reference

pytestmark = pytest.mark.slow  # starts Ray and Serve: ~20-30 s on two cores

CONFIG = GPTConfig(vocab_size=512, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("artifacts")
    store = ArtifactStore(root)
    store.tokenizer_path("test-tiny").parent.mkdir(parents=True)
    tiny_tokenizer.save(store.tokenizer_path("test-tiny"))
    models = {}
    for run, seed in (("demo", 0), ("demo2", 1)):
        model = make_tiny_model(CONFIG, seed=seed)
        checkpoint.save(
            store.stage_dir(run, "sft"),
            1,
            model.state_dict(),
            config=CONFIG.to_dict(),
            extra={"tokenizer": "test-tiny"},
        )
        models[run] = model
    return root, models


def stream_http(url: str, body: dict) -> list[StreamItem]:
    with httpx.stream("POST", url, json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [StreamItem.from_json(line) for line in response.iter_lines() if line]


def ids_of(items: list[StreamItem]) -> list[int]:
    return [x.token_id for x in items if x.token_id is not None]


def greedy(max_tokens: int) -> dict:
    return {"max_tokens": max_tokens, "temperature": 0}


def test_serve_app_streams_reports_and_switches_checkpoints(artifacts, tiny_tokenizer):
    from ray import serve

    root, models = artifacts
    prompt = tiny_tokenizer.encode("the model learns to predict")
    temp = tempfile.mkdtemp(prefix="cf-ray-", dir="/tmp")
    try:
        with local_ray(temp, num_cpus=2):
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            try:
                config = load_settings(
                    checkpoint="demo/sft",
                    artifacts_root=str(root),
                    device="cpu",
                    num_blocks=64,
                    num_cpus=0.5,
                    max_replicas=2,
                )
                handle = serve.run(build_app(config), name="inference", route_prefix="/")
                base = f"http://127.0.0.1:{port}"

                # HTTP streaming through Serve's proxy, token for token like the oracle.
                items = stream_http(f"{base}/generate", {"prompt_ids": prompt, "sampling": greedy(12)})
                assert ids_of(items) == reference(models["demo"], prompt, 12)
                assert isinstance(items[-1].event, FinishEvent)

                # A chat is rendered with the chat template and streams text deltas.
                chat = stream_http(
                    f"{base}/generate",
                    {"messages": [{"role": "user", "content": "hi"}], "sampling": {"max_tokens": 8}},
                )
                assert isinstance(chat[-1].event, FinishEvent) and chat[-1].event.usage.completion_tokens >= 1

                # Bad input is a 400 with a structured error naming the field, before any streaming.
                bad = httpx.post(
                    f"{base}/generate",
                    json={"prompt_ids": prompt, "sampling": {"temperature": -1}},
                    timeout=30,
                )
                error = ErrorDetail.model_validate(bad.json()["error"])
                assert bad.status_code == 400 and error.param == "sampling.temperature"
                # A prompt past the context: the numbers as fields, not in prose.
                too_long = httpx.post(f"{base}/generate", json={"prompt_ids": [1] * 300}, timeout=30)
                error = ErrorDetail.model_validate(too_long.json()["error"])
                assert too_long.status_code == 400 and error.kind is ErrorKind.CONTEXT_LENGTH_EXCEEDED
                assert (error.context_length, error.prompt_tokens) == (256, 300)

                # The same stream through a DeploymentHandle.
                request = GenerateRequest(prompt_ids=prompt, sampling=SamplingParams(**greedy(12)))
                via_handle = list(handle.options(stream=True).generate.remote(request))
                assert ids_of(via_handle) == ids_of(items)

                handle.check_health.remote().result()
                assert httpx.get(f"{base}/healthz", timeout=30).text == "ok"
                metrics = httpx.get(f"{base}/metrics", timeout=30).text
                for name in (
                    "chatforge_inference_requests_running",
                    "chatforge_inference_requests_waiting",
                    "chatforge_kv_cache_usage_ratio",
                    "chatforge_prefix_cache_queries_total",
                    "chatforge_prefix_cache_hits_total",
                    "chatforge_inference_preemptions_total",
                    "chatforge_inference_prompt_tokens_total",
                    "chatforge_inference_time_to_first_token_seconds_bucket",
                    "chatforge_inference_inter_token_latency_seconds_bucket",
                    "chatforge_inference_e2e_request_latency_seconds_bucket",
                ):
                    assert name in metrics, name
                samples = {
                    s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
                }
                assert samples["chatforge_inference_generation_tokens_total"] >= 12 + 1 + 12
                assert samples["chatforge_inference_time_to_first_token_seconds_count"] == 3

                # `chatforge chat --url` against the running app.
                done = subprocess.run(
                    [sys.executable, "-m", "chatforge.cli", "chat", "--url", base, "--prompt", "hi", "--max-tokens", "5"],
                    capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert done.returncode == 0 and done.stdout.strip(), done.stderr

                # Switch weights in place: same cluster, same app, the other model's answers.
                info = handle.switch_checkpoint.remote("demo2/sft").result()
                assert info.checkpoint.startswith("demo2/sft/") and info.kv_cache["num_blocks"] == 64
                after = stream_http(f"{base}/generate", {"prompt_ids": prompt, "sampling": greedy(12)})
                assert ids_of(after) == reference(models["demo2"], prompt, 12) != ids_of(items)

                # A bad name is refused and the server keeps serving what it served.
                with pytest.raises(Exception, match="no complete checkpoint for 'nope/sft'"):
                    handle.switch_checkpoint.remote("nope/sft").result()
                again = stream_http(f"{base}/generate", {"prompt_ids": prompt, "sampling": greedy(12)})
                assert ids_of(again) == ids_of(after)
            finally:
                serve.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
