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
