"""The audits' tests measure timing: torch on one intra-op thread, as the device worker runs
(the fixture is `inference.testing.one_torch_thread`)."""
import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield
