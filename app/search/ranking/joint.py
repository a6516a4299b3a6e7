"""Several terms joined: a soft AND over per-term probabilities on one scale (conse).

Each term of a read query gets, per image, a probability-like score in [0, 1]:
- a *concept* (`dog`, `person`, `big cat`): the classifier's probability mass under it, or a
  detector's score (a face: `person`), whichever is higher. Where no candidate has any mass
  under it (the classifier calls darknet's horses camels) `joint_images` scores it as a word;
- a *word* with no concept (`grass`, `beach`, `sky`): the cosine between the image's conse
  vector and the word's vector through a logistic, `cap * sigmoid((cos - center) / scale)`.
  On the demo gallery (1,000 Fashion-MNIST garments and 37 photos) a garment's cosine to a
  scene word is about 0.3 at the median and 0.6 at the 99th percentile, and the right photo
  about 0.57-0.78 (`grass` photo 0.57, `tower` 0.78): a weak cue, so it is capped below a
  confident concept, and counts a quarter of its weight in the mean.

The terms are joined by the weighted geometric mean of those scores, each floored at `eps`
(a mean of log-scores): a photo must match every positive term to score high, and one that
matches two beats one that matches one. A term's weight (`2:dog`) is its exponent.

A negated term never adds to a score. A photo that carries it (score at least `carries`)
is demoted below every photo that does not, and its own score is scaled by `(1 - p)^|w|`:
`animal -dog` ranks the cat and the eagle first, the dog photos after them, never a rocket
with no animal in it above an animal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from app.search.answers import ImageResult
from app.search.query import Term
from app.search.ranking.concept import CONCEPT_CANDIDATES
from app.search.ranking.near import near_concept
from app.search.regions import region_masses
from qdrant.filters import SearchFilter
from qdrant.store import Hit, Record, Store

Float32Array = npt.NDArray[np.float32]

# a query of several terms on conse scores the images nearest each term's word vector (and
# the concepts' images) by every term: this many per term
JOINT_CANDIDATES = 300


@dataclass(frozen=True)
class Calibration:
    """The constants, chosen by `bench/bench_queries.py --sweep` on its 38 queries over the
    demo gallery (the best share of right photos in the top 3, then mean AP; chosen on the
    same queries it reports, with no held-out set)."""

    center: float = 0.66
    scale: float = 0.04
    #: the most a cosine alone may score: below a confident concept
    cap: float = 0.5
    #: the floor of each term's score inside the mean of logs
    eps: float = 0.1
    #: a word scored by its cosine alone counts this much of its weight in the mean: a weak
    #: cue must not outvote a concept the classifier found
    word_weight: float = 0.25
    #: a negated term at least this strong marks the photo as carrying it (ingest files an
    #: image under a concept from 10% of its mass)
    carries: float = 0.1


DEFAULT = Calibration()


@dataclass(frozen=True)
class TermScores:
    """One term's evidence over the candidate images: its weight, its concept mass (None
    for a word with no concept) and its cosines."""

    weight: float
    cosine: Float32Array
    mass: Float32Array | None = None
    #: the mass is of a concept the word is a kind of (astronaut: person), a weaker reading:
    #: its cosine stands in where higher, and it counts as a word in the mean
    kind: bool = False


def calibrated_cosine(cosine: Float32Array, cal: Calibration = DEFAULT) -> Float32Array:
    """Cosine to a word -> a score in [0, cap]."""
    z = (np.asarray(cosine, np.float64) - cal.center) / cal.scale
    return (cal.cap / (1.0 + np.exp(-z))).astype(np.float32)


def term_probability(term: TermScores, cal: Calibration = DEFAULT) -> Float32Array:
    """A term's score per image on the one scale: its mass, or for a word with no concept its
    calibrated cosine. (A concept's mass is not raised by its cosine: a garment's cosine to
    `dog` reaches 0.69 on the demo gallery, higher than darknet's dog photo's.)"""
    if term.mass is None:
        return calibrated_cosine(term.cosine, cal)
    if term.kind:
        return np.maximum(np.asarray(term.mass, np.float32), calibrated_cosine(term.cosine, cal))
    return np.asarray(term.mass, np.float32)


def rank(
    terms: Sequence[TermScores], cal: Calibration = DEFAULT
) -> tuple[npt.NDArray[np.int64], Float32Array, npt.NDArray[np.bool_]]:
    """(order, scores, demoted): the candidates best first, each one's joint score, and
    whether it carries a negated term. Needs at least one positive term."""
    positive = [t for t in terms if t.weight > 0]
    if not positive:
        raise ValueError("a joint ranking needs at least one positive term")
    n = len(positive[0].cosine)
    weights = [t.weight * (cal.word_weight if t.mass is None or t.kind else 1.0) for t in positive]
    total = sum(weights)
    logs = np.zeros(n, np.float64)
    for t, w in zip(positive, weights, strict=True):
        p = np.maximum(term_probability(t, cal).astype(np.float64), cal.eps)
        logs += w * np.log(p)
    scores = np.exp(logs / total)
    demoted = np.zeros(n, bool)
    for t in terms:
        if t.weight >= 0:
            continue
        p = term_probability(t, cal).astype(np.float64)
        demoted |= p >= cal.carries
        scores *= (1.0 - np.clip(p, 0.0, 1.0)) ** abs(t.weight)
    # demoted last, then by score; ties keep the candidates' order
    order = np.lexsort((-scores, demoted)).astype(np.int64)
    return order, scores.astype(np.float32), demoted


def joins(store: Store, terms: Sequence[Term]) -> bool:
    """Whether conse answers `terms` by the joint ranking: words only, at least one
    positive, and more than one term or a weight; the index's points carry concepts."""
    if any(t.is_image for t in terms) or not any(t.weight > 0 for t in terms):
        return False
    if len(terms) < 2 and all(t.weight == 1 for t in terms):
        # one word: the joint ranking answers it only as a kind of a concept (astronaut)
        if kind_of(terms[0].text or "") is None:
            return False
    first = next(iter(store.scroll_images(batch=1)), None)
    return first is not None and "conse_top" in first.payload


