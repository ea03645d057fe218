"""The dashboard in a real browser, against one live `nextframe up` for the whole module.

A newcomer's path: follow the sign-in link `nextframe up` printed, create a key and see it once,
render a clip and watch it play, see usage grow after a live session (`nextframe live`) and the clip;
a member cannot revoke keys (the page hides it and the server refuses); a narrow window works.
Screenshots go to the `artifacts` folder.
"""
from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import pytest

from tests.server import http, running_server

pytestmark = [pytest.mark.slow, pytest.mark.profile("embedded")]

LINK = re.compile(r"(http://\S+/accounts/signin/nfs_\S+/)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("dash")) as running:
        yield running


def printed_link(text: str) -> str:
    found = LINK.findall(text)
    assert found, f"no sign-in link in:\n{text}"
    return found[-1]


@pytest.fixture(scope="module")
def owner_state(server, browser):
    """Sign in with the link `nextframe up` printed (once: it is single-use) and keep the cookies."""
    link = printed_link("".join(server.output))
    context = browser.new_context()
    page = context.new_page()
    page.goto(link)
    assert page.url.endswith("/dashboard/"), page.url
    state = context.storage_state()
    # The same link a second time: a clear page, not a 500 and not a session.
    second = context.new_page()
    response = second.goto(link)
    assert response is not None and response.status == 410
    assert "cannot be used" in second.content()
    context.close()
    return state


def createuser(server, email: str, role: str) -> str:
    done = server.cli("createuser", email, "--org", "default", "--role", role, "--url", server.base, timeout=60)
    assert done.returncode == 0, done.stderr
    return printed_link(done.stdout)


def test_owner_creates_a_key_and_sees_it_once(server, owner_state, new_page, artifacts):
    page = new_page(storage_state=owner_state)
    page.goto(f"{server.base}/dashboard/")
    assert page.get_by_role("heading", name="default").is_visible()
    page.screenshot(path=str(artifacts / "dashboard-overview.png"))
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("from the browser")
    page.get_by_role("button", name="Create key").click()
    shown = page.get_by_test_id("new-key")
    shown.wait_for()
    key = shown.inner_text().strip()
    assert re.fullmatch(r"nf_live_\w+", key), key
    page.screenshot(path=str(artifacts / "dashboard-key-created.png"))
    # The key really works, with the scopes chosen (live, clips, read by default).
    status, body = http("GET", f"{server.base}/v1/models", key=key)
    assert status == 200 and body["data"], body
    page.get_by_role("button", name="Done").click()
    page.wait_for_load_state("load")
    row = page.locator("#keys-table tr", has_text="from the browser")
    row.wait_for()
    assert "active" in row.inner_text() and key not in page.content()  # listed, never shown again
    page.screenshot(path=str(artifacts / "dashboard-keys.png"))


def test_clip_renders_plays_and_usage_grows(server, owner_state, new_page, artifacts, tmp_path):
    page = new_page(storage_state=owner_state)
    page.goto(f"{server.base}/dashboard/usage/")
    before = Decimal(page.get_by_test_id("gpu-used").inner_text())
    # A live session from the CLI against this server (text-to-video, two seconds).
    live = subprocess.run([sys.executable, "-m", "nextframe.cli", "live", "--url", server.ws, "--key",
                           server.key, "--model", "dreamfield", "--width", "128", "--height", "128", "--fps", "10",
                           "--duration", "2"], env=server.env, capture_output=True, text=True, timeout=60)
    assert live.returncode == 0, live.stdout + live.stderr

    page.goto(f"{server.base}/dashboard/clips/")
    page.get_by_label("Model", exact=True).select_option("dreamfield")
    page.get_by_label("Duration (seconds)").fill("1")
    page.get_by_label("Size").select_option("128")
    page.get_by_label("FPS").fill("8")
    page.get_by_label("Prompt").fill("a slow aurora over the sea")
    page.get_by_role("button", name="Render clip").click()
    status = page.get_by_test_id("clip-status").first
    page.wait_for_function("() => document.querySelector('[data-testid=clip-status]')?.textContent === 'succeeded'",
                           timeout=45_000)
    assert status.inner_text() == "succeeded"
    video = page.locator("video.clip-player").first
    video.wait_for()
    # It really plays in the page: decodable, and its clock advances.
    page.wait_for_function("() => document.querySelector('video.clip-player').readyState >= 2", timeout=15_000)
    video.evaluate("v => v.play()")
    page.wait_for_function("() => document.querySelector('video.clip-player').currentTime > 0.2", timeout=15_000)
    download = page.get_by_role("link", name="Download MP4").first.get_attribute("href")
    assert download.endswith("/video")
    page.screenshot(path=str(artifacts / "dashboard-clips.png"))

    # Upload: the clip just made, as the input of a video-to-video clip.
    mp4 = page.request.get(f"{server.base}{download}")
    assert mp4.status == 200 and mp4.headers["content-type"] == "video/mp4"
    source = tmp_path / "input.mp4"
    source.write_bytes(mp4.body())
    cards = page.locator("article[data-clip]")
    page.get_by_label("Model", exact=True).select_option("identity")
    page.get_by_label("FPS").fill("8")  # choosing a model resets it to the model's default
    page.get_by_label("Input video").set_input_files(str(source))
    page.get_by_role("button", name="Render clip").click()
    page.wait_for_function("() => document.querySelectorAll('article[data-clip]').length === 2 "
                           "|| !document.getElementById('clip-error').hidden")
    assert page.locator("#clip-error").is_hidden(), page.locator("#clip-error").inner_text()
    cards.first.locator("[data-testid=clip-status]", has_text="succeeded").wait_for(timeout=45_000)
    assert cards.first.locator("h3").inner_text().startswith("identity")
    # Cancel: a long clip, cancelled while it is queued or running.
    page.get_by_label("Model", exact=True).select_option("dreamfield")
    page.get_by_label("Duration (seconds)").fill("20")
    page.get_by_label("Size").select_option("512")
    page.get_by_role("button", name="Render clip").click()
    page.wait_for_function("() => document.querySelectorAll('article[data-clip]').length === 3")
    cards.first.get_by_role("button", name=re.compile("^Cancel clip")).click()
    cards.first.locator("[data-testid=clip-status]", has_text="cancelled").wait_for()

    page.goto(f"{server.base}/dashboard/usage/")
    after = Decimal(page.get_by_test_id("gpu-used").inner_text())
    assert after > before, (before, after)
    models = page.locator("#usage-models")
    models.locator("td", has_text="dreamfield").first.wait_for()
    assert page.locator("#usage-chart rect.bar").count() == 30
    page.screenshot(path=str(artifacts / "dashboard-usage.png"), full_page=True)

    page.goto(f"{server.base}/dashboard/sessions/")
    assert page.locator("tr[data-session]", has_text="dreamfield").count() >= 1
    page.screenshot(path=str(artifacts / "dashboard-sessions.png"))


def test_member_cannot_revoke_keys_or_change_policy(server, new_page, artifacts):
    link = createuser(server, "member@example.com", "member")
    page = new_page()
    page.goto(link)
    page.goto(f"{server.base}/dashboard/keys/")
    assert page.locator("#keys-table tbody tr").count() >= 1
    # The page offers nothing to a member ...
    assert page.get_by_role("button", name=re.compile("Revoke")).count() == 0
    assert page.get_by_role("button", name="Create key").count() == 0
    page.screenshot(path=str(artifacts / "dashboard-keys-member.png"))
    key_id = page.locator("#keys-table tbody tr").first.get_attribute("data-key-id")
    # ... and the server refuses the calls a hostile member makes by hand, with the member's own
    # session cookie and CSRF token (Playwright's request context shares the page's cookies; calls
    # made this way do not show up as console errors of the page).
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    headers = {"X-CSRFToken": csrf, "Referer": f"{server.base}/dashboard/keys/"}
    calls = [("POST", f"/dashboard/api/keys/{key_id}/revoke", None), ("POST", "/dashboard/api/keys", {"scopes": ["read"]}),
             ("PATCH", "/v1/moderation/policy", {"max_violations": 9}),
             ("POST", "/dashboard/api/members", {"email": "x@example.com"})]
    statuses = [page.request.fetch(f"{server.base}{path}", method=method, headers=headers, data=body).status
                for method, path, body in calls]
    assert statuses == [403, 403, 403, 403], statuses
    # Without the CSRF token even the owner's session is refused (403), so a foreign page cannot do it.
    assert page.request.post(f"{server.base}/dashboard/api/keys", data={"scopes": ["read"]}).status == 403
    status, _ = http("GET", f"{server.base}/v1/models", key=server.key)
    assert status == 200  # the owner's key was not revoked


def test_owner_invites_an_admin_and_saves_the_policy(server, owner_state, new_page, artifacts):
    page = new_page(storage_state=owner_state)
    page.goto(f"{server.base}/dashboard/members/")
    page.get_by_label("E-mail").fill("admin@example.com")
    page.get_by_label("Role", exact=True).select_option("admin")
    page.get_by_role("button", name="Create user and sign-in link").click()
    link = page.get_by_test_id("signin-link")
    link.wait_for()
    url = link.inner_text().strip()
    assert LINK.fullmatch(url), url
    page.screenshot(path=str(artifacts / "dashboard-members-invite.png"))
    page.get_by_role("button", name="Done").click()
    page.locator("#members-table tr", has_text="admin@example.com").wait_for()
    # The invited admin follows the link and may change the policy (a member may not).
    invited = new_page()
    invited.goto(url)
    invited.goto(f"{server.base}/dashboard/moderation/")
    invited.get_by_label("Violations before a session ends").fill("5")
    invited.get_by_role("button", name="Save policy").click()
    invited.get_by_text("Policy saved.").wait_for()
    status, policy = http("GET", f"{server.base}/v1/moderation/policy", key=server.key)
    assert status == 200 and policy["max_violations"] == 5, policy


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
    .filter(e => e.offsetParent !== null)
    .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map(e => e.outerHTML.slice(0, 80))"""
PAGES = ("/dashboard/", "/dashboard/keys/", "/dashboard/usage/", "/dashboard/sessions/", "/dashboard/clips/",
         "/dashboard/moderation/", "/dashboard/members/")


def test_every_page_in_a_narrow_window_labelled_and_keyboard_first(server, owner_state, new_page, artifacts):
    page = new_page(viewport={"width": 390, "height": 844}, storage_state=owner_state)
    for path in PAGES:
        page.goto(f"{server.base}{path}")
        # The pages that fill themselves in from the API: wait until they have.
        if path.endswith("/usage/"):
            page.wait_for_function("() => document.getElementById('usage-total').textContent !== ''")
        if path.endswith("/clips/"):
            page.locator("#clips-list[aria-busy=false]").wait_for()
        # Nothing wider than the window: tables scroll inside their own box.
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
        # Every control has an accessible name; one h1; the first Tab reaches "Skip to content".
        assert page.evaluate(UNLABELLED) == [], path
        assert page.locator("h1").count() == 1, path
        name = path.strip("/").split("/")[-1]
        if name in ("dashboard", "keys", "usage"):
            page.screenshot(path=str(artifacts / f"dashboard-narrow-{name}.png"), full_page=True)
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent.trim()") == "Skip to content", path
    assert page.get_by_role("link", name="Playground").is_visible()
    assert page.get_by_role("button", name="Sign out").is_visible()
