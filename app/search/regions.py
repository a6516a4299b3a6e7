"""What a photo holds beyond its main subject, from its regions (`regions` in the payload,
written at ingest with `--regions`: model/regions.py): the rule of which region concepts
count, and how much, for searches and for tags.

- A concept counts in a region from REGION_MIN of the region's probability mass (chosen on
  the tuning half of bench/scenes.py's scenes); below it, a concept in one region is noise
  (leaves read as a monkey at 0.32 of one crop's probability are not a monkey).
- A region hit weighs less than a whole-photo hit: its score is REGION_WEIGHT times its mass,
  so a photo of the thing itself ranks above a photo that holds it in a corner.
- A region's tags come after the whole photo's, only for concepts the whole photo holds less
  than MIN_MASS of (what it already says is not said again), each with its box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from model.regions import REGION_MIN

Float32Array = npt.NDArray[np.float32]

#: a region's mass counts this much against a whole photo's
REGION_WEIGHT = 0.5
#: at most this many region tags follow the whole photo's
REGION_TAGS = 3


def region_evidence(
    payload: dict[str, Any], members: Float32Array
) -> tuple[float, list[list[float]]]:
    """(score, boxes) of a concept (its (1000,) member row) in a photo's regions: REGION_WEIGHT
    times the best region's mass under it, and the boxes of the regions holding at least
    REGION_MIN of it, best first; (0.0, []) where none does."""
    from model.embedders.conse import top_probs

    found = []
    for r in payload.get("regions") or []:
        mass = float(top_probs(r.get("top") or []) @ members)
        if mass >= REGION_MIN:
            found.append((mass, [float(x) for x in r["box"]]))
    if not found:
        return 0.0, []
    found.sort(key=lambda t: -t[0])
    return REGION_WEIGHT * found[0][0], [box for _, box in found]


def region_masses(
    payloads: Sequence[dict[str, Any]], members: Float32Array
) -> tuple[Float32Array, list[list[list[float]]]]:
    """`region_evidence` over many photos: (scores, boxes per photo)."""
    pairs = [region_evidence(p, members) for p in payloads]
    return np.array([s for s, _ in pairs], np.float32), [b for _, b in pairs]


def region_tags(
    regions: Sequence[dict[str, Any]], whole: Float32Array, generality: str
) -> list[tuple[Any, float, list[float]]]:
    """(concept, mass, box) of the concepts the regions hold that the whole photo (its (1000,)
    probabilities `whole`) holds less than MIN_MASS of: each region's best one, each concept
    once (in its best region), at most REGION_TAGS, by mass."""
    from model.embedders.conse import top_probs
    from model.vocab.hierarchy import GENERAL, MIN_MASS, SPECIFIC, imagenet_concepts

    cs = imagenet_concepts()
    lam = SPECIFIC if generality == "specific" else GENERAL
    held = cs.mass(np.asarray(whole, np.float32)[None], None)[0]
    best: dict[str, tuple[Any, float, list[float]]] = {}
    for r in regions:
        # a region's one best concept: `big cat` after `lion`, in the same crop, says nothing
        for concept, mass in cs.ranked(top_probs(r.get("top") or []), 1, lam, REGION_MIN):
            i = cs.index(concept.key)
            if i is not None and held[i] >= MIN_MASS:
                continue
            if concept.name not in best or mass > best[concept.name][1]:
                best[concept.name] = (concept, mass, [float(x) for x in r["box"]])
    chosen: list[tuple[Any, float, list[float]]] = []
    for concept, mass, box in sorted(best.values(), key=lambda t: -t[1]):
        # one under the other (`espresso` in one crop, `beverage` in the next): said once
        row = cs.members[cs.index(concept.key) or 0] > 0
        if any(_nested(row, cs.members[cs.index(c.key) or 0] > 0) for c, _, _ in chosen):
            continue
        chosen.append((concept, mass, box))
    return chosen[:REGION_TAGS]


def _nested(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> bool:
    return bool(not (a & ~b).any() or not (b & ~a).any())
