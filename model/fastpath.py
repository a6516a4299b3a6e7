"""The fast inference path: a torch module compiled by OpenVINO for this CPU.

On a CPU with AVX2 but no native bf16 (no AVX-512 BF16, no AMX), PyTorch's eager
channels_last path runs efficientnet_lite0 at about 1.5x plain fp32 and resnet50 at about
1.3x; OpenVINO's CPU plugin, in fp32 and with the same results (cosine 1.00000 against
eager), runs them at about 5x and 2.7x (`bench/bench_backbones.py` prints the figures).
Where the CPU has native bf16, OpenVINO runs bf16 when asked.

- `runtime`: `auto` (OpenVINO when it is installed), `openvino`, or `torch`; the default comes
  from `$DEVISE_RUNTIME` or `set_default_runtime` (the CLI's `--runtime`).
- The converted model (OpenVINO IR: an .xml graph and a .bin of fp32 weights) is cached on
  disk, keyed by the model, its weights and the library versions, so only the first run of
  a backbone pays for conversion (about 3 s); later runs read and compile it in about 0.1 s.
- Anything that goes wrong in conversion is logged once and the torch path is used instead.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from model.openvino_core import core as _core
from model.openvino_core import cosines
from model.paths import default_cache_dir
from model.specs import (
    INT8_RECIPE,
    SAME_VECTORS_COSINE,
    SpecNamed,
    get_spec,
    resolve_precision,
    warn_precision_fallback,
)

if TYPE_CHECKING:
    from model.specs import BackboneSpec, Precision

log = logging.getLogger(__name__)
Runtime = Literal["auto", "openvino", "torch"]
RUNTIMES: tuple[str, ...] = ("auto", "openvino", "torch")
Float32Array = npt.NDArray[np.float32]

_default_runtime: str | None = None


class RuntimeChoiceError(ValueError):
    """An unknown runtime name, or `openvino` asked for where it is not installed."""


def set_default_runtime(runtime: str | None) -> str | None:
    """Set the runtime that `load_backbone` uses when none is passed (None: `$DEVISE_RUNTIME`,
    else auto); returns the previous setting."""
    if runtime is not None and runtime not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {runtime!r}: use {', '.join(RUNTIMES)}")
    global _default_runtime
    previous, _default_runtime = _default_runtime, runtime
    return previous


def default_runtime() -> str:
    return _default_runtime or os.environ.get("DEVISE_RUNTIME") or "auto"


@functools.lru_cache(maxsize=1)
def openvino_version() -> str | None:
    return _version("openvino")


def resolve_runtime(runtime: str | None) -> Literal["openvino", "torch"]:
    """`auto` -> openvino when installed, else torch; `openvino` when absent is an error."""
    r = runtime or default_runtime()
    if r not in RUNTIMES:
        raise RuntimeChoiceError(f"unknown runtime {r!r}: use {', '.join(RUNTIMES)}")
    if r == "torch":
        return "torch"
    if openvino_version() is None:
        if r == "openvino":
            raise RuntimeChoiceError(
                "runtime openvino asked for, but OpenVINO is not installed: "
                "pip install openvino, or use --runtime torch"
            )
        return "torch"
    return "openvino"


def openvino_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin can run bf16 natively on this CPU."""
    try:
        caps = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no plugin, no capability
        return False
    return "BF16" in caps


def takes_fast_path(precision: str, runtime: str | None = None) -> bool:
    """Whether OpenVINO runs a model: the runtime resolves to it, and bf16, if asked for,
    is native (without it, PyTorch's autocast runs bf16, as asked)."""
    if (runtime or resolve_runtime(None)) != "openvino":
        return False
    return precision != "bf16" or openvino_has_bf16()


class CompiledModel:
    """An OpenVINO model compiled for the CPU: numpy in, the first output out, one call at a
    time (calls from several threads are serialised; the forward pass uses every core)."""

    def __init__(self, compiled: Any, precision: str) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        self.precision = precision
        # float32 pictures for the backbones, int64 token ids for a text tower
        kind = str(compiled.input(0).get_element_type())
        self._dtype = np.int64 if "i64" in kind or "int64" in kind else np.float32

    def __call__(self, x: Float32Array) -> Float32Array:
        with self._lock:
            self._request.infer({0: np.ascontiguousarray(x, dtype=self._dtype)})
            out = self._request.get_output_tensor(0).data
            return np.array(out, dtype=np.float32, copy=True)


