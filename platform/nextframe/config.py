"""Typed access to the environment: the one place where NextFrame reads its configuration.

Every variable is documented in the README's "Configuration" table. Settings modules, the CLI and
the workers read values through these helpers so that a malformed value fails loudly at start-up
with the variable's name, instead of surfacing later as a confusing runtime error.
"""
from __future__ import annotations

import math
import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}")
    return value


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name}={raw!r} must be a finite number")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be >= {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def data_dir() -> Path:
    """The folder holding everything the embedded defaults write (database, media, broker, secret)."""
    path = Path(env_str("NEXTFRAME_DATA_DIR") or Path.cwd() / ".nextframe").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def secret_key(production: bool) -> str:
    """SECRET_KEY from the environment; in development a random one persisted in the data dir."""
    key = env_str("SECRET_KEY") or env_str("NEXTFRAME_SECRET_KEY")
    if key:
        if production and (len(key) < 32 or key.lower().startswith(("changeme", "insecure", "django-insecure"))):
            raise ImproperlyConfigured(
                "SECRET_KEY is too weak for production: use at least 32 random characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')."
            )
        return key
    if production:
        raise ImproperlyConfigured(
            "NEXTFRAME_ENV=production needs a real SECRET_KEY in the environment "
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))')."
        )
    path = data_dir() / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()
