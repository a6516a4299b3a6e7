"""Generalised zero-shot: the seen-unseen curve, AUSUC, H, gamma from validation only, and
the tag bias."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from model import gzsl

# labels 0, 1 seen; 2 unseen. Rows are images, columns label scores.
SCORES = np.array(
    [
        # binary fractions, so that every d is exact
        [1.0, 0.0, 0.5],  # seen 0, right within seen; d = 1.0 - 0.5 = 0.5
        [0.25, 0.75, 0.5],  # seen 1, right; d = 0.25
        [0.625, 0.0, 0.25],  # unseen 2, right within unseen (the only one); d = 0.375
        [0.5, 0.25, 0.25],  # unseen 2; d = 0.25
    ],
    np.float32,
)
TARGETS = np.array([0, 1, 2, 2])


def test_accuracies_by_hand() -> None:
    assert gzsl.accuracies(SCORES, TARGETS, [0, 1], [2], 0.0) == (1.0, 0.0)
    # gamma 0.3: image 1 (d .25) goes unseen (wrong), image 3 (d .25) goes unseen (right)
    assert gzsl.accuracies(SCORES, TARGETS, [0, 1], [2], 0.3) == (0.5, 0.5)
    assert gzsl.accuracies(SCORES, TARGETS, [0, 1], [2], 0.4) == (0.5, 1.0)
    assert gzsl.accuracies(SCORES, TARGETS, [0, 1], [2], 1.0) == (0.0, 1.0)
    assert gzsl.harmonic(0.5, 1.0) == pytest.approx(2 / 3)


def test_curve_and_ausuc_by_hand() -> None:
    c = gzsl.curve(SCORES, TARGETS, [0, 1], [2])
    pts = sorted(set(zip(c.unseen.tolist(), c.seen.tolist(), strict=True)))
    # (unseen, seen): (0, 1) -> (.5, .5) at .25 -> (1, .5) at .375 -> (1, 0) at .5
    assert pts == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0), (1.0, 0.5)]
    # area: trapezoid 0..0.5 of (1 + .5)/2 = .375, then 0.5..1 at .5 = .25
    assert c.ausuc() == pytest.approx(0.625)
    assert float(c.h.max()) == pytest.approx(2 / 3)
    m = gzsl.metrics(SCORES, TARGETS, [0, 1], [2], 0.4)
    assert set(m) == {"gzsl_seen@1", "gzsl_unseen@1", "gzsl_H", "gamma", "ausuc"}
    assert m["gzsl_H"] == pytest.approx(2 / 3) and m["ausuc"] == pytest.approx(0.625)


def test_gamma_comes_from_validation_only() -> None:
    """best_gamma sees only validation curves: test data cannot move it."""
    rng = np.random.default_rng(0)

    def split(n: int, unseen_gap: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 4, n)
        s = rng.normal(0, 0.05, (n, 4)).astype(np.float32)
        s[np.arange(n), y] += 0.5
        s[:, :2] += 0.3  # labels 0, 1 seen: their scores sit too high
        s[np.isin(y, [2, 3]), :2] += unseen_gap
        return s, y

    val_s, val_y = split(400, 0.0)
    g, h = gzsl.best_gamma([gzsl.curve(val_s, val_y, [0, 1], [2, 3])])
    assert 0.0 < g < 0.6 and h > 0.9
    # the same validation data gives the same gamma whatever the test set looks like
    for gap in (0.0, 0.4):
        test_s, test_y = split(400, gap)
        g2, _ = gzsl.best_gamma([gzsl.curve(val_s, val_y, [0, 1], [2, 3])])
        assert g2 == g
        # and on test data like the validation data it is a good operating point
        if gap == 0.0:
            s, u = gzsl.accuracies(test_s, test_y, [0, 1], [2, 3], g)
            assert gzsl.harmonic(s, u) > 0.9


def test_chance_levels() -> None:
    ch = gzsl.chance(8, 2)
    assert ch["gzsl_H"] == pytest.approx(0.1) and ch["ausuc"] == pytest.approx(1 / 32)


def test_errors() -> None:
    with pytest.raises(ValueError, match="both seen and unseen"):
        gzsl.curve(SCORES, TARGETS, [0, 1, 2], [])
    with pytest.raises(ValueError, match="seen or an unseen"):
        gzsl.accuracies(SCORES, np.array([0, 1, 2, 3]), [0, 1], [2], 0.0)


def test_zero_shot_bias_flag() -> None:
    from app.cli import _bias

    assert _bias("auto") == "auto" and _bias("off") == "off" and _bias("0.3") == 0.3
    for bad in ("x", "nan", "5"):
        with pytest.raises(argparse.ArgumentTypeError, match="zero-shot-bias"):
            _bias(bad)
