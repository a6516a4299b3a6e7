"""The one search service behind every face: CLI, Gradio UI and Gradio's HTTP API.

Three questions in one vector space, each filterable by label, folder and score:
text -> images, image -> images, image -> tags. Text queries read word vectors from the
index's own `words` collection, so they never load the backbone (nor gensim).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qdrant.filters import SearchFilter
from qdrant.schema import IMAGES, WORDS, abs_posix, check_schema
from qdrant.store import Hit, Store

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

MAX_K = 1000
MAX_QUERY_CHARS = 500
DEFAULT_MAX_RANK = 20_000  # tags come from the 20k most frequent words
DEFAULT_VOCABULARY = 100_000  # what an index with no vocabulary loads by itself (~8 s)
DEFAULT_WORDS = "glove-6b-50d"  # the packaged word space, the default of every model
MODELS = ("devise", "conse", "clip")
_TOKEN = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")


class ServiceError(Exception):
    """A query that cannot be answered; the message says why and what to do."""


class EmptyIndexError(ServiceError):
    pass


class ModelMissingError(ServiceError):
    pass


class BadQueryError(ServiceError):
    pass


@dataclass
class ImageResult:
    path: str
    score: float
    label: str
    folder: str

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "score": round(self.score, 6),
            "label": self.label,
            "folder": self.folder,
        }


@dataclass
class TagResult:
    word: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"word": self.word, "score": round(self.score, 6)}


@dataclass
class Answer:
    model: str
    took_ms: float
    results: list[Any] = field(default_factory=list)
    #: why an image query came back empty, when a filter can never match (not in JSON)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "took_ms": round(self.took_ms, 2),
            "results": [r.to_json() for r in self.results],
        }


def fold_inflections(words: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Keep the best-scoring form of words that only differ by inflection (cat / cats)."""
    kept: list[tuple[str, float]] = []
    stems: set[str] = set()
    for w, s in words:
        stem = _stem(w)
        if stem in stems:
            continue
        stems.add(stem)
        kept.append((w, s))
    return kept


def _stem(word: str) -> str:
    w = word.lower()
    for suffix, repl in (
        ("ies", "y"),
        ("sses", "ss"),
        ("xes", "x"),
        ("ches", "ch"),
        ("shes", "sh"),
    ):
        if w.endswith(suffix) and len(w) - len(suffix) >= 2:
            return w[: -len(suffix)] + repl
    # a plain plural "s", but not the s of bus, glass, iris
    if w.endswith("s") and len(w) >= 4 and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def validate(k: int, min_score: float | None) -> None:
    if not 1 <= k <= MAX_K:
        raise BadQueryError(f"k must be between 1 and {MAX_K}, got {k}")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise BadQueryError(f"min score must be between 0 and 1, got {min_score}")


ImageInput = str | Path | bytes | Any  # a path, raw bytes, or a PIL image


