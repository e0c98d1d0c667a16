"""The theme picker: system, light or dark; kept in this browser; applied before the first paint."""

from __future__ import annotations

import re

import pytest

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect

# Runs before any of the page's scripts: records the theme the document has when <body> is first
# parsed. A theme applied by a module script (which runs after parsing) would be missing here, and
# that first frame would be painted in the wrong colours.
RECORD_THEME_AT_BODY = """
new MutationObserver((_, observer) => {
  if (!document.body) return;
  window.__themeAtBody = document.documentElement.dataset.theme ?? null;
  observer.disconnect();
}).observe(document, { childList: true, subtree: true });
"""


def _background(page) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    color = page.evaluate("getComputedStyle(document.body).backgroundColor")
    r, g, b = (int(c) for c in re.findall(r"\d+", color)[:3])
    return r, g, b


def test_theme_choice_persists_and_applies_before_first_paint(browser, gateway_url) -> None:  # type: ignore[no-untyped-def]
    # The system asks for light; the user picks dark.
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    context.add_init_script(RECORD_THEME_AT_BODY)
    page = context.new_page()
    try:
        page.goto(f"{gateway_url}/#/models")
        picker = page.get_by_label("Theme")
        expect(picker).to_have_value("system")
        assert page.evaluate("document.documentElement.dataset.theme") == "light"
        assert min(_background(page)) > 200, "light theme: a light background"

        picker.select_option("dark")
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        assert max(_background(page)) < 64, "dark theme: a dark background"
        assert page.evaluate("localStorage.getItem('chatforge.theme')") == "dark"

        # A new page load: dark from the start, before the body was parsed, and the picker says so.
        page.goto(f"{gateway_url}/#/jobs")
        page.reload()
        assert page.evaluate("window.__themeAtBody") == "dark"
        expect(picker).to_have_value("dark")
        assert max(_background(page)) < 64

        # Back to following the system, which now asks for dark: the page follows it live.
        picker.select_option("system")
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        page.emulate_media(color_scheme="dark")
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
        page.reload()
        assert page.evaluate("window.__themeAtBody") == "dark"
        page.emulate_media(color_scheme="light")
        expect(page.locator("html")).to_have_attribute("data-theme", "light")

        # Light chosen explicitly wins over a dark system.
        picker.select_option("light")
        page.emulate_media(color_scheme="dark")
        page.reload()
        assert page.evaluate("window.__themeAtBody") == "light"
        assert min(_background(page)) > 200
    finally:
        context.close()
