"""The accessibility audit: axe-core (vendored, tests/web/vendor/) run in the real browser on every
page, in the light and the dark theme, with each of the page's dialogs open in turn and with a
form showing an error. No serious or critical violation may remain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.console_pages import console_pages, settle

AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"
BLOCKING = {"serious", "critical"}


def audit(page) -> list[str]:  # type: ignore[no-untyped-def]
    """The serious and critical violations axe finds in the page as it is now, one line each."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        "async () => (await axe.run(document, { resultTypes: ['violations'] })).violations"
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
        if v["impact"] in BLOCKING
    ]


def _dialogs(page) -> list[str]:  # type: ignore[no-untyped-def]
    """The accessible names of the buttons on the page that open a dialog."""
    return page.evaluate(
        """() => [...document.querySelectorAll('button[aria-haspopup="dialog"]')]
            .filter((b) => b.offsetParent !== null)
            .map((b) => b.getAttribute("aria-label") || b.textContent.trim())"""
    )


# Both themes at a desktop width; the phone width once more, where tables become scroll regions.
@pytest.mark.parametrize(("theme", "width"), [("light", 1280), ("dark", 1280), ("light", 360)])
def test_no_serious_violations_on_any_page_or_dialog(
    browser, gateway_url, web_artifacts, tiny_tokenizer, theme, width
) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": width, "height": 800})
    context.add_init_script(f"localStorage.setItem('chatforge.theme', '{theme}')")
    page = context.new_page()
    found: dict[str, list[str]] = {}
    audited: list[str] = []
    try:
        with console_pages(gateway_url, web_artifacts, tiny_tokenizer.vocab_size) as pages:
            for app_page in pages:
                settle(page, gateway_url, app_page)
                found[app_page.name] = audit(page)
                audited.append(app_page.name)
                for name in _dialogs(page):
                    page.get_by_role("button", name=name, exact=True).first.click()
                    dialog = page.locator("dialog[open]")
                    dialog.wait_for()
                    found[f"{app_page.name}, dialog {name!r}"] = audit(page)
                    audited.append(f"{app_page.name}+{name}")
                    page.keyboard.press("Escape")
                    dialog.wait_for(state="detached" if not dialog.count() else "hidden")
                if app_page.name == "job":
                    # The resubmit form open, with the API's error shown on a field.
                    page.get_by_role("button", name="Resubmit with changes").click()
                    form = page.get_by_role("form", name="Resubmit with changes")
                    form.get_by_label("Steps").fill("5")
                    form.get_by_role("button", name="Submit as a new job").click()
                    form.locator('[aria-invalid="true"]').wait_for()
                    found["job, resubmit form with an error"] = audit(page)
                    audited.append("job+resubmit")
    finally:
        context.close()
    assert "chat+API key" in audited, f"the key dialog was not audited: {audited}"
    problems = {where: v for where, v in found.items() if v}
    assert problems == {}, "\n".join(f"{where}:\n  " + "\n  ".join(v) for where, v in problems.items())
