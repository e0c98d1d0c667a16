"""The jobs page against the real jobs API and real job processes (tests/web/job_script.py): live
curves and a stage timeline for a pipeline, logs that follow the end, the API's validation errors
on their fields, and resubmitting a job with edits."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.web.conftest import RUN

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect


@pytest.fixture
def submit(gateway_url) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """Submit jobs through the API; every one is cancelled after the test (the stand-in waits)."""
    made: list[str] = []

    def job(stage: str, config: dict | None = None) -> str:
        r = httpx.post(f"{gateway_url}/v1/jobs", json={"stage": stage, "run": RUN, "config": config or {}})
        r.raise_for_status()
        made.append(r.json()["id"])
        return made[-1]

    yield job
    for job_id in made:
        httpx.post(f"{gateway_url}/v1/jobs/{job_id}/cancel")


def test_a_pipeline_job_draws_its_curves_and_stage_timeline_live(page, gateway_url, submit) -> None:  # type: ignore[no-untyped-def]
    job_id = submit("pipeline")
    page.goto(f"{gateway_url}/#/jobs/{job_id}")

    stages = page.get_by_role("list", name="Stages")
    expect(stages.locator("li")).to_have_count(2)
    base, sft = stages.locator("li").nth(0), stages.locator("li").nth(1)
    expect(base).to_contain_text("base")
    expect(base.locator(".phase-status")).to_have_text("done")
    expect(base).to_contain_text("step 3 of 3")
    expect(sft.locator(".phase-status")).to_have_text("running")
    expect(sft).to_contain_text("step 2 of 4")

    # One chart per curve, each drawn (a uPlot canvas) with its stages' latest values as text.
    values = {
        "loss": "base 3.25 · sft 3.5",
        "val_bpb": "base 2.5 · sft 1.5",
        "lr": "base 0.02 · sft 0.02",
        "tokens_per_s": "base 1,500 · sft 1,500",
    }
    for curve, text in values.items():
        figure = page.locator(f'figure[data-curve="{curve}"]')
        expect(figure.locator(".chart-value")).to_have_text(text)
        expect(figure.locator(".chart-area canvas")).to_have_count(1)
        expect(figure.locator(".chart-empty")).to_be_hidden()
        box = figure.locator(".chart-area").bounding_box()
        assert box and box["width"] > 200 and box["height"] == 180, box

    # The theme changes: the charts are drawn again in its colours, still one each.
    page.get_by_label("Theme").select_option("dark")
    expect(page.locator(".chart-area canvas")).to_have_count(4)

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(sft.locator(".phase-status")).to_have_text("cancelled")
    expect(base.locator(".phase-status")).to_have_text("done")


def test_a_stage_job_shows_no_timeline_and_empty_charts_wait_for_data(page, gateway_url, submit) -> None:  # type: ignore[no-untyped-def]
    job_id = submit("base", {"num_steps": 10})
    page.goto(f"{gateway_url}/#/jobs/{job_id}")
    expect(page.get_by_text("Stage base: step 3 of 10")).to_be_visible()
    expect(page.get_by_role("list", name="Stages")).to_be_hidden()
    bpb = page.locator('figure[data-curve="val_bpb"]')  # the stand-in stage reports no validation
    expect(bpb.locator(".chart-empty")).to_have_text("No data yet")
    expect(bpb.locator(".chart-empty")).to_be_visible()
    expect(page.locator('figure[data-curve="loss"] .chart-value')).to_have_text("3.25")


def test_logs_follow_the_end_until_the_reader_scrolls_up(page, gateway_url, submit) -> None:  # type: ignore[no-untyped-def]
    job_id = submit("pipeline")
    page.goto(f"{gateway_url}/#/jobs/{job_id}")
    logs = page.locator("pre.logs")
    follow = page.get_by_label("Follow the end")
    expect(logs).to_contain_text("waiting, tick 1", timeout=20_000)
    expect(follow).to_be_checked()
    at_end = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 8"
    assert logs.evaluate("el => el.scrollHeight > el.clientHeight"), "more lines than the panel shows"
    page.wait_for_function(at_end, arg=logs.element_handle())

    # New lines keep it at the end.
    ticks = len(re.findall("tick", logs.inner_text()))
    page.wait_for_function(
        f"el => (el.textContent.match(/tick/g) || []).length > {ticks}", arg=logs.element_handle()
    )
    assert logs.evaluate(at_end)

    # Scrolled up to read: it stops following, and new lines leave the reader where they are.
    logs.evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
    expect(follow).not_to_be_checked()
    ticks = len(re.findall("tick", logs.inner_text()))
    page.wait_for_function(
        f"el => (el.textContent.match(/tick/g) || []).length > {ticks}", arg=logs.element_handle()
    )
    assert logs.evaluate("el => el.scrollTop") == 0

    # Ticked again: back to the end.
    follow.check()
    page.wait_for_function(at_end, arg=logs.element_handle())


def test_the_apis_validation_errors_show_on_their_fields(page, gateway_url) -> None:  # type: ignore[no-untyped-def]
    jobs_before = len(httpx.get(f"{gateway_url}/v1/jobs").json()["data"])
    page.goto(f"{gateway_url}/#/jobs")
    form = page.get_by_role("form", name="Submit a job")
    steps = form.get_by_label("Steps")
    flags = form.get_by_label("Other flags (JSON object, optional)")

    # The pipeline has no --num-steps: the gateway's 400 names config.num_steps.
    form.get_by_label("Stage").select_option("pipeline")
    form.get_by_label("Run name").fill(RUN)
    steps.fill("5")
    form.get_by_role("button", name="Submit").click()
    expect(steps).to_have_attribute("aria-invalid", "true")
    message = page.locator(f"#{steps.get_attribute('aria-describedby')}")
    expect(message).to_have_text("Extra inputs are not permitted")
    expect(steps).to_be_focused()
    expect(flags).not_to_have_attribute("aria-invalid", "true")

    # Editing the field clears its message.
    steps.fill("")
    expect(steps).not_to_have_attribute("aria-invalid", "true")
    expect(message).to_be_hidden()

    # A flag without a field of its own: the message goes to the JSON box, naming the flag.
    form.get_by_label("Stage").select_option("base")
    flags.fill('{"total_batch_tokens": 1000}')
    form.get_by_role("button", name="Submit").click()
    expect(flags).to_have_attribute("aria-invalid", "true")
    flags_message = page.locator(f"#{flags.get_attribute('aria-describedby')}")
    expect(flags_message).to_contain_text("total_batch_tokens: ")
    expect(flags_message).to_contain_text("must be a multiple of")

    # Not JSON at all is caught before the request.
    flags.fill("{seed: 1")
    form.get_by_role("button", name="Submit").click()
    expect(flags_message).to_contain_text("Not valid JSON")
    assert len(httpx.get(f"{gateway_url}/v1/jobs").json()["data"]) == jobs_before, "no job was made"


def test_resubmit_prefills_the_jobs_config_and_makes_a_new_job(page, gateway_url, submit) -> None:  # type: ignore[no-untyped-def]
    job_id = submit("base", {"num_steps": 10, "depth": 2, "seed": 3})
    page.goto(f"{gateway_url}/#/jobs/{job_id}")
    page.get_by_role("button", name="Resubmit with changes").click()
    form = page.get_by_role("form", name="Resubmit with changes")
    expect(form.get_by_label("Stage")).to_have_value("base")
    expect(form.get_by_label("Run name")).to_have_value(RUN)
    expect(form.get_by_label("Depth")).to_have_value("2")
    expect(form.get_by_label("Steps")).to_have_value("10")
    expect(form.get_by_label("Other flags (JSON object, optional)")).to_have_value('{\n "seed": 3\n}')

    form.get_by_label("Steps").fill("7")
    form.get_by_role("button", name="Submit as a new job").click()
    expect(page).not_to_have_url(re.compile(f"#/jobs/{job_id}$"))
    expect(page).to_have_url(re.compile(r"#/jobs/job-[0-9a-f]+$"))
    new_id = page.url.rsplit("/", 1)[1]
    try:
        expect(page.locator("pre", has_text="job_script.py")).to_contain_text(
            "--depth 2 --num-steps 7 --seed 3"
        )
        expect(page.get_by_text("Stage base: step 3 of 10")).to_be_visible()
    finally:
        httpx.post(f"{gateway_url}/v1/jobs/{new_id}/cancel")
    # The job it came from is left as it was.
    assert httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()["config"] == {
        "num_steps": 10,
        "depth": 2,
        "seed": 3,
    }


def test_the_form_offers_the_pipelines_rl_stage_and_an_identity_file(page, gateway_url) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{gateway_url}/#/jobs")
    form = page.get_by_role("form", name="Submit a job")
    form.get_by_label("Run name").fill(RUN)
    identity = form.get_by_label("Identity file")
    rl = form.get_by_label("Reinforcement learning")
    expect(rl).to_have_value("")  # the preset decides unless asked

    # The tokenizer stage has no identity: the gateway's 400 lands on the field.
    form.get_by_label("Stage").select_option("tokenizer")
    identity.fill("/srv/me.yaml")
    form.get_by_role("button", name="Submit").click()
    expect(identity).to_have_attribute("aria-invalid", "true")

    form.get_by_label("Stage").select_option("pipeline")
    rl.select_option("run RL")
    form.get_by_role("button", name="Submit").click()
    toast = page.get_by_text(re.compile(r"^Submitted job-[0-9a-f]+$"))
    expect(toast).to_be_visible()
    job_id = toast.inner_text().split()[-1]
    try:
        job = httpx.get(f"{gateway_url}/v1/jobs/{job_id}").json()
        assert (job["stage"], job["config"]) == ("pipeline", {"rl": True, "identity": "/srv/me.yaml"})
    finally:
        httpx.post(f"{gateway_url}/v1/jobs/{job_id}/cancel")
