"""INT8 backbones: OpenVINO post-training quantisation with NNCF, calibrated on real images.

`--precision int8` runs a backbone whose convolutions and matrix products were quantised to
8 bits by `nncf.quantize` (the maintained tool for OpenVINO models). The scales come from a
calibration set of a few hundred real images, preprocessed as the backbone's own inputs:

- the demo's training images: Fashion-MNIST's training split, the same stratified choice
  `devise demo` trains on (a smaller limit keeps a subset of a larger one's images);
- scikit-image's real photos (cat, coffee, astronaut, rocket, ...);
- Debian darknet's photos (`/usr/share/darknet/data/*.jpg`: dog, eagle, giraffe, ...).

What is present is used; fewer than `MIN_CALIBRATION` images is an error, since scales from
a handful of pictures would be guesses. The quantised model is cached beside the compiled
fp32 one (`model.fastpath`), keyed by the calibration set, so it is made once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from model.data.images import Preprocess, load_array, to_array

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

#: Fashion-MNIST training images in the calibration set (the rest are real photos).
FASHION_CALIBRATION = 256
#: Below this many calibration images, no int8 model is made.
MIN_CALIBRATION = 64
DARKNET_PHOTOS = Path("/usr/share/darknet/data")


class QuantizeError(RuntimeError):
    """No int8 model can be made here: NNCF is absent, or too few calibration images."""


def nncf_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=4)
def calibration_arrays(spec: Preprocess) -> tuple[Float32Array, str]:
    """The calibration images as (N, 3, size, size) float32 inputs, and an id of the set
    (what it holds and how it was preprocessed) for the cache key."""
    arrays: list[Float32Array] = []
    names: list[str] = []
    try:
        from model.data.datasets import read_fashion_mnist, stratified_indices

        images, labels = read_fashion_mnist("train", progress=False)
        for i in stratified_indices(labels, FASHION_CALIBRATION):
            arrays.append(to_array(Image.fromarray(images[i]), spec))
            names.append(f"fashion:{i}")
    except Exception as e:  # noqa: BLE001 - absent dataset: the photos alone may suffice
        log.info("int8 calibration without Fashion-MNIST (%s)", e)
    try:
        from model.data.datasets import PHOTO_LABELS, _photo_array

        for name in PHOTO_LABELS:
            arrays.append(to_array(Image.fromarray(_photo_array(name)), spec))
            names.append(f"skimage:{name}")
    except Exception as e:  # noqa: BLE001 - no scikit-image
        log.info("int8 calibration without scikit-image's photos (%s)", e)
    for p in sorted(DARKNET_PHOTOS.glob("*.jpg")):
        try:
            arrays.append(load_array(p, spec))
            names.append(f"darknet:{p.name}")
        except Exception as e:  # noqa: BLE001 - one unreadable photo is skipped
            log.info("int8 calibration skips %s (%s)", p, e)
    if len(arrays) < MIN_CALIBRATION:
        raise QuantizeError(
            f"int8 needs at least {MIN_CALIBRATION} calibration images, found {len(arrays)} "
            "(Fashion-MNIST, scikit-image's photos, /usr/share/darknet/data): use --precision "
            "fp32 or bf16"
        )
    digest = hashlib.sha256(repr((names, spec)).encode()).hexdigest()[:16]
    return np.stack(arrays), f"calib-{len(arrays)}-{digest}"


def quantize(model: Any, calibration: Float32Array) -> Any:
    """An OpenVINO fp32 model quantised to int8 by NNCF on `calibration` (N, 3, H, W)."""
    if nncf_version() is None:
        raise QuantizeError("--precision int8 needs NNCF: pip install nncf")
    import nncf

    batches = [calibration[i : i + 1] for i in range(len(calibration))]
    log.info("quantising to int8 on %d calibration images (once; cached)", len(batches))
    return nncf.quantize(
        model,
        nncf.Dataset(batches),
        subset_size=len(batches),
        preset=nncf.QuantizationPreset.PERFORMANCE,
    )
