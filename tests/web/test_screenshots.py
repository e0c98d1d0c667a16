"""Screenshots of every page in the light and dark themes at a desktop (1280x800) and a phone
(360x740) width, saved as test artifacts under $CHATFORGE_WEB_ARTIFACTS (default tests/web/artifacts/,
git-ignored) for people to look at; and at the phone width no page scrolls sideways."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.web.console_pages import console_pages, settle

ARTIFACTS = Path(os.environ.get("CHATFORGE_WEB_ARTIFACTS") or Path(__file__).parent / "artifacts")
VIEWPORTS = {"desktop": (1280, 800), "phone": (360, 740)}
MIN_BYTES = 8_000  # a blank or broken page compresses to far less; every real page here is larger
FULL_HEIGHT = """() => {
  const page = document.querySelector("main .page");
  return page ? Math.ceil(page.getBoundingClientRect().top + page.scrollHeight) : 0;
}"""
# Each element that is scrolled sideways (its content wider than its box, overflow not hidden), as
# "tag.class +Npx", unless it is one of the things meant to scroll sideways.
SIDEWAYS = """() => {
  const byDesign = ".table-scroll, pre, .report table, .chart-area";
  return [document.documentElement, ...document.querySelectorAll("body, body *")]
    .filter((el) => el.scrollWidth > el.clientWidth + 1 && !el.matches(byDesign))
    .filter((el) => el === document.documentElement || !["hidden", "clip", "visible"].includes(getComputedStyle(el).overflowX))
    .map((el) => `${el.tagName.toLowerCase()}.${el.className} +${el.scrollWidth - el.clientWidth}px`);
}"""


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_every_page_is_screenshotted_and_fits_the_width(
    browser, gateway_url, web_artifacts, tiny_tokenizer, theme, viewport
) -> None:  # type: ignore[no-untyped-def]
    width, height = VIEWPORTS[viewport]
    out = ARTIFACTS / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(f"localStorage.setItem('chatforge.theme', '{theme}')")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        with console_pages(gateway_url, web_artifacts, tiny_tokenizer.vocab_size) as pages:
            for app_page in pages:
                settle(page, gateway_url, app_page)
                assert page.evaluate("document.documentElement.dataset.theme") == theme
                # Nothing scrolls sideways but what does by design (tables, code, logs): not the
                # document, and not a page's own scrolling container.
                sideways = page.evaluate(SIDEWAYS)
                assert sideways == [], f"{app_page.name} scrolls sideways at {width}px: {sideways}"
                path = out / f"{app_page.name}-{theme}-{viewport}.png"
                # The console pages scroll inside .page, not the document: to show all of one, the
                # window is made as tall as its content for the picture.
                full = page.evaluate(FULL_HEIGHT)
                page.set_viewport_size({"width": width, "height": max(height, full)})
                page.screenshot(path=str(path), full_page=True)
                page.set_viewport_size({"width": width, "height": height})
                assert path.stat().st_size > MIN_BYTES, f"{path} is only {path.stat().st_size} bytes"
                shot_width, shot_height = _png_size(path)
                assert shot_width == width and shot_height >= height, (path, shot_width, shot_height)
    finally:
        context.close()
    assert not errors, f"script errors in the page: {errors}"
