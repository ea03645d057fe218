"""Real-browser tests: Playwright for Python driving Debian's Chromium (never a downloaded browser).

`.ci/run` installs Debian's `chromium` when it is missing. On a developer's machine without it the
browser tests skip with the reason; with NEXTFRAME_REQUIRE_SERVICES=1 (CI) its absence fails them.

Fixtures:
- `browser`: one headless Chromium for the tests/browser package, with a fake webcam
  (`--use-fake-device-for-media-stream --use-fake-ui-for-media-stream`).
- `new_page(viewport=...)`: a fresh context and page; every console error and uncaught page error is
  collected and fails the test at teardown (the issue's "no console errors").
- `artifacts`: the folder screenshots go to (`NEXTFRAME_TEST_ARTIFACTS`, default
  `test-artifacts/browser` under the repository), printed at the end of the run.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nextframe.testing import services_required

CHROMIUM = os.environ.get("NEXTFRAME_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("NEXTFRAME_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"))
FAKE_MEDIA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if services_required():
        pytest.fail(f"{message} and NEXTFRAME_REQUIRE_SERVICES=1 (CI needs it)", pytrace=False)
    pytest.skip(message)


# Package scope, not session: Playwright's sync API runs an event loop in this thread while it is
# open, and every later test that calls asyncio.run() would fail ("cannot be called from a running
# event loop"). The browser closes when tests/browser is done.
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FAKE_MEDIA)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def new_page(browser) -> Iterator[Callable[..., object]]:
    """`new_page(viewport={"width": 1280, "height": 800}, **context_options)` -> a Playwright page."""
    contexts, errors = [], []

    def make(viewport: dict | None = None, **options):
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800}, **options)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text} ({msg.location})")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, "the page logged errors:\n" + "\n".join(errors)


def pytest_terminal_summary(terminalreporter) -> None:
    if ARTIFACTS.exists() and any(ARTIFACTS.iterdir()):
        terminalreporter.write_line(f"browser test screenshots: {ARTIFACTS}")
