"""Word error rate for speech-to-text tests.

Both texts are normalised first: lower case, hyphens and slashes split words, other
punctuation (apostrophes included) dropped, number words written as digits ("twenty one" and
"twenty-one" become "21", "fifteenth" becomes "15th"), "ok" spelled "okay". The rate is the
word-level Levenshtein distance over the reference's length.
"""

from __future__ import annotations

import re

__all__ = ["normalise", "wer"]

_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fifth": 5,
    "eighth": 8,
    "ninth": 9,
    "twelfth": 12,
    **{f"{w}th": n for n, w in enumerate(_UNITS) if n > 3 and n not in (5, 8, 9, 12)},
    **{f"{w[:-1]}ieth": 10 * n for n, w in enumerate(_TENS) if w},
}
_CARDINALS = {w: n for n, w in enumerate(_UNITS)} | {w: 10 * n for n, w in enumerate(_TENS) if w}
_SYNONYMS = {"ok": "okay"}


def _suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _numbers(words: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        tens = _CARDINALS.get(word)
        if tens is not None and tens >= 20 and tens % 10 == 0:
            unit = _CARDINALS.get(nxt)
            if unit is not None and 0 < unit < 10:
                out.append(str(tens + unit))
                i += 2
                continue
            if nxt in _ORDINALS and _ORDINALS[nxt] < 10:
                value = tens + _ORDINALS[nxt]
                out.append(f"{value}{_suffix(value)}")
                i += 2
                continue
        if word in _CARDINALS:
            out.append(str(_CARDINALS[word]))
        elif word in _ORDINALS:
            out.append(f"{_ORDINALS[word]}{_suffix(_ORDINALS[word])}")
        else:
            out.append(_SYNONYMS.get(word, word))
        i += 1
    return out


def normalise(text: str) -> list[str]:
    """The comparable words of ``text``."""
    text = re.sub(r"[-/]", " ", text.lower())
    text = re.sub(r"[^\w\s]", "", text)
    return _numbers(text.split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (1.0 for anything vs. nothing)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, start=1):
        current = [i]
        for j, other in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1] / len(ref)
