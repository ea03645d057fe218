"""API key format, checksum and hashing (no database here).

A key reads `nf_live_<id>_<secret><checksum>` (test mode: `nf_test_...`):
- `id` (12 lowercase base32 characters) is public and indexes the stored row;
- `secret` is 32 base62 characters (~190 bits) and is never stored, only its SHA-256;
- `checksum` is 6 base62 characters of CRC32 over everything before it, so a secret scanner or a
  client can reject a mistyped or truncated key offline, without a database round trip.
SHA-256 without salt is enough here because the secret is random and long: there is no dictionary to
attack; comparisons use hmac.compare_digest so timing leaks nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

_BASE62 = string.digits + string.ascii_letters
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
ID_LEN = 12
SECRET_LEN = 32
CHECKSUM_LEN = 6
MODES = ("live", "test")
_KEY_RE = re.compile(
    rf"^nf_(live|test)_([{_BASE32}]{{{ID_LEN}}})_([0-9A-Za-z]{{{SECRET_LEN}}})([0-9A-Za-z]{{{CHECKSUM_LEN}}})$"
)


class MalformedKey(ValueError):
    """The string is not a well-formed NextFrame key (wrong shape or bad checksum)."""


@dataclass(frozen=True)
class ParsedKey:
    mode: str
    key_id: str
    secret: str


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECKSUM_LEN)


def generate(mode: str = "live") -> tuple[str, ParsedKey]:
    """A fresh key string and its parts. The string is shown once and never stored."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    key_id = "".join(secrets.choice(_BASE32) for _ in range(ID_LEN))
    secret = "".join(secrets.choice(_BASE62) for _ in range(SECRET_LEN))
    body = f"nf_{mode}_{key_id}_{secret}"
    return body + checksum(body), ParsedKey(mode, key_id, secret)


def parse(key: str) -> ParsedKey:
    """Validate shape and checksum offline; raises MalformedKey."""
    match = _KEY_RE.match(key or "")
    if not match:
        raise MalformedKey("not a NextFrame API key (expected nf_live_<id>_<secret><checksum>)")
    mode, key_id, secret, check = match.groups()
    if not hmac.compare_digest(checksum(f"nf_{mode}_{key_id}_{secret}"), check):
        raise MalformedKey("API key checksum does not match (typo or truncated key?)")
    return ParsedKey(mode, key_id, secret)


def hash_secret(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(key), stored_hash)
