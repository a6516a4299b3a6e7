"""CLIP through open_clip: images and prompted texts in CLIP's own joint space.

Weights resolve, in order, from:
1. an explicit file (`--clip-weights FILE`: open_clip's `.bin`/`.pt`/`.safetensors`);
2. the local caches open_clip downloads into (the Hugging Face hub cache, or
   `~/.cache/clip` for URL-only tags), read without any network access;
3. a download, only when allowed and the weights' host answers within a few seconds
   (an offline hub download otherwise retries for about a minute).

With none of these, `ClipUnavailable` says so in one line, with how to get the weights.
Random weights are never used by the product: `ClipEmbedder._for_tests` is the only way
to build an untrained model, and nothing outside the tests calls it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from model.data.images import Preprocess
from model.device import Device, GpuRunner, pick, prepare, to_device
from model.specs import file_id
from model.vocab.words import imagenet_class_names, unit

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


class ClipUnavailable(RuntimeError):
    """CLIP weights are not here and cannot be fetched; the message is one line."""


def _absent(model_name: str, pretrained: str, why: str) -> ClipUnavailable:
    return ClipUnavailable(
        f"clip absent: {why}; pass --clip-weights FILE (open_clip weights for "
        f"{model_name}/{pretrained}) or run once online to download them"
    )


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


def cached_weights(model_name: str, pretrained: str, cache_dir: Path | None = None) -> Path | None:
    """The weights file of a tag when already in a local cache; never touches the network."""
    cfg = _pretrained_cfg(model_name, pretrained)
    if cfg.get("file"):
        p = Path(cfg["file"])
        return p if p.is_file() else None
    if cfg.get("hf_hub"):
        hit = _hf_cached(cfg["hf_hub"], cache_dir)
        if hit is not None:
            return hit
    if cfg.get("url"):
        base = cache_dir if cache_dir else Path("~/.cache/clip").expanduser()
        p = base / os.path.basename(cfg["url"])
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
    ClipUnavailable (one line) when none works."""
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


def _output_dim(model: Any) -> int | None:
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    if isinstance(proj, torch.nn.Linear):
        return int(proj.out_features)
    return None


