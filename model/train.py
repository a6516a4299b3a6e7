"""`devise train`: fit the DeViSE projection (and a softmax probe) on cached frozen features."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from model.backbones import RANDOM_INIT, Backbone, load_backbone
from model.checkpoint import save_checkpoint
from model.data.features import (
    DataError,
    Features,
    LabelledImages,
    extract_features,
    scan_image_folder,
)
from model.device import Device, autocast_dtype, pick
from model.embedders.devise import LOSSES, DeviseHead, HeadKind, LossKind
from model.vocab.words import DEFAULT_WORDS, WordVectors, load_words

log = logging.getLogger(__name__)
IntArray = npt.NDArray[np.int64]


@dataclass
class TrainConfig:
    backbone: str = "efficientnet_lite0"
    weights: str | None = "default"  # None: random init (tests only)
    words: str = DEFAULT_WORDS
    holdout: tuple[str, ...] = ()
    loss: LossKind = "hinge"
    head: HeadKind = "linear"
    margin: float = 0.1
    # label vectors moved towards their WordNet hypernyms (model/vocab/hierarchy.py); 0: off
    hypernym_weight: float = 0.5
    hypernym_depth: int = 3
    epochs: int = 40
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    extract_batch_size: int = 64
    val_fraction: float = 0.2
    seed: int = 0
    workers: int | None = None
    precision: str = "fp32"
    cache_dir: Path | None = None
    finetune_epochs: int = 0  # > 0: then unfreeze the backbone's last stage for this many
    finetune_lr: float = 1e-4
    #: "auto", "cpu", "cuda[:N]"; None: the process default (`model.device.default_device`)
    device: str | None = None


@dataclass
class TrainResult:
    checkpoint: Path
    content_hash: str
    metrics: dict[str, float]
    losses: list[float] = field(default_factory=list)


def resolve_holdout(data: LabelledImages, holdout: tuple[str, ...]) -> list[int]:
    """Class indices of the hold-out labels, matched by label or folder name."""
    idx: list[int] = []
    unknown: list[str] = []
    for h in holdout:
        h = h.strip()
        if not h:
            continue
        hits = [
            i
            for i, (lab, fol) in enumerate(zip(data.labels, data.folders, strict=True))
            if h.lower() in (lab.lower(), fol.lower())
        ]
        if hits:
            idx.extend(hits)
        else:
            unknown.append(h)
    if unknown:
        raise DataError(
            f"--holdout names unknown label(s) {', '.join(map(repr, unknown))}; "
            f"the labels are: {', '.join(data.labels)}"
        )
    if len(set(idx)) >= len(data.labels):
        raise DataError("--holdout cannot hold out every label: nothing would be left to train on")
    return sorted(set(idx))


def split_indices(
    targets: IntArray, holdout: list[int], val_fraction: float, seed: int
) -> tuple[IntArray, IntArray, IntArray]:
    """(train, val, zeroshot) positions: a seeded stratified split of the seen classes."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for c in np.unique(targets):
        pos = np.flatnonzero(targets == c)
        if c in holdout:
            continue
        pos = rng.permutation(pos)
        n_val = int(round(len(pos) * val_fraction)) if len(pos) > 1 else 0
        val.extend(pos[:n_val].tolist())
        train.extend(pos[n_val:].tolist())
    zeroshot = np.flatnonzero(np.isin(targets, holdout))
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(val, np.int64)), zeroshot


def hits_at(scores: torch.Tensor, target: torch.Tensor, k: int) -> float:
    if len(target) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == target[:, None]).any(dim=1).float().mean())


