"""Nothing on the console pages moves while they follow something live: a running pipeline job
(events arriving, a new phase starting, logs growing) and a deployment (loading, then serving).
Layout shifts are measured as the browser reports them (PerformanceObserver, `layout-shift`);
shifts within half a second of the user's own input do not count, as in the CLS metric.

The chat's streaming replies are checked the same way in tests/web/test_chat_markdown.py."""

from __future__ import annotations

import time

import httpx
import pytest

from chatforge.contracts.events import (
    EVENTS_MAXLEN,
    DoneEvent,
    EvalEvent,
    ProgressEvent,
    ValidationEvent,
    job_events_stream,
    stream_entry,
)
from tests.web.conftest import RUN, STAGE

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect

OBSERVE_SHIFTS = """() => {
  window.__shift = 0;
  window.__moved = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.hadRecentInput) continue;
      window.__shift += entry.value;
      window.__moved.push(...entry.sources.map((s) => s.node?.outerHTML?.slice(0, 120) ?? "?"));
    }
  }).observe({ type: "layout-shift" });
}"""


def _shifted(page) -> tuple[float, list[str]]:  # type: ignore[no-untyped-def]
    return page.evaluate("[window.__shift, window.__moved]")


def test_a_running_pipeline_moves_nothing_as_it_reports(page, launch_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway = launch_gateway(auth="off")  # its own, to write the job's events as the trainer does
    job = httpx.post(f"{gateway.url}/v1/jobs", json={"stage": "pipeline", "run": RUN}).json()["id"]

    def emit(event) -> None:  # type: ignore[no-untyped-def]
        event = event.model_copy(update={"run": RUN, "time": time.time()})
        gateway.state.redis.xadd(job_events_stream(job), stream_entry(event), maxlen=EVENTS_MAXLEN)

    try:
        page.goto(f"{gateway.url}/#/jobs/{job}")
        expect(page.locator('.timeline-item[data-stage="sft"]')).to_contain_text("step 2 of 4")
        expect(page.locator(".chart-area canvas")).to_have_count(4)
        expect(page.locator("pre.logs")).to_contain_text("tick 1", timeout=20_000)
        page.evaluate(OBSERVE_SHIFTS)

        # sft runs on and finishes, then the eval phase begins: a new row in the stage timeline.
        for step in (3, 4):
            emit(
                ProgressEvent(
                    stage="sft", step=step, loss=3.0, lr=0.01, tokens_per_s=1600.0, mfu=0.01, eta_s=1.0
                )
            )
            time.sleep(0.3)
        emit(ValidationEvent(stage="sft", step=4, val_bpb=1.4))
        emit(DoneEvent(stage="sft", step=4, metrics={"val_bpb": 1.4}))
        time.sleep(0.3)
        emit(
            EvalEvent(stage="sft", checkpoint=f"{RUN}/{STAGE}/step_000004", step=4, params=1, duration_s=1.0)
        )
        expect(page.locator('.timeline-item[data-stage="eval"]')).to_have_count(1)
        expect(page.locator('figure[data-curve="val_bpb"] .chart-value')).to_have_text("base 2.5 · sft 1.4")
        # Two more reads of the growing logs.
        ticks = page.locator("pre.logs").inner_text().count("tick")
        page.wait_for_function(
            f"document.querySelector('pre.logs').textContent.split('tick').length - 1 > {ticks + 1}"
        )

        shift, moved = _shifted(page)
        assert shift == 0, f"moved while the job reported: {moved}"
    finally:
        httpx.post(f"{gateway.url}/v1/jobs/{job}/cancel")


def test_a_deployment_moves_nothing_from_loading_to_serving(page, gateway_url) -> None:  # type: ignore[no-untyped-def]
    checkpoint = f"{RUN}/{STAGE}/step_000001"
    page.goto(f"{gateway_url}/#/models")
    expect(page.locator("#deployment-status .deployment-line")).to_have_count(1)
    expect(page.locator(".served-list li")).to_have_count(1)
    page.evaluate(OBSERVE_SHIFTS)
    page.once("dialog", lambda d: d.accept())
    page.locator(f'.checkpoints-table tr[data-id="{checkpoint}"]').get_by_role(
        "button", name="Deploy"
    ).click()
    line = page.locator("#deployment-status .deployment-line")
    expect(line).to_have_attribute("data-state", "serving", timeout=60_000)
    expect(page.locator(".toast", has_text=f"Deployed {checkpoint}")).to_be_visible()
    shift, moved = _shifted(page)
    assert shift == 0, f"moved while deploying: {moved}"
