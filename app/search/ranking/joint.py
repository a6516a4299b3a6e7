"""Several terms joined: a soft AND over per-term probabilities on one scale (conse).

Each term of a read query gets, per image, a probability-like score in [0, 1]:
- a *concept* (`dog`, `person`, `big cat`): the classifier's probability mass under it, or a
  detector's score (a face: `person`), whichever is higher. Where no candidate has any mass
  under it (the classifier calls darknet's horses camels) the service scores it as a word;
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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]


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