def cache_key(parts: list[str]) -> str:
    meta = [
        *parts,
        f"openvino={openvino_version()}",
        f"torch={_version('torch')}",
        f"torchvision={_version('torchvision')}",
    ]
    return hashlib.sha256(json.dumps(meta).encode()).hexdigest()[:20]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def ir_path(name: str, key: str, cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "openvino" / f"{name}-{key}.xml"


def _convert(module: Any, example_shape: tuple[int, ...]) -> Any:
    """A torch module as an OpenVINO model with a dynamic batch."""
    import openvino as ov
    import torch

    shape = (-1, *example_shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        return ov.convert_model(module, example_input=torch.zeros(example_shape), input=[shape])


def _save(model: Any, xml: Path) -> None:
    """Cache a converted model atomically; a failure only costs a conversion next run."""
    import openvino as ov

    try:
        xml.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=xml.parent, prefix=".tmp-"))
        try:
            # fp32 weights: save_model would compress them to fp16 by default.
            ov.save_model(model, tmp / "m.xml", compress_to_fp16=False)
            # The .bin first: an .xml is only ever read beside a complete .bin.
            os.replace(tmp / "m.bin", xml.with_suffix(".bin"))
            os.replace(tmp / "m.xml", xml)
        finally:
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
    except OSError as e:
        log.warning("could not cache the OpenVINO model at %s (%s)", xml, e)


def _read_cached(xml: Path | None) -> Any:
    """The converted model cached at `xml`, or None (none there, or damaged: rebuilt, never
    fatal)."""
    if xml is None or not xml.is_file() or not xml.with_suffix(".bin").is_file():
        return None
    try:
        return _core().read_model(str(xml))
    except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
        log.warning("ignoring unreadable OpenVINO cache %s: %s", xml, e)
        return None


def compile_module(
    module: Any,
    example_shape: tuple[int, ...],
    *,
    name: str,
    key: str | None,
    precision: str,
    cache_dir: Path | None = None,
    classifier: tuple[Float32Array, Float32Array] | None = None,
    fp32_convs: int = 0,
) -> CompiledModel:
    """`module` compiled by OpenVINO; `key` names its weights for the on-disk cache (None:
    convert every time), and `classifier` (weight, bias) is cached beside it for
    `load_compiled`; under bf16 the first `fp32_convs` convolutions stay fp32
    (`keep_fp32_prefix`). Raises whatever conversion raises; callers fall back to torch."""
    xml = ir_path(name, key, cache_dir) if key is not None else None
    model = _read_cached(xml)
    if model is None:
        log.info("converting %s for OpenVINO (cached at %s)", name, xml)
        model = _convert(module, example_shape)
        if xml is not None:
            _save(model, xml)
    if xml is not None and classifier is not None and xml.is_file():
        save_classifier(xml, *classifier)
    if precision == "int8":
        model = _int8_model(model, name, xml)
    return _compile(model, precision, fp32_convs)


def int8_path(xml: Path, spec: BackboneSpec) -> Path:
    """Where the int8 model quantised from the fp32 model at `xml` is cached: keyed by the
    recipe (`INT8_RECIPE`, `model.specs`), what `spec` keeps fp32 from the start and NNCF's
    version, so a change to any quantises again."""
    from model.quantize import nncf_version

    parts = [INT8_RECIPE, nncf_version(), spec.int8_fp32_convs, spec.int8_fp32_names]
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
    return xml.with_name(f"{xml.stem}-int8-{key}.xml")


def _int8_model(model: Any, name: str, xml: Path | None) -> Any:
    """The int8 model quantised from the fp32 `model`, from the cache or made (and cached)
    now; raises `quantize.QuantizeError` where none can be made."""
    from model import quantize

    spec = get_spec(name)
    q = int8_path(xml, spec) if xml is not None else None
    cached = _read_cached(q)
    if cached is not None:
        return cached
    calibration, validation = quantize.calibration_arrays(spec.preprocess)
    # a one-time wait of seconds to minutes: say what it is (on standard error, beside the
    # progress bars; standard output is the command's answer)
    print(f"{name}: making its int8 model (once; cached for later runs)", file=sys.stderr)
    quantized = quantize.quantize(
        model, calibration, validation, spec.int8_fp32_convs, spec.int8_fp32_names
    )
    if q is not None:
        _save(quantized, q)
    return quantized


def _fall_back(what: str, e: Exception) -> None:
    """One warning that `what` runs in PyTorch, with the first line that says why."""
    detail = next((line.strip() for line in str(e).splitlines() if line.strip()), "")[:200]
    log.warning(
        "%s: OpenVINO could not compile it (%s: %s); using PyTorch", what, type(e).__name__, detail
    )