class ClipEmbedder:
    """open_clip image and text towers; unit-norm float32 vectors. The model builds lazily."""

    name = "clip"

    def __init__(
        self,
        model_name: str = DEFAULT_CLIP_MODEL,
        pretrained: str = DEFAULT_CLIP_PRETRAINED,
        weights_file: Path | None = None,
        precision: str = "fp32",
        *,
        allow_download: bool = True,
        cache_dir: Path | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        batch_size: int = 32,
        device: Device | str | None = None,
    ) -> None:
        #: where the towers run (None: the process default, `model.device.default_device`)
        self.device: Device = pick(device)
        self._gpu: GpuRunner | None = None
        self.model_name = model_name
        self.pretrained = pretrained
        self.precision = precision
        self.templates = tuple(templates)
        self.batch_size = batch_size
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._model: Any = None
        self._preprocess: Callable[[Image.Image], torch.Tensor] | None = None
        self._tokenizer: Callable[[list[str]], torch.Tensor] | None = None
        self._vocab: tuple[list[str], Float32Array] | None = None
        self._dim: int | None = None
        self._explicit = weights_file is not None
        # Resolved now, so an absent CLIP is known before any work starts.
        self.weights_path: Path | None = resolve_weights(
            model_name, pretrained, weights_file, allow_download=allow_download
        )
        self._content_id: str | None = None

    @classmethod
    def _for_tests(cls, model: Any, preprocess: Any, tokenizer: Any, dim: int) -> ClipEmbedder:
        """An embedder around an injected open_clip model (e.g. random, pretrained=None).

        For tests of shapes and storage only: the CLI and the app never call this.
        """
        self = cls.__new__(cls)
        self.model_name = "test"
        self.pretrained = "random-init"
        self.precision = "fp32"
        self.templates = DEFAULT_TEMPLATES
        self.batch_size = 8
        self.device = pick(None)
        self._gpu = None
        self._cache_dir = None
        self._lock = threading.Lock()
        self._model = model.eval()
        self._place()
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._vocab = None
        self._dim = dim
        self._explicit = False
        self.weights_path = None
        self._content_id = "clip:test:random-init"
        return self

    def _build(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import open_clip

            assert self.weights_path is not None  # only _for_tests builds without weights
            try:
                # The tag's preprocessing and activation; an explicit file may have no tag.
                cfg = _pretrained_cfg(self.model_name, self.pretrained)
            except ClipUnavailable:
                if not self._explicit:
                    raise
                cfg = {}
            force_pre = {k: cfg[k] for k in _PREPROCESS_KEYS if k in cfg} or None
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model_name,
                    pretrained=str(self.weights_path),
                    force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                    force_preprocess_cfg=force_pre,
                    weights_only=True,
                )
            except Exception as e:  # noqa: BLE001 - bad or mismatched files
                raise ClipUnavailable(
                    f"clip absent: cannot load {self.weights_path} as {self.model_name} "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                ) from e
            model.eval()
            self._preprocess = preprocess
            self._tokenizer = open_clip.get_tokenizer(self.model_name)
            self._dim = _output_dim(model)
            self._model = model
            self._place()

    def _place(self) -> None:
        """Move the towers to a GPU device (channels_last, checked mixed precision)."""
        if not self.device.is_cuda:
            return
        prepare(self.device)
        self._model.to(self.device.torch_name, memory_format=torch.channels_last)
        self._gpu = GpuRunner(self.device, f"clip {self.model_name}")

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._build()
        if self._dim is None:
            self._dim = int(self.embed_texts(["photo"]).shape[1])
        return self._dim

    @property
    def content_id(self) -> str:
        if self._content_id is None:
            if self._explicit and self.weights_path is not None:
                self._content_id = f"clip:{self.model_name}:{file_id(self.weights_path)}"
            else:
                self._content_id = f"clip:{self.model_name}:{self.pretrained}"
        return self._content_id

    def _autocast(self) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    #: "openvino" once the image tower is compiled, "torch" when it runs eagerly
    runtime = "torch"
    #: the input shape (C, H, W) the image tower was compiled for (None: not tried yet)
    _visual_shape: tuple[int, ...] | None = None
    _visual: Any = None

    def _compiled_visual(self, shape: tuple[int, ...]) -> Any:
        """The image tower compiled by OpenVINO (the fast path), built on first use; None
        where the runtime is torch, bf16 cannot run natively, or compilation failed."""
        from model import fastpath

        if self._visual_shape is not None:
            return self._visual if tuple(shape[1:]) == self._visual_shape else None
        self._visual_shape = tuple(shape[1:])
        prec = "bf16" if self.precision == "bf16" else "fp32"
        if not fastpath.takes_fast_path(prec):
            return None
        # random test weights are never written to the cache
        key = None if self.pretrained == "random-init" else f"{self.content_id}:visual"
        self._visual = fastpath.try_compile_module(
            self._model.visual,
            (1, *shape[1:]),
            what="clip image tower",
            name=f"clip-{self.model_name}",
            key=None if key is None else fastpath.cache_key([key]),
            precision=prec,
        )
        if self._visual is not None:
            self.runtime = "openvino"
        return self._visual

    @torch.inference_mode()
    def _encode_images(self, x: torch.Tensor) -> Float32Array:
        if self._gpu is not None:
            xg = to_device(x, self.device).contiguous(memory_format=torch.channels_last)
            return np.asarray(self._gpu(self._model.encode_image, xg).cpu().numpy(), np.float32)
        compiled = self._compiled_visual(tuple(x.shape)) if len(x) else None
        if compiled is not None:
            return np.asarray(compiled(x.numpy()), dtype=np.float32)
        with self._autocast():
            f = self._model.encode_image(x)
        return np.asarray(f.float().numpy(), dtype=np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> Float32Array:
        self._build()
        assert self._preprocess is not None
        if not images:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for s in range(0, len(images), self.batch_size):
            x = torch.stack(
                [self._preprocess(im.convert("RGB")) for im in images[s : s + self.batch_size]]
            )
            out.append(self._encode_images(x))
        return unit(np.concatenate(out))

    @torch.inference_mode()
    def _encode_prompts(self, prompts: list[str]) -> Float32Array:
        assert self._tokenizer is not None
        out = []
        for s in range(0, len(prompts), 256):
            tokens = self._tokenizer(prompts[s : s + 256])
            if self._gpu is not None:  # text: same autocast, checked by its own runner
                f = self._text_runner()(self._model.encode_text, to_device(tokens, self.device))
                out.append(f.cpu().numpy())
                continue
            with self._autocast():
                f = self._model.encode_text(tokens)
            out.append(f.float().numpy())
        return unit(np.concatenate(out))

    _text_gpu: GpuRunner | None = None

    def _text_runner(self) -> GpuRunner:
        if self._text_gpu is None:
            self._text_gpu = GpuRunner(self.device, f"clip {self.model_name} text")
        return self._text_gpu

    def embed_texts(self, texts: Sequence[str]) -> Float32Array:
        """Each text through the prompt templates, averaged over templates, unit-norm."""
        self._build()
        if not texts:
            return np.zeros((0, self._dim or 0), np.float32)
        prompts = [t.format(x.strip()) for x in texts for t in self.templates]
        enc = self._encode_prompts(prompts).reshape(len(texts), len(self.templates), -1)
        return unit(enc.mean(axis=1))

    @property
    def preprocess(self) -> Preprocess:
        """The image tower's input as a shared preprocessing spec, for batched ingest.

        open_clip resizes the short side to the input size with bicubic filtering and
        center-crops; ingest's loader uses bilinear filtering, a difference far below what
        changes a ranking. Mean and std are the model's own.
        """
        self._build()
        cfg = getattr(getattr(self._model, "visual", None), "preprocess_cfg", {}) or {}
        size = cfg.get("size", 224)
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean = tuple(float(x) for x in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(float(x) for x in cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        return Preprocess(size, size, mean=mean, std=std)  # type: ignore[arg-type]

    def embed_arrays(self, arrays: Float32Array) -> Float32Array:
        """(N, 3, H, W) arrays preprocessed with `preprocess` -> (N, D) unit vectors."""
        self._build()
        if isinstance(arrays, torch.Tensor):  # already on the GPU (the CUDA loader)
            return unit(self._encode_images(arrays))
        return unit(self._encode_images(torch.from_numpy(np.ascontiguousarray(arrays))))

    def tag(self, vector: Float32Array, k: int) -> list[tuple[str, float]]:
        """The `k` ImageNet class names nearest to an image vector."""
        names, vecs = self.tag_vocabulary()
        scores = vecs @ np.asarray(vector, dtype=np.float32)
        top = np.argsort(-scores)[:k]
        return [(names[i], float(scores[i])) for i in top]

    def tag_vocabulary(self) -> tuple[list[str], Float32Array]:
        """The 1000 ImageNet class names and their prompted text vectors; cached on disk
        (under the cache folder, keyed by the model's content id) when one is given."""
        if self._vocab is not None:
            return self._vocab
        names = imagenet_class_names()
        cache = None
        if self._cache_dir is not None:
            key = hashlib.sha256(
                f"{self.content_id}|{'|'.join(self.templates)}".encode()
            ).hexdigest()[:16]
            cache = Path(self._cache_dir) / "clip-vocab" / f"{key}.npy"
            if cache.is_file():
                try:
                    vecs = np.load(cache, allow_pickle=False).astype(np.float32)
                    if vecs.shape[0] == len(names):
                        self._vocab = (names, vecs)
                        return self._vocab
                except (OSError, ValueError) as e:
                    log.warning("ignoring unreadable clip vocabulary cache %s: %s", cache, e)
        vecs = self.embed_texts(names)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npy")
            np.save(tmp, vecs, allow_pickle=False)
            os.replace(tmp, cache)
        self._vocab = (names, vecs)
        return self._vocab
