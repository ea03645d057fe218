"""nextframe.web: what goes into a WebSocket close frame."""
import pytest

from nextframe.web import close_frame_payload


@pytest.mark.parametrize("code, expected", [(None, 1000), (1000, 1000), (1013, 1013), (4401, 4401), (4429, 4429),
                                            (1006, 1011), (1015, 1011), (999, 1011), (5000, 1011)])
def test_registered_and_private_codes_are_sent_as_given_reserved_ones_become_1011(code, expected):
    assert close_frame_payload(code, None)[0] == expected


def test_reasons_are_cut_to_123_bytes_of_valid_utf8():
    code, reason = close_frame_payload(4401, "é" * 100)
    assert len(reason) <= 123 and reason.decode("utf-8") == "é" * 61
    assert close_frame_payload(1000, "")[1] is None


# --- request bodies: which path takes how much --------------------------------------------------

from nextframe.web import body_limit, redact_url  # noqa: E402


@pytest.mark.parametrize("method, target, content_type, expected", [
    (b"POST", b"/v1/clips", b"multipart/form-data; boundary=x", "upload"),
    (b"POST", b"/v1/clips/?x=1", b"Multipart/Form-Data;boundary=x", "upload"),
    (b"POST", b"/v1/clips", b"application/json", "default"),
    (b"POST", b"/v1/clips", b"application/x-www-form-urlencoded", "default"),
    (b"PUT", b"/v1/clips", b"multipart/form-data; boundary=x", "default"),
    (b"POST", b"/v1/clips/1/cancel", b"multipart/form-data; boundary=x", "default"),
    (b"POST", b"/v1/tickets", b"multipart/form-data; boundary=x", "default"),
    (b"POST", b"/accounts/login/", b"application/x-www-form-urlencoded", "default"),
    (b"POST", b"/admin/login/", None, "default"),
])
def test_only_multipart_posts_to_the_clip_endpoint_may_send_an_upload(method, target, content_type, expected):
    limits = {"upload": 64 << 20, "default": 64 << 10}
    assert body_limit(method, target, content_type, upload_limit=limits["upload"],
                      default_limit=limits["default"]) == limits[expected]


# --- access log ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("/v1/clips/3/video?token=abc.def", "/v1/clips/3/video?token=REDACTED"),
    ("/v1/live?ticket=t1&x=2", "/v1/live?ticket=REDACTED&x=2"),
    ("/f?X-Amz-Signature=s&X-Amz-Credential=c&X-Amz-Expires=60", "/f?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&X-Amz-Expires=60"),
    ("/f?access_token=a&refresh_token=b&page=2&limit=", "/f?access_token=REDACTED&refresh_token=REDACTED&page=2&limit="),
    ("/v1/clips?cursor=abc", "/v1/clips?cursor=abc"),
    ("/healthz", "/healthz"),
])
def test_credential_query_parameters_are_redacted(url, expected):
    assert redact_url(url) == expected


def test_the_access_log_line_carries_no_credential(monkeypatch):
    import io

    from daphne.access import AccessLogGenerator

    from nextframe import web

    monkeypatch.setattr(AccessLogGenerator, "__call__", AccessLogGenerator.__call__)  # undone after the test
    web.patch_access_log()
    stream = io.StringIO()
    AccessLogGenerator(stream)("http", "complete", {"path": "/v1/clips/1/video?token=SECRET", "status": 200,
                                                    "method": "GET", "client": "1.2.3.4:5", "size": 10})
    assert "SECRET" not in stream.getvalue() and "token=REDACTED" in stream.getvalue()


# --- what anyone may ask ------------------------------------------------------------------------

def test_healthz_tells_nobody_the_python_or_os_version(client):
    import platform

    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    text = response.content.decode()
    assert platform.python_version() not in text and platform.system() not in text


@pytest.mark.parametrize("path, content_type", [("/static/admin/css/base.css", "text/css"),
                                                ("/static/admin/js/core.js", "text/javascript")])
def test_static_files_are_served_without_collectstatic(client, path, content_type):
    response = client.get(path)
    assert response.status_code == 200 and response["Content-Type"].startswith(content_type)
    assert b"".join(response.streaming_content)
