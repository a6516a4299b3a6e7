"""Embedders: one batch-first interface, unit-norm float32 output, lazily built.

`embed_images(list[Image]) -> (N, D)` and `embed_texts(list[str]) -> (N, D)`, with a
`name`, a `dim` and a `content_id` that the index records, so vectors of different models
are never mixed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from model.checkpoint import Checkpoint, load_checkpoint
from model.data.images import Preprocess, to_array
from model.specs import DEFAULT_BACKBONE, RANDOM_INIT, BackboneLike, weights_identity
from model.vocab.words import WordVectors, unit

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
        from model.vocab.words import label_tokens

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
    def backbone(self) -> BackboneLike:
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

    def image_arrays(self, images: Sequence[Image.Image]) -> Float32Array:
        """Images preprocessed for the backbone, stacked (N, 3, H, W)."""
        spec = self.backbone.spec.preprocess
        return np.stack([to_array(im, spec) for im in images])

    def embed_images(self, images: Sequence[Image.Image]) -> Float32Array:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_arrays(self.image_arrays(images))

    def embed_texts(self, texts: Sequence[str]) -> Float32Array:
        """A phrase is the unit mean of its known words; raises UnknownWordsError."""
        words = self.words
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return unit(np.stack([embed_phrase(words, t) for t in texts]))


def head_forward(
    head: Mapping[str, npt.NDArray[np.float32]], kind: str, features: Float32Array
) -> Float32Array:
    """`model.embedders.devise.DeviseHead.forward` in eval mode, in numpy: queries need no torch.

    `head` is the head's state dict. A test checks this against the torch module.
    """
    x = (np.asarray(features, dtype=np.float32) - head["feat_mean"]) / head["feat_std"]
    if kind == "linear":
        y = x @ head["proj.weight"].T + head["proj.bias"]
    elif kind == "mlp":  # Linear, BatchNorm1d (running statistics), ReLU, Dropout, Linear
        h = x @ head["proj.0.weight"].T + head["proj.0.bias"]
        h = (h - head["proj.1.running_mean"]) / np.sqrt(head["proj.1.running_var"] + 1e-5)
        h = np.maximum(h * head["proj.1.weight"] + head["proj.1.bias"], 0.0)
        y = h @ head["proj.4.weight"].T + head["proj.4.bias"]
    else:
        raise ValueError(f"unknown head {kind!r}: use linear or mlp")
    norm = np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)  # F.normalize
    return np.asarray(y / norm, dtype=np.float32)


class DeviseEmbedder(WordSpaceEmbedder):
    """A trained DeViSE checkpoint: backbone + projection into the word space.

    Inference needs no torch when the backbone's compiled model is cached
    (`model.fastpath.load_compiled`): the head runs in numpy.
    """

    name = "devise"

    def __init__(
        self,
        checkpoint: Path | Checkpoint,
        *,
        weights: str | None = None,
        precision: str = "fp32",
        words: WordVectors | None = None,
    ) -> None:
        if isinstance(checkpoint, Checkpoint):
            self.ckpt = Checkpoint(
                {k: np.asarray(v) for k, v in checkpoint.tensors.items()}, checkpoint.meta
            )
        else:
            self.ckpt = load_checkpoint(checkpoint, framework="numpy")
        self.meta: dict[str, Any] = self.ckpt.meta
        self._weights = weights
        self._precision = precision
        self._words = words
        self._lock = threading.Lock()
        self._backbone: BackboneLike | None = None
        self.head_kind = str(self.meta.get("head", "linear"))
        self.head_state: dict[str, Float32Array] = {
            k: v.astype(np.float32) for k, v in self.ckpt.prefixed("head").items()
        }
        self.labels: list[str] = list(self.meta["labels"])
        self.label_vectors: Float32Array = self.ckpt.tensors["labels.vectors"]

    @property
    def dim(self) -> int:
        return int(self.meta["words"]["dim"])

    @property
    def content_id(self) -> str:
        return self.ckpt.content_id

    @property
    def words_source(self) -> str:
        return str(self.meta["words"]["source"])

    def label_matrix(self, labels: Sequence[str]) -> Float32Array:
        """(L, D) unit vectors of `labels` as this checkpoint scores them: its own labels'
        stored vectors, and any other label made the same way (moved towards its
        hypernyms by the checkpoint's weight, model/vocab/hierarchy.py)."""
        from model.vocab.hierarchy import hypernym_label_matrix

        known = {lab: i for i, lab in enumerate(self.labels)}
        new = [lab for lab in labels if lab not in known]
        made: dict[str, Float32Array] = {}
        if new:
            spec = self.meta.get("label_vectors") or {}
            mat, _ = hypernym_label_matrix(
                self.words,
                new,
                float(spec.get("hypernym_weight", 0.0)),
                int(spec.get("hypernym_depth", 3)),
            )
            made = dict(zip(new, mat, strict=True))
        rows = [self.label_vectors[known[lab]] if lab in known else made[lab] for lab in labels]
        return unit(np.stack(rows).astype(np.float32))

    @property
    def backbone(self) -> BackboneLike:
        """Built on first use, under a lock: text queries never pay for it."""
        with self._lock:
            if self._backbone is None:
                self._backbone = self._load_backbone()
            return self._backbone

    def _load_backbone(self) -> BackboneLike:
        from model import fastpath

        name, wid = self.meta["backbone"], self.meta["weights"]
        if wid == RANDOM_INIT or self.meta.get("finetuned"):
            # The checkpoint carries the whole backbone (random-init or fine-tuned): its
            # compiled model is cached under the checkpoint's own id.
            key = f"{self.content_id}:backbone"
            cached = fastpath.load_compiled(name, RANDOM_INIT, self._precision, key)
            if cached is not None:
                return cached
            import torch

            from model.backbones import load_backbone

            bb = load_backbone(name, None, self._precision)
            bb.load_state_dict({k: torch.from_numpy(v) for k, v in self._carried().items()})
            bb.set_weights_key(key)
            return bb
        weights = self._weights or self.meta.get("weights_path") or "default"
        return load_for_inference(name, weights, self._precision)

    def _carried(self) -> dict[str, Any]:
        return self.ckpt.prefixed("backbone")

    def set_backbone(self, backbone: BackboneLike) -> None:
        """Inject an already built backbone (tests, or several embedders sharing one)."""
        self._backbone = backbone

    def embed_features(self, features: Float32Array) -> Float32Array:
        return head_forward(self.head_state, self.head_kind, features)

    def softmax_scores(self, features: Float32Array) -> Float32Array:
        probe = self.ckpt.prefixed("softmax")
        x = (np.asarray(features, dtype=np.float32) - probe["0.mean"]) / probe["0.std"]
        return np.asarray(x @ probe["1.weight"].T + probe["1.bias"], dtype=np.float32)

    @property
    def words(self) -> WordVectors:
        """The checkpoint's word space, loaded on first use."""
        with self._lock:
            if self._words is None:
                from model.vocab.words import load_words

                self._words = load_words(self.words_source)
            return self._words

    def share_words(self, words: WordVectors) -> None:
        """Reuse an already loaded word space (it must be the checkpoint's own)."""
        if words.source != self.words_source:
            raise ValueError(f"{words.source} is not this checkpoint's {self.words_source}")
        self._words = words


#: The near-duplicate vector's dimension: pooled backbone features projected to 128 d. On the
#: planted copies of bench/bench_duplicates.py, 128 d groups the real photos as the whole
#: 1280-d features do, and the duplicate scan over 100,000 points costs a tenth as much.
DUP_DIM = 128
# The projection is a fixed Gaussian matrix drawn from this seed: the same on every machine,
# and its hash is part of the content id, so a change would be refused, never mixed.
_DUP_SEED = 14


class LazyBackbone:
    """A named ImageNet backbone built on first use (from the compiled cache when it is
    there), or injected to share one forward pass (ConSE and dup share DeViSE's)."""

    backbone_name: str
    _weights: str | None
    _precision: str
    _backbone: BackboneLike | None
    _lock: threading.Lock

    @property
    def backbone(self) -> BackboneLike:
        with self._lock:
            if self._backbone is None:
                self._backbone = load_for_inference(
                    self.backbone_name, self._weights, self._precision
                )
            return self._backbone

    def set_backbone(self, backbone: BackboneLike) -> None:
        """Inject an already built backbone (tests, or sharing DeViSE's)."""
        if backbone.name != self.backbone_name:
            raise ValueError(f"backbone {backbone.name} is not {self.backbone_name}")
        with self._lock:
            self._backbone = backbone


class DuplicateEmbedder(LazyBackbone):
    """The `dup` vector, what `devise duplicates` compares: an ImageNet backbone's pooled
    features, unit-norm, randomly projected to DUP_DIM dimensions and unit-norm again.

    Not in a word space: no text queries. The word-space models (devise, conse) put every
    photo of a class near every other; the backbone's own features tell one photo from
    another, and a resized, recompressed or slightly cropped copy stays close (measured in
    bench/bench_duplicates.py). Shares the forward pass with devise and conse on the same
    backbone (ingest.pipeline.embed_batch), so it costs a matrix product per batch.
    """

    name = "dup"

    def __init__(
        self,
        backbone_name: str = DEFAULT_BACKBONE,
        weights: str | None = "default",
        precision: str = "fp32",
        *,
        backbone: BackboneLike | None = None,
    ) -> None:
        self.backbone_name = backbone.name if backbone is not None else backbone_name
        self._weights = weights
        self._precision = precision
        self._backbone = backbone
        self._projection: Float32Array | None = None
        self._lock = threading.Lock()

    @property
    def projection(self) -> Float32Array:
        """(feature_dim, DUP_DIM) fixed Gaussian matrix."""
        features = self.backbone.feature_dim
        with self._lock:
            if self._projection is None or self._projection.shape[0] != features:
                rng = np.random.default_rng(_DUP_SEED)
                self._projection = rng.standard_normal((features, DUP_DIM)).astype(np.float32)
            return self._projection

    @property
    def dim(self) -> int:
        return DUP_DIM

    @property
    def content_id(self) -> str:
        bb = self.backbone
        digest = hashlib.sha256(self.projection.tobytes()).hexdigest()[:12]
        key = f"dup|{bb.name}|{bb.weights_id}|{digest}"
        return "dup:" + hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def preprocess(self) -> Preprocess:
        return self.backbone.spec.preprocess

    def embed_features(self, features: Float32Array) -> Float32Array:
        """Pooled backbone features (N, F) -> (N, DUP_DIM) unit vectors."""
        if len(features) == 0:
            return np.zeros((0, DUP_DIM), np.float32)
        return unit(unit(np.asarray(features, dtype=np.float32)) @ self.projection)

    def embed_arrays(self, arrays: Float32Array) -> Float32Array:
        return self.embed_features(self.backbone.features(arrays))

    def embed_images(self, images: Sequence[Image.Image]) -> Float32Array:
        if not images:
            return np.zeros((0, DUP_DIM), np.float32)
        spec = self.preprocess
        return self.embed_arrays(np.stack([to_array(im, spec) for im in images]))


def load_for_inference(
    name: str, weights: str | os.PathLike[str] | None, precision: str
) -> BackboneLike:
    """A backbone for queries: from the compiled-model cache without torch when it is there,
    else built with torch (which compiles and caches it for the next process)."""
    from model import fastpath

    wid = weights_identity(name, weights)
    if wid is not None:
        cached = fastpath.load_compiled(name, wid, precision)
        if cached is not None:
            return cached
    from model.backbones import load_backbone

    return load_backbone(name, weights, precision)
