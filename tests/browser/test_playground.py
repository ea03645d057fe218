"""The playground (/playground/) in a real browser against one live `nextframe up` for the module.

A user is created through the CLI and logs in with the /accounts/login/ form; the page mints its own
ticket (dashboard session + CSRF token) and runs sessions on the real frame loop: a webcam session on
`stylize` (Chromium's fake camera), a text-to-video session on `dreamfield` in a narrow window, and a
capacity refusal. The server trusts only its own origin for WebSockets, so the same-origin page is
the guard's positive case; a hostile Origin is the negative one.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from contextlib import contextmanager

import pytest

from tests.server import running_server

pytestmark = [pytest.mark.slow, pytest.mark.profile("embedded")]

PASSWORD = "playground-pass-123"
BLOCKED_PROMPT = "a nude figure in the rain"  # "nude": moderation/data/default_terms.json, category sexual
NARROW = {"width": 390, "height": 844}

# One shell call (a CLI start costs seconds): the player in `default`, and two users whose
# organisations refuse every session: no concurrent sessions allowed, and a used-up quota.
CREATE_USERS = """
from django.contrib.auth import get_user_model
from nextframe.tenancy.models import Membership, Organization
users = get_user_model().objects
full = Organization.objects.create(name="full", max_live_sessions=0)
broke = Organization.objects.create(name="broke", gpu_seconds_limit=0)
metered = Organization.objects.create(name="metered", gpu_seconds_limit=10)
for name, org in (("player", Organization.objects.get(name="default")), ("full-player", full),
                  ("broke-player", broke), ("metered-player", metered)):
    Membership.objects.create(user=users.create_user(name, password={password!r}), organization=org, role="owner")
# `metered` used 8.9 of its 10 GPU-seconds this month already (one ledger segment, as a past session writes).
from datetime import timedelta
from decimal import Decimal
from billing import ledger
end = ledger.now()
ledger.append(ledger.Interval("live", "earlier-session", 0, metered.pk, None, "dreamfield", 1.0,
                              end - timedelta(seconds=8.9), end, Decimal("8.9"), Decimal("0.0004")))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Only the server's own origin may open browser WebSockets (nextframe/origins.py).
    # A smaller audit plan than the default (2 sessions at 64x64): the stylize audit below takes ~4 s.
    env = {"NEXTFRAME_ALLOWED_HOSTS": "127.0.0.1", "NEXTFRAME_AUDIT_SESSIONS": "2", "NEXTFRAME_AUDIT_SIZE": "64x64"}
    with running_server(tmp_path_factory.mktemp("playground"), extra_env=env) as srv:
        out = srv.cli("manage", "shell", "-c", CREATE_USERS.format(password=PASSWORD))
        assert out.returncode == 0, out.stderr
        # Measure stylize's tier on this deployment (~6 s), so its card shows evidence; dreamfield
        # stays unmeasured and shows its declared tier.
        out = srv.cli("audit", "--model", "stylize", "--data-dir", srv.data_dir)
        assert out.returncode == 0, out.stderr
        yield srv


def open_playground(new_page, server, model: str, viewport: dict | None = None, user: str = "player"):
    page = new_page(viewport=viewport)
    page.goto(f"{server.base}/playground/?model={model}")
    assert "/accounts/login/" in page.url  # the page needs a signed-in user
    page.fill("#id_username", user)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/playground/?model={model}")
    page.wait_for_function(f"document.querySelector('#model').value === {model!r}")
    return page


def canvas_digest(page) -> str:
    data = page.evaluate("""() => {
        const c = document.querySelector('#output');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 7 === 0));
    }""")
    return hashlib.sha1(bytes(data)).hexdigest()


def frame_of(page) -> int:
    return int(page.get_attribute("#output", "data-frame") or -1)


def wait_frame_past(page, index: int, timeout: float = 10_000) -> None:
    page.wait_for_function(f"Number(document.querySelector('#output').dataset.frame ?? -1) > {index}", timeout=timeout)


def pixels_change(page) -> None:
    """The output canvas shows different pixels a few frames later."""
    wait_frame_past(page, 2)
    before = canvas_digest(page)
    wait_frame_past(page, frame_of(page) + 5)
    assert canvas_digest(page) != before


def stop_and_check_record(page, server) -> dict:
    page.click("#stop")
    page.wait_for_selector("#record:not([hidden])")
    assert page.text_content("#status") == "You stopped the session."
    href = page.get_attribute("#record-link", "href")
    record_page = page.context.new_page()
    response = record_page.goto(f"{server.base}{href}")
    assert response is not None and response.status == 200
    record = json.loads(record_page.text_content("body") or "{}")
    record_page.close()
    return record


