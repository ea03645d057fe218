"""The top-level packages are real homes: each a Django app plugged in by its settings entry and URL
include, and nothing of theirs kept inside `nextframe/` (ARCHITECTURE.md, issue 10 item 7)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from django.apps import apps
from django.urls import get_resolver, resolve

import nextframe

HOMES = ("moderation", "billing", "frontend")


@pytest.mark.parametrize("name", HOMES)
def test_each_top_level_package_is_an_installed_app_with_a_docstring(name):
    config = apps.get_app_config(name)
    assert config.name == name
    package = importlib.import_module(name)
    assert package.__doc__ and len(package.__doc__.split()) > 20, f"{name}/__init__.py must say what it is for"


def test_the_root_urls_include_each_package():
    included = [getattr(p, "urlconf_name", None) for p in get_resolver().url_patterns]
    modules = {u.__name__ for u in included if hasattr(u, "__name__")}
    assert {"moderation.urls", "billing.urls", "frontend.urls"} <= modules


def test_the_dashboard_and_its_pages_live_in_the_frontend(client):
    assert resolve("/dashboard/").func.__module__ == "frontend.dashboard"
    assert resolve("/accounts/login/").url_name == "login"
    page = client.get("/accounts/login/")
    assert page.status_code == 200 and "frontend/login.html" in [t.name for t in page.templates]


def test_nothing_of_theirs_is_left_in_nextframe():
    home = Path(nextframe.__file__).parent
    assert importlib.util.find_spec("nextframe.dashboard") is None
    assert not (home / "templates").exists(), "templates belong to the frontend app"
    for name in HOMES:
        assert not (home / name).exists() and importlib.util.find_spec(f"nextframe.{name}") is None
