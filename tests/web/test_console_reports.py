"""The reports page compares two runs: their numbers in one table (from each card's report.json, as
trainer/report.py writes it) with the best of each row marked, and both cards rendered beside it."""

from __future__ import annotations

import re

import pytest

from tests.web.conftest import write_report_card

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect

A, B, C = "cmp-a", "cmp-b", "cmp-c"  # C's card is older: no report.json


@pytest.fixture(scope="module")
def runs(web_artifacts, tiny_tokenizer) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    vocab = tiny_tokenizer.vocab_size
    write_report_card(web_artifacts, vocab, run=A, final_loss=2.5, chat_tasks={"arc_easy": 0.3, "gsm8k": 0.1})
    write_report_card(web_artifacts, vocab, run=B, final_loss=2.1, val_bpb=1.1, chat_tasks={"arc_easy": 0.4})
    write_report_card(web_artifacts, vocab, run=C, final_loss=3.0)
    (web_artifacts / "runs" / C / "report" / "report.json").unlink()
    return A, B, C


def _row(page, label: str):  # type: ignore[no-untyped-def]
    return page.locator(f'.compare-table tbody tr[data-row="{label}"] td')


def test_two_runs_are_compared_side_by_side(page, gateway_url, runs) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{gateway_url}/#/reports")
    compare = page.get_by_role("button", name="Compare the two picked")
    expect(compare).to_be_disabled()
    page.get_by_label(f"Compare {A}").check()
    expect(compare).to_be_disabled()
    page.get_by_label(f"Compare {B}").check()
    compare.click()
    expect(page).to_have_url(re.compile(rf"#/reports/{A}/{B}$"))

    expect(page.locator(".compare-table thead th")).to_have_text(["measure", A, B])
    expect(_row(page, "sft: final loss")).to_have_text(["2.5", "2.1 (best)"])
    expect(_row(page, "sft: val bpb")).to_have_text(["1.234", "1.1 (best)"])
    expect(_row(page, "sft: chat arc_easy")).to_have_text(["0.3", "0.4 (best)"])
    expect(_row(page, "sft: chat gsm8k")).to_have_text(["0.1", "—"])
    # Both cards, rendered with their plots fetched.
    for run in (A, B):
        card = page.get_by_role("article", name=f"Report for {run}")
        expect(card.locator("h1")).to_have_text(f"chatforge report card: run {run}")
        expect(card.get_by_role("img", name="loss")).to_have_attribute("src", re.compile("^blob:"))
    cards = page.locator(".report-columns > section")
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert first and second and first["x"] < second["x"] and first["y"] == second["y"], "beside each other"


def test_ticking_a_third_run_drops_the_first_pick(page, gateway_url, runs) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{gateway_url}/#/reports")
    for run in (A, B, C):
        page.get_by_label(f"Compare {run}").check()
    expect(page.get_by_label(f"Compare {A}")).not_to_be_checked()
    page.get_by_role("button", name="Compare the two picked").click()
    expect(page).to_have_url(re.compile(rf"#/reports/{B}/{C}$"))


def test_a_card_without_its_numbers_is_still_compared_by_its_text(page, gateway_url, runs) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{gateway_url}/#/reports/{A}/{C}")
    expect(page.get_by_text(f"No report.json for {C}")).to_be_visible()
    expect(_row(page, "sft: final loss")).to_have_text(["2.5", "—"])
    expect(page.get_by_role("article", name=f"Report for {C}").locator("h1")).to_have_text(
        f"chatforge report card: run {C}"
    )
