"""Labelled image folders, and backbone features extracted once and cached on disk.

The cache key covers the backbone, its weights, the numeric precision, the device numerics
(`Backbone.numerics`: what ran it, in which format: `cpu-openvino-bf16`, `cpu-torch-fp32`,
`cuda-bfloat16-autocast`, ...) and the file list (path, size, mtime). Features are stored as
fp32 arrays whatever made them, but bf16 or int8 features are never read for an fp32 run,
nor the other way round. A run whose numerics change on the way (bf16 that fails its
first-batch check and falls back to fp32) stores its features under what it really ran.
So retraining a projection head costs seconds, not minutes, and any change to the images,
the backbone or its numerics recomputes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from safetensors.numpy import load_file, save_file
from tqdm import tqdm

from model.data.images import is_image_path
from model.data.loader import iter_batches
from model.specs import BackboneLike
from model.vocab.words import label_name

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]


class DataError(ValueError):
    pass


@dataclass
class LabelledImages:
    root: Path
    paths: list[Path]
    targets: npt.NDArray[np.int64]  # index into `labels`
    labels: list[str]  # label names (wnid folders mapped to class names)
    folders: list[str]  # the class folder names, same order as labels


def scan_image_folder(root: Path) -> LabelledImages:
    """An ImageFolder tree: one sub-folder per class, images anywhere beneath it."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(
            f"{root} has no class folders. Expected an ImageFolder tree: {root}/<label>/<image>; "
            "`devise datasets fashion-mnist OUT` writes one."
        )
    paths: list[Path] = []
    targets: list[int] = []
    for ci, folder in enumerate(folders):
        files = sorted(
            Path(dp) / f
            for dp, _, fs in os.walk(root / folder, followlinks=False)
            for f in fs
            if is_image_path(f)
        )
        paths.extend(files)
        targets.extend([ci] * len(files))
    if not paths:
        raise DataError(f"{root} has class folders but no image files")
    return LabelledImages(
        root, paths, np.asarray(targets, dtype=np.int64), [label_name(f) for f in folders], folders
    )


def _cache_key(backbone: BackboneLike, paths: list[Path]) -> str:
    h = hashlib.sha256()
    meta = [backbone.name, backbone.weights_id, backbone.precision, backbone.numerics]
    h.update(json.dumps(meta).encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:24]


def _cache_file(cache_dir: Path, backbone: BackboneLike, paths: list[Path]) -> Path:
    key = _cache_key(backbone, paths)
    return Path(cache_dir) / "features" / f"{backbone.name}-{key}.safetensors"


@dataclass
class Features:
    features: Float32Array  # (n_ok, D)
    ok: npt.NDArray[np.int64]  # positions in the input path list that decoded
    seconds: float  # extraction wall time (0 when read from the cache)
    cached: bool


def extract_features(
    backbone: BackboneLike,
    paths: list[Path],
    *,
    batch_size: int = 64,
    workers: int | None = None,
    cache_dir: Path | None = None,
    desc: str = "features",
) -> Features:
    """Pooled backbone features of every decodable image; bad files are logged and skipped."""
    cache_file = None
    if cache_dir is not None:
        cache_file = _cache_file(cache_dir, backbone, paths)
        if cache_file.is_file():
            try:
                d = load_file(str(cache_file))
                return Features(d["features"], d["ok"].astype(np.int64), 0.0, True)
            except Exception as e:  # noqa: BLE001 - a corrupt cache is recomputed, not fatal
                log.warning("ignoring unreadable feature cache %s: %s", cache_file, e)
    torch.set_grad_enabled(False)
    feats: list[Float32Array] = []
    ok: list[int] = []
    t0 = time.perf_counter()
    with tqdm(total=len(paths), desc=desc, unit="img", dynamic_ncols=True) as bar:
        # a GPU backbone gets its batches decoded onto the GPU (nvJPEG, pinned copies)
        device = getattr(backbone, "device", None)
        for batch in iter_batches(
            paths, backbone.spec.preprocess, batch_size, workers, device=device
        ):
            for _, err in batch.failures:
                tqdm.write(f"skipping {err}")  # ImageError says "PATH: reason (detail)"
            if batch.indices:
                feats.append(backbone.features(batch.array))
                ok.extend(batch.indices)
            bar.update(len(batch.indices) + len(batch.failures))
    torch.set_grad_enabled(True)
    seconds = time.perf_counter() - t0
    out = Features(
        np.concatenate(feats) if feats else np.zeros((0, backbone.feature_dim), np.float32),
        np.asarray(ok, dtype=np.int64),
        seconds,
        False,
    )
    if cache_dir is not None:
        # the key again: bf16 that fell back to fp32 on the first batch made fp32 features
        cache_file = _cache_file(cache_dir, backbone, paths)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
        os.close(fd)
        save_file({"features": out.features, "ok": out.ok}, tmp)
        os.replace(tmp, cache_file)
    return out
