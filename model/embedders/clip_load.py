"""Where CLIP's weights come from and how open_clip's model is built from them.

Weights resolve, in order, from:
1. an explicit file (`--clip-weights FILE`: open_clip's `.safetensors`/`.bin`/`.pt`, or
   OpenAI's TorchScript `.pt` archive);
2. the local caches open_clip downloads into (the Hugging Face hub cache, or
   `~/.cache/clip` for URL downloads), read without any network access;
3. a download, only when allowed and the weights' host answers within a few seconds
   (an offline hub download otherwise retries for about a minute).

With none of these, `ClipUnavailable` says so in one line, with how to get the weights.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt

from model.specs import cached_file_id

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]
TokenArray = npt.NDArray[np.int64]

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
#: OpenAI's image normalisation, which every CLIP tag of open_clip 3.3 but a few uses
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: what a pretrained tag says about its preprocessing and activation (open_clip's names)
TAG_KEYS = ("mean", "std", "interpolation", "resize_mode", "quick_gelu")
#: entries of an OpenAI TorchScript state dict that are not weights of open_clip's model
_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


class ClipUnavailable(RuntimeError):
    """CLIP weights are not here and cannot be fetched; the message is one line."""


def _absent(model_name: str, pretrained: str, why: str) -> ClipUnavailable:
    return ClipUnavailable(
        f"clip absent: {why}; pass --clip-weights FILE (open_clip weights for "
        f"{model_name}/{pretrained}) or run once online to download them"
    )


def _open_clip_dir() -> Path | None:
    """open_clip's installed folder, found without importing it (its import costs seconds)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_config(model_name: str) -> dict[str, Any] | None:
    """open_clip's architecture config of `model_name` (its `model_configs/NAME.json`), read
    without importing open_clip; None when it has no such file."""
    root = _open_clip_dir()
    if root is None:
        return None
    path = root / "model_configs" / f"{model_name}.json"
    try:
        cfg: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg


def _pretrained_cfg(model_name: str, pretrained: str) -> dict[str, Any]:
    try:
        import open_clip
    except ImportError as e:
        raise ClipUnavailable(
            "clip absent: open_clip is not installed; pip install open-clip-torch"
        ) from e

    if model_name not in open_clip.list_models():
        raise ClipUnavailable(f"clip: unknown open_clip model {model_name!r}")
    cfg: dict[str, Any] = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise ClipUnavailable(
            f"clip: {pretrained!r} is not a pretrained tag of {model_name} (tags: {tags})"
        )
    return cfg


def tag_facts(model_name: str, pretrained: str) -> dict[str, Any]:
    """The tag's preprocessing and activation (`TAG_KEYS`), with the image size of the
    architecture as `size`; OpenAI's normalisation where the tag names none. For a name
    that is not a tag (weights given as a file) only the architecture's facts."""
    try:
        cfg = _pretrained_cfg(model_name, pretrained)
    except ClipUnavailable:
        cfg = {}
    facts: dict[str, Any] = {k: cfg[k] for k in TAG_KEYS if k in cfg}
    facts.setdefault("mean", OPENAI_MEAN)
    facts.setdefault("std", OPENAI_STD)
    facts["mean"] = [float(x) for x in facts["mean"]]
    facts["std"] = [float(x) for x in facts["std"]]
    facts["quick_gelu"] = bool(facts.get("quick_gelu", False))
    size = ((model_config(model_name) or {}).get("vision_cfg") or {}).get("image_size", 224)
    facts["size"] = int(size[0] if isinstance(size, (list, tuple)) else size)
    return facts


def _hf_candidates(hf_hub: str) -> tuple[str, list[str]]:
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hf_hub)
    if not filename:
        return repo, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    names = [filename]
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return repo, names


