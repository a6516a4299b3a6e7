"""Tagging: what is in a picture, as the model's labels, their hypernyms and frequent words.
conse scores them by the classifier's probability mass, devise and clip by cosine."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.search.answers import TagResult
from app.search.request import ImageInput
from qdrant.filters import SearchFilter
from qdrant.schema import abs_posix
from qdrant.store import Store

Float32Array = npt.NDArray[np.float32]
#: what conse tags a picture from: its class probabilities, what a detector found (concept
#: key -> score) and its regions (model/regions.py; [] where none were read)
Evidence = tuple[Float32Array, dict[str, float], list[dict[str, Any]]]

DEFAULT_MAX_RANK = 20_000  # tags come from the 20k most frequent words


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


def clip_tags(
    store: Store, vector: Float32Array, k: int, min_score: float | None
) -> list[TagResult]:
    """CLIP's tags, composed like devise's: its best three ImageNet labels, then two
    hypernyms, then the nearest frequent words, each by cosine of CLIP's vectors."""
    from ingest.vocabulary import CLIP_WORD_VECTOR

    pairs: list[tuple[str, float, str]] = []
    taken: set[str] = set()
    for kind, quota in (("label", 3), ("hypernym", 2), ("word", k)):
        flt = SearchFilter(kinds=(kind,), min_score=min_score)
        hits = store.search_words(vector, quota + len(taken), flt, using=CLIP_WORD_VECTOR)
        fresh = [
            (str(h.payload.get("word")), float(h.score), kind)
            for h in hits
            if str(h.payload.get("word")).lower() not in taken
        ][:quota]
        taken |= {w.lower() for w, _, _ in fresh}
        pairs += fresh
    return [TagResult(w, sc, kd) for w, sc, kd in pairs[:k]]


def zero_shot_bias(meta: dict[str, Any], bias: str | float) -> tuple[float, set[str]]:
    """(gamma, the checkpoint's seen labels) for a devise checkpoint's `meta`: calibrated
    stacking, its recorded gamma for "auto", else `bias` itself."""
    seen = {str(x).lower() for x in meta.get("seen", meta.get("labels", []))}
    if bias == "auto":
        gamma = float((meta.get("calibration") or {}).get("gamma", 0.0))
    else:
        gamma = float(bias)
    return gamma, seen


def indexed_evidence(store: Store, image: ImageInput) -> Evidence | None:
    """ConSE's ImageNet class probabilities and what the face detector found (concept key ->
    score) from the payload of an indexed image (no backbone needed); None for another."""
    from model.embedders.conse import top_probs

    if isinstance(image, (str, Path)):
        rec = store.find_by_path([abs_posix(image)]).get(abs_posix(image))
        if rec is not None and rec.payload.get("conse_top"):
            detected = rec.payload.get("detected") or {}
            return (
                top_probs(rec.payload["conse_top"]),
                {str(key): float(v) for key, v in detected.items()},
                list(rec.payload.get("regions") or []),
            )
    return None


def classified_evidence(embedder: Any, picture: Any) -> Evidence:
    """ConSE's class probabilities, the detector's findings and the regions (one picture:
    read whether or not the index reads them) for a decoded picture."""
    probs = np.asarray(embedder.probs_images([picture])[0], dtype=np.float32)
    inspect = getattr(embedder, "inspect", None)
    seen = inspect(picture) if inspect is not None else {}
    regions = seen.pop("regions", None)
    read = getattr(embedder, "read_regions", None)
    if regions is None and read is not None:
        regions = read(picture)
    return probs, seen, list(regions or [])


def conse_tags(
    evidence: Evidence, k: int, min_score: float | None, generality: str
) -> list[TagResult]:
    """Labels and hypernyms scored by the probability mass of the classes under them; then
    what a region holds that the whole photo does not, marked as a part with its box
    (app/search/regions.py)."""
    from app.search.regions import region_tags
    from model.vocab.hierarchy import GENERAL, MIN_MASS, SPECIFIC, imagenet_concepts

    probs, detected, regions = evidence
    lam = SPECIFIC if generality == "specific" else GENERAL
    floor = max(MIN_MASS, min_score or 0.0)
    parts = [
        TagResult(c.name, m, c.kind, box)
        for c, m, box in region_tags(regions, probs, generality)
        if min_score is None or m >= min_score
    ]
    whole = imagenet_concepts().ranked(probs, k, lam=lam, min_mass=floor, detected=detected)
    # the whole photo's tags first; the parts take the last places, at most half of them
    parts = parts[: min(len(parts), k // 2, max(0, k - 1))]
    return [TagResult(c.name, m, c.kind) for c, m in whole[: k - len(parts)]] + parts


def word_tags(
    store: Store,
    vector: Float32Array,
    own: dict[str, tuple[str, str]],
    k: int,
    min_score: float | None,
    max_rank: int,
    bias: tuple[float, set[str]] = (0.0, set()),
) -> list[TagResult]:
    """The model's own labels first (`own`: lower-case name -> (name, kind); the best
    three), then their hypernyms (two), then the nearest frequent words, each by cosine; the
    seen labels' scores less `bias`'s gamma (calibrated stacking, model/gzsl.py). A word of a
    multi-word label never stands alone."""
    from model.vocab.hierarchy import label_fragments

    gamma, seen = bias
    found = store.find_words([name for name, _ in own.values()]) if own else {}
    scored: dict[str, list[tuple[str, float]]] = {"label": [], "hypernym": []}
    for key, (name, kind) in own.items():
        vec = found.get(name)
        if vec is None:
            continue
        score = float(np.dot(np.asarray(vec, np.float32), vector))
        if key in seen:
            score -= gamma
        if min_score is None or score >= min_score:
            scored[kind].append((name, score))
    pairs: list[tuple[str, float, str]] = []
    for kind, quota in (("label", 3), ("hypernym", 2)):
        best = sorted(scored[kind], key=lambda p: -p[1])[:quota]
        pairs += [(n, sc, kind) for n, sc in best]
    fragments = label_fragments(name for name, _ in own.values())
    taken = {p[0].lower() for p in pairs}
    words = store.search_words(vector, k * 3, SearchFilter(max_rank=max_rank, min_score=min_score))
    plain = [
        (str(h.payload.get("word")), float(h.score))
        for h in words
        if str(h.payload.get("word")).lower() not in taken | fragments
    ]
    plain = [(w, sc - (gamma if w.lower() in seen else 0.0)) for w, sc in plain]
    plain.sort(key=lambda p: -p[1])
    pairs += [(w, sc, "word") for w, sc in fold_inflections(plain)]
    return [TagResult(w, sc, kd) for w, sc, kd in pairs[:k]]