def _fit(
    model: nn.Module,
    loss_fn: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    val_scores: Any,
    cfg: TrainConfig,
    desc: str,
) -> tuple[nn.Module, list[float], float]:
    """Adam on minibatches; keeps the epoch with the best validation hit@1."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    losses: list[float] = []
    best, best_state = -1.0, copy.deepcopy(model.state_dict())
    with tqdm(range(cfg.epochs), desc=desc, unit="epoch", dynamic_ncols=True) as bar:
        for _ in bar:
            model.train()
            perm = torch.randperm(len(x), generator=gen)
            total, n = 0.0, 0
            for i in range(0, len(x), cfg.batch_size):
                b = perm[i : i + cfg.batch_size]
                if len(b) < 2 and len(x) >= 2:
                    continue  # BatchNorm in the mlp head needs two samples
                loss = loss_fn(model(x[b]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
                n += len(b)
            sched.step()
            losses.append(total / max(1, n))
            model.eval()
            with torch.no_grad():
                score = hits_at(val_scores(model(xv)), yv, 1) if len(xv) else -losses[-1]
            if score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
            if len(xv):
                bar.set_postfix(loss=f"{losses[-1]:.4f}", val_hit1=f"{score:.3f}")
            else:  # no validation images (the calibration folds): the score is -loss
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.load_state_dict(best_state)
    model.eval()
    return model, losses, best


@dataclass
class _Split:
    """One run's features and targets on its device, split into train and validation."""

    x_all: torch.Tensor
    targets: IntArray
    tr: IntArray
    va: IntArray
    x: torch.Tensor
    xv: torch.Tensor  # replaced by the fine-tuned backbone's, after fine-tuning
    y_seen: torch.Tensor  # targets as indices into the seen labels (-1: a hold-out label)
    y_all: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def train(
    data_dir: Path, out: Path, cfg: TrainConfig, words: WordVectors | None = None
) -> TrainResult:
    """Train DeViSE on an ImageFolder tree and write a checkpoint to `out`."""
    data = scan_image_folder(data_dir)
    holdout = resolve_holdout(data, cfg.holdout)
    words = words or load_words(cfg.words)
    # Every label must map to a vector before any expensive work starts.
    from model.vocab.hierarchy import hypernym_label_matrix

    matrix, hypernyms = hypernym_label_matrix(
        words, data.labels, cfg.hypernym_weight, cfg.hypernym_depth
    )
    seen = [i for i in range(len(data.labels)) if i not in holdout]

    device = pick(cfg.device)
    td = device.torch_name
    backbone = load_backbone(cfg.backbone, cfg.weights, cfg.precision, device=device)
    feats = extract_features(
        backbone,
        data.paths,
        batch_size=cfg.extract_batch_size,
        workers=cfg.workers,
        cache_dir=cfg.cache_dir,
        desc=f"{backbone.name} features",
    )
    s = _split(data_dir, data, feats, holdout, seen, cfg, td)
    label_vectors = torch.from_numpy(matrix).to(td)

    t0 = time.perf_counter()
    head, losses = _fit_devise(backbone.feature_dim, words.dim, s, label_vectors, seen, cfg, td)
    if cfg.finetune_epochs > 0:
        losses.extend(_finetune(backbone, head, data, feats, s, label_vectors[seen], cfg, device))
    fit_seconds = time.perf_counter() - t0
    calibration = calibrate(
        s.x_all,
        s.targets,
        s.tr,
        s.va,
        seen,
        holdout,
        label_vectors,
        cfg,
        backbone.feature_dim,
        words.dim,
    )
    probe = _fit_probe(backbone.feature_dim, len(seen), s, cfg, td)

    metrics = _metrics(head, probe, s, label_vectors, losses, fit_seconds)
    metrics["skipped"] = float(len(data.paths) - len(feats.ok))
    if not feats.cached and feats.seconds > 0:
        metrics["extract_img_per_s"] = len(feats.ok) / feats.seconds
    tensors = _checkpoint_tensors(head, probe, label_vectors, backbone, cfg)
    meta = _checkpoint_meta(
        data_dir, data, backbone, words, cfg, holdout, seen, hypernyms, metrics, calibration
    )
    digest = save_checkpoint(Path(out), tensors, meta)
    return TrainResult(Path(out), digest, metrics, losses)


