"""The test suite keeps to its own data: never the default ./.nextframe that `make up` uses, and the
scaled-out profile really runs on PostgreSQL and Redis."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nextframe.testing import default_data_dir_change

SHOW = ("import json, os, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'data_dir': str(s.DATA_DIR), 'env': s.ENVIRONMENT, "
        "'db': s.DATABASES['default']['ENGINE'], 'layer': s.CHANNEL_LAYERS['default']['BACKEND']}))")


def settings_in_a_fresh_process(tmp_path: Path, profile: str) -> tuple[dict, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTFRAME_", "DATABASE_URL", "REDIS_URL"))}
    env.update(DJANGO_SETTINGS_MODULE="nextframe.settings.test", NEXTFRAME_TEST_PROFILE=profile,
               TEST_DATABASE_URL="postgres://u@db.invalid:5432/nf", TEST_REDIS_URL="redis://cache.invalid:6379/3",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1] / "platform"),
                                           str(Path(__file__).resolve().parents[1])]))
    out = subprocess.run([sys.executable, "-c", SHOW], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), tmp_path / ".nextframe"


@pytest.mark.parametrize("profile, db, layer", [  # each case in its own profile's pass
    pytest.param("embedded", "django.db.backends.sqlite3", "channels.layers.InMemoryChannelLayer",
                 marks=pytest.mark.profile("embedded")),
    pytest.param("scaled", "django.db.backends.postgresql", "nextframe.channel_layer.ResilientRedisChannelLayer",
                 marks=pytest.mark.profile("scaled")),
])
def test_test_settings_use_a_temporary_data_dir_and_the_profile_services(tmp_path, profile, db, layer):
    # The package nextframe.settings used to load base.py eagerly, before the test settings had
    # prepared the environment: ./.nextframe, "development", and SQLite even in the scaled profile.
    shown, default_dir = settings_in_a_fresh_process(tmp_path, profile)
    assert not default_dir.exists()
    assert shown["env"] == "test" and shown["db"] == db and shown["layer"] == layer
    assert Path(shown["data_dir"]).name.startswith("nextframe-test-")
    assert not Path(shown["data_dir"]).exists()  # removed at exit by the process that made it


def test_the_guard_reports_a_created_or_grown_default_data_dir(tmp_path):
    path = tmp_path / ".nextframe"
    assert default_data_dir_change(path, None) is None
    path.mkdir()
    (path / "secret_key").write_text("x")
    assert "created" in default_data_dir_change(path, None)
    assert default_data_dir_change(path, {"secret_key"}) is None
    (path / "pool.sqlite3").write_text("")
    assert "added ['pool.sqlite3']" in default_data_dir_change(path, {"secret_key"})


PROFILED = '''
import pytest
from nextframe.testing import PROFILES

@pytest.mark.profile("embedded")
def test_embedded_only():
    pass

@pytest.mark.profile("scaled")
def test_scaled_only():
    pass

@pytest.mark.parametrize("profile", PROFILES)
def test_each(profile):
    pass

def test_either():
    pass
'''


@pytest.mark.profile("embedded")  # it collects both passes itself, in fresh interpreters
def test_a_test_that_fixes_its_profile_runs_in_that_pass_only(tmp_path):
    (tmp_path / "test_profiled.py").write_text(PROFILED)
    root = Path(__file__).resolve().parents[1]
    kept = {}
    for profile in ("embedded", "scaled"):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTFRAME_", "PYTEST_"))}
        env.update(NEXTFRAME_TEST_PROFILE=profile, PYTHONPATH=os.pathsep.join([str(root / "platform"), str(root)]))
        out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:django", "-p", "no:cacheprovider",
                              "-p", "nextframe.testing", "--collect-only", "-q", "test_profiled.py"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert "3/5 tests collected (2 deselected)" in out.stdout, out.stdout + out.stderr
        kept[profile] = sorted(line.split("::", 1)[1] for line in out.stdout.splitlines() if "::" in line)
    assert kept["embedded"] == ["test_each[embedded]", "test_either", "test_embedded_only"]
    assert kept["scaled"] == ["test_each[scaled]", "test_either", "test_scaled_only"]
