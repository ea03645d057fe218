"""Settings come from the environment; production refuses unsafe configurations."""
import os
import subprocess
import sys

import pytest

# Fresh interpreters with an environment of the test's own: once per `make test`.
pytestmark = pytest.mark.profile("embedded")


def load_settings(**env):
    """Import the production settings module in a fresh interpreter with exactly this environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NEXTFRAME_", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG"))}
    base.update(env)
    code = "import nextframe.settings as s; print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL, s.CHANNEL_LAYERS['default']['BACKEND'])"
    return subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, timeout=60)


def test_embedded_defaults_need_no_server(tmp_path):
    result = load_settings(NEXTFRAME_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://", "channels.layers.InMemoryChannelLayer"]
    assert (tmp_path / "secret_key").exists()


def test_scaled_out_settings_from_urls(tmp_path):
    result = load_settings(NEXTFRAME_DATA_DIR=str(tmp_path), DATABASE_URL="postgres://u@db:5432/nf", REDIS_URL="redis://cache:6379/0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "redis://cache:6379/0", "nextframe.channel_layer.ResilientRedisChannelLayer"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"NEXTFRAME_ENV": "production", "NEXTFRAME_ALLOWED_HOSTS": "x"}, "needs a real SECRET_KEY"),
        ({"NEXTFRAME_ENV": "production", "SECRET_KEY": "changeme", "NEXTFRAME_ALLOWED_HOSTS": "x"}, "too weak"),
        ({"NEXTFRAME_ENV": "production", "SECRET_KEY": "k" * 50, "DEBUG": "1", "NEXTFRAME_ALLOWED_HOSTS": "x"}, "DEBUG must be off"),
        ({"NEXTFRAME_CPU_CAPACITY": "lots"}, "NEXTFRAME_CPU_CAPACITY='lots' is not a number"),
        ({"DEBUG": "maybe"}, "is not a boolean"),
        ({"NEXTFRAME_LIVE_MAX_DURATION_S": "nan"}, "must be a finite number"),
        ({"NEXTFRAME_CPU_CAPACITY": "inf"}, "must be a finite number"),
    ],
)
def test_unsafe_or_malformed_configuration_fails_with_a_clear_message(tmp_path, env, message):
    result = load_settings(NEXTFRAME_DATA_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_production_with_a_real_secret_starts(tmp_path):
    result = load_settings(NEXTFRAME_DATA_DIR=str(tmp_path), NEXTFRAME_ENV="production", SECRET_KEY="s" * 48, NEXTFRAME_ALLOWED_HOSTS="api.example.com")
    assert result.returncode == 0, result.stderr


def test_stdlib_platform_module_is_not_shadowed_in_the_test_process():
    import platform

    assert platform.python_version() == ".".join(map(str, sys.version_info[:3]))
    assert "site-packages" not in platform.__file__ and not platform.__file__.startswith(os.getcwd() + "/platform/")