def _hf_cached(hf_hub: str, cache_dir: Path | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # open_clip then downloads by URL only
        return None
    repo, names = _hf_candidates(hf_hub)
    for name in names:
        hit = try_to_load_from_cache(repo, name, cache_dir=str(cache_dir) if cache_dir else None)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
    return None


def url_cache_dir() -> Path:
    """Where open_clip's URL downloads land (`download_pretrained_from_url`'s default)."""
    return Path("~/.cache/clip").expanduser()


def cached_weights(model_name: str, pretrained: str, cache_dir: Path | None = None) -> Path | None:
    """The weights file of a tag when already in a local cache; never touches the network.

    `cache_dir` is open_clip's own `cache_dir` (None: its defaults, the hub cache and
    `~/.cache/clip`)."""
    cfg = _pretrained_cfg(model_name, pretrained)
    if cfg.get("file"):
        p = Path(cfg["file"])
        return p if p.is_file() else None
    if cfg.get("hf_hub"):
        hit = _hf_cached(cfg["hf_hub"], cache_dir)
        if hit is not None:
            return hit
    if cfg.get("url"):
        p = (cache_dir or url_cache_dir()) / os.path.basename(cfg["url"])
        if p.is_file():
            return p
    return None


def _host_answers(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download_host(cfg: dict[str, Any]) -> str:
    if cfg.get("hf_hub"):
        try:
            from huggingface_hub import constants

            return str(constants.ENDPOINT)
        except ImportError:
            pass
    return str(cfg.get("url", ""))


def _offline_env() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "DEVISE_OFFLINE")
    )