def _split(
    data_dir: Path,
    data: LabelledImages,
    feats: Features,
    holdout: list[int],
    seen: list[int],
    cfg: TrainConfig,
    td: str,
) -> _Split:
    targets = data.targets[feats.ok]
    # the projection and the probe train on the chosen device too (from fp32 features)
    x_all = torch.from_numpy(feats.features).to(td)
    tr, va, _ = split_indices(targets, holdout, cfg.val_fraction, cfg.seed)
    if len(tr) == 0:
        raise DataError(f"no training images left in {data_dir} after hold-out and validation")
    # Targets re-indexed into the seen labels: the model never sees a hold-out vector.
    seen_index = {c: i for i, c in enumerate(seen)}
    y_seen = torch.tensor([seen_index.get(int(t), -1) for t in targets]).to(td)
    y_all = torch.from_numpy(targets).to(td)
    x, xv = x_all[tr], x_all[va]
    mean, std = x.mean(0), x.std(0) if len(x) > 1 else torch.ones(x.shape[1], device=td)
    return _Split(x_all, targets, tr, va, x, xv, y_seen, y_all, mean, std)


def _fit_devise(
    feature_dim: int,
    word_dim: int,
    s: _Split,
    label_vectors: torch.Tensor,
    seen: list[int],
    cfg: TrainConfig,
    td: str,
) -> tuple[DeviseHead, list[float]]:
    """The DeViSE head fitted on the frozen features; and its loss per epoch."""
    torch.manual_seed(cfg.seed)
    head = DeviseHead(feature_dim, word_dim, cfg.head).to(td)
    head.set_feature_stats(s.mean, s.std)
    seen_vectors = label_vectors[seen]
    loss_name = cfg.loss
    fitted, losses, _ = _fit(
        head,
        lambda p, y: LOSSES[loss_name](p, y, seen_vectors, cfg.margin),
        s.x,
        s.y_seen[s.tr],
        s.xv,
        s.y_all[s.va],
        lambda p: p @ label_vectors.T,  # validation ranks among all labels
        cfg,
        "devise",
    )
    return fitted, losses  # type: ignore[return-value]


def _finetune(
    backbone: Backbone,
    head: DeviseHead,
    data: LabelledImages,
    feats: Features,
    s: _Split,
    seen_vectors: torch.Tensor,
    cfg: TrainConfig,
    device: Device,
) -> list[float]:
    """`finetune` on the training images; `s.xv` becomes the changed backbone's validation
    features. Returns the loss per epoch."""
    losses = finetune(
        backbone,
        head,
        [data.paths[i] for i in feats.ok[s.tr]],
        s.y_seen[s.tr],
        seen_vectors,
        cfg,
        device,
    )
    # the backbone changed: validation features must be computed again
    s.xv = torch.from_numpy(
        extract_features(
            backbone,
            [data.paths[i] for i in feats.ok[s.va]],
            batch_size=cfg.extract_batch_size,
            workers=cfg.workers,
            desc="validation features",
        ).features
    ).to(device.torch_name)
    return losses


def _fit_probe(feature_dim: int, n_seen: int, s: _Split, cfg: TrainConfig, td: str) -> nn.Module:
    """The paper's baseline: a softmax classifier on the same frozen features and split."""
    linear = nn.Linear(feature_dim, n_seen)
    probe = nn.Sequential(_Standardize(s.mean, s.std), linear).to(td)
    fitted, _, _ = _fit(
        probe,
        lambda p, y: F.cross_entropy(p, y),
        s.x,
        s.y_seen[s.tr],
        s.xv,
        s.y_seen[s.va],
        lambda p: p,
        cfg,
        "softmax",
    )
    return fitted


def _metrics(
    head: DeviseHead,
    probe: nn.Module,
    s: _Split,
    label_vectors: torch.Tensor,
    losses: list[float],
    fit_seconds: float,
) -> dict[str, float]:
    with torch.no_grad():
        pv = head(s.xv)
        sv = probe(s.xv)
        return {
            "val_flat_hit@1": hits_at(pv @ label_vectors.T, s.y_all[s.va], 1),
            "val_flat_hit@5": hits_at(pv @ label_vectors.T, s.y_all[s.va], 5),
            "val_softmax_hit@1": hits_at(sv, s.y_seen[s.va], 1),
            "val_softmax_hit@5": hits_at(sv, s.y_seen[s.va], 5),
            "train_loss_first": losses[0],
            "train_loss_last": losses[-1],
            "train_loss_best": min(losses),
            "fit_seconds": fit_seconds,
            "n_train": float(len(s.tr)),
            "n_val": float(len(s.va)),
        }


