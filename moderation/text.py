"""Prompt moderation: the term lists first (platform + organisation), then a learned classifier.

The classifier is `alt-profanity-check` (MIT): a linear SVM over a TF-IDF of words, trained on
~200k human-labelled comments, shipped inside its wheel with its vectoriser. It catches abusive
wording the lists do not name. Its two joblib files are pinned by sha256 and checked before they are
unpickled (a pickle executes code: only the exact files reviewed are ever loaded). scikit-learn
costs ~1.5 s to import, so it loads lazily, once per process (`PromptClassifier.warm`), never on
the server's start-up path.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from moderation import normalize
from moderation.terms import TermList, platform_terms

# sha256 of the files of alt-profanity-check 1.9.1 (the version pyproject.toml pins).
PROFANITY_FILES = {
    "model.joblib": "aeafc04849d4d93db4721cf30a86ebf22085595294b8a07d51918e7fa98f538b",
    "vectorizer.joblib": "19c5200dc6a41f026e0558e2f164f5fe8d8f58e502b46b37e4385037fcfa4831",
}
# Measured on the corpus (moderation/tests/data): abusive wording scores >= 0.997, innocent
# near-misses up to 0.96 (`a weather cock`, `a hoe in the garden`).
DEFAULT_TEXT_THRESHOLD = 0.99


class ModelFileError(RuntimeError):
    """A model file is missing or is not the one pinned by hash."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise ModelFileError(f"model file {path} is missing")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelFileError(f"model file {path} has sha256 {actual}, expected {expected}")
    return path


class PromptClassifier:
    """P(abusive) of a text from alt-profanity-check's shipped model; loaded once, thread-safe."""

    def __init__(self, data_dir: Path | None = None, pins: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.pins = pins or PROFANITY_FILES
        self._lock = threading.Lock()
        self._model = None
        self._vectorizer = None

    def warm(self) -> None:
        """Load the model now (seconds: call it off the event loop)."""
        with self._lock:
            if self._model is not None:
                return
            import joblib

            folder = self.data_dir or Path(str(resources.files("profanity_check").joinpath("data")))
            vectorizer = joblib.load(verify(folder / "vectorizer.joblib", self.pins["vectorizer.joblib"]))
            model = joblib.load(verify(folder / "model.joblib", self.pins["model.joblib"]))
            self._vectorizer, self._model = vectorizer, model

    def score(self, text: str) -> float:
        return self.scores([text])[0]

    def scores(self, texts: list[str]) -> list[float]:
        self.warm()
        assert self._model is not None and self._vectorizer is not None
        return [float(p[1]) for p in self._model.predict_proba(self._vectorizer.transform(texts))]


@dataclass(frozen=True)
class PromptVerdict:
    category: str
    detector: str  # "terms" | "classifier"
    score: float | None
    detail: str

    def message(self) -> str:
        return f"the prompt was refused by moderation ({self.category})"


_classifier = PromptClassifier()


def shared_classifier() -> PromptClassifier:
    """This process's one prompt classifier (loaded on first use)."""
    return _classifier


def check_prompt(prompt: str, terms: TermList | None = None, classifier: PromptClassifier | None = None,
                 threshold: float = DEFAULT_TEXT_THRESHOLD) -> PromptVerdict | None:
    """None when the prompt may reach a model; else why not."""
    if not prompt.strip():
        return None
    terms = terms or platform_terms()
    hit = terms.match(prompt)
    if hit is not None:
        return PromptVerdict(hit.category, "terms", None, hit.term)
    if classifier is not None:
        # The classifier reads the prompt with the allowed phrases taken out (`naked mole rat`).
        readings = [terms.without_allowed(r) for r in normalize.forms(prompt)[:2]]
        score = max(classifier.scores([" ".join(t for t in r if t != "\x00") for r in readings]))
        if score >= threshold:
            return PromptVerdict("abuse", "classifier", round(score, 4), "alt-profanity-check")
    return None
