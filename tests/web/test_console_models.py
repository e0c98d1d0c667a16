"""The models page against the real gateway and engine: checkpoints compared side by side with
their eval scores and their stage's curves, and deployments followed from loading to serving or
failed."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from chatforge.artifacts import ArtifactStore
from tests.web.conftest import RUN, STAGE
from tests.web.console_pages import OTHER_RUN, add_checkpoints

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect

SERVED = f"{RUN}/{STAGE}/step_000001"
# Records every state the deployment status shows, in order, however briefly.
RECORD_DEPLOYMENT_STATES = """() => {
  window.__deploymentStates = [];
  const box = document.getElementById("deployment-status");
  new MutationObserver(() => {
    const line = box.querySelector(".deployment-line");
    if (line && line.dataset.state !== window.__deploymentStates.at(-1)) window.__deploymentStates.push(line.dataset.state);
  }).observe(box, { childList: true, subtree: true });
}"""


@pytest.fixture
def models_page(page, gateway_url, web_artifacts):  # type: ignore[no-untyped-def]
    names = add_checkpoints(web_artifacts)
    page.goto(f"{gateway_url}/#/models")
    expect(page.locator(".checkpoints-table tbody tr")).not_to_have_count(0)
    return page, names


def test_checkpoints_compare_side_by_side_with_their_scores_and_curves(models_page) -> None:  # type: ignore[no-untyped-def]
    page, (base, sft) = models_page
    compare = page.locator(".compare-table")
    # At first the two latest evaluated checkpoints, side by side.
    expect(compare.locator("thead th")).to_have_text(["measure", base, sft])
    row = lambda label: compare.locator(f'tbody tr[data-row="{label}"]')  # noqa: E731
    expect(row("eval bpb").locator("td")).to_have_text(["1.9", "1.6 (best)"])  # lower is better
    expect(row("CORE piqa").locator("td.best")).to_have_text("0.6 (best)")  # higher is better
    expect(row("chat spelling").locator("td")).to_have_text(["—", "0.2"])  # one value: nothing to beat
    expect(row("ChatCORE").locator("th")).to_contain_text("higher is better")

    # Pick others: untick one, tick the served checkpoint.
    page.get_by_label(f"Compare {base}").uncheck()
    expect(page.locator("section", has=page.locator("#compare-heading"))).to_contain_text("Pick at least two")
    page.get_by_label(f"Compare {SERVED}").check()
    in_table_order = page.locator(".checkpoints-table tbody tr").evaluate_all(
        "rows => rows.map((r) => r.dataset.id)"
    )
    expect(compare.locator("thead th")).to_have_text(
        ["measure", *(c for c in in_table_order if c in (SERVED, sft))]
    )
    expect(row("val_bpb").locator("td.best")).to_have_text("1.234 (best)")

    # The stage's curves beside each checkpoint, told in words; a stage without a log says so.
    base_row = page.locator(f'.checkpoints-table tr[data-id="{base}"]')
    expect(base_row.get_by_role("img", name="loss 4.9 → 3 over steps 1–20")).to_be_visible()
    bpb = base_row.get_by_role("img", name="validation bits per byte 2.375 → 2 over steps 5–20")
    expect(bpb.locator("polyline")).to_have_count(1)
    expect(bpb.locator("circle")).to_have_count(1)  # the checkpoint's step, marked on the curve
    served_row = page.locator(f'.checkpoints-table tr[data-id="{SERVED}"]')
    expect(served_row.get_by_role("img", name="loss: no data")).to_have_count(1)


def _deploy(page, checkpoint: str) -> None:  # type: ignore[no-untyped-def]
    page.evaluate(RECORD_DEPLOYMENT_STATES)
    page.once("dialog", lambda d: d.accept())
    page.locator(f'.checkpoints-table tr[data-id="{checkpoint}"]').get_by_role(
        "button", name="Deploy"
    ).click()


def _wait_until_loaded(page) -> None:  # type: ignore[no-untyped-def]
    """Until the page has shown this deploy loading and then something else (the status may still
    show the record from before the click for a moment)."""
    page.wait_for_function(
        "() => { const s = window.__deploymentStates; const i = s.indexOf('loading'); return i >= 0 && s.length > i + 1; }",
        timeout=60_000,
    )


def _since_loading(page) -> list[str]:  # type: ignore[no-untyped-def]
    """The states shown from the deploy on (the page may first have drawn an earlier record)."""
    states = page.evaluate("window.__deploymentStates")
    return states[states.index("loading") :] if "loading" in states else states


def test_a_deployment_is_shown_loading_then_serving(models_page) -> None:  # type: ignore[no-untyped-def]
    page, _ = models_page
    _deploy(page, SERVED)
    _wait_until_loaded(page)
    assert _since_loading(page) == ["loading", "serving"]
    status = page.locator("#deployment-status")
    expect(status.locator(".deployment-line")).to_have_attribute("data-state", "serving")
    expect(status).to_contain_text(f"serving {SERVED} since")
    expect(page.locator(".toast", has_text=f"Deployed {SERVED}")).to_be_visible()
    expect(page.locator(".served-list li")).to_contain_text(f"checkpoint {SERVED}")


@contextmanager
def _broken_checkpoint(gateway_url: str, artifacts) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A checkpoint whose weights no longer match meta.json's sha256: listed, but it cannot load.
    Afterwards it is gone and the deployment record says what serves, for the other tests' pages."""
    store = ArtifactStore(artifacts)
    broken = store.stage_dir(OTHER_RUN, "broken") / "step_000001"
    shutil.copytree(store.resolve_checkpoint(SERVED), broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    try:
        yield f"{OTHER_RUN}/broken/step_000001"
    finally:
        shutil.rmtree(broken.parent)
        httpx.post(
            f"{gateway_url}/v1/deployments", json={"checkpoint": SERVED}, timeout=120
        ).raise_for_status()


def test_a_deployment_that_fails_says_why_and_the_model_keeps_serving(
    models_page, gateway_url, web_artifacts
) -> None:  # type: ignore[no-untyped-def]
    page, _ = models_page
    with _broken_checkpoint(gateway_url, web_artifacts) as broken:
        page.reload()
        _deploy(page, broken)
        _wait_until_loaded(page)
        assert _since_loading(page) == ["loading", "failed"]
        status = page.locator("#deployment-status")
        expect(status.locator(".deployment-line")).to_have_attribute("data-state", "failed")
        expect(status).to_contain_text("model.safetensors")
        expect(page.locator(".toast.error", has_text="failed")).to_be_visible()
        expect(page.locator(".served-list li")).to_contain_text(f"checkpoint {SERVED}")


def test_the_chats_model_picker_lists_the_served_model_and_the_last_deployment(
    page, gateway_url, web_artifacts
) -> None:  # type: ignore[no-untyped-def]
    picker = page.get_by_label("Model", exact=True)
    page.goto(f"{gateway_url}/#/chat")
    expect(picker).to_have_value("chatforge")
    expect(picker.locator("option")).to_have_text([f"chatforge · {SERVED}"])

    with _broken_checkpoint(gateway_url, web_artifacts) as broken:
        started = httpx.post(
            f"{gateway_url}/v1/deployments", json={"checkpoint": broken, "wait": False}
        ).json()
        deadline = time.monotonic() + 60
        while httpx.get(f"{gateway_url}/v1/deployments/current").json()["state"] == "loading":
            assert time.monotonic() < deadline, "the deployment stayed loading"
            time.sleep(0.1)
        page.reload()
        # Listed, so the user sees what happened, but not choosable: only what serves can answer.
        deployment = picker.locator(f'option[value="deployment:{started["id"]}"]')
        expect(deployment).to_have_text(f"{broken} (failed to load)")
        expect(deployment).to_be_disabled()
        expect(picker).to_have_value("chatforge")
