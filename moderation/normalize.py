"""Prompt normalisation against evasion: what a term list compares against.

`forms(text)` returns the few normalised readings of a prompt, each a list of word tokens:
- NFKC (fullwidth and stylised letters become plain ones), case folding, zero-width and control
  characters removed, combining marks (Zalgo, accents) dropped;
- cross-script look-alikes mapped to Latin through the Unicode confusables table shipped in
  `confusable-homoglyphs` (Cyrillic `о`, Greek `ο` -> `o`), never a hand-typed table;
- leetspeak (`p0rn`, `pr0n`, `$ex`) read as letters;
- spacing and punctuation tricks: runs of single letters (`p o r n`, `p.o.r.n`, `p-o-r-n`) joined,
  and letters repeated for emphasis (`pooorn`) collapsed.
Pure Python, no Django. The confusables table loads once per process on first use (~10 ms).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Characters that render as nothing: zero-width space/joiners, word joiner, BOM, soft hyphen, ...
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d"
                                    "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063"
                                    "\u2064\u206a\u206b\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0"))

# Leetspeak digits and symbols read as the letters they stand for (inside words only).
LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s",
        "!": "i", "|": "l", "+": "t", "€": "e", "£": "l", "¡": "i"}
_LEET_CHARS = re.escape("".join(LEET))
# A token: letters/digits with leet symbols and inner apostrophes; anything else separates tokens.
_TOKEN = re.compile(rf"[\w{_LEET_CHARS}]+(?:['’][\w{_LEET_CHARS}]+)*")
_SEPARATORS = re.compile(r"[\s.\-_*·•,:;/\\~^=]+")
# Punctuation put between the letters of one word (`n-a-k-e-d`, `b_l_o_w`, `s.t.r.i.p`).
_INNER = re.compile(r"[.\-_*·•:;/\\~^=]+")


@lru_cache(maxsize=1)
def confusable_map() -> dict[str, str]:
    """Non-ASCII character -> its ASCII look-alike, from the Unicode confusables table."""
    from confusable_homoglyphs import confusables

    data = confusables.confusables_data

    def ascii_for(char: str, hops: int = 3) -> str | None:
        # Some look-alikes lead to Latin only through another one (Greek kappa -> kra -> k).
        glyphs = [g["c"] for g in data.get(char, ())]
        for c in glyphs:
            if c.isascii() and c.isalnum():
                return c.lower()
        if hops > 1:
            for c in glyphs:
                if len(c) == 1 and not c.isascii() and (found := ascii_for(c, hops - 1)) is not None:
                    return found
        return None

    mapping: dict[str, str] = {}
    for char in data:
        if len(char) != 1 or char.isascii():
            continue
        # A small letter whose capital is the look-alike (Greek kappa and Kappa, K).
        found = ascii_for(char)
        if found is None and char.upper() != char and len(char.upper()) == 1:
            found = ascii_for(char.upper())
        if found is not None:
            mapping[char] = found
    return mapping


def clean(text: str) -> str:
    """NFKC, invisible characters and combining marks removed, look-alikes mapped, case folded."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    text = "".join(ch for ch in unicodedata.normalize("NFD", text)
                   if not unicodedata.combining(ch) and (ch.isprintable() or ch.isspace()))
    table = confusable_map()
    text = "".join(table.get(ch, ch) for ch in text)
    return unicodedata.normalize("NFKC", text).casefold()


def _deleet(token: str) -> str:
    # Punctuation at a word's edges is punctuation ("wow!", "|x|"), not a letter.
    token = token.strip("!|+¡")
    # Only tokens with more letters than digits are leet: "1984", "42", "3d" and "4k" stay as they are.
    letters = sum(ch.isalpha() for ch in token)
    if letters == 0 or (letters <= 1 and len(token) <= 2):
        return token
    return "".join(LEET.get(ch, ch) for ch in token)


def _squash(token: str) -> str:
    """Letters repeated three or more times collapse to one (`pooorn` -> `porn`)."""
    return re.sub(r"(.)\1{2,}", r"\1", token)


def _join_spelled(tokens: list[str]) -> list[str]:
    """Runs of two or more single-letter tokens become one word (`p o r n` -> `porn`)."""
    out: list[str] = []
    run: list[str] = []
    for tok in [*tokens, ""]:
        if len(tok) == 1 and tok.isalpha():
            run.append(tok)
            continue
        if len(run) >= 2:
            out.append("".join(run))
        else:
            out.extend(run)
        run = []
        if tok:
            out.append(tok)
    return out


def tokens(text: str) -> list[str]:
    """The plain reading: cleaned words, leetspeak read as letters."""
    return [_deleet(t.replace("’", "'")) for t in _TOKEN.findall(clean(text))]


def forms(text: str) -> list[list[str]]:
    """Every normalised reading of `text` that the term lists are matched against (deduplicated)."""
    cleaned = clean(text)
    plain = [_deleet(t.replace("’", "'")) for t in _TOKEN.findall(cleaned)]
    # Spaced or dotted letters: split on separators only, so "p.o.r.n" yields p, o, r, n.
    spelled = _join_spelled([_deleet(t) for t in _SEPARATORS.split(cleaned) if t])
    spelled = [t for tok in spelled for t in _TOKEN.findall(tok)]
    compact = [_deleet(t) for chunk in cleaned.split() for t in _TOKEN.findall(_INNER.sub("", chunk))]
    readings = [plain, _join_spelled(plain), spelled, compact, [_squash(t) for t in plain],
                [_squash(t) for t in spelled]]
    unique: list[list[str]] = []
    for reading in readings:
        if reading not in unique:
            unique.append(reading)
    return unique
