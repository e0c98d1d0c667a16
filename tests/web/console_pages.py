"""Every page of the app with something on it, for the checks that visit them all (the
accessibility audit, the screenshots): a conversation with tool blocks and Markdown, a pipeline job
part-way through, checkpoints with eval results and curves, and two runs' report cards to compare."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from chatforge.artifacts import ArtifactStore, eval_result_path
from chatforge.contracts.events import LOG_FILE, ProgressEvent, StartEvent, ValidationEvent
from tests.web.conftest import RUN, STAGE, write_report_card

# A second report card and more checkpoints, for the comparison pages; a name that does not contain
# RUN, so a page's link to RUN is still the only one with that name.
OTHER_RUN = "second"
# Two evaluated checkpoints of OTHER_RUN: (stage, step, eval results), and its base stage's log.
EVALUATED = (
    ("base", 20, {"bpb": 1.9, "core": {"score": 0.08, "tasks": {"piqa": {"accuracy": 0.55, "centered": 0.1, "n": 40}}}}),
    ("sft", 8, {"bpb": 1.6, "core": {"score": 0.11, "tasks": {"piqa": {"accuracy": 0.6, "centered": 0.2, "n": 40}}},
                "chat": {"chatcore": 0.04, "tasks": {"spelling": {"accuracy": 0.2, "centered": 0.2, "n": 40}}}}),
)  # fmt: skip
BASE_STEPS = 20


@dataclass(frozen=True)
class AppPage:
    name: str  # also the screenshot's file name
    route: str  # the hash route
    ready: str  # a selector that is there once the page has drawn its data


CONVERSATION = [
    {"role": "user", "content": "What is 6 times 7? Show the code."},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me **compute** it:"},
            {"type": "python", "text": "print(6 * 7)"},
            {"type": "python_output", "text": "42"},
            {"type": "text", "text": "It is `42`.\n\n- six\n- seven"},
        ],
    },
]


def add_checkpoints(artifacts: Path) -> list[str]:
    """OTHER_RUN's evaluated checkpoints (copies of the tiny one, so they load) and its base stage's
    log with a loss and a validation curve; returns their names. Idempotent."""
    store = ArtifactStore(artifacts)
    source = store.resolve_checkpoint(f"{RUN}/{STAGE}")
    names = []
    for stage, step, results in EVALUATED:
        path = store.stage_dir(OTHER_RUN, stage) / f"step_{step:06d}"
        names.append(f"{OTHER_RUN}/{stage}/{path.name}")
        if path.exists():
            continue
        shutil.copytree(source, path)
        meta = json.loads((path / "meta.json").read_text())
        meta.update(step=step, metrics={"val_bpb": results["bpb"] + 0.05, "step": step})
        (path / "meta.json").write_text(json.dumps(meta))
        checkpoint = {"checkpoint": names[-1], "stage": stage, "step": step, "params": 1, "duration_s": 1.0}
        eval_result_path(path).write_text(json.dumps({**checkpoint, **results}))
    log = store.stage_dir(OTHER_RUN, "base") / LOG_FILE
    events = [StartEvent(step=0, num_steps=BASE_STEPS, workers=1, resumed=False)]
    for step in range(1, BASE_STEPS + 1):
        events.append(
            ProgressEvent(step=step, loss=5 - step / 10, lr=0.02, tokens_per_s=1e3, mfu=0.0, eta_s=1.0)
        )
        if step % 5 == 0:
            events.append(ValidationEvent(step=step, val_bpb=2.5 - step / 40))
    log.write_text("".join(e.model_dump_json() + "\n" for e in events))
    return names


@contextmanager
def console_pages(gateway_url: str, artifacts: Path, vocab_size: int) -> Iterator[list[AppPage]]:
    """Make the data, yield the pages, then cancel the job and delete the conversation."""
    if not (artifacts / "runs" / OTHER_RUN / "report").exists():
        write_report_card(artifacts, vocab_size, run=OTHER_RUN, final_loss=2.4, chat_tasks={"spelling": 0.2})
    add_checkpoints(artifacts)
    conversation = httpx.post(
        f"{gateway_url}/v1/conversations", json={"title": "Six times seven", "messages": CONVERSATION}
    ).json()["id"]
    job = httpx.post(f"{gateway_url}/v1/jobs", json={"stage": "pipeline", "run": RUN}).json()["id"]
    try:
        yield [
            AppPage("chat", "#/chat", ".composer textarea"),
            AppPage(
                "chat-conversation", f"#/chat/{conversation}", "article.message.assistant:not([aria-busy])"
            ),
            AppPage("jobs", "#/jobs", ".jobs-table"),
            AppPage("job", f"#/jobs/{job}", '.timeline-item[data-stage="sft"]'),
            AppPage("models", "#/models", ".checkpoints-table"),
            AppPage("reports", "#/reports", ".reports-table"),
            AppPage("report", f"#/reports/{RUN}", "article.report img[src^='blob:']"),
            AppPage("reports-compare", f"#/reports/{RUN}/{OTHER_RUN}", ".compare-table"),
        ]
    finally:
        httpx.post(f"{gateway_url}/v1/jobs/{job}/cancel")
        httpx.delete(f"{gateway_url}/v1/conversations/{conversation}")


def settle(page, base_url: str, app_page: AppPage) -> None:  # type: ignore[no-untyped-def]
    """Open the page and wait until its data is drawn, its images loaded and its charts sized."""
    page.goto(f"{base_url}/{app_page.route}")
    page.wait_for_selector(app_page.ready)
    page.wait_for_function("[...document.images].every((img) => img.complete)")
    if app_page.name == "job":
        page.wait_for_function("document.querySelectorAll('.chart-area canvas').length === 4")
