"""What a photo holds beyond its main subject: the ImageNet classes of its regions.

The whole photo is read at 224 px, centre-cropped: a dragonfly filling 5% of the frame is a
few cells of the 7x7 feature map and the leaves around it win. Regions read it at more than
one place. Two ways, both measured by `bench/bench_regions.py`:

- `windows`: one pass of the backbone over the whole picture (not cropped) with its short
  side at `side` px, then the classifier on the feature map pooled over windows of half the
  picture's width and height on a 3x3 grid (and the whole map). EfficientNet only: a
  ResNet's pooling is inside its body.
- `crops`: the same 3x3 grid of half-size crops, each resized to 224 px and through the
  backbone on its own: nine passes.

A region keeps its top classes with their probabilities and its box (fractions of the
picture's width and height); the rule of which region concepts count, and how much, is the
search's (app/search/regions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from model.data.images import Preprocess

Float32Array = npt.NDArray[np.float32]
Box = tuple[float, float, float, float]
METHODS = ("windows", "crops")
#: a region's top classes kept in the payload (what its concepts' mass is summed from)
REGION_TOP = 5
#: a concept counts in a region from this much of the region's probability mass. Chosen on
#: the tuning half of bench/scenes.py's 72 scenes (crops): at 0.3 a scene's subjects were
#: found 16 times of 40 and regions added 0.75 labels per scene that the whole photo lacks;
#: at 0.45, 15 of 40 and 0.42 (the noise halves, the finds stay); 0.5 lost more finds. The
#: held-out half, untouched while tuning: 12 of 40, 0.53 labels per scene. It is above the
#: issue's noise (leaves read as a monkey at 0.32 of a crop)
REGION_MIN = 0.45
#: the grid: windows of half the picture on a 3x3 grid of positions (stride a quarter)
GRID = 3
FRACTION = 0.5


@dataclass(frozen=True)
class RegionSpec:
    """How regions are read: `method` (windows or crops) and, for windows, the short side
    of the one pass in pixels."""

    method: str = "windows"
    side: int = 448

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"region method must be one of {', '.join(METHODS)}")


def grid_boxes(grid: int = GRID, fraction: float = FRACTION) -> list[Box]:
    """Boxes of `fraction` of the width and height, on a grid x grid of positions."""
    step = (1.0 - fraction) / (grid - 1) if grid > 1 else 0.0
    return [
        (x * step, y * step, x * step + fraction, y * step + fraction)
        for y in range(grid)
        for x in range(grid)
    ]


def _normalised(im: Image.Image, size: tuple[int, int], spec: Preprocess) -> Float32Array:
    """(3, H, W), normalised as the backbone's own input. numpy, not torch: reading regions
    with a compiled backbone, and every query that only reads their payload, import no torch
    (`devise tag` on a compiled backbone imports none, tests/test_fastpath.py)."""
    arr = np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32)
    mean = np.asarray(spec.mean, np.float32) * 255.0
    std = np.asarray(spec.std, np.float32) * 255.0
    return np.ascontiguousarray(((arr - mean) / std).transpose(2, 0, 1), dtype=np.float32)


def _softmax(logits: Float32Array) -> Float32Array:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def window_probs(backbone: Any, image: Image.Image, side: int) -> tuple[Float32Array, list[Box]]:
    """One pass over the whole picture (short side `side`, both sides multiples of 32):
    (R, 1000) class probabilities of the grid's windows of its feature map, and their boxes.
    Eager torch (the bench compares it; ingest reads crops)."""
    import torch

    w, h = image.size
    scale = side / min(w, h)
    size = (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
    x = torch.from_numpy(_normalised(image, size, backbone.spec.preprocess))[None]
    with torch.inference_mode():
        fmap = backbone.body(x.contiguous(memory_format=torch.channels_last)).float()[0]
        _, gh, gw = fmap.shape
        boxes = grid_boxes()
        pooled = []
        for x0, y0, x1, y1 in boxes:
            c0, c1 = round(x0 * gw), max(round(x1 * gw), round(x0 * gw) + 1)
            r0, r1 = round(y0 * gh), max(round(y1 * gh), round(y0 * gh) + 1)
            pooled.append(fmap[:, r0:r1, c0:c1].mean(dim=(1, 2)))
        feats = torch.stack(pooled).numpy()
    return _softmax(backbone.logits(feats)), boxes


def crop_probs(backbone: Any, image: Image.Image) -> tuple[Float32Array, list[Box]]:
    """(R, 1000) class probabilities of the grid's crops, each through the backbone at its
    own input size, and their boxes."""
    w, h = image.size
    size = backbone.spec.preprocess.size
    boxes = grid_boxes()
    batch = np.stack(
        [
            _normalised(
                image.crop((x0 * w, y0 * h, x1 * w, y1 * h)), (size, size), backbone.spec.preprocess
            )
            for x0, y0, x1, y1 in boxes
        ]
    )
    feats = backbone.features(batch)
    return _softmax(backbone.logits(feats)), boxes


def read_regions(
    backbone: Any, images: Sequence[Image.Image], spec: RegionSpec
) -> list[list[dict[str, Any]]]:
    """Per picture, its regions: `{"box": [x0, y0, x1, y1], "top": [[class, p], ...]}`,
    the REGION_TOP most probable classes of each (the payload's form)."""
    out = []
    for im in images:
        if spec.method == "windows":
            probs, boxes = window_probs(backbone, im, spec.side)
        else:
            probs, boxes = crop_probs(backbone, im)
        regions = []
        for p, box in zip(probs, boxes, strict=True):
            top = np.argsort(-p)[:REGION_TOP]
            regions.append(
                {
                    "box": [round(v, 4) for v in box],
                    "top": [[int(i), round(float(p[i]), 4)] for i in top],
                }
            )
        out.append(regions)
    return out


def region_concepts(region: dict[str, Any]) -> list[tuple[int, float]]:
    """(concept index, mass) of the concepts a region holds at least REGION_MIN of."""
    from model.vocab.hierarchy import imagenet_concepts

    row = np.zeros(1000, np.float32)
    for i, p in region["top"]:
        row[int(i)] = float(p)
    mass = imagenet_concepts().mass(row[None], None)[0]
    return [(int(i), float(mass[i])) for i in np.flatnonzero(mass >= REGION_MIN)]


def region_keys(regions: Sequence[dict[str, Any]]) -> set[str]:
    """The keys (wnids) of every concept some region holds (`region_concepts`)."""
    from model.vocab.hierarchy import imagenet_concepts

    cs = imagenet_concepts()
    return {cs.concepts[i].key for r in regions for i, _ in region_concepts(r)}
