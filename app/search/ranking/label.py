"""Images for a devise query that names one of the checkpoint's own labels, ranked as the model
classifies: by how far that label's calibrated score beats every other label's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from app.search.answers import ImageResult
from qdrant.filters import SearchFilter
from qdrant.store import Hit, Store

# A devise query that names one of the checkpoint's labels is re-ranked among this many
# nearest images (at least 20 per result asked for): an unseen label's own images sit
# further out by cosine than the seen labels' images (measured on the demo gallery: the
# first sandal at rank 9 of 1,024), so the margin needs a wide pool to find them.
LABEL_CANDIDATES = 5000


def own_label(embedder: Any, text: str) -> int | None:
    """The index of the devise checkpoint's label that a whole query names, else None."""
    key = " ".join(text.lower().split())
    meta = getattr(embedder, "meta", None) or {}
    labels = [str(x).lower() for x in meta.get("labels", [])]
    return labels.index(key) if key in labels else None


def label_images(
    store: Store,
    embedder: Any,
    label: int,
    k: int,
    flt: SearchFilter,
    bias: tuple[float, set[str]],
) -> tuple[list[ImageResult], str]:
    """Images ranked by the calibrated margin of `label` over the best other label:
    (x.l - gamma[l seen]) - max over l' != l of (x.l' - gamma[l' seen]), with the
    checkpoint's own label vectors; `bias` is (gamma, the seen labels). Positive: the model
    would tag the image `label`. Measured on the demo gallery (bench/bench_label_search.py):
    text->image mAP over the 10 labels 0.713 by cosine to the word vector, 0.782 by this
    margin; the unseen `sandal` 0.09 -> 0.47."""
    labels = [str(x) for x in embedder.meta.get("labels", [])]
    mat = np.asarray(embedder.label_matrix(labels), dtype=np.float32)
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    gamma, seen = bias
    offset = np.array([gamma if x.lower() in seen else 0.0 for x in labels], np.float32)
    # the candidates' ids only; their payloads and vectors come once, with `retrieve`
    (pool,) = store.search_images_batch(
        "devise",
        mat[label][None, :],
        max(LABEL_CANDIDATES, 20 * k),
        replace(flt, min_score=None),
        exact=False,
        with_payload=False,
    )
    # the pool's vectors without payloads; payloads for the k shown only (a payload costs
    # more to bring into Python than the margin does to compute)
    by_id = {
        r.id: r for r in store.retrieve_images([h.id for h in pool], ["devise"], with_payload=False)
    }
    hits = [by_id[h.id] for h in pool if "devise" in getattr(by_id.get(h.id), "vectors", {})]
    if not hits:
        return [], ""
    x = np.stack([np.asarray(r.vectors["devise"], np.float32) for r in hits])
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    calibrated = x @ mat.T - offset
    rivals = np.delete(calibrated, label, axis=1)
    margin = calibrated[:, label] - (rivals.max(axis=1) if rivals.shape[1] else 0.0)
    order = [
        int(j)
        for j in np.argsort(-margin, kind="stable")
        if flt.min_score is None or margin[j] >= flt.min_score
    ][:k]
    shown = store.retrieve_images([hits[j].id for j in order])
    payloads = {r.id: r.payload for r in shown}
    results = [
        ImageResult.of(Hit(hits[j].id, float(margin[j]), payloads[hits[j].id]))
        for j in order
        if hits[j].id in payloads
    ]
    how = f"seen labels less {gamma:.2f}" if gamma else "no zero-shot bias"
    note = f"{labels[label]} (the model's label: score = its margin over the next label, {how})"
    return results[:k], note
