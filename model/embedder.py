"""Embedders: one batch-first interface, unit-norm float32 output, lazily built.

`embed_images(list[Image]) -> (N, D)` and `embed_texts(list[str]) -> (N, D)`, with a
`name`, a `dim` and a `content_id` that the index records, so vectors of different models
are never mixed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from model.backbones import RANDOM_INIT, Backbone, load_backbone
from model.checkpoint import Checkpoint, load_checkpoint
from model.devise import DeviseHead
from model.images import Preprocess, to_array
from model.words import WordVectors, unit

Float32Array = npt.NDArray[np.float32]


class UnknownWordsError(ValueError):
    def __init__(
        self, words: Sequence[str], suggestions: dict[str, list[str]], source: str
    ) -> None:
        self.words = list(words)
        self.suggestions = suggestions
        parts = []
        for w in words:
            s = suggestions.get(w) or []
            parts.append(f"{w!r}" + (f" (did you mean {', '.join(s)}?)" if s else ""))
        super().__init__(f"unknown word(s) in {source}: " + "; ".join(parts))


class Embedder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    @property
    def content_id(self) -> str: ...

    def embed_images(self, images: Sequence[Image.Image]) -> Float32Array: ...

    def embed_texts(self, texts: Sequence[str]) -> Float32Array: ...


def embed_phrase(words: WordVectors, text: str) -> Float32Array:
    """A query phrase as the unit mean of its known words; raises UnknownWordsError."""
    vec = words.label_vector(text)
    if vec is None:
        from model.words import label_tokens

        toks = label_tokens(text) or [text.strip()]
        unknown = [t for t in toks if t not in words]
        raise UnknownWordsError(
            unknown or toks, {t: words.suggest(t) for t in unknown}, words.source
        )
    return vec


class WordSpaceEmbedder:
    """An ImageNet backbone plus a head into a word space (DeViSE, ConSE): the parts both
    share. Subclasses provide `backbone`, `words`, `dim` and `embed_features`."""

    @property
    def backbone(self) -> Backbone:
        raise NotImplementedError

    @property
    def words(self) -> WordVectors:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def embed_features(self, features: Float32Array) -> Float32Array:
        raise NotImplementedError

    @property
    def preprocess(self) -> Preprocess:
        return self.backbone.spec.preprocess

    def embed_arrays(self, arrays: Float32Array) -> Float32Array:
        return self.embed_features(self.backbone.features(arrays))

    def embed_images(self, images: Sequence[Image.Image]) -> Float32Array:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        spec = self.backbone.spec.preprocess
        return self.embed_arrays(np.stack([to_array(im, spec) for im in images]))

    def embed_texts(self, texts: Sequence[str]) -> Float32Array:
        """A phrase is the unit mean of its known words; raises UnknownWordsError."""
        words = self.words
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return unit(np.stack([embed_phrase(words, t) for t in texts]))


class DeviseEmbedder(WordSpaceEmbedder):
    """A trained DeViSE checkpoint: backbone + projection into the word space."""

    name = "devise"

    def __init__(
        self,
        checkpoint: Path | Checkpoint,
        *,
        weights: str | None = None,
        precision: str = "fp32",
        words: WordVectors | None = None,
    ) -> None:
        self.ckpt = (
            checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        )
        self.meta: dict[str, Any] = self.ckpt.meta
        self._weights = weights
        self._precision = precision
        self._words = words
        self._lock = threading.Lock()
        self._backbone: Backbone | None = None
        hd = self.ckpt.prefixed("head")
        feature_dim = int(hd["feat_mean"].shape[0])
        self.head = DeviseHead(feature_dim, self.dim, self.meta.get("head", "linear"))
        self.head.load_state_dict(hd)
        self.head.eval()
        self.labels: list[str] = list(self.meta["labels"])
        self.label_vectors: Float32Array = self.ckpt.tensors["labels.vectors"].numpy()

    @property
    def dim(self) -> int:
        return int(self.meta["words"]["dim"])

    @property
    def content_id(self) -> str:
        return self.ckpt.content_id

    @property
    def words_source(self) -> str:
        return str(self.meta["words"]["source"])

    @property
    def backbone(self) -> Backbone:
        """Built on first use, under a lock: text queries never pay for it."""
        with self._lock:
            if self._backbone is None:
                wid = self.meta["weights"]
                if wid == RANDOM_INIT or self.meta.get("finetuned"):
                    # the checkpoint carries the whole backbone (random-init or fine-tuned)
                    bb = load_backbone(self.meta["backbone"], None, self._precision)
                    bb.load_state_dict(self.ckpt.prefixed("backbone"))
                else:
                    weights = self._weights or self.meta.get("weights_path") or "default"
                    bb = load_backbone(self.meta["backbone"], weights, self._precision)
                self._backbone = bb
            return self._backbone

    def set_backbone(self, backbone: Backbone) -> None:
        """Inject an already built backbone (tests, or several embedders sharing one)."""
        self._backbone = backbone

    @torch.inference_mode()
    def embed_features(self, features: Float32Array) -> Float32Array:
        return self.head(torch.from_numpy(np.ascontiguousarray(features))).float().numpy()

    @torch.inference_mode()
    def softmax_scores(self, features: Float32Array) -> Float32Array:
        probe = self.ckpt.prefixed("softmax")
        x = (torch.from_numpy(features) - probe["0.mean"]) / probe["0.std"]
        return (x @ probe["1.weight"].T + probe["1.bias"]).numpy()

    @property
    def words(self) -> WordVectors:
        """The checkpoint's word space, loaded on first use."""
        with self._lock:
            if self._words is None:
                from model.words import load_words

                self._words = load_words(self.words_source)
            return self._words

    def share_words(self, words: WordVectors) -> None:
        """Reuse an already loaded word space (it must be the checkpoint's own)."""
        if words.source != self.words_source:
            raise ValueError(f"{words.source} is not this checkpoint's {self.words_source}")
        self._words = words
