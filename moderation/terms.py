"""Term lists with categories, matched word by word against the normalised readings of a prompt.

A term is one or more words; a trailing `*` makes its last word a prefix (`porn*` catches `porno`,
`pornographic`). Matching is on whole tokens, so innocent words that contain a listed one survive:
Scunthorpe, cocktail, therapist, Assassin's Creed, sextant. `allow` phrases (`naked eye`) are taken
out of the prompt before matching. The platform list ships in this package
(`data/default_terms.json`); an organisation's `blocked_terms` are added to it, never subtracted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from moderation import normalize

ORG_CATEGORY = "organization_terms"


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]
    category: str
    prefix: bool = False

    @classmethod
    def parse(cls, text: str, category: str) -> Term:
        prefix = text.endswith("*")
        words = tuple(normalize.tokens(text.rstrip("*")))
        if not words:
            raise ValueError(f"term {text!r} has no letters or digits")
        return cls(words, category, prefix)

    def matches_at(self, toks: list[str], i: int) -> bool:
        n = len(self.words)
        if i + n > len(toks):
            return False
        for k, word in enumerate(self.words):
            tok = toks[i + k]
            last = k == n - 1
            if not (tok == word or (last and self.prefix and tok.startswith(word))):
                return False
        return True


@dataclass(frozen=True)
class TermHit:
    category: str
    term: str


class TermList:
    """Terms indexed by their first word (exact) plus the single-word prefixes."""

    def __init__(self, terms: list[Term], allow: list[tuple[str, ...]] | None = None) -> None:
        self.terms = terms
        self.allow = [a for a in (allow or []) if a]
        self._by_first: dict[str, list[Term]] = {}
        self._prefixes: list[Term] = []
        for term in terms:
            if term.prefix and len(term.words) == 1:
                self._prefixes.append(term)
            else:
                self._by_first.setdefault(term.words[0], []).append(term)

    def extended(self, extra: list[str], category: str = ORG_CATEGORY) -> TermList:
        """This list plus `extra` terms (an organisation's own)."""
        added = [Term.parse(t, category) for t in extra if normalize.tokens(t.rstrip("*"))]
        return TermList([*self.terms, *added], self.allow)

    def without_allowed(self, toks: list[str]) -> list[str]:
        for phrase in self.allow:
            n = len(phrase)
            i = 0
            while i + n <= len(toks):
                if tuple(toks[i:i + n]) == phrase:
                    toks = [*toks[:i], "\x00", *toks[i + n:]]  # a gap, so words around it stay apart
                i += 1
        return toks

    def match_tokens(self, toks: list[str]) -> TermHit | None:
        toks = self.without_allowed(toks)
        for i, tok in enumerate(toks):
            for term in self._by_first.get(tok, ()):
                if term.matches_at(toks, i):
                    return TermHit(term.category, " ".join(term.words))
            for term in self._prefixes:
                if tok.startswith(term.words[0]):
                    return TermHit(term.category, term.words[0] + "*")
        return None

    def match(self, text: str) -> TermHit | None:
        """The first listed term found in any normalised reading of `text`, or None."""
        for reading in normalize.forms(text):
            hit = self.match_tokens(reading)
            if hit is not None:
                return hit
        return None


def load(data: dict) -> TermList:
    terms = [Term.parse(text, category) for category, entries in data["categories"].items() for text in entries]
    allow = [tuple(normalize.tokens(a)) for a in data.get("allow", [])]
    return TermList(terms, allow)


@lru_cache(maxsize=1)
def platform_terms() -> TermList:
    """The platform's default list, shipped in this package."""
    text = resources.files("moderation").joinpath("data/default_terms.json").read_text("utf-8")
    return load(json.loads(text))