def test_webcam_session_is_steered_moderated_metered_and_recorded(server, new_page, artifacts):
    page = open_playground(new_page, server, "stylize")
    card = page.text_content("#model-card")
    assert "measured on this deployment" in card and "Time to first frame" in card and "Control lag" in card
    assert "0.0005 USD per GPU-second" in card
    page.check("input[name=source][value=webcam]")
    page.click("#start")
    page.wait_for_selector("#stop:not([disabled])")
    pixels_change(page)

    # The overlay fills in from the server's metrics messages (about once a second).
    page.wait_for_function("Number(document.querySelector('#metrics').dataset.updates ?? 0) >= 2", timeout=5000)
    assert page.text_content("#m-fps") != "–"
    assert page.text_content("#m-p50").endswith("ms")
    assert page.text_content("#m-ttff").endswith("ms")
    assert page.text_content("#m-tier") in {"interactive", "streaming"}

    # Move a slider: a control, applied on a frame after the ones already shown.
    shown = frame_of(page)
    page.fill("#param-strength", "0.1")
    applied = page.wait_for_selector("#controls-log li[data-seq='1'][data-state='applied']", timeout=5000)
    assert int(applied.get_attribute("data-frame")) > shown
    page.wait_for_function("document.querySelector('#m-lag').textContent.includes('frame')")

    # A blocked prompt is refused, in words, and the frames go on.
    page.fill("#prompt", BLOCKED_PROMPT)
    page.press("#prompt", "Enter")  # Enter sends it, like the button
    rejected = page.wait_for_selector("#controls-log li[data-seq='2'][data-state='rejected']", timeout=5000)
    assert rejected.get_attribute("data-code") == "moderation"
    assert "moderation" in rejected.text_content()
    after = frame_of(page)
    wait_frame_past(page, after + 3)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "playground-webcam.png"))

    record = stop_and_check_record(page, server)
    assert record["model"] == "stylize" and record["status"] == "ended" and record["end_reason"] == "client"
    assert record["usage"]["frames"] > 0
    assert page.text_content("#m-cost").endswith("USD")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "playground-ended.png"))


