"""Generalised zero-shot learning: calibrated stacking (Chao, Changpinyo, Gong and Sha,
ECCV 2016).

A model trained on seen labels ranks them above unseen ones: asked to choose among all
labels, it almost never picks an unseen one. Calibrated stacking subtracts a constant
`gamma` from every seen label's score. As `gamma` sweeps from -inf to +inf, accuracy on
seen images falls from its flat value to 0 while accuracy on unseen images rises from 0 to
its zero-shot value: the seen-unseen curve. AUSUC is the area under it; H, the harmonic
mean of the two accuracies, measures one operating point.

The curve is exact and cheap: an image is assigned to the seen group iff `gamma` is below
`d` = (its best seen score) - (its best unseen score), so every accuracy is a step function
of `gamma` with steps at the images' `d`.

`gamma` must be chosen without test images: `choose_gamma` takes validation data only, in
which some seen labels play the unseen part (see `model.train.calibrate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Curve:
    """Accuracies at each gamma of `gammas` (ascending), on seen and on unseen images."""

    gammas: npt.NDArray[np.float64]
    seen: npt.NDArray[np.float64]
    unseen: npt.NDArray[np.float64]

    @property
    def h(self) -> npt.NDArray[np.float64]:
        s, u = self.seen, self.unseen
        return np.where(s + u > 0, 2 * s * u / np.maximum(s + u, 1e-12), 0.0)

    def ausuc(self) -> float:
        """Area under the seen (y) against unseen (x) accuracy curve."""
        x = np.concatenate([[0.0], self.unseen, [self.unseen[-1]]])
        y = np.concatenate([[self.seen[0]], self.seen, [0.0]])
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def _parts(
    scores: Float32Array, targets: IntArray, seen: Sequence[int], unseen: Sequence[int]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per image: d, whether it is right within its own group, and whether it is seen."""
    scores = np.asarray(scores, np.float64)
    targets = np.asarray(targets, np.int64)
    s_idx, u_idx = np.asarray(list(seen), np.int64), np.asarray(list(unseen), np.int64)
    if len(s_idx) == 0 or len(u_idx) == 0:
        raise ValueError("generalised zero-shot needs both seen and unseen labels")
    is_seen = np.isin(targets, s_idx)
    is_unseen = np.isin(targets, u_idx)
    if not (is_seen | is_unseen).all():
        raise ValueError("every target must be a seen or an unseen label")
    best_s = scores[:, s_idx].max(axis=1)
    best_u = scores[:, u_idx].max(axis=1)
    right_s = s_idx[np.argmax(scores[:, s_idx], axis=1)] == targets
    right_u = u_idx[np.argmax(scores[:, u_idx], axis=1)] == targets
    right = np.where(is_seen, right_s, right_u)
    return best_s - best_u, right, is_seen


def accuracies(
    scores: Float32Array,
    targets: IntArray,
    seen: Sequence[int],
    unseen: Sequence[int],
    gamma: float,
) -> tuple[float, float]:
    """(seen accuracy, unseen accuracy) of top-1 among all labels, seen scores less gamma.

    Ties go to the seen label (a seen image is predicted seen iff gamma < d)."""
    d, right, is_seen = _parts(scores, targets, seen, unseen)
    seen_acc = float(np.mean(right[is_seen] & (gamma < d[is_seen]))) if is_seen.any() else 0.0
    unseen_ok = right[~is_seen] & (gamma >= d[~is_seen])
    unseen_acc = float(np.mean(unseen_ok)) if (~is_seen).any() else 0.0
    return seen_acc, unseen_acc


def curve(
    scores: Float32Array, targets: IntArray, seen: Sequence[int], unseen: Sequence[int]
) -> Curve:
    """The whole seen-unseen curve: one point below every step, one above the last."""
    d, right, is_seen = _parts(scores, targets, seen, unseen)
    steps = np.unique(d)
    gammas = np.concatenate([[steps[0] - 1.0], steps, [steps[-1] + 1.0]])
    ds, du = d[is_seen & right], d[~is_seen & right]
    n_s, n_u = max(int(is_seen.sum()), 1), max(int((~is_seen).sum()), 1)
    # seen right iff gamma < d; unseen right iff gamma >= d
    seen_acc = (len(ds) - np.searchsorted(np.sort(ds), gammas, side="right")) / n_s
    unseen_acc = np.searchsorted(np.sort(du), gammas, side="right") / n_u
    return Curve(gammas, seen_acc.astype(np.float64), unseen_acc.astype(np.float64))


def best_gamma(curves: Sequence[Curve]) -> tuple[float, float]:
    """The gamma with the best mean H over `curves` (validation folds), and that H.

    Candidates are the midpoints between every fold's steps, so the choice sits inside a
    flat stretch of each curve rather than on an edge."""
    steps = np.unique(np.concatenate([c.gammas for c in curves]))
    cands = np.concatenate([(steps[:-1] + steps[1:]) / 2, steps]) if len(steps) > 1 else steps
    best, best_h = 0.0, -1.0
    for g in np.sort(cands):
        hs = []
        for c in curves:
            i = int(np.searchsorted(c.gammas, g, side="right")) - 1
            i = min(max(i, 0), len(c.gammas) - 1)
            hs.append(float(c.h[i]))
        h = float(np.mean(hs))
        if h > best_h + 1e-12:
            best, best_h = float(g), h
    return best, best_h


def harmonic(seen_acc: float, unseen_acc: float) -> float:
    return 2 * seen_acc * unseen_acc / (seen_acc + unseen_acc) if seen_acc + unseen_acc else 0.0


def metrics(
    scores: Float32Array,
    targets: IntArray,
    seen: Sequence[int],
    unseen: Sequence[int],
    gamma: float,
) -> dict[str, float]:
    """The eval keys: gzsl_seen@1, gzsl_unseen@1, gzsl_H at `gamma`, gamma, ausuc."""
    s, u = accuracies(scores, targets, seen, unseen, gamma)
    return {
        "gzsl_seen@1": s,
        "gzsl_unseen@1": u,
        "gzsl_H": harmonic(s, u),
        "gamma": float(gamma),
        "ausuc": curve(scores, targets, seen, unseen).ausuc(),
    }


def chance(n_seen: int, n_unseen: int) -> dict[str, float]:
    """Random scores: any bias moves a fraction q of predictions to the seen group, so seen
    accuracy is q/|S| and unseen (1-q)/|U|: a straight line of area 1/(2|S||U|); at q = |S|/L
    both accuracies and H are 1/L."""
    n = n_seen + n_unseen
    return {
        "gzsl_seen@1": 1.0 / n,
        "gzsl_unseen@1": 1.0 / n,
        "gzsl_H": 1.0 / n,
        "ausuc": 1.0 / (2 * n_seen * n_unseen),
    }
