"""The hinge+cosine and distance-margin losses against hand computations on a toy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.embedders.devise import LOSSES, cosine_loss, hinge_rank_loss


def _toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    labels = F.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=-1)
    pred = F.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0]]), dim=-1)
    return pred, torch.tensor([0, 2]), labels


def test_hinge_cosine_is_the_sum_of_both() -> None:
    pred, y, lv = _toy()
    want = hinge_rank_loss(pred, y, lv, 0.1) + cosine_loss(pred, y, lv)
    assert torch.allclose(LOSSES["hinge+cosine"](pred, y, lv, 0.1), want)


def test_distance_margin_by_hand() -> None:
    pred, y, lv = _toy()
    scores = pred @ lv.T
    dist = 1.0 - lv[y] @ lv.T
    scale = dist.mean()
    total = 0.0
    for i in range(2):
        for j in range(3):
            if j != int(y[i]):
                m = 0.5 * float(dist[i, j]) / float(scale)
                total += max(0.0, m - float(scores[i, y[i]]) + float(scores[i, j]))
    got = float(LOSSES["hinge-dist"](pred, y, lv, 0.5))
    assert abs(got - total / 2) < 1e-5
    # a near wrong label asks for a smaller margin than a far one
    assert dist[0, 1] < dist[0, 2]
