"""The harness itself, and the issue's "/static/ is 404 under the server": a real browser loads the
admin's login page from `nextframe up` and every stylesheet and script it asks for arrives."""
from __future__ import annotations

import pytest

from tests.server import running_server

pytestmark = [pytest.mark.slow, pytest.mark.profile("embedded")]


def test_admin_page_is_styled_in_a_real_browser(tmp_path, new_page, artifacts):
    with running_server(tmp_path) as server:
        page = new_page()
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                if "/static/" in r.url and r.status != 200 else None)
        loaded: list[str] = []
        page.on("requestfinished", lambda req: loaded.append(req.url) if "/static/" in req.url else None)
        page.goto(f"{server.base}/admin/login/")
        page.wait_for_load_state("networkidle")
        assert not failed, failed
        assert any(url.endswith(".css") for url in loaded), loaded
        # The stylesheet really applies: Django's admin colours its header.
        header = page.locator("#header")
        assert header.evaluate("e => getComputedStyle(e).backgroundColor") not in ("rgba(0, 0, 0, 0)", "")
        page.screenshot(path=str(artifacts / "admin-login.png"))
