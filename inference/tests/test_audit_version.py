"""The audit's code version covers every module whose change can change a verdict."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from inference.audit import version

INFERENCE = Path(version.__file__).resolve().parent.parent

# A change in any of these can change what the audit measures or how it decides.
VERDICT_MODULES = ["engines/dreamfield.py", "runtime/scheduler.py", "runtime/core.py", "codec.py", "video.py",
                   "batch.py", "protocol.py", "audit/classifier.py", "audit/diagnostics.py", "audit/pixels.py",
                   "audit/clip.py", "audit/clip_rest.py", "audit/reference_engines.py", "audit/simulated.py"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "inference"
    shutil.copytree(INFERENCE, root, ignore=shutil.ignore_patterns("__pycache__", "tests", "bench", "*.pyc"))
    return root


@pytest.mark.parametrize("rel", [m for m in VERDICT_MODULES if (INFERENCE / m).exists()])
def test_a_change_in_any_verdict_module_changes_the_code_version(tree: Path, rel: str):
    before = version.sources_digest(tree)
    with open(tree / rel, "a") as fh:
        fh.write("\n# changed\n")
    assert version.sources_digest(tree) != before, f"{rel} is not part of the code version"


def test_every_verdict_module_exists_and_is_hashed():
    hashed = {str(p.relative_to(INFERENCE)) for p in version.source_files()}
    assert set(VERDICT_MODULES) <= hashed
    assert not any("__pycache__" in p or p.startswith("tests/") for p in hashed)


def test_a_missing_source_is_an_error_not_a_silent_skip(tree: Path):
    (tree / "batch.py").unlink()
    with pytest.raises(FileNotFoundError):
        version.sources_digest(tree)