def try_compile_module(
    module: Any, example_shape: tuple[int, ...], *, what: str, **kwargs: Any
) -> CompiledModel | None:
    """`compile_module`, or None after one warning naming `what` when conversion or
    compilation fails: the caller runs the model in PyTorch instead."""
    try:
        return compile_module(module, example_shape, **kwargs)
    except Exception as e:  # noqa: BLE001 - any conversion failure: eager torch
        _fall_back(what, e)
        return None


def try_compile_lazy(
    make: Callable[[], tuple[Any, Any, list[tuple[int, ...]]]],
    *,
    what: str,
    name: str,
    key: str | None,
    precision: str,
    cache_dir: Path | None = None,
) -> CompiledModel | None:
    """A model compiled from the on-disk cache when it is there, without calling `make`;
    otherwise `make()` gives (torch module, example input, input shapes with -1 for the
    dynamic dimensions), which is converted and cached (`key` None: converted every time).
    None after one warning naming `what` when anything fails: the caller runs the model in
    PyTorch instead."""
    xml = ir_path(name, key, cache_dir) if key is not None else None
    try:
        model = _read_cached(xml)
        if model is None:
            import openvino as ov

            module, example, shapes = make()
            log.info("converting %s for OpenVINO (cached at %s)", name, xml)
            import torch

            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about Python control flow
                # traced here without the trace check: open_clip's ViT fails it on module
                # names alone (`___torch_mangle_N`), with identical graphs and outputs
                traced = torch.jit.trace(module, example, check_trace=False)
                model = ov.convert_model(traced, input=shapes)
            if xml is not None:
                _save(model, xml)
        return _compile(model, precision)
    except Exception as e:  # noqa: BLE001 - any conversion failure: eager torch
        _fall_back(what, e)
        return None


def keep_fp32_prefix(model: Any, convolutions: int) -> Any:
    """`model` with its first `convolutions` convolutions, and every operation before them,
    marked to run in fp32 when the rest runs in bf16.

    The mark is OpenVINO's own `precise` runtime attribute (`ov::disable_fp16_compression`),
    which the CPU plugin honours for bf16 too. Python cannot create that attribute (a string
    set in `rt_info` is ignored), but the IR reader does: the model goes through its IR
    once, in a temporary folder, with the attribute written on those layers.

    Cut only where the network is a single chain: a cut inside a residual block (resnet50
    after 4 convolutions) compiled, then failed at inference ("Convolution node ... is not
    initialized"), in OpenVINO 2026.4."""
    import xml.etree.ElementTree as ET

    ordered = list(model.get_ordered_ops())
    convs = [
        i
        for i, op in enumerate(ordered)
        if op.get_type_name() in ("Convolution", "GroupConvolution")
    ]
    if convolutions <= 0 or not convs:
        return model
    cut = convs[convolutions] if convolutions < len(convs) else len(ordered)
    early = {
        op.get_friendly_name()
        for op in ordered[:cut]
        if op.get_type_name() not in ("Constant", "Parameter", "Result")
    }
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, xml, compress_to_fp16=False)
        tree = ET.parse(xml)
        marked = 0
        for layer in tree.getroot().iter("layer"):
            if layer.get("name") not in early:
                continue
            rt = layer.find("rt_info")
            if rt is None:
                rt = ET.SubElement(layer, "rt_info")
            ET.SubElement(rt, "attribute", {"name": "precise", "version": "0"})
            marked += 1
        text = ET.tostring(tree.getroot(), encoding="unicode")
        weights = np.fromfile(xml.with_suffix(".bin"), dtype=np.uint8)
    log.debug("%d operations kept in fp32 under bf16", marked)
    # read from memory: nothing of the model stays in the temporary folder
    return _core().read_model(text, ov.Tensor(weights))


def _compile(model: Any, precision: str, fp32_convs: int = 0) -> CompiledModel:
    # int8: the quantised layers run in int8 (VNNI / AMX-INT8), the rest in fp32
    hint = "bf16" if precision == "bf16" else "f32"
    if precision == "bf16" and fp32_convs:
        model = keep_fp32_prefix(model, fp32_convs)
    compiled = _core().compile_model(
        model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
    )
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if precision == "int8":
        return CompiledModel(compiled, "int8")
    # OpenVINO names it `<Type: 'bfloat16'>`: matching "bf16" read every bf16 model as fp32,
    # so a torch-free bf16 backbone said fp32 and shared fp32's feature cache
    return CompiledModel(compiled, "bf16" if "bfloat16" in got or "bf16" in got else "fp32")