def _checkpoint_tensors(
    head: DeviseHead,
    probe: nn.Module,
    label_vectors: torch.Tensor,
    backbone: Backbone,
    cfg: TrainConfig,
) -> dict[str, torch.Tensor]:
    # the checkpoint is the same whichever device trained it: every tensor from the CPU
    tensors: dict[str, torch.Tensor] = {f"head.{k}": v.cpu() for k, v in head.state_dict().items()}
    tensors.update({f"softmax.{k}": v.cpu() for k, v in probe.state_dict().items()})
    tensors["labels.vectors"] = label_vectors.cpu()
    if backbone.weights_id == RANDOM_INIT or cfg.finetune_epochs > 0:
        # A random or fine-tuned backbone cannot be rebuilt from a name: carry it.
        tensors.update({f"backbone.{k}": v.cpu() for k, v in backbone.state_dict().items()})
    return tensors


def _checkpoint_meta(
    data_dir: Path,
    data: LabelledImages,
    backbone: Backbone,
    words: WordVectors,
    cfg: TrainConfig,
    holdout: list[int],
    seen: list[int],
    hypernyms: dict[str, list[str]],
    metrics: dict[str, float],
    calibration: dict[str, Any],
) -> dict[str, Any]:
    return {
        "backbone": backbone.name,
        "weights": backbone.weights_id,
        "weights_path": str(cfg.weights) if cfg.weights not in (None, "default") else None,
        "words": {"source": words.source, "dim": words.dim},
        "head": cfg.head,
        "finetuned": cfg.finetune_epochs > 0,
        "loss": cfg.loss,
        "margin": cfg.margin,
        "labels": data.labels,
        "folders": data.folders,
        "holdout": [data.labels[i] for i in holdout],
        "seen": [data.labels[i] for i in seen],
        "metrics": metrics,
        "calibration": calibration,
        "label_vectors": {
            "hypernym_weight": cfg.hypernym_weight,
            "hypernym_depth": cfg.hypernym_depth,
            "hypernyms": hypernyms,
        },
        "data": {
            "root": str(Path(data_dir).resolve()),
            "val_fraction": cfg.val_fraction,
            "seed": cfg.seed,
            "files": len(data.paths),
        },
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }


CALIBRATION_FOLDS = 4