class SearchService:
    """Answers queries against one store. Embedders are built lazily and at most once."""

    def __init__(
        self,
        store: Store,
        *,
        checkpoint: Path | None = None,
        precision: str = "auto",
        embedders: dict[str, Any] | None = None,
        embedder_factory: Callable[[str, dict[str, Any]], Any] | None = None,
        notify: Callable[[str], None] | None = None,
        progress: bool = False,
    ) -> None:
        self.store = store
        self.checkpoint = checkpoint
        self.precision = precision
        self._embedders: dict[str, Any] = dict(embedders or {})
        self._factory = embedder_factory
        self._lock = threading.Lock()
        self._vocabulary_lock = threading.Lock()
        #: where one-line notices go (the CLI prints them to stderr); progress: show bars
        self.notify: Callable[[str], None] = notify or log.warning
        self.progress = progress

    # ------------------------------------------------------------------ state

    def meta(self) -> dict[str, Any]:
        meta = self.store.get_meta()
        check_schema(meta, self.store.describe())
        return meta

    def models(self) -> list[str]:
        """The models whose vectors the index holds, in display order."""
        present = (self.meta().get("models") or {}).keys()
        return [m for m in MODELS if m in present] + sorted(set(present) - set(MODELS))

    def labels(self) -> list[str]:
        return sorted(self.store.facet_labels())

    def status(self) -> dict[str, Any]:
        meta = self.meta()
        models = {}
        for name, rec in (meta.get("models") or {}).items():
            models[name] = {
                "dim": rec.get("dim"),
                "id": rec.get("id"),
                "points": self.store.count_vectors(name),
            }
        return {
            "index": self.store.describe(),
            "images": self.store.count(IMAGES),
            "words": self.store.count(WORDS),
            "models": models,
        }

    def _has_images(self) -> bool:
        # one point is enough to know: an exact count costs ~20 ms at 100,000 points
        return next(iter(self.store.scroll_images(batch=1)), None) is not None

    def require_images(self, model: str) -> dict[str, Any]:
        """What the index records of `model`; raises when it holds no images, or none of
        `model`'s vectors: image searches cannot do without them."""
        return self._require_images(model)

    def _require_images(self, model: str) -> dict[str, Any]:
        if not self._has_images():
            raise EmptyIndexError(
                f"the index {self.store.describe()} holds no images yet: fill it with "
                "`devise ingest DIR` (or `devise demo` for the sample)"
            )
        rec = (self.meta().get("models") or {}).get(model)
        if rec is None:
            have = ", ".join(self.models()) or "none"
            raise ModelMissingError(
                f"the index holds no {model!r} vectors (it has: {have}). "
                f"Add them with `devise ingest DIR --models {model}`."
            )
        return dict(rec)

    # ------------------------------------------------------------------ embedders

    def embedder(self, model: str) -> Any:
        """The embedder that made `model`'s vectors; refuses one with another content id.

        An index with no `model` vectors (no images at all, say) needs none to embed a query
        image: the model is built from its defaults (conse, clip) or --checkpoint (devise).
        """
        rec = self._model_record(model)
        with self._lock:
            emb = self._embedders.get(model)
            if emb is None:
                emb = self._build(model, rec)
                self._embedders[model] = emb
        if rec.get("id") is not None and getattr(emb, "content_id", rec["id"]) != rec["id"]:
            raise ModelMissingError(
                f"the index's {model} vectors were made by model {rec.get('id')}, but the "
                f"loaded {model} model is {emb.content_id}: its answers would be wrong. Use the "
                f"checkpoint that built the index, or re-ingest with --reembed."
            )
        return emb

    def _model_record(self, model: str) -> dict[str, Any]:
        """What the index records of `model`, or {} where the defaults (or --checkpoint) do."""
        rec = (self.meta().get("models") or {}).get(model)
        if rec is not None:
            return dict(rec)
        if model == "devise" and self.checkpoint is None and self._factory is None:
            if model not in self._embedders:
                raise ModelMissingError(
                    "the index records no DeViSE model: pass --checkpoint CKPT (train one with "
                    "`devise train DATA --out CKPT`), or use --model conse"
                )
        elif model not in MODELS:
            raise ModelMissingError(f"unknown model {model!r}: choose from {', '.join(MODELS)}")
        return {}

    def _words_source(self, model: str | None = None) -> str:
        """The word space `model`'s vectors live in (the index's first model's by default)."""
        records = self.meta().get("models") or {}
        for name in [model] if model else ["devise", "conse"]:
            source = (records.get(name) or {}).get("words") or getattr(
                self._embedders.get(name), "words_source", None
            )
            if source:
                return str(source)
        return DEFAULT_WORDS

    def ensure_vocabulary(self, source: str | None = None) -> bool:
        """Loads the default vocabulary (the 100,000 most frequent words) into an index that
        has none, saying so in one line; True when it loaded. Once: the index then has one."""
        with self._vocabulary_lock:
            if (self.meta().get("words") or {}).get("count"):
                return False
            from ingest.vocabulary import load_vocabulary
            from model.words import load_words

            source = source or self._words_source()
            self.notify(
                f"the index has no vocabulary yet: loading the {DEFAULT_VOCABULARY:,} most "
                f"frequent words of {source} (about 8 s; `devise words` picks another size)"
            )
            load_vocabulary(self.store, load_words(source), DEFAULT_VOCABULARY, self.progress)
            return True

    def _build(self, model: str, rec: dict[str, Any]) -> Any:
        if self._factory is not None:
            return self._factory(model, rec)
        if model == "devise":
            from model.embedder import DeviseEmbedder

            ckpt = self.checkpoint or (Path(rec["checkpoint"]) if rec.get("checkpoint") else None)
            if ckpt is None:
                raise ModelMissingError("no DeViSE checkpoint: pass --checkpoint CKPT")
            return DeviseEmbedder(ckpt, precision=self.precision)
        if model == "conse":
            from model.conse import ConseEmbedder

            weights = rec.get("weights")
            return ConseEmbedder(
                rec.get("backbone", "efficientnet_lite0"),
                rec.get("words", DEFAULT_WORDS),
                int(rec.get("top_t", 10)),
                # the packaged or torchvision weights resolve by name; a file by its id only
                "default" if not str(weights or "").startswith("sha256:") else None,
                self.precision,
            )
        if model == "clip":
            from model.clip import ClipEmbedder, ClipUnavailable

            wf = rec.get("weights_file")
            try:
                return ClipEmbedder(
                    rec.get("model", "ViT-B-32"),
                    rec.get("pretrained", "laion2b_s34b_b79k"),
                    Path(wf) if wf and Path(wf).exists() else None,
                    self.precision,
                    allow_download=False,
                )
            except ClipUnavailable as e:
                raise ModelMissingError(str(e)) from e
        raise ModelMissingError(f"model {model!r} cannot be loaded by this version")

    # ------------------------------------------------------------------ queries

    def _filter(
        self, labels: Sequence[str] | None, folder: str | None, min_score: float | None
    ) -> SearchFilter:
        folder = folder.strip() if folder else None
        return SearchFilter(
            labels=tuple(x for x in (labels or ()) if x), folder=folder or None, min_score=min_score
        )

    def _images(
        self,
        model: str,
        vector: Float32Array,
        k: int,
        flt: SearchFilter,
        exclude: str | None = None,
    ) -> list[ImageResult]:
        hits: list[Hit] = self.store.search_images(model, vector, k + (1 if exclude else 0), flt)
        out = [
            ImageResult(
                str(h.payload.get("path", "")),
                float(h.score),
                str(h.payload.get("label", "")),
                str(h.payload.get("folder", "")),
            )
            for h in hits
            if not (exclude and h.payload.get("path") == exclude)
        ]
        return out[:k]

    def text_vector(self, text: str, model: str) -> Float32Array:
        """A text query in `model`'s space: mean of word vectors, or CLIP's text encoder."""
        text = (text or "").strip()
        if not text:
            raise BadQueryError("the query is empty: type a word such as 'dog'")
        if len(text) > MAX_QUERY_CHARS:
            raise BadQueryError(
                f"the query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}"
            )
        if model == "clip":
            self._require_images("clip")  # images to search among, before any model loads
            return np.asarray(self.embedder("clip").embed_texts([text])[0], dtype=np.float32)
        rec = self._require_images(model)
        words_meta = self.meta().get("words") or {}
        # meta's count, not count(WORDS): an exact count of 100k points costs ~10 ms a query
        if not words_meta.get("count") and self.ensure_vocabulary(rec.get("words")):
            words_meta = self.meta().get("words") or {}
        if rec.get("words") and words_meta.get("source") not in (None, rec.get("words")):
            raise ModelMissingError(
                f"the vocabulary is {words_meta.get('source')} but the {model} vectors live in "
                f"{rec.get('words')}: run `devise words --words {rec.get('words')}`"
            )
        tokens = [t.lower() for t in _TOKEN.findall(text)]
        if not tokens:
            raise BadQueryError(f"no word in the query {text!r}: use letters, such as 'dog'")
        parts = {p for t in tokens if "-" in t for p in t.split("-") if p}
        found = self.store.find_words(sorted(set(tokens) | parts))
        # like a label: a hyphenated word whole if known, else its known parts
        tokens = [
            p for t in tokens for p in ([t] if t in found or "-" not in t else t.split("-")) if p
        ]
        unknown = [t for t in dict.fromkeys(tokens) if t not in found]
        if len(unknown) == len(set(tokens)):
            raise BadQueryError(self._unknown_message(unknown))
        if unknown:
            log.warning("ignoring unknown word(s): %s", ", ".join(unknown))
        vecs = np.stack([found[t] for t in tokens if t in found]).astype(np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        mean = vecs.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def _unknown_message(self, unknown: Sequence[str]) -> str:
        suggest = self._suggester()
        parts = []
        for w in unknown:
            near = suggest(w)
            parts.append(f"{w!r}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        return "unknown word(s) in the vocabulary: " + "; ".join(parts)

    def _suggester(self) -> Callable[[str], list[str]]:
        """Near spellings from the vocabulary's own source (loaded on this error path only)."""
        source = (self.meta().get("words") or {}).get("source")
        try:
            from model.words import load_words

            words = load_words(source) if source else None
        except Exception as e:  # noqa: BLE001 - suggestions are a courtesy, never a failure
            log.info("no spelling suggestions: %s", e)
            words = None
        if words is None:
            return lambda w: []
        return lambda w: words.suggest(w, limit=DEFAULT_MAX_RANK * 2)

    def unmatched_filter(self, labels: Sequence[str], folder: str | None) -> str | None:
        """Which filter no indexed image matches, in one line; None when each matches some."""
        wanted = [x for x in labels if x]
        known = self.store.facet_labels() if wanted else {}
        for label in wanted:
            if label not in known:
                names = sorted(known)
                shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
                return f"no image has the label {label!r} (labels: {shown or 'none'})"
        folder = folder.strip() if folder else None
        if folder and not self.store.count(IMAGES, SearchFilter(folder=folder)):
            return f"no indexed image is under {abs_posix(folder)}"
        return None

    def _explain_empty(self, answer: Answer, labels: Sequence[str], folder: str | None) -> Answer:
        if not answer.results and (labels or folder):
            answer.note = self.unmatched_filter(labels, folder)
        return answer

    def search_text(
        self,
        text: str,
        *,
        model: str = "devise",
        labels: Sequence[str] = (),
        folder: str | None = None,
        min_score: float | None = None,
        k: int = 10,
    ) -> Answer:
        validate(k, min_score)
        t0 = time.perf_counter()
        vector = self.text_vector(text, model)
        results = self._images(model, vector, k, self._filter(labels, folder, min_score))
        answer = Answer(model, (time.perf_counter() - t0) * 1000, results)
        return self._explain_empty(answer, labels, folder)

    def image_vector(self, image: ImageInput, model: str) -> tuple[Float32Array, str | None]:
        """(vector, indexed path or None). An indexed path reuses its stored vector."""
        from PIL import Image as PILImage

        if isinstance(image, (str, Path)):
            path = abs_posix(image)
            rec = self.store.find_by_path([path]).get(path)
            if rec is not None:
                stored = self.store.retrieve_images([rec.id], with_vectors=[model])
                vec = stored[0].vectors.get(model) if stored else None
                if vec is not None:
                    return np.asarray(vec, dtype=np.float32), path
        emb = self.embedder(model)
        from model.images import decode_image

        if isinstance(image, PILImage.Image):
            pil = image.convert("RGB")
        else:
            pil = decode_image(image if isinstance(image, bytes) else Path(image))
        return np.asarray(emb.embed_images([pil])[0], dtype=np.float32), None

    def similar(
        self,
        image: ImageInput,
        *,
        model: str = "devise",
        labels: Sequence[str] = (),
        folder: str | None = None,
        min_score: float | None = None,
        k: int = 10,
    ) -> Answer:
        validate(k, min_score)
        t0 = time.perf_counter()
        self._require_images(model)
        vector, path = self.image_vector(image, model)
        results = self._images(
            model, vector, k, self._filter(labels, folder, min_score), exclude=path
        )
        answer = Answer(model, (time.perf_counter() - t0) * 1000, results)
        return self._explain_empty(answer, labels, folder)

    def tag(
        self,
        image: ImageInput,
        *,
        model: str = "devise",
        k: int = 10,
        min_score: float | None = None,
        max_rank: int = DEFAULT_MAX_RANK,
    ) -> Answer:
        validate(k, min_score)
        t0 = time.perf_counter()
        # no image of the index is needed: an image it lacks is embedded, and the tags are
        # words, so only the model and the vocabulary must be there
        vector, _ = self.image_vector(image, model)
        if model == "clip":
            emb = self.embedder("clip")
            pairs = emb.tag(vector, k)
        else:
            if not (self.meta().get("words") or {}).get("count"):
                t_load = time.perf_counter()
                self.ensure_vocabulary(self._words_source(model))
                t0 += time.perf_counter() - t_load  # took_ms is the query's, not the load's
            flt = SearchFilter(max_rank=max_rank, min_score=min_score)
            hits = self.store.search_words(vector, k * 3, flt)
            pairs = fold_inflections([(str(h.payload.get("word")), float(h.score)) for h in hits])
        results = [TagResult(w, s) for w, s in pairs[:k]]
        return Answer(model, (time.perf_counter() - t0) * 1000, results)

    def compare(
        self,
        kind: str,
        query: Any,
        *,
        labels: Sequence[str] = (),
        folder: str | None = None,
        min_score: float | None = None,
        k: int = 10,
    ) -> dict[str, Answer | str]:
        """The same query answered by every model in the index: an Answer or an error text."""
        out: dict[str, Answer | str] = {}
        for model in self.models():
            try:
                if kind == "text":
                    out[model] = self.search_text(
                        query, model=model, labels=labels, folder=folder, min_score=min_score, k=k
                    )
                elif kind == "image":
                    out[model] = self.similar(
                        query, model=model, labels=labels, folder=folder, min_score=min_score, k=k
                    )
                else:
                    out[model] = self.tag(query, model=model, k=k, min_score=min_score)
            except (ServiceError, ValueError) as e:
                out[model] = str(e)
        return out