def kind_of(text: str) -> int | None:
    """The ImageNet concept a noun that names none is a kind of (astronaut: person)."""
    from model.vocab.hierarchy import imagenet_concepts
    from model.vocab.lexicon import kind_of as lexicon_kind_of

    if " " in text.strip() or imagenet_concepts().find(text) is not None:
        return None
    wnid = lexicon_kind_of(text)
    return imagenet_concepts().index(wnid) if wnid else None


def joint_images(
    store: Store,
    terms: Sequence[Term],
    vectors: Sequence[Float32Array | None],
    vector: Float32Array,
    k: int,
    flt: SearchFilter,
    cal: Calibration = DEFAULT,
) -> tuple[list[ImageResult], list[str]]:
    """Images for several terms on conse, ranked by `rank`: a soft AND of each term's score
    (concept mass, a detector's score, or calibrated cosine), negated terms demoting the
    photos that carry them; `vectors` are the terms' word vectors, `vector` the whole
    query's. The candidates are every positive concept's images and the images nearest each
    positive term and the whole query."""
    concepts, kinds, notes = _concepts_of(terms)
    records = _candidates(store, terms, concepts, vectors, vector, replace(flt, min_score=None))
    if not records:
        return [], notes
    boxes: dict[int, list[list[float]]] = {}
    scored = _term_scores(terms, concepts, kinds, vectors, records, notes, boxes)
    order, scores, _ = rank(scored, cal)
    shown = evidence(scored, cal)
    results = [
        replace(
            ImageResult.of(Hit(records[i].id, float(scores[i]), records[i].payload)),
            boxes=boxes.get(int(i), []),
        )
        for i in order
        if flt.min_score is None or scores[i] >= flt.min_score
    ]
    # where evidence ends: a photo with no sign of any positive term follows every photo
    # with one, marked weak (the order among each stays the ranking's)
    by_id = {str(records[i].id): bool(shown[i]) for i in order}
    ids = [str(records[i].id) for i in order if flt.min_score is None or scores[i] >= flt.min_score]
    strong = [r for r, pid in zip(results, ids, strict=True) if by_id[pid]]
    weak = [replace(r, weak=True) for r, pid in zip(results, ids, strict=True) if not by_id[pid]]
    return (strong + weak)[:k], notes


def evidence(terms: Sequence[TermScores], cal: Calibration = DEFAULT) -> npt.NDArray[np.bool_]:
    """Per candidate, whether it shows a sign of some positive term: a concept's mass of at
    least MIN_MASS, or a word's cosine past the calibration's center (its score half the
    cap). The photos with none are weaker matches, whatever their joint score."""
    from model.vocab.hierarchy import MIN_MASS

    positive = [t for t in terms if t.weight > 0]
    out = np.zeros(len(positive[0].cosine) if positive else 0, bool)
    for t in positive:
        if t.mass is not None:
            out |= np.asarray(t.mass) >= MIN_MASS
        if t.mass is None or t.kind:
            out |= np.asarray(t.cosine) >= cal.center
    return out