def resolve_weights(
    model_name: str = DEFAULT_CLIP_MODEL,
    pretrained: str = DEFAULT_CLIP_PRETRAINED,
    weights_file: Path | None = None,
    *,
    allow_download: bool = True,
    cache_dir: Path | None = None,
) -> Path:
    """The weights file to load: explicit file, local cache, then a download. Raises
    ClipUnavailable (one line) when none works. `cache_dir` is open_clip's download cache
    (None: its defaults)."""
    if weights_file is not None:
        p = Path(weights_file).expanduser()
        if not p.is_file():
            raise ClipUnavailable(f"clip absent: --clip-weights {p} is not a file")
        return p
    cfg = _pretrained_cfg(model_name, pretrained)  # an unknown name or tag fails first
    hit = cached_weights(model_name, pretrained, cache_dir)
    if hit is not None:
        return hit
    if not allow_download or _offline_env():
        why = "no weights in the local caches and downloads are off"
        raise _absent(model_name, pretrained, why)
    if not _host_answers(_download_host(cfg)):
        raise _absent(model_name, pretrained, "no weights in the local caches and no network")
    from open_clip.pretrained import download_pretrained

    try:
        target = download_pretrained(cfg, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as e:  # noqa: BLE001 - hub and urllib errors of every kind
        raise _absent(model_name, pretrained, f"the download failed ({type(e).__name__})") from e
    if not target or not os.path.isfile(target):
        raise _absent(model_name, pretrained, "the download gave no file")
    return Path(target)


def clip_available(
    model_name: str = DEFAULT_CLIP_MODEL,
    pretrained: str = DEFAULT_CLIP_PRETRAINED,
    weights_file: Path | None = None,
    cache_dir: Path | None = None,
) -> tuple[bool, str]:
    """(True, where) when weights are here now; (False, one-line reason) otherwise.
    Cheap: builds no model and never downloads."""
    try:
        p = resolve_weights(
            model_name, pretrained, weights_file, allow_download=False, cache_dir=cache_dir
        )
    except ClipUnavailable as e:
        return False, str(e)
    return True, str(p)


def clip_content_id(model_name: str, weights: Path, cache_dir: Path | None = None) -> str:
    """The identity of CLIP weights: architecture and the weights file's content hash."""
    return f"clip:{model_name}:{cached_file_id(weights, cache_dir)}"


def legacy_tag_id(content_id: str) -> tuple[str, str] | None:
    """(architecture, tag) of an identity written before identities were content hashes
    (`clip:ViT-B-32:laion2b_s34b_b79k`); None for a current one."""
    parts = content_id.split(":")
    if len(parts) != 3 or parts[0] != "clip" or parts[2].startswith("sha256"):
        return None
    return parts[1], parts[2]


def is_torchscript(path: Path) -> bool:
    """An OpenAI-style TorchScript archive (a zip holding `constants.pkl` or `code/`)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.endswith("/constants.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs 'initialized randomly' on the root logger before our weights load."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def load_open_clip(model_name: str, weights: Path, facts: dict[str, Any]) -> Any:
    """open_clip's model of `model_name` with the weights of `weights`, in eval mode.

    The tag's facts reach open_clip through the arguments 3.3 takes: `force_quick_gelu`,
    `image_mean`, `image_std`, `image_interpolation` and `image_resize_mode`. A TorchScript
    archive (OpenAI's own format) is read with `torch.jit.load`, never unpickled, and its
    weights copied into open_clip's model."""
    import open_clip
    import torch

    kwargs: dict[str, Any] = {
        "force_quick_gelu": bool(facts.get("quick_gelu", False)),
        "image_mean": tuple(facts["mean"]) if facts.get("mean") else None,
        "image_std": tuple(facts["std"]) if facts.get("std") else None,
        "image_interpolation": facts.get("interpolation"),
        "image_resize_mode": facts.get("resize_mode"),
    }
    if is_torchscript(weights):
        with _quiet_open_clip():
            model, _, _ = open_clip.create_model_and_transforms(
                model_name, pretrained=None, **kwargs
            )
        state = torch.jit.load(str(weights), map_location="cpu").state_dict()
        state = {k: v for k, v in state.items() if k not in _JIT_EXTRAS}
        model.load_state_dict(state, strict=True)
    else:
        model, _, _ = open_clip.create_model_and_transforms(
            model_name, pretrained=str(weights), weights_only=True, **kwargs
        )
    return model.eval()


def _output_dim(model: Any) -> int | None:
    import torch

    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    if isinstance(proj, torch.nn.Linear):
        return int(proj.out_features)
    return None


def text_is_causal(model_name: str) -> bool:
    """Whether `model_name`'s text tower is open_clip's plain `CLIP` text transformer:
    causal and pooled at the end-of-text token (no custom or Hugging Face text tower, no
    multimodal decoder, argmax pooling). Read from the architecture's config, so a process
    that finds the tower compiled knows it without building the model."""
    cfg = model_config(model_name)
    if cfg is None or cfg.get("custom_text") or "multimodal_cfg" in cfg:
        return False
    text = cfg.get("text_cfg") or {}
    return not text.get("hf_model_name") and text.get("pool_type", "argmax") == "argmax"


def _text_tower(model: Any, causal: bool) -> Any:
    """A module from tokens (N, L) to text features (N, D).

    For open_clip's `CLIP` (a causal text transformer pooled at the end-of-text token, the
    largest id of a row; `causal`, as `text_is_causal` says) L may be shorter than the
    context: position embeddings and the causal mask are cut to L. Since no position attends
    to a later one, features at and before the end-of-text token are exactly those of the
    padded 77-token input. Other text towers get the full context."""
    import torch

    if causal and not (
        type(model).__name__ == "CLIP"
        and getattr(model, "text_pool_type", "argmax") == "argmax"
        and isinstance(getattr(model, "attn_mask", None), torch.Tensor)
    ):
        raise ClipUnavailable(
            f"clip: the text tower of {type(model).__name__} is not the causal CLIP one its "
            "config describes"
        )

    class TrimmedText(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            m = self.clip
            n = tokens.shape[1]
            cast = m.transformer.get_cast_dtype()
            x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:n].to(cast)
            x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
            x = m.ln_final(x)
            x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
            proj = m.text_projection
            return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj

    class FullText(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_text(tokens)

    return (TrimmedText() if causal else FullText()).eval()
