"""Test settings: the embedded defaults in a throw-away data dir, or the scaled-out services.

NEXTFRAME_TEST_PROFILE=scaled points the suite at the PostgreSQL and Redis on loopback
(TEST_DATABASE_URL / TEST_REDIS_URL override their addresses).

The environment is prepared before base.py reads it (nextframe.settings loads base lazily for that
reason). The data dir is a temporary folder, never ./.nextframe (the one `nextframe up` uses):
created here, shared with the subprocesses that inherit NEXTFRAME_DATA_DIR, removed at exit by the
process that created it.
"""
import atexit
import os
import shutil
import tempfile

_profile = os.environ.get("NEXTFRAME_TEST_PROFILE", "embedded")
if not os.environ.get("NEXTFRAME_DATA_DIR"):
    _data_dir = tempfile.mkdtemp(prefix="nextframe-test-")
    os.environ["NEXTFRAME_DATA_DIR"] = _data_dir
    atexit.register(shutil.rmtree, _data_dir, ignore_errors=True)
os.environ["NEXTFRAME_ENV"] = "test"
if _profile == "scaled":
    os.environ["DATABASE_URL"] = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/nextframe")
    os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
else:
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)

from nextframe.settings.base import *  # noqa: E402,F401,F403

TEST_PROFILE = _profile
NEXTFRAME_AUDIT_ON_STARTUP = False  # tests that want start-up audits turn them on themselves
# Many tests fail to authenticate on purpose, all from 127.0.0.1 and within one window: the
# per-address throttle is off here; tests/test_throttling.py turns it on (with its own addresses).
NEXTFRAME_AUTH_FAILURE_LIMIT = 0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed: tests only
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
# The sampled frame classifier (open_nsfw, ~10-17 ms a sample on a worker thread) is off by default
# in tests, so that tests of other concerns do not pay for it; moderation's tests turn it on.
MODERATION_DEFAULT_POLICY = {"frame_classifier": "off"}
