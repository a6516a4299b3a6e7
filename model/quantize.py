"""INT8 backbones: OpenVINO post-training quantisation with NNCF, calibrated on real images.

`--precision int8` runs a backbone whose convolutions and matrix products were quantised to
8 bits by NNCF (the maintained tool for OpenVINO models). The scales come from a
calibration set of a few hundred real images, preprocessed as the backbone's own inputs:

- the demo's training images: Fashion-MNIST's training split, the same stratified choice
  `devise demo` trains on (a smaller limit keeps a subset of a larger one's images);
- scikit-image's real photos (cat, coffee, astronaut, rocket, ...);
- Debian darknet's photos (`/usr/share/darknet/data/*.jpg`: dog, eagle, giraffe, ...).

What is present is used; fewer than `MIN_CALIBRATION` images is an error, since scales from
a handful of pictures would be guesses.

Quantising every layer is not safe on every backbone: efficientnet_lite0's int8 features
agreed with fp32 only to cosine 0.85 at worst (its stem and the layers at full resolution,
and a few later ones, carry the error), under the 0.995 that the first-batch check asks,
so `--precision int8` always fell back to fp32 there. The quantisation is therefore NNCF's
accuracy-controlled one (`nncf.quantize_with_accuracy_control`): after quantising, it ranks
the quantised layers by how much each one costs and puts them back to fp32, worst first,
until every validation image's features agree with fp32's to `INT8_MIN_COSINE` (a margin
over the first-batch check's 0.995). The validation images are the real photos and
`FASHION_VALIDATION` Fashion-MNIST training images that calibration does not use. A backbone
whose every layer holds (resnet50 here) loses nothing to this; one that cannot be brought
there raises `QuantizeError`, and the backbone runs fp32. What the control chose once for a
backbone's weights can be given in its spec (`int8_fp32_convs`, `int8_fp32_names`): those
layers stay fp32 from the start and the control only checks them, in seconds.

The validation photos are also calibration photos (there are too few to split), so they
say little about photos neither saw: on 15 such pictures efficientnet_lite0's int8 features
came to 0.955 at worst (README, "Precision"); the first-batch check is the guard there.

The quantised model is cached beside the compiled fp32 one (`model.fastpath`), keyed by the
recipe (`INT8_RECIPE`), the layers kept fp32 from the start and NNCF's version, so it is
made once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from model import openvino_core
from model.data.images import Preprocess, load_array, to_array
from model.openvino_core import cosines
from model.specs import INT8_MIN_COSINE, SAME_VECTORS_COSINE

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

#: Fashion-MNIST training images in the calibration set (the rest are real photos).
FASHION_CALIBRATION = 256
#: Fashion-MNIST training images, not among the calibration ones, in the validation set.
FASHION_VALIDATION = 40
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
def calibration_arrays(spec: Preprocess) -> tuple[Float32Array, Float32Array]:
    """The calibration and validation images as (N, 3, size, size) float32 inputs.

    Calibration: `FASHION_CALIBRATION` Fashion-MNIST training images and every real photo.
    Validation: the real photos again (there are too few to split) and `FASHION_VALIDATION`
    other Fashion-MNIST training images."""
    arrays: list[Float32Array] = []
    held: list[Float32Array] = []
    try:
        from model.data.datasets import read_fashion_mnist, stratified_indices

        images, labels = read_fashion_mnist("train", progress=False)
        chosen = stratified_indices(labels, FASHION_CALIBRATION)
        more = stratified_indices(labels, FASHION_CALIBRATION + FASHION_VALIDATION)
        for i in chosen:
            arrays.append(to_array(Image.fromarray(images[i]), spec))
        for i in sorted(set(more) - set(chosen)):
            held.append(to_array(Image.fromarray(images[i]), spec))
    except Exception as e:  # noqa: BLE001 - absent dataset: the photos alone may suffice
        log.info("int8 calibration without Fashion-MNIST (%s)", e)
    photos: list[Float32Array] = []
    try:
        from model.data.datasets import PHOTO_LABELS, _photo_array

        for name in PHOTO_LABELS:
            photos.append(to_array(Image.fromarray(_photo_array(name)), spec))
    except Exception as e:  # noqa: BLE001 - no scikit-image
        log.info("int8 calibration without scikit-image's photos (%s)", e)
    for p in sorted(DARKNET_PHOTOS.glob("*.jpg")):
        try:
            photos.append(load_array(p, spec))
        except Exception as e:  # noqa: BLE001 - one unreadable photo is skipped
            log.info("int8 calibration skips %s (%s)", p, e)
    arrays += photos
    if len(arrays) < MIN_CALIBRATION:
        raise QuantizeError(
            f"int8 needs at least {MIN_CALIBRATION} calibration images, found {len(arrays)} "
            "(Fashion-MNIST, scikit-image's photos, /usr/share/darknet/data): use --precision "
            "fp32 or bf16"
        )
    return np.stack(arrays), np.stack(photos + held)


def quantize(
    model: Any,
    calibration: Float32Array,
    validation: Float32Array,
    fp32_convs: tuple[int, ...] = (),
    fp32_names: tuple[str, ...] = (),
) -> Any:
    """An OpenVINO fp32 model quantised to int8 by NNCF on `calibration` (N, 3, H, W), with
    the convolutions at `fp32_convs` (indices in the model's order), the operations whose
    names match `fp32_names`, and the layers that would take any `validation` image's
    features below `INT8_MIN_COSINE` against fp32 kept in fp32 (NNCF's accuracy control);
    `QuantizeError` when no such model is found."""
    if nncf_version() is None:
        raise QuantizeError("--precision int8 needs NNCF: pip install nncf")
    import nncf

    # NNCF logs every layer it handles at INFO, on standard output: a user's run shows our
    # one line and NNCF's progress bars, `devise -v` all of it
    nncf.set_log_level(logging.INFO if log.isEnabledFor(logging.DEBUG) else logging.WARNING)
    core = openvino_core.core()
    fp32 = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = [np.asarray(fp32(validation[i : i + 1])[0]) for i in range(len(validation))]

    def agreement(compiled: Any, items: Any) -> tuple[float, list[float]]:
        """The worst image's cosine against fp32, and every image's (NNCF ranks layers by
        the latter)."""
        values = [float(cosines(ref, np.asarray(compiled(x)[0]))[0]) for x, ref in items]
        return min(values), values

    convolutions = [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in ("Convolution", "GroupConvolution")
    ]
    names = [convolutions[i] for i in fp32_convs if i < len(convolutions)]
    # a pattern that names nothing (another converter's names) is no error: the accuracy
    # control then finds what it would have kept
    ignored = (
        nncf.IgnoredScope(names=names, patterns=list(fp32_names), validate=False)
        if names or fp32_names
        else None
    )
    log.info(
        "quantising to int8 on %d calibration images, checked on %d (once; cached)",
        len(calibration),
        len(validation),
    )
    calib = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    items = [(validation[i : i + 1], reference[i]) for i in range(len(validation))]
    valid = nncf.Dataset(items, lambda item: item[0])
    # NNCF draws its progress bars on standard output, which belongs to the command's
    # answer (`devise tag --json`): they go to standard error, with the other progress bars
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize_with_accuracy_control(
            model,
            calib,
            valid,
            agreement,
            max_drop=1.0 - INT8_MIN_COSINE,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(calibration),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            ignored_scope=ignored,
        )
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    worst, _ = agreement(compiled, items)
    if worst < SAME_VECTORS_COSINE:
        raise QuantizeError(
            f"no int8 model keeps every validation image's features at cosine "
            f"{SAME_VECTORS_COSINE} against fp32 (worst {worst:.4f}): use --precision fp32 "
            "or bf16"
        )
    log.info("int8: the worst validation image's features at cosine %.4f against fp32", worst)
    return quantized
