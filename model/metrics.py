"""The figures of an evaluation (`model.evaluate`): hit@k, retrieval precision and mAP, the
chance level of each, and the generalised zero-shot figures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def hit_at_k(scores: Float32Array, targets: IntArray, k: int) -> float:
    """Share of rows whose target column is among the k highest scores."""
    if len(targets) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == targets[:, None], axis=1)))


def _ap(relevant: npt.NDArray[np.bool_], n_relevant: int) -> float:
    """Average precision of a ranked relevance list, over `n_relevant` relevant items."""
    if n_relevant <= 0:
        return 0.0
    hits = np.cumsum(relevant)
    precision = hits / np.arange(1, len(relevant) + 1)
    return float(np.sum(precision * relevant) / n_relevant)


def text_to_image(
    queries: Float32Array,
    images: Float32Array,
    targets: IntArray,
    classes: Sequence[int],
    k: int = 10,
) -> tuple[float, float]:
    """(precision@k, mAP) of ranking all images by each class query; relevant = that class."""
    p_at, aps = [], []
    for c in classes:
        order = np.argsort(-(images @ queries[c]), kind="stable")
        rel = targets[order] == c
        p_at.append(float(rel[:k].mean()))
        aps.append(_ap(rel, int(rel.sum())))
    return (float(np.mean(p_at)), float(np.mean(aps))) if aps else (float("nan"), float("nan"))


def image_to_image_map(
    images: Float32Array, targets: IntArray, k: int = 10, chunk: int = 1024
) -> float:
    """mAP@k of each image as a query against all others; relevant = same label."""
    n = len(images)
    if n < 2:
        return float("nan")
    counts = np.bincount(targets)
    aps = np.empty(n)
    kk = min(k, n - 1)
    for s in range(0, n, chunk):
        sims = images[s : s + chunk] @ images.T
        rows = np.arange(sims.shape[0])
        sims[rows, s + rows] = -np.inf  # never retrieve the query itself
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(sims, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        for r in range(sims.shape[0]):
            q = s + r
            rel = targets[top[r]] == targets[q]
            aps[q] = _ap(rel, min(kk, int(counts[targets[q]]) - 1))
    return float(aps.mean())


def chance_levels(targets: IntArray, n_labels: int, zeroshot_targets: IntArray) -> dict[str, float]:
    """What a random ranking scores, to stand beside each figure."""
    counts = np.bincount(targets, minlength=n_labels).astype(float)
    present = counts[counts > 0]
    n = float(len(targets))
    prevalence = float(np.mean(present / n)) if n else float("nan")
    same = float(np.sum(counts * (counts - 1)) / (n * (n - 1))) if n > 1 else float("nan")
    return {
        "flat_hit@1": 1.0 / n_labels,
        "flat_hit@5": min(5, n_labels) / n_labels,
        "zeroshot_hit@1": 1.0 / n_labels if len(zeroshot_targets) else float("nan"),
        "zeroshot_hit@5": min(5, n_labels) / n_labels if len(zeroshot_targets) else float("nan"),
        "text2image_p@10": prevalence,
        "text2image_map": prevalence,
        "image2image_map@10": same,
    }


def embedding_metrics(
    vectors: Float32Array,
    targets: IntArray,
    label_vectors: Float32Array,
    seen: Sequence[int],
    zeroshot: Sequence[int],
) -> dict[str, float]:
    """Every label-space metric for one model's unit image vectors (all ranked among all labels)."""
    scores = vectors @ label_vectors.T
    flat = np.isin(targets, list(seen))
    zs = np.isin(targets, list(zeroshot))
    out: dict[str, float] = {}
    if flat.any():
        out["flat_hit@1"] = hit_at_k(scores[flat], targets[flat], 1)
        out["flat_hit@5"] = hit_at_k(scores[flat], targets[flat], 5)
        out["mean_cosine"] = float(np.mean(scores[flat, targets[flat]]))
    if zs.any():
        out["zeroshot_hit@1"] = hit_at_k(scores[zs], targets[zs], 1)
        out["zeroshot_hit@5"] = hit_at_k(scores[zs], targets[zs], 5)
    classes = sorted(set(np.unique(targets).tolist()))
    p10, mean_ap = text_to_image(label_vectors, vectors, targets, classes)
    out["text2image_p@10"] = p10
    out["text2image_map"] = mean_ap
    out["image2image_map@10"] = image_to_image_map(vectors, targets)
    return out


def gzsl_metrics(
    vectors: Float32Array,
    targets: IntArray,
    label_vectors: Float32Array,
    seen: Sequence[int],
    zeroshot: Sequence[int],
    gamma: float,
) -> dict[str, float]:
    """Generalised zero-shot figures (model/gzsl.py) on the images of seen and zero-shot
    labels, ranked among all labels, seen scores less `gamma`; {} without both kinds."""
    from model import gzsl

    keep = np.isin(targets, list(seen) + list(zeroshot))
    y = targets[keep]
    if not np.isin(y, list(seen)).any() or not np.isin(y, list(zeroshot)).any():
        return {}
    return gzsl.metrics(vectors[keep] @ label_vectors.T, y, seen, zeroshot, gamma)
