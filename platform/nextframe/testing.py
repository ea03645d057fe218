"""pytest plugin for the whole suite (loaded with `-p nextframe.testing`): profiles, service checks
and the platform's shared fixtures (the Django-free ones are in `inference.testing`).

Profiles. `make test` runs the suite twice: NEXTFRAME_TEST_PROFILE=embedded (everything), then
NEXTFRAME_TEST_PROFILE=scaled (`tests platform`: the Django side on PostgreSQL and Redis). A test
whose profile does not come from the pass (it starts its own servers or subprocesses with a
profile of its own) says which with `@pytest.mark.profile("embedded" | "scaled")` and runs only in
that pass; in the other it is deselected (counted as such in the summary). `PROFILES` parametrizes
a test over both, each case in its own pass.

Services. PostgreSQL (TEST_DATABASE_URL) and Redis (TEST_REDIS_URL, the one Redis of the whole
suite: see `inference.testing`) tests skip with a clear reason when the servers are not reachable,
unless NEXTFRAME_REQUIRE_SERVICES=1 (set by .ci/run), which turns their absence into a failure.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from inference.testing import REDIS_URL

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/nextframe")
PROFILE_NAMES = ("embedded", "scaled")
#: `@pytest.mark.parametrize("profile", PROFILES)`: one case per profile, each run in its own pass.
PROFILES = [pytest.param(name, marks=pytest.mark.profile(name), id=name) for name in PROFILE_NAMES]


def current_profile() -> str:
    """The profile of this pass (NEXTFRAME_TEST_PROFILE, embedded by default)."""
    return os.environ.get("NEXTFRAME_TEST_PROFILE", "embedded")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=1):
            return True
    except OSError:
        return False


def services_required() -> bool:
    return os.environ.get("NEXTFRAME_REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def need_service(name: str, url: str) -> None:
    """Skip (or, when services are required, fail) the calling test if `url` is unreachable."""
    if _reachable(url):
        return
    message = f"{name} is not reachable at {url}"
    if services_required():
        pytest.fail(f"{message} and NEXTFRAME_REQUIRE_SERVICES=1 (CI needs it running)", pytrace=False)
    pytest.skip(f"{message}: start it to run the scaled-out tests")


# --- the developer's data dir stays untouched --------------------------------------------------------
# `make up` keeps its database, key and broker in ./.nextframe (the default data dir); a test, or a
# process it starts, that lands there would mix test data into it. The run fails if the folder was
# created during it, or got new entries.

def _entries(path: Path) -> set[str] | None:
    try:
        return {entry.name for entry in path.iterdir()}
    except FileNotFoundError:
        return None


# Taken when this plugin is imported (`-p nextframe.testing`), before pytest-django loads the settings.
_DEFAULT_DATA_DIR = Path.cwd() / ".nextframe"
_DEFAULT_DATA_DIR_BEFORE = _entries(_DEFAULT_DATA_DIR)


def default_data_dir_change(path: Path, before: set[str] | None) -> str | None:
    """What the run did to the default data dir `path` (None: nothing), given its entries before."""
    after = _entries(path)
    if after is None or after == before:
        return None
    if before is None:
        return f"the test run created {path} (the default data dir of `nextframe up`): {sorted(after)}"
    if after - before:
        return (f"the test run added {sorted(after - before)} to {path} (the default data dir of "
                "`nextframe up`; or is a `nextframe up` running from this folder?)")
    return None


def pytest_sessionfinish(session, exitstatus):
    problem = default_data_dir_change(_DEFAULT_DATA_DIR, _DEFAULT_DATA_DIR_BEFORE)
    if problem:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"ERROR: {problem}; tests must use their own data dirs", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "profile(name): the test fixes its own profile (embedded or scaled); it runs only in that "
        "profile's pass of `make test` and is deselected in the other")
    config.addinivalue_line(
        "markers", "soak: long, on demand (tests/test_soak.py): deselected unless the -m expression names it, "
        "e.g. `pytest -m soak tests/test_soak.py`")


def pytest_report_header(config):
    return f"nextframe test profile: {current_profile()}"


def _run_once_per_profile(config, items) -> None:
    """Deselect the tests whose fixed profile is not this pass's (they run in the other pass)."""
    profile = current_profile()
    keep: list[pytest.Item] = []
    elsewhere: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("profile")
        if marker is not None and marker.args[0] not in PROFILE_NAMES:
            raise pytest.UsageError(f"{item.nodeid}: profile({marker.args[0]!r}) is none of {PROFILE_NAMES}")
        (elsewhere if marker is not None and marker.args[0] != profile else keep).append(item)
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = keep


def _deselect_soak_unless_asked(config, items) -> None:
    """Soak tests run minutes: only when `-m` names them (never in `make test`)."""
    if "soak" in (config.getoption("markexpr", "") or ""):
        return
    soak = [item for item in items if item.get_closest_marker("soak") is not None]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if item.get_closest_marker("soak") is None]


def pytest_collection_modifyitems(config, items):
    _deselect_soak_unless_asked(config, items)
    _run_once_per_profile(config, items)
    if current_profile() != "scaled":
        return
    missing = [name for name, url in (("PostgreSQL", POSTGRES_URL), ("Redis", REDIS_URL)) if not _reachable(url)]
    if not missing:
        return
    reason = f"scaled-out profile: {', '.join(missing)} not reachable on loopback"
    if services_required():
        raise pytest.UsageError(f"{reason}, and NEXTFRAME_REQUIRE_SERVICES=1 makes that a failure")
    for item in items:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def redis_url() -> str:
    need_service("Redis", REDIS_URL)
    return REDIS_URL


@pytest.fixture
def fresh_host():
    """A fresh LiveHost for the test (in-process audits and sessions run on its runtimes), stopped after."""
    from nextframe.live.host import reset_host

    reset_host()
    yield
    reset_host()


@pytest.fixture
def org(db):
    from nextframe.tenancy import actions

    return actions.create_org("acme")


@pytest.fixture
def other_org(db):
    from nextframe.tenancy import actions

    return actions.create_org("globex")


@pytest.fixture
def api_key(org) -> str:
    from nextframe.tenancy import actions

    return actions.create_key(org)[1]


@pytest.fixture
def other_key(other_org) -> str:
    from nextframe.tenancy import actions

    return actions.create_key(other_org)[1]


@pytest.fixture
def client_for():
    """A DRF APIClient authenticated with a given key."""
    from rest_framework.test import APIClient

    def make(key: str | None):
        client = APIClient()
        if key:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client

    return make
