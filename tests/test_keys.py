"""API key format: generation, offline checksum validation, hashing."""
import re

import pytest

from nextframe.tenancy import keys


def test_generated_key_has_the_documented_shape_and_parses_back():
    full, parts = keys.generate("live")
    assert re.fullmatch(r"nf_live_[a-z2-7]{12}_[0-9A-Za-z]{38}", full)
    assert keys.parse(full) == parts


def test_test_mode_keys_are_marked():
    full, parts = keys.generate("test")
    assert full.startswith("nf_test_") and parts.mode == "test"


def test_every_single_character_typo_is_caught_offline():
    full, _ = keys.generate()
    body_start = len("nf_live_")
    for i in range(body_start, len(full)):
        if full[i] == "_":
            continue
        replacement = "a" if full[i] != "a" else "b"
        typo = full[:i] + replacement + full[i + 1:]
        with pytest.raises(keys.MalformedKey):
            keys.parse(typo)


@pytest.mark.parametrize("bad", ["", "nf_live_", "sk_live_abc", "nf_prod_aaaaaaaaaaaa_" + "a" * 38, "nf_live_AAAAAAAAAAAA_" + "a" * 38])
def test_malformed_keys_are_rejected(bad):
    with pytest.raises(keys.MalformedKey):
        keys.parse(bad)


def test_truncated_key_is_rejected():
    full, _ = keys.generate()
    with pytest.raises(keys.MalformedKey):
        keys.parse(full[:-1])


def test_only_the_hash_matches():
    full, _ = keys.generate()
    stored = keys.hash_secret(full)
    assert full not in stored and keys.matches(full, stored)
    other, _ = keys.generate()
    assert not keys.matches(other, stored)
