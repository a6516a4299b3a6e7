"""ConSE (Norouzi et al., ICLR 2014): a convex combination of class word vectors.

No training: the backbone's own ImageNet-1k classifier gives softmax probabilities; the
image vector is the probability-weighted mean of the word vectors of its top-T classes
(T = 10, as in the paper). A class whose name has several words ("tiger cat") uses the
unit mean of those words (`WordVectors.label_vector`). It lives in the same word space as
DeViSE, so word tags and word queries serve it unchanged.

Classes whose name has no known word in the word space have a zero vector. They keep
their place in the classifier's top-T ranking (the ranking is the classifier's), but get
zero weight: the remaining top-T probabilities are renormalised over the known classes.
A row whose top-T classes are all unknown becomes the zero vector.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from model.detectors.faces import FaceDetector
from model.embedders.embedder import LazyBackbone, WordSpaceEmbedder
from model.specs import DEFAULT_BACKBONE, BackboneLike
from model.vocab.words import DEFAULT_WORDS, WordVectors, imagenet_class_names, load_words, unit

Float32Array = npt.NDArray[np.float32]
DEFAULT_TOP_T = 10
# an image is filed under a concept holding at least this much of its probability
CONCEPT_PAYLOAD_MASS = 0.1
#: the payload field (and the `inspect` key) of a picture's regions
REGIONS = "regions"


def softmax(logits: Float32Array) -> Float32Array:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def conse_vectors(probs: Float32Array, class_vectors: Float32Array, top_t: int) -> Float32Array:
    """(N, C) class probabilities and (C, D) class vectors -> (N, D) unit ConSE vectors.

    Each row is sum_t p_t * v_t / sum_t p_t over its `top_t` most probable classes, with
    classes whose vector is all zeros (no known word) dropped from the sum and the weights
    renormalised over the rest; then unit-normalised.
    """
    probs = np.asarray(probs, dtype=np.float32)
    class_vectors = np.asarray(class_vectors, dtype=np.float32)
    n, c = probs.shape
    t = max(1, min(int(top_t), c))
    top = np.argpartition(-probs, t - 1, axis=1)[:, :t]  # (N, T), order within T irrelevant
    weights = np.take_along_axis(probs, top, axis=1)
    known = np.any(class_vectors != 0, axis=1)
    weights = weights * known[top]
    total = weights.sum(axis=1, keepdims=True)
    weights = weights / np.where(total > 0, total, 1.0)
    out = np.einsum("nt,ntd->nd", weights, class_vectors[top])
    return unit(out.astype(np.float32)) if n else np.zeros((0, class_vectors.shape[1]), np.float32)


def top_probs(conse_top: Sequence[Sequence[float]], classes: int = 1000) -> Float32Array:
    """The `conse_top` payload ([[class, p], ...]) back to a (classes,) probability row."""
    row = np.zeros(classes, np.float32)
    for pair in conse_top:
        i, p = int(pair[0]), float(pair[1])
        if 0 <= i < classes:
            row[i] = p
    return row


def imagenet_class_vectors(words: WordVectors) -> Float32Array:
    """(1000, D) unit word vectors of the ImageNet-1k class names; zero rows where unknown."""
    rows = np.zeros((1000, words.dim), np.float32)
    for i, name in enumerate(imagenet_class_names()):
        v = words.label_vector(name)
        if v is not None:
            rows[i] = v
    return rows


class ConseEmbedder(LazyBackbone, WordSpaceEmbedder):
    """ConSE over an ImageNet backbone's classifier, in a word space. Built lazily."""

    name = "conse"

    def __init__(
        self,
        backbone_name: str = DEFAULT_BACKBONE,
        words: WordVectors | str = DEFAULT_WORDS,
        top_t: int = DEFAULT_TOP_T,
        weights: str | None = "default",
        precision: str = "fp32",
        *,
        backbone: BackboneLike | None = None,
        class_vectors: Float32Array | None = None,
        detect_faces: bool = True,
        regions: bool = False,
    ) -> None:
        if top_t < 1:
            raise ValueError(f"top_t must be at least 1, got {top_t}")
        self.backbone_name = backbone.name if backbone is not None else backbone_name
        self.top_t = int(top_t)
        self._weights = weights
        self._precision = precision
        self._words: WordVectors | None = words if isinstance(words, WordVectors) else None
        self._words_name = words.source if isinstance(words, WordVectors) else str(words)
        self._backbone = backbone
        self._class_vectors = class_vectors
        self._lock = threading.Lock()
        # ImageNet-1k has no person class: a face detector supplies `person`
        # (model/detectors/faces.py)
        self._faces: FaceDetector | None = FaceDetector() if detect_faces else None
        #: read each picture's regions too (model/regions.py): a flag, as it costs a pass of
        #: the backbone per region at ingest
        self.regions = regions

    # -- lazily built parts, each under the lock so two threads never build twice
    @property
    def words(self) -> WordVectors:
        with self._lock:
            if self._words is None:
                self._words = load_words(self._words_name)
            return self._words

    @property
    def class_vectors(self) -> Float32Array:
        words = self.words
        with self._lock:
            if self._class_vectors is None:
                self._class_vectors = imagenet_class_vectors(words)
            return self._class_vectors

    @property
    def words_source(self) -> str:
        return self._words_name

    @property
    def dim(self) -> int:
        return self.words.dim

    @property
    def content_id(self) -> str:
        bb = self.backbone
        key = f"conse|{bb.name}|{bb.weights_id}|{self._words_name}|T={self.top_t}"
        return "conse:" + hashlib.sha256(key.encode()).hexdigest()[:16]

    def class_probs(self, features: Float32Array) -> Float32Array:
        """Pooled backbone features (N, F) -> (N, 1000) ImageNet class probabilities."""
        if len(features) == 0:
            return np.zeros((0, 1000), np.float32)
        return softmax(self.backbone.logits(np.ascontiguousarray(features, dtype=np.float32)))

    def probs_images(self, images: Sequence[Image.Image]) -> Float32Array:
        """Images -> (N, 1000) class probabilities: what hedged tags are scored from."""
        if not images:
            return np.zeros((0, 1000), np.float32)
        return self.class_probs(self.backbone.features(self.image_arrays(images)))

    #: the payload fields `embed_payload` always writes
    payload_fields = ("concepts", "conse_top", "detected")

    @property
    def extra_fields(self) -> tuple[str, ...]:
        """Payload fields `embed_payload` writes at ingest (a point lacking one is refreshed:
        an index made before regions gets them on the next ingest with regions)."""
        return self.payload_fields + ((REGIONS,) if self.regions else ())

    def inspect(self, image: Image.Image) -> dict[str, Any]:
        """What a detector sees in a decoded picture, by concept key ({} without one): a
        face is a `person`; with regions on, also its regions under the key `regions`
        (model/regions.py). Runs in the loader threads at ingest."""
        out: dict[str, Any] = self._faces.concepts(image) if self._faces is not None else {}
        if self.regions:
            out[REGIONS] = self.read_regions(image)
        return out

    def read_regions(self, image: Image.Image) -> list[dict[str, Any]]:
        """The picture's regions: each one's box and top classes (model/regions.py)."""
        from model.regions import RegionSpec, read_regions

        return read_regions(self.backbone, [image], RegionSpec("crops"))[0]

    def detect_images(self, images: Sequence[Image.Image]) -> list[dict[str, Any]]:
        return [self.inspect(im) for im in images]

    def embed_payload(
        self, features: Float32Array, detected: Sequence[dict[str, Any]] | None = None
    ) -> tuple[Float32Array, list[dict[str, Any]]]:
        """Pooled features (N, F) -> the ConSE vectors and, per image, its payload: the
        classifier runs once for both. The payload holds its top-T classes with their
        probabilities (`conse_top`, to tag an indexed image without the backbone), what a
        detector found (`detected`: {concept key: score}) and the keys (wnids) of the
        concepts holding at least CONCEPT_PAYLOAD_MASS of its probability, or detected
        (`concepts`, keyword-indexed, for text search on a general word such as `dog`)."""
        from model.vocab.hierarchy import imagenet_concepts

        if len(features) == 0:
            return np.zeros((0, self.dim), np.float32), []
        probs = self.class_probs(features)
        vectors = conse_vectors(probs, self.class_vectors, self.top_t)
        cs = imagenet_concepts()
        mass = cs.mass(probs, self.top_t)
        found = list(detected) if detected is not None else [{} for _ in range(len(probs))]
        out = []
        for p, m, inspected in zip(probs, mass, found, strict=True):
            seen = {k: float(v) for k, v in inspected.items() if k != REGIONS}
            top = np.argsort(-p)[: self.top_t]
            keys = {cs.concepts[int(i)].key for i in np.flatnonzero(m >= CONCEPT_PAYLOAD_MASS)}
            keys |= {k for k, score in seen.items() if score >= CONCEPT_PAYLOAD_MASS}
            fields: dict[str, Any] = {
                "conse_top": [[int(i), round(float(p[i]), 5)] for i in top],
                "detected": {k: round(float(v), 5) for k, v in seen.items()},
            }
            if REGIONS in inspected:
                from model.regions import region_keys

                fields[REGIONS] = inspected[REGIONS]
                # filed under a region's concepts too, so a word's search finds the photo
                keys |= region_keys(inspected[REGIONS])
            fields["concepts"] = sorted(keys)
            out.append(fields)
        return vectors, out

    def embed_features(self, features: Float32Array) -> Float32Array:
        """Pooled backbone features (N, F) -> (N, D): reuses cached features in evaluation."""
        if len(features) == 0:
            return np.zeros((0, self.dim), np.float32)
        return conse_vectors(self.class_probs(features), self.class_vectors, self.top_t)