def calibrate(
    x_all: torch.Tensor,
    targets: IntArray,
    tr: IntArray,
    va: IntArray,
    seen: list[int],
    holdout: list[int],
    label_vectors: torch.Tensor,
    cfg: TrainConfig,
    feature_dim: int,
    word_dim: int,
) -> dict[str, Any]:
    """Choose calibrated stacking's gamma on validation data only (Chao et al., 2016).

    No unseen label has validation images, so unseen labels are simulated: in each fold a
    group of seen labels is left out of an auxiliary projection fitted on the training split;
    the validation images of every seen label are then ranked among the seen labels, the
    left-out group playing the unseen part. gamma maximises the mean H
    over the folds. Test images are never looked at."""
    from model.gzsl import Curve, best_gamma, curve

    n_group = max(1, min(len(holdout) or 2, len(seen) // 3))
    if len(seen) < 3 or len(va) == 0:
        return {"gamma": 0.0, "folds": 0, "note": "too few seen labels or no validation images"}
    rng = np.random.default_rng(cfg.seed)
    order = [seen[i] for i in rng.permutation(len(seen))]
    groups = [order[i : i + n_group] for i in range(0, len(order), n_group)]
    groups = [g for g in groups if len(g) == n_group][:CALIBRATION_FOLDS]
    curves: list[Curve] = []
    loss_fn = LOSSES[cfg.loss]
    x_va = x_all[torch.from_numpy(np.asarray(va)).to(x_all.device)]
    y_va = targets[va]
    for g in groups:
        fold_seen = [c for c in seen if c not in g]
        index = {c: i for i, c in enumerate(fold_seen)}
        rows = np.asarray([i for i in tr if int(targets[i]) in index], np.int64)
        dev = x_all.device  # the chosen device: CPU or GPU alike
        y = torch.tensor([index[int(targets[i])] for i in rows], device=dev)
        x = x_all[torch.from_numpy(rows).to(dev)]
        torch.manual_seed(cfg.seed)
        head = DeviseHead(feature_dim, word_dim, cfg.head).to(dev)
        ones = torch.ones(x.shape[1], device=dev)
        head.set_feature_stats(x.mean(0), x.std(0) if len(x) > 1 else ones)
        vecs = label_vectors[fold_seen]
        head, _, _ = _fit(  # type: ignore[assignment]
            head,
            lambda p, t, v=vecs: loss_fn(p, t, v, cfg.margin),
            x,
            y,
            x[:0],
            y[:0],
            lambda p: p,
            cfg,
            f"calibrate {len(curves) + 1}/{len(groups)}",
        )
        with torch.no_grad():
            scores = (head(x_va) @ label_vectors.T).float().cpu().numpy()
        # ranked among the seen labels only, as test images are among seen and unseen:
        # the left-out group plays the unseen part (the real hold-out labels have no
        # validation images, and as extra candidates they would only make the folds unlike
        # the test)
        curves.append(curve(scores, y_va, fold_seen, list(g)))
    gamma, h = best_gamma(curves)
    return {
        "gamma": round(gamma, 6),
        "folds": len(curves),
        "val_gzsl_H": round(h, 6),
        "val_ausuc": round(float(np.mean([c.ausuc() for c in curves])), 6),
    }


def finetune(
    backbone: Any,
    head: DeviseHead,
    paths: list[Path],
    targets: torch.Tensor,
    label_vectors: torch.Tensor,
    cfg: TrainConfig,
    device: Device | None = None,
) -> list[float]:
    """Train the backbone's last stage with the head, from images (features change, so
    nothing is cached). BatchNorm statistics stay frozen: batches are small on a CPU.
    On a GPU the forward pass runs under bf16/fp16 autocast (fp16 with a gradient scaler)."""
    from model.data.loader import iter_batches

    device = device or pick(None)
    amp = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

    for p in backbone.parameters():
        p.requires_grad_(False)
    stage = backbone.last_stage()
    for p in stage:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(
        [
            {"params": stage, "lr": cfg.finetune_lr},
            {"params": head.parameters(), "lr": cfg.finetune_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    backbone.eval()
    head.train()
    losses: list[float] = []
    order = np.random.default_rng(cfg.seed).permutation(len(paths))
    batch = min(cfg.extract_batch_size, 32) if not device.is_cuda else cfg.extract_batch_size
    with tqdm(
        total=cfg.finetune_epochs * len(paths), desc="finetune", unit="img", dynamic_ncols=True
    ) as bar:
        for _ in range(cfg.finetune_epochs):
            total, n = 0.0, 0
            shuffled = [paths[i] for i in order]
            for b in iter_batches(
                shuffled, backbone.spec.preprocess, batch, cfg.workers, device=device
            ):
                if len(b.indices) < 2:
                    bar.update(len(b.indices) + len(b.failures))
                    continue
                x = torch.as_tensor(b.array).contiguous(memory_format=torch.channels_last)
                y = targets[torch.from_numpy(order[b.indices]).to(targets.device)]
                if amp is None:
                    loss = LOSSES[cfg.loss](head(backbone(x)), y, label_vectors, cfg.margin)
                else:  # mixed precision forward; the loss itself in fp32
                    with torch.autocast("cuda", dtype=amp):
                        out = head(backbone(x))
                    loss = LOSSES[cfg.loss](out.float(), y, label_vectors, cfg.margin)
                opt.zero_grad()
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total += loss.item() * len(b.indices)
                n += len(b.indices)
                bar.update(len(b.indices) + len(b.failures))
            losses.append(total / max(1, n))
            order = np.random.default_rng(cfg.seed + len(losses)).permutation(len(paths))
    for p in backbone.parameters():
        p.requires_grad_(False)
    head.eval()
    return losses


class _Standardize(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clamp_min(1e-6).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