def test_text_to_video_session_in_a_narrow_window(server, new_page, artifacts):
    page = open_playground(new_page, server, "dreamfield", viewport=NARROW)
    assert page.is_disabled("input[name=source][value=webcam]")  # text-to-video: no input
    assert "declared: not measured on this deployment yet" in page.text_content("#model-card")
    # A blocked prompt at the start: no session, and the page says why.
    page.fill("#prompt", BLOCKED_PROMPT)
    page.click("#start")
    page.wait_for_selector("#refusal:not([hidden])")
    assert page.text_content("#refusal-text").startswith("Moderation refused the prompt")
    assert page.is_hidden("#retry") and page.is_enabled("#start")
    page.fill("#prompt", "a neon jellyfish")
    # Every field has a label (the controls are generated from the params schema).
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
                                  .filter((e) => !e.labels || e.labels.length === 0).map((e) => e.id || e.name)""")
    assert unlabelled == []
    page.focus("#start")
    page.keyboard.press("Enter")  # keyboard only
    page.wait_for_selector("#stop:not([disabled])")
    pixels_change(page)
    shown = frame_of(page)
    page.focus("#param-palette")
    page.select_option("#param-palette", "fire")
    applied = page.wait_for_selector("#controls-log li[data-seq='1'][data-state='applied']", timeout=5000)
    assert int(applied.get_attribute("data-frame")) > shown
    page.wait_for_function("Number(document.querySelector('#metrics').dataset.updates ?? 0) >= 1", timeout=5000)
    # Nothing is wider than the window.
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    page.screenshot(path=str(artifacts / "playground-narrow.png"), full_page=True)
    record = stop_and_check_record(page, server)
    assert record["model"] == "dreamfield" and record["usage"]["frames"] > 0


@contextmanager
def capacity_held(server):
    """A server-side client (no Origin) holding most of the CPU device: identity at 1280x1280@60
    reserves a 0.775 share and, sending no frames, costs no CPU while it waits."""
    from websockets.sync.client import connect

    with connect(server.ws, additional_headers={"Authorization": f"Bearer {server.key}"}) as ws:
        ws.send(json.dumps({"type": "session.start", "model": "identity", "width": 1280, "height": 1280, "fps": 60}))
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "session.ready" and ready["reservation"]["share"] > 0.7, ready
        try:
            yield ws
        finally:
            end_session(ws)


def end_session(ws) -> dict:
    ws.send(json.dumps({"type": "session.stop"}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = ws.recv(timeout=10)
        if isinstance(msg, str) and json.loads(msg)["type"] == "session.ended":
            return json.loads(msg)
    pytest.fail("no session.ended")


def test_capacity_refusal_is_said_in_words_with_a_retry(server, new_page, artifacts):
    page = open_playground(new_page, server, "dreamfield")
    with capacity_held(server):
        page.click("#start")  # dreamfield 256x256@30 needs a 0.3 share: no device can take it now
        page.wait_for_selector("#refusal:not([hidden])")
        text = page.text_content("#refusal-text")
        assert re.search(r"No capacity .* Try again in \d+ s, or ask for a smaller size", text), text
        assert page.is_visible("#retry")
        assert page.evaluate("document.activeElement.id") == "retry"  # focus goes to the way out
        assert page.is_enabled("#start") and page.is_disabled("#stop")
        page.screenshot(path=str(artifacts / "playground-capacity.png"))
    # The device is free again: the retry starts the session.
    page.click("#retry")
    page.wait_for_selector("#stop:not([disabled])")
    assert page.is_hidden("#refusal")
    wait_frame_past(page, 1)
    page.click("#stop")
    page.wait_for_selector("#record:not([hidden])")


@pytest.mark.parametrize("user, words", [
    ("full-player", "already runs as many live sessions as it may at once"),
    ("broke-player", "has used up its monthly quota"),
])
def test_concurrency_and_quota_refusals_are_said_in_words(server, new_page, user, words):
    page = open_playground(new_page, server, "dreamfield", user=user)
    page.click("#start")
    page.wait_for_selector("#refusal:not([hidden])")
    assert words in page.text_content("#refusal-text")
    assert page.is_enabled("#start") and page.is_disabled("#stop")


def test_quota_warning_then_the_quota_ends_the_session(server, new_page, artifacts):
    page = open_playground(new_page, server, "dreamfield", user="metered-player")
    page.click("#start")  # 0.3 GPU-seconds per second on top of 8.9 of 10
    page.wait_for_selector("#quota:not([hidden])", timeout=5000)
    assert "used 9" in page.text_content("#quota") and "% of its monthly limit" in page.text_content("#quota")
    page.wait_for_selector("#record:not([hidden])", timeout=10_000)
    assert page.text_content("#status") == "The session ended: your organisation's monthly quota is used up."
    assert "monthly quota is used up" in page.text_content("#refusal-text")
    page.screenshot(path=str(artifacts / "playground-quota.png"))


def small_webm(path) -> None:
    """Two seconds of a moving gradient, VP8 in WebM (what a person might pick as a local file)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=15)
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        x, y = np.meshgrid(np.arange(128), np.arange(128))
        for i in range(30):
            rgb = np.stack([(2 * x + 8 * i) % 256, 2 * y, np.full_like(x, 40 * (i % 6))], axis=-1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_test_pattern_and_a_local_video_file_feed_a_session(server, new_page, tmp_path):
    page = open_playground(new_page, server, "identity")
    for source in ("pattern", "file"):
        if source == "file":
            small_webm(tmp_path / "clip.webm")
            page.set_input_files("#file-input", str(tmp_path / "clip.webm"))
        page.check(f"input[name=source][value={source}]")
        page.fill("#width", "128")
        page.fill("#height", "128")
        page.fill("#fps", "15")
        page.click("#start")
        page.wait_for_selector("#stop:not([disabled])")
        pixels_change(page)  # identity returns its input: the source itself moves
        page.click("#stop")
        page.wait_for_selector("#record:not([hidden])")


def test_websocket_origin_guard(server):
    """A browser page on another site is refused at the handshake; a client without Origin is not."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws, origin="http://evil.example", additional_headers={"Authorization": f"Bearer {server.key}"})
    assert refused.value.response.status_code == 403
    with connect(server.ws, additional_headers={"Authorization": f"Bearer {server.key}"}) as ws:
        ws.send(json.dumps({"type": "session.start", "model": "dreamfield", "width": 64, "height": 64, "fps": 5}))
        assert json.loads(ws.recv(timeout=10))["type"] == "session.ready"
        assert end_session(ws)["reason"] == "client"
