"""An organisation's moderation policy as plain values, and the rules for changing it (no Django).

`Policy` is what the checks read (a frozen snapshot); `apply_changes` validates a PATCH against the
platform's limits: an organisation may make moderation stricter, never weaker than the platform
floor (`Floor`, from settings): it cannot sample less often than `max_every_n_frames`, raise the
classifier threshold above `max_classifier_threshold`, shrink the hash distance below
`min_hash_max_distance`, allow more than `max_violations` or, when the floor says so, turn the
classifier off. Its `blocked_terms` add to the platform list; they never remove from it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

FRAME_CLASSIFIER_MODES = ("sampled", "strict", "off")
FAIL_MODES = ("closed", "open")
MAX_TERMS = 500
MAX_TERM_CHARS = 100


@dataclass(frozen=True)
class Floor:
    """The platform's limits on what an organisation may set (settings.MODERATION_FLOOR)."""

    max_every_n_frames: int = 30
    max_classifier_threshold: float = 0.9
    min_hash_max_distance: int = 4
    max_hash_max_distance: int = 16
    max_violations: int = 20
    classifier_may_be_off: bool = True


@dataclass(frozen=True)
class Policy:
    blocked_terms: tuple[str, ...] = ()
    frame_classifier: str = "sampled"
    classifier_every_n_frames: int = 5
    classifier_threshold: float = 0.8
    hash_max_distance: int = 8
    fail_mode: str = "closed"
    max_violations: int = 3
    keep_flagged_frames: bool = False
    # Not settable by an organisation: the prompt classifier's threshold (text.DEFAULT_TEXT_THRESHOLD).
    text_threshold: float = field(default=0.99, compare=False)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("text_threshold")
        data["blocked_terms"] = list(self.blocked_terms)
        return data


SETTABLE = tuple(k for k in Policy.__dataclass_fields__ if k != "text_threshold")


class PolicyError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field, self.message = field_name, message


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PolicyError(name, f"must be an integer from {lo} to {hi}")
    return value


def _float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= float(value) <= hi:
        raise PolicyError(name, f"must be a number from {lo} to {hi}")
    return float(value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise PolicyError(name, f"must be one of {', '.join(choices)}")
    return value


def _terms(value: Any) -> tuple[str, ...]:
    from moderation import normalize

    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise PolicyError("blocked_terms", "must be a list of strings")
    if len(value) > MAX_TERMS:
        raise PolicyError("blocked_terms", f"at most {MAX_TERMS} terms")
    out: list[str] = []
    for term in value:
        term = term.strip()
        if not term or len(term) > MAX_TERM_CHARS:
            raise PolicyError("blocked_terms", f"each term must have 1 to {MAX_TERM_CHARS} characters")
        if not normalize.tokens(term.rstrip("*")):
            raise PolicyError("blocked_terms", f"{term!r} has no letters or digits")
        if term not in out:
            out.append(term)
    return tuple(out)


def apply_changes(current: Policy, changes: Any, floor: Floor) -> Policy:
    """`current` with the PATCH `changes` applied; raises PolicyError naming the first bad field."""
    if not isinstance(changes, dict):
        raise PolicyError("non_field_errors", "expected a JSON object")
    unknown = sorted(set(changes) - set(SETTABLE))
    if unknown:
        raise PolicyError(unknown[0], "unknown field")
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "blocked_terms":
            values[name] = _terms(value)
        elif name == "frame_classifier":
            values[name] = _choice(name, value, FRAME_CLASSIFIER_MODES)
            if value == "off" and not floor.classifier_may_be_off:
                raise PolicyError(name, "the platform requires a frame classifier (sampled or strict)")
        elif name == "classifier_every_n_frames":
            values[name] = _int(name, value, 1, floor.max_every_n_frames)
        elif name == "classifier_threshold":
            values[name] = _float(name, value, 0.05, floor.max_classifier_threshold)
        elif name == "hash_max_distance":
            values[name] = _int(name, value, floor.min_hash_max_distance, floor.max_hash_max_distance)
        elif name == "fail_mode":
            values[name] = _choice(name, value, FAIL_MODES)
        elif name == "max_violations":
            values[name] = _int(name, value, 1, floor.max_violations)
        elif name == "keep_flagged_frames":
            if not isinstance(value, bool):
                raise PolicyError(name, "must be true or false")
            values[name] = value
    return replace(current, **values)
