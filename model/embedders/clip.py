"""CLIP through open_clip: images and prompted texts in CLIP's own joint space.

Where the weights come from, and how open_clip's model is built from them, is
`model/embedders/clip_load.py`.

**One identity, however the weights were found.** A model's `content_id` is
`clip:<architecture>:sha256:<first 16 hex digits of the weights file>`, so an index made
from the hub cache is queried with the same weights passed as a file, found in the URL
cache, or downloaded anew. The hash is computed once per file (about a second for
ViT-B-32's 605 MB) and remembered by path, size and modification time. (The same weights
in another file format, a TorchScript archive and a safetensors file say, are two files
and two identities.)

**Fast answers.** Both towers are compiled by OpenVINO once and cached by that identity
(`model/fastpath.py`); a later process reads the compiled towers without building the
PyTorch model or importing open_clip at all. The text tower runs on the prompt's own
tokens, not the 77-token context: CLIP's text transformer is causal and pools at the
end-of-text token, so the padding after it never changes the result, and a six-token prompt
costs a tenth of the padded one.

Random weights are never used by the product: `ClipEmbedder._for_tests` is the only way
to build an untrained model in memory, and nothing outside the unit tests calls it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from model.data.images import Preprocess, to_array
from model.device import Device, GpuRunner, pick, prepare, to_device
from model.embedders.clip_load import (  # noqa: F401 - names the package always had here
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_PRETRAINED,
    DEFAULT_TEMPLATES,
    OPENAI_MEAN,
    OPENAI_STD,
    TAG_KEYS,
    ClipUnavailable,
    _host_answers,
    _open_clip_dir,
    _output_dim,
    _text_tower,
    cached_weights,
    clip_available,
    clip_content_id,
    is_torchscript,
    legacy_tag_id,
    load_open_clip,
    model_config,
    resolve_weights,
    tag_facts,
    text_is_causal,
    url_cache_dir,
)
from model.vocab.words import unit

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]
TokenArray = npt.NDArray[np.int64]


class ClipEmbedder:
    """open_clip image and text towers; unit-norm float32 vectors. Everything builds lazily:
    a process that finds both towers compiled in the cache never builds the PyTorch model."""

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
        weights_cache: Path | None = None,
        facts: dict[str, Any] | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        batch_size: int = 32,
        device: Device | str | None = None,
    ) -> None:
        """`cache_dir`: devise's cache (compiled towers, file hashes; None: the default);
        `weights_cache`: open_clip's download cache (None: its defaults); `facts`: the tag's
        preprocessing as `tag_facts` gives it, when already known (an index records it)."""
        #: where the towers run (None: the process default, `model.device.default_device`)
        self.device: Device = pick(device)
        self._gpu: GpuRunner | None = None
        self._text_gpu: GpuRunner | None = None
        self.model_name = model_name
        self.pretrained = pretrained
        self.precision = precision
        self.templates = tuple(templates)
        self.batch_size = batch_size
        self._cache_dir = cache_dir
        self._lock = threading.RLock()
        self._model: Any = None
        self._facts = dict(facts) if facts else None
        self._tokenizer: Callable[[list[str]], TokenArray] | None = None
        self._text: Callable[[TokenArray], Float32Array] | None = None
        self._image: Callable[[Float32Array], Float32Array] | None = None
        #: prompts are cut after their end-of-text token (see `_text_tower`)
        self._trim = text_is_causal(model_name)
        self._dim: int | None = None
        #: "openvino" once a tower runs compiled, "torch" when it runs eagerly
        self.runtime = "torch"
        # Resolved now, so an absent CLIP is known before any work starts.
        self.weights_path: Path | None = resolve_weights(
            model_name,
            pretrained,
            weights_file,
            allow_download=allow_download,
            cache_dir=weights_cache,
        )
        self._content_id: str | None = None

    @classmethod
    def _for_tests(cls, model: Any, preprocess: Any, tokenizer: Any, dim: int) -> ClipEmbedder:
        """An embedder around an injected open_clip model (e.g. random, pretrained=None).

        For unit tests of shapes and storage only: the CLI and the app never call this.
        `preprocess` is unused (images go through the shared `Preprocess` spec)."""
        self = cls.__new__(cls)
        self.model_name = "test"
        self.pretrained = "random-init"
        self.precision = "fp32"
        self.templates = DEFAULT_TEMPLATES
        self.batch_size = 8
        self.device = pick(None)
        self._gpu = None
        self._text_gpu = None
        self._cache_dir = None
        self._lock = threading.RLock()
        self._model = model.eval()
        self._place()
        cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", {}) or {}
        size = cfg.get("size", 224)
        self._facts = {
            "mean": list(cfg.get("mean", OPENAI_MEAN)),
            "std": list(cfg.get("std", OPENAI_STD)),
            "size": int(size[0] if isinstance(size, (tuple, list)) else size),
        }
        self._tokenizer = lambda texts: np.asarray(tokenizer(texts).numpy(), np.int64)
        self._text = None
        self._image = None
        self._trim = type(model).__name__ == "CLIP"
        self._dim = dim
        self.runtime = "torch"
        self.weights_path = None
        self._content_id = "clip:test:random-init"
        return self

    # ------------------------------------------------------------------ identity

    @property
    def content_id(self) -> str:
        if self._content_id is None:
            assert self.weights_path is not None
            self._content_id = clip_content_id(self.model_name, self.weights_path, self._cache_dir)
        return self._content_id

    @property
    def facts(self) -> dict[str, Any]:
        """The tag's preprocessing and activation, and the input size (see `tag_facts`)."""
        if self._facts is None:
            self._facts = tag_facts(self.model_name, self.pretrained)
        return self._facts

    def record(self) -> dict[str, Any]:
        """What an index keeps of this model, so a later process needs no open_clip import."""
        return {
            "model": self.model_name,
            "pretrained": self.pretrained,
            "weights_file": str(self.weights_path) if self.weights_path else None,
            "facts": self.facts,
        }

    def matches_legacy(self, recorded: str) -> bool:
        """Whether an identity of the older, tag-named form (`clip:ViT-B-32:laion2b_s34b_b79k`)
        names these weights: same architecture and tag, and the weights are the ones the tag
        finds in open_clip's caches (not some other file passed under the tag's name)."""
        legacy = legacy_tag_id(recorded)
        if legacy != (self.model_name, self.pretrained) or self.weights_path is None:
            return False
        try:
            cached = cached_weights(self.model_name, self.pretrained)
        except ClipUnavailable:
            return False
        return cached is not None and os.path.samefile(cached, self.weights_path)

    def tag_vocabulary(self) -> tuple[list[str], Float32Array]:
        """The 1000 ImageNet class names and their prompted text vectors (for reports; the
        index keeps its own tag vocabulary's vectors in the words collection)."""
        from model.vocab.words import imagenet_class_names

        names = imagenet_class_names()
        return names, self.embed_texts(names)

    # ------------------------------------------------------------------ building

    def _build(self) -> Any:
        """The PyTorch model (both towers), loaded once."""
        with self._lock:
            if self._model is not None:
                return self._model
            assert self.weights_path is not None  # only _for_tests builds without weights
            try:
                model = load_open_clip(self.model_name, self.weights_path, self.facts)
            except Exception as e:  # noqa: BLE001 - bad or mismatched files
                raise ClipUnavailable(
                    f"clip absent: cannot load {self.weights_path} as {self.model_name} "
                    f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})"
                ) from e
            self._dim = _output_dim(model)
            self._model = model
            self._place()
            return model

    def _place(self) -> None:
        """Move the towers to a GPU device (channels_last, checked mixed precision)."""
        if not self.device.is_cuda:
            return
        import torch

        prepare(self.device)
        self._model.to(self.device.torch_name, memory_format=torch.channels_last)
        self._gpu = GpuRunner(self.device, f"clip {self.model_name}")

    def _compiled(self, tower: str, make: Callable[[], tuple[Any, Any, Any]]) -> Any:
        """Tower `tower` compiled by OpenVINO, read from the cache when there (no model is
        built then), else converted from `make()` = (module, example input, dynamic shape)
        and cached. None where the runtime is torch, bf16 is not native here, or compilation
        failed."""
        from model import fastpath

        prec = "bf16" if self.precision == "bf16" else "fp32"
        if self.device.is_cuda or not fastpath.takes_fast_path(prec):
            return None
        # an injected test model is converted every time: nothing names its weights
        test_model = self.pretrained == "random-init" and self.weights_path is None
        key = None if test_model else fastpath.cache_key([self.content_id, tower, "trimmed-v1"])
        name = f"clip-{self.model_name}-{tower}"
        return fastpath.try_compile_lazy(
            make,
            what=f"clip {tower} tower",
            name=name,
            key=key,
            precision=prec,
            cache_dir=self._cache_dir,
        )

    def _text_encoder(self) -> Callable[[TokenArray], Float32Array]:
        with self._lock:
            if self._text is not None:
                return self._text

            def make() -> tuple[Any, Any, Any]:
                import torch

                tower = _text_tower(self._build(), self._trim)
                return tower, torch.ones((2, 8), dtype=torch.long), [(-1, -1)]

            compiled = self._compiled("text", make)
            if compiled is not None:
                self.runtime = "openvino"
                self._text = compiled
                return compiled
            import torch

            tower = _text_tower(self._build(), self._trim)

            @torch.inference_mode()
            def run(tokens: TokenArray) -> Float32Array:
                t = torch.from_numpy(np.ascontiguousarray(tokens))
                if self._gpu is not None:
                    if self._text_gpu is None:
                        self._text_gpu = GpuRunner(self.device, f"clip {self.model_name} text")
                    f = self._text_gpu(tower, to_device(t, self.device))
                    return np.asarray(f.float().cpu().numpy(), np.float32)
                with self._autocast():
                    f = tower(t)
                return np.asarray(f.float().numpy(), np.float32)

            self._text = run
            return run

    def _image_encoder(self) -> Callable[[Float32Array], Float32Array]:
        with self._lock:
            if self._image is not None:
                return self._image
            size = int(self.facts.get("size", 224))

            def make() -> tuple[Any, Any, Any]:
                import torch

                visual = self._build().visual
                return visual, torch.zeros((1, 3, size, size)), [(-1, 3, size, size)]

            compiled = self._compiled("visual", make)
            if compiled is not None:
                self.runtime = "openvino"
                self._image = compiled
                return compiled
            import torch

            model = self._build()

            @torch.inference_mode()
            def run(x: Any) -> Float32Array:
                if self._gpu is not None:
                    xg = to_device(x, self.device).contiguous(memory_format=torch.channels_last)
                    f = self._gpu(model.encode_image, xg)
                    return np.asarray(f.float().cpu().numpy(), np.float32)
                t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
                with self._autocast():
                    f = model.encode_image(t)
                return np.asarray(f.float().numpy(), np.float32)

            self._image = run
            return run

    def _tokenize(self, texts: list[str]) -> TokenArray:
        """Token ids (N, L): the 77-token context, cut after the longest prompt's end-of-text
        token where the text tower allows it."""
        if self._tokenizer is None:
            self._tokenizer = _load_tokenizer(self.model_name)
        tokens = self._tokenizer(texts)
        if self._trim and len(tokens):
            last = int(tokens.argmax(axis=1).max()) + 1  # the end-of-text id is the largest
            tokens = tokens[:, :last]
        return np.ascontiguousarray(tokens, dtype=np.int64)

    def _autocast(self) -> Any:
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ------------------------------------------------------------------ embedding

    @property
    def dim(self) -> int:
        if self._dim is None:
            emb = (model_config(self.model_name) or {}).get("embed_dim")
            self._dim = int(emb) if emb else int(self.embed_texts(["photo"]).shape[1])
        return self._dim

    @property
    def preprocess(self) -> Preprocess:
        """The image tower's input as a shared preprocessing spec, for ingest and queries.

        open_clip resizes the short side to the input size and center-crops (the tags'
        `shortest` mode) with bicubic filtering; this spec does the same with ingest's
        bilinear filtering, a difference far below what changes a ranking, and one that
        query and index share. Mean and std are the tag's own."""
        f = self.facts
        size = int(f.get("size", 224))
        mean = tuple(float(x) for x in f.get("mean", OPENAI_MEAN))
        std = tuple(float(x) for x in f.get("std", OPENAI_STD))
        return Preprocess(size, size, mean=mean, std=std)  # type: ignore[arg-type]

    def embed_images(self, images: Sequence[Image.Image]) -> Float32Array:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        spec = self.preprocess
        out = []
        for s in range(0, len(images), self.batch_size):
            batch = np.stack(
                [to_array(im.convert("RGB"), spec) for im in images[s : s + self.batch_size]]
            )
            out.append(self._image_encoder()(batch))
        return unit(np.concatenate(out))

    def embed_arrays(self, arrays: Float32Array) -> Float32Array:
        """(N, 3, H, W) arrays preprocessed with `preprocess` -> (N, D) unit vectors."""
        encode = self._image_encoder()
        if not isinstance(arrays, np.ndarray):  # a tensor already on the GPU (CUDA loader)
            return unit(encode(arrays))
        return unit(encode(np.ascontiguousarray(arrays, dtype=np.float32)))

    def encode_prompts(self, prompts: Sequence[str], progress: Any = None) -> Float32Array:
        """Each prompt through the text tower as it is, unit-norm; prompts of like length
        are batched together (`progress`, a tqdm bar, is advanced per prompt)."""
        if not prompts:
            return np.zeros((0, self.dim), np.float32)
        encode = self._text_encoder()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = np.zeros((len(prompts), 0), np.float32)
        for s in range(0, len(order), 128):
            idx = order[s : s + 128]
            feats = encode(self._tokenize([prompts[i] for i in idx]))
            if out.shape[1] == 0:
                out = np.zeros((len(prompts), feats.shape[1]), np.float32)
            out[idx] = feats
            if progress is not None:
                progress.update(len(idx))
        return unit(out)

    def embed_texts(self, texts: Sequence[str], progress: Any = None) -> Float32Array:
        """Each text through the prompt templates, averaged over templates, unit-norm."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        prompts = [t.format(x.strip()) for x in texts for t in self.templates]
        enc = self.encode_prompts(prompts, progress).reshape(len(texts), len(self.templates), -1)
        return unit(enc.mean(axis=1))


def _load_tokenizer(model_name: str) -> Callable[[list[str]], TokenArray]:
    """open_clip's tokenizer for `model_name`, as numpy ids (N, 77).

    CLIP's own BPE (every architecture whose config names no Hugging Face tokenizer) runs
    from open_clip's merge table without importing torch or open_clip (`clip_bpe`: seconds
    saved per process); any other tokenizer goes through `open_clip.get_tokenizer`."""
    text_cfg = (model_config(model_name) or {}).get("text_cfg") or {}
    context = int(text_cfg.get("context_length", 77))
    root = _open_clip_dir()
    merges = root / "bpe_simple_vocab_16e6.txt.gz" if root is not None else None
    if not text_cfg.get("hf_tokenizer_name") and merges is not None and merges.is_file():
        from model.embedders.clip_bpe import ClipBPE

        return ClipBPE(merges, context)
    import open_clip

    tok = open_clip.get_tokenizer(model_name)
    return lambda texts: np.asarray(tok(texts).numpy(), dtype=np.int64)