def backbone_key(name: str, weights_key: str) -> str:
    """The cache key of a backbone's compiled features model."""
    return cache_key([name, weights_key, "features"])


def _classifier_path(xml: Path) -> Path:
    return xml.with_suffix(".classifier.npz")


def save_classifier(xml: Path, weight: Float32Array, bias: Float32Array) -> None:
    """The ImageNet classifier beside the compiled features model, so that ConSE and a
    torch-free `CompiledBackbone` have logits too."""
    out = _classifier_path(xml)
    if out.is_file():
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=xml.parent, suffix=".tmp.npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, weight=weight.astype(np.float32), bias=bias.astype(np.float32))
        os.replace(tmp, out)
    except OSError as e:
        log.warning("could not cache the classifier at %s (%s)", out, e)


class CompiledBackbone(SpecNamed):
    """A backbone served from the compiled-model cache alone: no torch is imported.

    Built by `load_compiled` once a torch `Backbone` has compiled and cached the same
    weights; queries (`devise tag`, the app's image searches) then start in a fraction of
    the time. Inputs must have the backbone's own size (the loader makes them so).
    """

    runtime = "openvino"

    def __init__(
        self,
        spec: BackboneSpec,
        weights_id: str,
        compiled: CompiledModel,
        classifier: tuple[Float32Array, Float32Array],
        reference: Callable[[], CompiledModel] | None = None,
    ) -> None:
        self.spec = spec
        self.weights_id = weights_id
        self.precision: Precision = compiled.precision  # type: ignore[assignment]
        self._compiled = compiled
        self._weight, self._bias = classifier
        # bf16 or int8: the fp32 model, to check the first batch against (as `Backbone` does)
        self._reference = reference if compiled.precision != "fp32" else None

    @property
    def numerics(self) -> str:
        """What computes the features and in which format (see `Backbone.numerics`)."""
        return self.spec.openvino_numerics(self.precision)

    def features(self, batch: Float32Array) -> Float32Array:
        x = np.asarray(batch, dtype=np.float32)
        size = self.spec.preprocess.size
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise ValueError(f"{self.name} takes (N, 3, {size}, {size}) arrays, got {x.shape}")
        if not len(x):
            return np.zeros((0, self.feature_dim), np.float32)
        out = self._compiled(x)
        if self._reference is not None:
            reference, self._reference = self._reference(), None
            exact = reference(x)
            cos = float(cosines(out, exact).min())
            if cos < SAME_VECTORS_COSINE:
                warn_precision_fallback(log, self.name, self.precision, cos, SAME_VECTORS_COSINE)
                self._compiled, self.precision = reference, "fp32"
                return exact
        return out

    def logits(self, features: Float32Array) -> Float32Array:
        f = np.asarray(features, dtype=np.float32)
        out: Float32Array = f @ self._weight.T + self._bias
        return out


def load_compiled(
    name: str, weights_id: str, precision: str, weights_key: str | None = None
) -> CompiledBackbone | None:
    """The backbone from the compiled-model cache, or None when it is not cached (or the
    runtime is torch, or bf16 is asked for where OpenVINO cannot run it natively, or the
    models run on a GPU)."""
    from model.device import default_device

    spec = get_spec(name)
    prec = resolve_precision(precision, name)
    if default_device().is_cuda or not takes_fast_path(prec):
        return None
    xml = ir_path(name, backbone_key(name, weights_key or weights_id))
    cls = _classifier_path(xml)
    if not (xml.is_file() and xml.with_suffix(".bin").is_file() and cls.is_file()):
        return None
    run = int8_path(xml, spec) if prec == "int8" else xml
    if not (run.is_file() and run.with_suffix(".bin").is_file()):
        return None
    try:
        with np.load(cls, allow_pickle=False) as z:
            classifier = (z["weight"], z["bias"])
        compiled = _compile(_core().read_model(str(run)), prec, spec.bf16_fp32_convs)
    except Exception as e:  # noqa: BLE001 - a damaged cache: the torch path rebuilds it
        log.warning("ignoring unreadable OpenVINO cache %s: %s", run, e)
        return None

    def reference() -> CompiledModel:
        return _compile(_core().read_model(str(xml)), "fp32")

    return CompiledBackbone(spec, weights_id, compiled, classifier, reference)