def _concepts_of(terms: Sequence[Term]) -> tuple[list[int | None], set[int], list[str]]:
    """(each term's concept, the terms read as a kind of one, notes saying so)."""
    from model.vocab.hierarchy import imagenet_concepts

    cs = imagenet_concepts()
    concepts = [cs.find(t.text or "") for t in terms]
    notes: list[str] = []
    kinds: set[int] = set()
    for i, t in enumerate(terms):
        if concepts[i] is None and (kind := kind_of(t.text or "")) is not None:
            concepts[i] = kind
            kinds.add(i)
            notes.append(f"{t.text!r} read as a kind of {cs.concepts[kind].name}")
    return concepts, kinds, notes


def _candidates(
    store: Store,
    terms: Sequence[Term],
    concepts: Sequence[int | None],
    vectors: Sequence[Float32Array | None],
    vector: Float32Array,
    plain: SearchFilter,
) -> list[Record]:
    """Every positive concept's images and the images nearest each positive term and the
    whole query, with their conse vectors."""
    from model.vocab.hierarchy import imagenet_concepts

    cs = imagenet_concepts()
    ids: dict[str, None] = {}
    for t, c, v in zip(terms, concepts, vectors, strict=True):
        if c is None or t.weight <= 0 or v is None:
            continue
        key = cs.concepts[c].key
        for h in store.search_images(
            "conse", v, CONCEPT_CANDIDATES, replace(plain, concepts=(key,))
        ):
            ids.setdefault(str(h.id), None)
    queries = [v for t, v in zip(terms, vectors, strict=True) if t.weight > 0 and v is not None]
    for hits in store.search_images_batch(
        "conse", np.stack([vector, *queries]), JOINT_CANDIDATES, plain, with_payload=False
    ):
        for h in hits:
            ids.setdefault(str(h.id), None)
    return [r for r in store.retrieve_images(list(ids), ["conse"]) if "conse" in r.vectors]


def _term_scores(
    terms: Sequence[Term],
    concepts: Sequence[int | None],
    kinds: set[int],
    vectors: Sequence[Float32Array | None],
    records: Sequence[Record],
    notes: list[str],
    boxes: dict[int, list[list[float]]] | None = None,
) -> list[TermScores]:
    """Each term's evidence over the candidates; a term scored by its word vector where it
    names no concept, or one no candidate carries, adds a note saying so. `boxes` gathers,
    per candidate, the box of each positive term's best region where a region holds more of
    it than the whole photo."""
    from model.embedders.conse import top_probs
    from model.vocab.hierarchy import MIN_MASS, imagenet_concepts

    cs = imagenet_concepts()
    x = np.stack([np.asarray(r.vectors["conse"], np.float32) for r in records])
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    probs = np.stack([top_probs(r.payload.get("conse_top") or []) for r in records])
    scored: list[TermScores] = []
    for i, (t, c, v) in enumerate(zip(terms, concepts, vectors, strict=True)):
        cosine = x @ v if v is not None else np.zeros(len(records), np.float32)
        mass = None
        if c is not None:
            mass = probs @ cs.members[c]
            key = cs.concepts[c].key
            detected = np.array(
                [float((r.payload.get("detected") or {}).get(key, 0.0)) for r in records],
                np.float32,
            )
            # a region holding it counts, weighing less: a phrase's terms may be found in
            # different regions of one photo
            part, where = region_masses([r.payload for r in records], cs.members[c])
            if boxes is not None and t.weight > 0:  # where a region, not the whole, holds it
                for j in np.flatnonzero(part > mass):
                    boxes.setdefault(int(j), []).extend(where[j][:1])
            mass = np.maximum(mass, part)
            mass = np.maximum(mass, detected)
            near_name, near = near_concept(key)
            if float(mass.max(initial=0.0)) < MIN_MASS and float((probs @ near).max()) >= MIN_MASS:
                # no photo carries it, some carry a near concept (horse: ungulate): that
                # mass stands in, as a weaker reading (a kind)
                notes.append(
                    f"no photo shows '{cs.concepts[c].name}': {t.text!r} read as {near_name}"
                )
                mass = probs @ near
                kinds = kinds | {i}
            elif float(mass.max(initial=0.0)) < MIN_MASS:
                notes.append(
                    f"no image indexed under '{cs.concepts[c].name}': {t.text!r} scored by "
                    "word-vector similarity instead, a weak cue"
                )
                mass = None
        else:
            notes.append(
                f"{t.text!r} names no concept: scored by word-vector similarity, a weak cue"
            )
        scored.append(TermScores(t.weight, cosine.astype(np.float32), mass, kind=i in kinds))
    return scored
