"""Tagging: what is in a picture, as labels, their hypernyms and frequent words."""

from __future__ import annotations

from collections.abc import Sequence


def fold_inflections(words: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Keep the best-scoring form of words that only differ by inflection (cat / cats)."""
    kept: list[tuple[str, float]] = []
    stems: set[str] = set()
    for w, s in words:
        stem = _stem(w)
        if stem in stems:
            continue
        stems.add(stem)
        kept.append((w, s))
    return kept


def _stem(word: str) -> str:
    w = word.lower()
    for suffix, repl in (
        ("ies", "y"),
        ("sses", "ss"),
        ("xes", "x"),
        ("ches", "ch"),
        ("shes", "sh"),
    ):
        if w.endswith(suffix) and len(w) - len(suffix) >= 2:
            return w[: -len(suffix)] + repl
    # a plain plural "s", but not the s of bus, glass, iris
    if w.endswith("s") and len(w) >= 4 and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w
