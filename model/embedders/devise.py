"""The DeViSE projection (Frome et al., NIPS 2013) and its losses.

The backbone's pooled features are standardised, then projected into the word space by a
linear map M (the paper) or the blog article's Dense-BN-Dropout-Dense head; the output is
unit-norm so that scores against unit word vectors are cosines.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

HeadKind = Literal["linear", "mlp"]
LossKind = Literal["hinge", "cosine", "hinge+cosine", "hinge-dist"]


class DeviseHead(nn.Module):
    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(
        self,
        feature_dim: int,
        word_dim: int,
        kind: HeadKind = "linear",
        hidden: int = 1024,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.kind = kind
        # Standardising the frozen features makes one learning rate fit every backbone.
        self.register_buffer("feat_mean", torch.zeros(feature_dim))
        self.register_buffer("feat_std", torch.ones(feature_dim))
        self.proj: nn.Module
        if kind == "linear":
            self.proj = nn.Linear(feature_dim, word_dim)
        elif kind == "mlp":
            self.proj = nn.Sequential(
                nn.Linear(feature_dim, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, word_dim),
            )
        else:
            raise ValueError(f"unknown head {kind!r}: use linear or mlp")

    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std.clamp_min(1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - self.feat_mean) / self.feat_std
        return F.normalize(self.proj(x), dim=-1)


def hinge_rank_loss(
    pred: torch.Tensor, target: torch.Tensor, label_vectors: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """The paper's loss: sum over wrong labels j of max(0, margin - t_y.Mv + t_j.Mv), batch mean.

    Args:
        pred: (N, D) projected image vectors Mv.
        target: (N,) index of each image's label in `label_vectors`.
        label_vectors: (C, D) unit word vectors t of the training labels.
    """
    scores = pred @ label_vectors.T  # (N, C)
    true = scores.gather(1, target[:, None])  # (N, 1)
    violations = (margin - true + scores).clamp_min(0.0)
    wrong = torch.ones_like(scores, dtype=torch.bool).scatter_(1, target[:, None], False)
    return (violations * wrong).sum(dim=1).mean()


def cosine_loss(
    pred: torch.Tensor, target: torch.Tensor, label_vectors: torch.Tensor, margin: float = 0.0
) -> torch.Tensor:
    """The blog article's regression loss: 1 - cos(Mv, t_y)."""
    del margin
    return (1.0 - (pred * label_vectors[target]).sum(dim=1)).mean()


def hinge_cosine_loss(
    pred: torch.Tensor, target: torch.Tensor, label_vectors: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Hinge rank loss plus the cosine regression term: the hinge orders the seen labels, the
    cosine term pulls the image onto its label's vector, so scores stay comparable with the
    unseen labels' (whose vectors the hinge never pushes down)."""
    return hinge_rank_loss(pred, target, label_vectors, margin) + cosine_loss(
        pred, target, label_vectors
    )


def distance_margin_loss(
    pred: torch.Tensor, target: torch.Tensor, label_vectors: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Hinge rank loss whose margin grows with the word distance between the true and the
    wrong label, margin * (1 - cos(t_y, t_j)) / mean: near labels (sneaker, sandal) need not
    be pushed far apart, which keeps an unseen neighbour's score close to the seen one's."""
    scores = pred @ label_vectors.T
    true = scores.gather(1, target[:, None])
    dist = 1.0 - label_vectors[target] @ label_vectors.T  # (N, C)
    scale = dist.mean().clamp_min(1e-6)
    violations = (margin * dist / scale - true + scores).clamp_min(0.0)
    wrong = torch.ones_like(scores, dtype=torch.bool).scatter_(1, target[:, None], False)
    return (violations * wrong).sum(dim=1).mean()


LOSSES = {
    "hinge": hinge_rank_loss,
    "cosine": cosine_loss,
    "hinge+cosine": hinge_cosine_loss,
    "hinge-dist": distance_margin_loss,
}
