"""The one search service behind every face: CLI, Gradio UI and Gradio's HTTP API.

Three questions in one vector space, each filterable by label, folder and score:
text -> images, image -> images, image -> tags. Image results also filter by the photo's
EXIF: when it was taken, with which camera, and where (app/search/filters.py reads those). Text
queries read word vectors from the index's own `words` collection, so they never load the
backbone (nor gensim).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.search.answers import MAX_K as MAX_K  # imported from here by the benches
from app.search.answers import Answer, ImageResult, TagResult, validate
from app.search.duplicates import (
    DEFAULT_THRESHOLDS,
    DUP_MODEL,
    DuplicateReport,
    DuplicatesError,
    check_threshold,
    scan,
)
from app.search.errors import BadQueryError, EmptyIndexError, ModelMissingError, ServiceError
from app.search.filters import MAX_RADIUS_KM, PhotoFilter, iso_of, read_photo_filter
from app.search.query import QueryError, Reading, Term, parse_query, read_query, reading
from app.search.request import ImageInput, QueryRequest
from app.search.tags import fold_inflections
from qdrant.filters import GeoCircle, SearchFilter
from qdrant.schema import IMAGES, WORDS, abs_posix, check_schema
from qdrant.store import Hit, Store

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

MAX_QUERY_CHARS = 500
DEFAULT_MAX_RANK = 20_000  # tags come from the 20k most frequent words
DEFAULT_VOCABULARY = 100_000  # what an index with no vocabulary loads by itself (~8 s)
DEFAULT_WORDS = "glove-6b-50d"  # the packaged word space, the default of every model
MODELS = ("devise", "conse", "clip")
GENERALITY = ("specific", "general")
# a concept query reads this many images under the concept before ordering them by mass
CONCEPT_CANDIDATES = 500
# a query of several terms on conse scores the images nearest each term's word vector (and
# the concepts' images) by every term: this many per term
JOINT_CANDIDATES = 300
# A devise query that names one of the checkpoint's labels is re-ranked among this many
# nearest images (at least 20 per result asked for): an unseen label's own images sit
# further out by cosine than the seen labels' images (measured on the demo gallery: the
# first sandal at rank 9 of 1,024), so the margin needs a wide pool to find them.
LABEL_CANDIDATES = 5000
# conse's nearest images are weighed by the classifier's confidence among this many nearest
# by cosine (at least 4 per result asked for)
CONSE_CANDIDATES = 100
_TOKEN = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")


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
        self._concept_names: dict[str, dict[str, tuple[str, str]]] = {}
        self._vocabulary_lock = threading.Lock()
        #: the constants of the joint ranking of several terms (app/search/ranking/joint.py)
        self.joint_calibration: Any = None
        #: where one-line notices go (the CLI prints them to stderr); progress: show bars
        self.notify: Callable[[str], None] = notify or log.warning
        self.progress = progress

    # ------------------------------------------------------------------ state

    def meta(self) -> dict[str, Any]:
        meta = self.store.get_meta()
        check_schema(meta, self.store.describe())
        return meta

    def models(self) -> list[str]:
        """The models whose vectors the index holds and that answer searches, in display
        order (not the near-duplicate vector, which only `duplicates` reads)."""
        present = set((self.meta().get("models") or {}).keys()) - {DUP_MODEL}
        return [m for m in MODELS if m in present] + sorted(present - set(MODELS))

    def pick_model(self, model: str | None, kind: str = "search") -> tuple[str, str | None]:
        """(the model a query runs on, why it is not devise). A named `model` is kept. With
        none: devise where the index holds its vectors (to tag: or a devise model is at
        hand), else the first model the index holds (conse, then clip); to tag with neither,
        conse, which needs no checkpoint. A search of an empty index gets its message."""
        if model:
            return model, None
        have = self.models()
        # a tag needs no index: devise tags wherever a devise model is at hand
        at_hand = self.checkpoint is not None or "devise" in self._embedders or self._factory
        if "devise" in have or (kind == "tag" and at_hand):
            return "devise", None
        if not have:
            if kind == "tag":
                return "conse", "tagged with conse: no DeViSE checkpoint (pass --checkpoint CKPT)"
            return "devise", None  # the empty index's message
        return have[0], (
            f"answered with {have[0]}: the index holds no devise vectors (it was ingested "
            "without --checkpoint); --model picks another"
        )

    @staticmethod
    def _with_note(answer: Answer, note: str | None) -> Answer:
        if note:
            answer.note = "; ".join([note] + ([answer.note] if answer.note else []))
        return answer

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
            if rec.get("precision"):  # what made its vectors (ingest/pipeline.py)
                models[name]["precision"] = rec["precision"]
                models[name]["precisions"] = rec.get("precisions") or [rec["precision"]]
        return {
            "index": self.store.describe(),
            "images": self.store.count(IMAGES),
            "words": self.store.count(WORDS),
            "models": models,
        }

    def graph_pending(self) -> int:
        """Image vectors still searched exactly while they wait for their graph (`devise
        ingest` builds it); 0 once built, or below the size where exact search is kept."""
        return self.store.graph_pending()

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
            present = self.models()
            raise ModelMissingError(
                f"the index holds no {model!r} vectors (it has: {', '.join(present) or 'none'}). "
                f"Add them with `devise ingest DIR --models {model}"
                + (" --checkpoint CKPT`" if model == "devise" else "`")
                + (f", or use --model {present[0]}." if present else ".")
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
            if model == "clip" and getattr(emb, "matches_legacy", lambda _: False)(rec["id"]):
                self._migrate_model_id(model, rec["id"], emb.content_id)
                return emb
            raise ModelMissingError(
                f"the index's {model} vectors were made by model {rec.get('id')}, but the "
                f"loaded {model} model is {emb.content_id}: its answers would be wrong. Use the "
                f"checkpoint that built the index, or re-ingest with --reembed."
            )
        return emb

    def _migrate_model_id(self, model: str, old: str, new: str) -> None:
        """Rewrite an identity recorded in an older form (CLIP's by tag) as the current one."""
        meta = self.store.get_meta()
        rec = (meta.get("models") or {}).get(model)
        if rec is None or rec.get("id") != old:
            return
        rec["id"] = new
        self.store.set_meta(meta)
        log.info("%s: recorded model %s is now named %s", model, old, new)

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
            from ingest.vocabulary import concepts_for, load_vocabulary
            from model.vocab.words import load_words

            source = source or self._words_source()
            self.notify(
                f"the index has no vocabulary yet: loading the {DEFAULT_VOCABULARY:,} most "
                f"frequent words of {source} (about 8 s; `devise words` picks another size)"
            )
            models = self.meta().get("models") or {}
            load_vocabulary(
                self.store,
                load_words(source),
                DEFAULT_VOCABULARY,
                self.progress,
                concepts=concepts_for(models),
            )
            return True

    def _build(self, model: str, rec: dict[str, Any]) -> Any:
        if self._factory is not None:
            return self._factory(model, rec)
        if model == "devise":
            from model.embedders.embedder import DeviseEmbedder

            ckpt = self.checkpoint or (Path(rec["checkpoint"]) if rec.get("checkpoint") else None)
            if ckpt is None:
                raise ModelMissingError("no DeViSE checkpoint: pass --checkpoint CKPT")
            return DeviseEmbedder(ckpt, precision=self.precision)
        if model == "conse":
            from model.embedders.conse import ConseEmbedder

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
            from model.embedders.clip import ClipEmbedder, ClipUnavailable

            # the file ingest read, when it is still there: then neither open_clip's caches
            # nor open_clip itself need to be consulted (the identity is the file's hash)
            wf = rec.get("weights_file")
            try:
                return ClipEmbedder(
                    rec.get("model", "ViT-B-32"),
                    rec.get("pretrained", "laion2b_s34b_b79k"),
                    Path(wf) if wf and Path(wf).is_file() else None,
                    self.precision,
                    allow_download=False,
                    facts=rec.get("facts"),
                )
            except ClipUnavailable as e:
                raise ModelMissingError(str(e)) from e
        raise ModelMissingError(f"model {model!r} cannot be loaded by this version")

    # ------------------------------------------------------------------ queries

    def _filter(
        self,
        labels: Sequence[str] | None,
        folder: str | None,
        min_score: float | None,
        photo: PhotoFilter | None = None,
    ) -> SearchFilter:
        folder = folder.strip() if folder else None
        flt = SearchFilter(
            labels=tuple(x for x in (labels or ()) if x), folder=folder or None, min_score=min_score
        )
        if photo is None:
            return flt
        from dataclasses import replace

        return replace(
            flt,
            taken_after=photo.after,
            taken_before=photo.before,
            cameras=self._cameras(photo.cameras),
            near=photo.near,
        )

    def photo_filter(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        cameras: Sequence[str] = (),
        near: str | None = None,
        radius_km: str | float | None = None,
    ) -> PhotoFilter:
        """The EXIF filters as typed by a user, read and checked (`read_photo_filter`)."""
        return read_photo_filter(
            after=after, before=before, cameras=cameras, near=near, radius_km=radius_km
        )

    def cameras(self) -> list[str]:
        """The cameras of the indexed photos, from their EXIF."""
        return sorted(self.store.facet_values("camera", exact=False))

    def _cameras(self, wanted: Sequence[str]) -> tuple[str, ...]:
        """The indexed camera names a user's names stand for: every camera whose name holds
        one, case-insensitively (`canon`: all the Canons; `pixel 7`: "Google Pixel 7" too,
        as some phones write no make). A name that matches none stays as typed, so that it
        matches nothing."""
        if not wanted:
            return ()
        # the names only, so the index's counts do: an exact facet costs ~13 ms at 100,000
        # points on Edge, more than the filtered query itself
        known = self.store.facet_values("camera", exact=False)
        out: list[str] = []
        for name in wanted:
            low = name.lower()
            out += sorted(c for c in known if low in c.lower()) or [name]
        return tuple(dict.fromkeys(out))

    def _images(
        self,
        model: str,
        vector: Float32Array,
        k: int,
        flt: SearchFilter,
        exclude: str | None = None,
    ) -> list[ImageResult]:
        if model == "conse":
            return self._conse_images(vector, k, flt, exclude)
        hits: list[Hit] = self.store.search_images(model, vector, k + (1 if exclude else 0), flt)
        out = [
            ImageResult.of(h) for h in hits if not (exclude and h.payload.get("path") == exclude)
        ]
        return out[:k]

    def _conse_images(
        self, vector: Float32Array, k: int, flt: SearchFilter, exclude: str | None
    ) -> list[ImageResult]:
        """conse's nearest images, each cosine weighed by the classifier's confidence in
        the picture: its top-T probability mass (from `conse_top`). A picture the classifier
        cannot read (noise, a page of text, a screenshot) spreads its probability over
        unrelated classes, and the mean of their word vectors lies near every animal's (a
        hub): unweighed, noise came first for "similar to eagle" and for "a horse". The
        candidates are the nearest by cosine; the score floor applies to the weighed score.
        """
        from dataclasses import replace

        plain = replace(flt, min_score=None)
        pool = max(4 * k, CONSE_CANDIDATES) + (1 if exclude else 0)
        scored = []
        for h in self.store.search_images("conse", vector, pool, plain):
            if exclude and h.payload.get("path") == exclude:
                continue
            top = h.payload.get("conse_top")
            # a point from before conse_top was stored (embedded again on the next ingest)
            confidence = sum(float(p) for _, p in top) if top else 1.0
            scored.append((float(h.score) * confidence, h))
        scored.sort(key=lambda t: -t[0])
        floor = flt.min_score
        return [ImageResult.of(h, s) for s, h in scored if floor is None or s >= floor][:k]

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
        vectors, unknown = self._phrase_vectors([text], model)
        if vectors[0] is None:
            raise BadQueryError(self._unknown_message(unknown))
        if unknown:
            log.warning("ignoring unknown word(s): %s", ", ".join(unknown))
        return vectors[0]

    def _phrase_vectors(
        self, texts: Sequence[str], model: str
    ) -> tuple[list[Float32Array | None], list[str]]:
        """Each text's unit mean word vector from the index (None when it has no known word),
        and the unknown words; one vocabulary lookup for all the texts."""
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
        token_lists = []
        for text in texts:
            tokens = [t.lower() for t in _TOKEN.findall(text)]
            if not tokens:
                raise BadQueryError(f"no word in the query {text!r}: use letters, such as 'dog'")
            token_lists.append(tokens)
        every = {t for tokens in token_lists for t in tokens}
        parts = {p for t in every if "-" in t for p in t.split("-") if p}
        found = self.store.find_words(sorted(every | parts))
        out: list[Float32Array | None] = []
        unknown: list[str] = []
        for tokens in token_lists:
            # like a label: a hyphenated word whole if known, else its known parts
            tokens = [
                p
                for t in tokens
                for p in ([t] if t in found or "-" not in t else t.split("-"))
                if p
            ]
            unknown += [t for t in dict.fromkeys(tokens) if t not in found and t not in unknown]
            known = [found[t] for t in tokens if t in found]
            if not known:
                out.append(None)
                continue
            vecs = np.stack(known).astype(np.float32)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            mean = vecs.mean(axis=0)
            out.append((mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32))
        return out, unknown

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
            from model.vocab.words import load_words

            words = load_words(source) if source else None
        except Exception as e:  # noqa: BLE001 - suggestions are a courtesy, never a failure
            log.info("no spelling suggestions: %s", e)
            words = None
        if words is None:
            return lambda w: []
        return lambda w: words.suggest(w, limit=DEFAULT_MAX_RANK * 2)

    def unmatched_filter(
        self, labels: Sequence[str], folder: str | None, flt: SearchFilter | None = None
    ) -> str | None:
        """Which filter no indexed image matches, in one line; None when each matches some.
        `flt`'s EXIF filters (dates, cameras, place) are checked too."""
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
        return self._unmatched_photo(flt) if flt is not None else None

    def _unmatched_photo(self, flt: SearchFilter) -> str | None:
        """Which of `flt`'s EXIF filters no indexed image matches, in one line."""
        start, end = flt.taken_after, flt.taken_before
        if start is not None or end is not None:
            if not self.store.count(IMAGES, SearchFilter(taken_after=start, taken_before=end)):
                span = " and ".join(
                    part
                    for part in (
                        f"on or after {iso_of(start)}" if start is not None else "",
                        f"before {iso_of(end)}" if end is not None else "",
                    )
                    if part
                )
                dated = self.store.count(IMAGES, SearchFilter(taken_after=-1e12))
                return f"no image was taken {span} (by its EXIF date; {dated} image(s) have one)"
        if flt.cameras:
            known = self.store.facet_values("camera")
            if not any(c in known for c in flt.cameras):
                names = sorted(known)
                shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
                wanted = ", ".join(repr(c) for c in flt.cameras)
                return f"no image was taken with the camera {wanted} (cameras: {shown or 'none'})"
        if flt.near is not None and not self.store.count(IMAGES, SearchFilter(near=flt.near)):
            c = flt.near
            placed = self.store.count(IMAGES, SearchFilter(near=GeoCircle(0.0, 0.0, MAX_RADIUS_KM)))
            return (
                f"no image was taken within {c.radius_km:g} km of {c.lat:g},{c.lon:g} "
                f"(by its EXIF GPS position; {placed} image(s) have one)"
            )
        return None

    def _explain_empty(
        self, answer: Answer, labels: Sequence[str], folder: str | None, flt: SearchFilter
    ) -> Answer:
        photo = flt.taken_after, flt.taken_before, flt.cameras, flt.near
        if not answer.results and (labels or folder or any(x not in (None, ()) for x in photo)):
            answer.note = self.unmatched_filter(labels, folder, flt)
        return answer

    # ------------------------------------------------------------------ compound queries

    def query_terms(self, text: str, image: ImageInput | None = None) -> list[Term]:
        """The terms of a compound query (app.search.query's grammar), plus `image` when given:
        a path, or an upload (bytes or a PIL image) that joins the words with weight 1."""
        text = (text or "").strip()
        if len(text) > MAX_QUERY_CHARS:
            raise BadQueryError(
                f"the query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}"
            )
        try:
            terms = parse_query(text)
        except QueryError as e:
            raise BadQueryError(str(e)) from None
        if isinstance(image, (str, Path)):
            terms.append(Term(1.0, image=str(image)))
        elif image is not None:
            terms.append(Term(1.0, image="upload", upload=True))
        if not terms:
            raise BadQueryError("the query is empty: type a word such as 'dog'")
        return terms

    def query_vector(
        self, terms: Sequence[Term], model: str, upload: ImageInput | None = None
    ) -> Float32Array:
        """The weighted sum of the terms' unit vectors in `model`'s space, normalised again."""
        return self._compound(terms, model, upload)[0]

    def _compound(
        self, terms: Sequence[Term], model: str, upload: ImageInput | None = None
    ) -> tuple[Float32Array, list[str], list[Term]]:
        """(query vector, indexed image paths among the terms, the terms used): word terms
        whose words are all unknown are dropped, with a warning, while another term is left."""
        self._require_images(model)
        vectors: dict[int, Float32Array] = {}
        indexed: list[str] = []
        texts = [(i, t.text or "") for i, t in enumerate(terms) if not t.is_image]
        unknown: list[str] = []
        if texts and model == "clip":
            encoded = self.embedder("clip").embed_texts([x for _, x in texts])
            for (i, _), v in zip(texts, encoded, strict=True):
                vectors[i] = np.asarray(v, dtype=np.float32)
        elif texts:
            found, unknown = self._phrase_vectors([x for _, x in texts], model)
            for (i, _), vec in zip(texts, found, strict=True):
                if vec is not None:
                    vectors[i] = vec
        for i, t in enumerate(terms):
            if not t.is_image:
                continue
            if t.upload:
                if upload is None:
                    raise BadQueryError("the query names an upload, but no image was uploaded")
                vectors[i], _ = self.image_vector(upload, model)
                continue
            path = Path(str(t.image)).expanduser()
            if not path.is_file():
                raise BadQueryError(
                    f"image not found: {t.image} (a term with a slash or an image suffix is a "
                    "path; quote words that hold one)"
                )
            vectors[i], where = self.image_vector(path, model)
            if where is not None and t.weight > 0:
                indexed.append(where)
        if not vectors:
            raise BadQueryError(self._unknown_message(unknown))
        if unknown:
            log.warning("ignoring unknown word(s): %s", ", ".join(unknown))
        used = [terms[i] for i in sorted(vectors)]
        total = np.zeros_like(next(iter(vectors.values())), dtype=np.float64)
        for i in sorted(vectors):
            v = vectors[i].astype(np.float64)
            total += terms[i].weight * v / max(float(np.linalg.norm(v)), 1e-12)
        norm = float(np.linalg.norm(total))
        # relative to the weights: `dog -dog` leaves rounding noise, not a direction
        if norm < 1e-3 * sum(abs(t.weight) for t in used):
            raise BadQueryError(
                f"the terms cancel out ({reading(used)}): the query points nowhere. Drop a "
                "negative term or change its weight."
            )
        return (total / norm).astype(np.float32), indexed, used

    def search_text(
        self,
        text: str,
        *,
        image: ImageInput | None = None,
        model: str | None = None,
        labels: Sequence[str] = (),
        folder: str | None = None,
        min_score: float | None = None,
        k: int = 10,
        zero_shot_bias: str | float = "auto",
        photo: PhotoFilter | None = None,
    ) -> Answer:
        """Images for a compound query (`beach 2:dog -people`), optionally with an example
        image (a path or an upload) among the terms. Indexed query images are left out.
        `photo` narrows by EXIF (see `photo_filter`).

        A devise query that is exactly one of the checkpoint's labels is ranked as the
        model classifies: by how far that label's score beats every other label's, seen
        labels less gamma (calibrated stacking, `zero_shot_bias` as for tags)."""
        validate(k, min_score)
        t0 = time.perf_counter()
        model, why = self.pick_model(model)
        read = self.read(text, model, image)
        terms = read.terms
        vector, indexed, used = self._compound(terms, model, image)
        flt = self._filter(labels, folder, min_score, photo)
        # one plain word or phrase that names a concept (`dog`, `drink`): conse answers it
        # by the probability mass under the concept, not by the word's vector
        # (an unknown word beside it is left out, and named)
        plain = all(t.text is not None and t.weight == 1 for t in used)
        whole = " ".join(t.text or "" for t in used)
        concept = self._concept_query(whole) if plain and model == "conse" else None
        label = self._own_label(whole) if plain and model == "devise" else None
        note = ""
        notes: list[str] = []
        if concept is not None:
            results, said = self._concept_images(concept, vector, k, flt)
            notes += said
            notes += self._other_senses(whole, concept)
        elif label is not None:
            results, note = self._label_images(label, k, flt, zero_shot_bias)
        elif model == "conse" and self._joins(used):
            results, said = self._joint_images(used, vector, k, flt)
            notes += said
        else:
            hits = self._images(model, vector, k + len(indexed), flt)
            results = [r for r in hits if r.path not in indexed][:k]
        answer = Answer(model, (time.perf_counter() - t0) * 1000, results)
        answer.query = note or read.line(used)
        if len(used) < len(terms):
            dropped = [t for t in terms if t not in used]
            answer.query += f" (ignored, no known word: {reading(dropped)})"
            # never silently: a term the index cannot answer is named in the note too
            notes.append(f"not in the vocabulary, left out: {reading(dropped)}")
        answer = self._explain_empty(answer, labels, folder, flt)
        if notes:
            answer.note = "; ".join(([answer.note] if answer.note else []) + notes)
        return self._with_note(answer, why)

    def _joins(self, terms: Sequence[Term]) -> bool:
        """Whether conse answers `terms` by the joint ranking: words only, at least one
        positive, and more than one term or a weight; the index's points carry concepts."""
        if any(t.is_image for t in terms) or not any(t.weight > 0 for t in terms):
            return False
        if len(terms) < 2 and all(t.weight == 1 for t in terms):
            # one word: the joint ranking answers it only as a kind of a concept (astronaut)
            if self._kind_of(terms[0].text or "") is None:
                return False
        first = next(iter(self.store.scroll_images(batch=1)), None)
        return first is not None and "conse_top" in first.payload

    def _kind_of(self, text: str) -> int | None:
        """The ImageNet concept a noun that names none is a kind of (astronaut: person)."""
        from model.vocab.hierarchy import imagenet_concepts
        from model.vocab.lexicon import kind_of

        if " " in text.strip() or imagenet_concepts().find(text) is not None:
            return None
        wnid = kind_of(text)
        return imagenet_concepts().index(wnid) if wnid else None

    def _joint_images(
        self, terms: Sequence[Term], vector: Float32Array, k: int, flt: SearchFilter
    ) -> tuple[list[ImageResult], list[str]]:
        """Images for several terms on conse, ranked by app/search/ranking/joint.py: a soft AND of
        each term's score (concept mass, a detector's score, or calibrated cosine), negated
        terms demoting the photos that carry them. The candidates are every positive
        concept's images and the images nearest each positive term and the whole query."""
        from dataclasses import replace

        from app.search.ranking import joint
        from model.embedders.conse import top_probs
        from model.vocab.hierarchy import MIN_MASS, imagenet_concepts

        cs = imagenet_concepts()
        vectors, _ = self._phrase_vectors([t.text or "" for t in terms], "conse")
        plain = replace(flt, min_score=None)
        concepts = [cs.find(t.text or "") for t in terms]
        notes: list[str] = []
        kinds: set[int] = set()
        for i, t in enumerate(terms):
            if concepts[i] is None and (kind := self._kind_of(t.text or "")) is not None:
                concepts[i] = kind
                kinds.add(i)
                notes.append(f"{t.text!r} read as a kind of {cs.concepts[kind].name}")
        ids: dict[str, None] = {}
        for t, c, v in zip(terms, concepts, vectors, strict=True):
            if c is None or t.weight <= 0 or v is None:
                continue
            key = cs.concepts[c].key
            for h in self.store.search_images(
                "conse", v, CONCEPT_CANDIDATES, replace(plain, concepts=(key,))
            ):
                ids.setdefault(str(h.id), None)
        queries = [v for t, v in zip(terms, vectors, strict=True) if t.weight > 0 and v is not None]
        for hits in self.store.search_images_batch(
            "conse", np.stack([vector, *queries]), JOINT_CANDIDATES, plain, with_payload=False
        ):
            for h in hits:
                ids.setdefault(str(h.id), None)
        records = [
            r for r in self.store.retrieve_images(list(ids), ["conse"]) if "conse" in r.vectors
        ]
        if not records:
            return [], notes
        x = np.stack([np.asarray(r.vectors["conse"], np.float32) for r in records])
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        probs = np.stack([top_probs(r.payload.get("conse_top") or []) for r in records])
        scored: list[joint.TermScores] = []
        for i, (t, c, v) in enumerate(zip(terms, concepts, vectors, strict=True)):
            cosine = x @ v if v is not None else np.zeros(len(records), np.float32)
            mass = None
            if c is not None:
                mass = probs @ cs.members[c]
                key = cs.concepts[c].key
                detected = np.array(
                    [float((r.payload.get("detected") or {}).get(key, 0.0)) for r in records],
                    np.float32,
                )
                mass = np.maximum(mass, detected)
                if float(mass.max(initial=0.0)) < MIN_MASS:
                    notes.append(
                        f"no image indexed under '{cs.concepts[c].name}': {t.text!r} scored by "
                        "word-vector similarity instead, a weak cue"
                    )
                    mass = None
            else:
                notes.append(
                    f"{t.text!r} names no concept: scored by word-vector similarity, a weak cue"
                )
            scored.append(
                joint.TermScores(t.weight, cosine.astype(np.float32), mass, kind=i in kinds)
            )
        order, scores, _ = joint.rank(scored, self.joint_calibration or joint.DEFAULT)
        results = [
            ImageResult.of(Hit(records[i].id, float(scores[i]), records[i].payload))
            for i in order
            if flt.min_score is None or scores[i] >= flt.min_score
        ]
        return results[:k], notes

    def read(self, text: str, model: str, image: ImageInput | None = None) -> Reading:
        """A text query read as a person means it (app.search.query's `read_query`): function words
        dropped, the vocabulary's phrases joined, plurals folded. CLIP reads language
        itself, so a plain sentence (no weight, negation or image) reaches it unchanged."""
        terms = self.query_terms(text, image)
        if model == "clip":
            if all(t.text is not None and t.weight == 1 for t in terms) and len(terms) > 1:
                return Reading([Term(text=" ".join(text.split()))])
            return Reading(terms)
        return read_query(terms, self._phrase_test(model))

    def _phrase_test(self, model: str) -> Callable[[str], bool]:
        """Whether a lower-case word or phrase names one concept or label of the vocabulary:
        ImageNet's labels, their hypernyms and lemmas, and the model's own labels."""
        from model.vocab.hierarchy import imagenet_concepts

        cs = imagenet_concepts()
        own: dict[str, tuple[str, str]] = {}
        if model != "conse":
            try:
                own = self._model_concepts(model)
            except (ServiceError, ValueError, OSError) as e:
                log.info("phrases of %s's own labels not read: %s", model, e)
        return lambda text: text in own or cs.find(text) is not None

    def _own_label(self, text: str) -> int | None:
        """The index of the devise checkpoint's label that a whole query names, else None
        (also when the checkpoint is not at hand: the word-vector search needs none)."""
        key = " ".join(text.lower().split())
        try:
            meta = getattr(self.embedder("devise"), "meta", None) or {}
            labels = [str(x).lower() for x in meta.get("labels", [])]
        except ServiceError as e:
            log.info("label query %r searched by its word vector: %s", text, e)
            return None
        return labels.index(key) if key in labels else None

    def _label_images(
        self, label: int, k: int, flt: SearchFilter, bias: str | float
    ) -> tuple[list[ImageResult], str]:
        """Images ranked by the calibrated margin of `label` over the best other label:
        (x.l - gamma[l seen]) - max over l' != l of (x.l' - gamma[l' seen]), with the
        checkpoint's own label vectors. Positive: the model would tag the image `label`.
        Measured on the demo gallery (bench/bench_label_search.py): text->image mAP over
        the 10 labels 0.713 by cosine to the word vector, 0.782 by this margin; the unseen
        `sandal` 0.09 -> 0.47."""
        from dataclasses import replace

        emb = self.embedder("devise")
        labels = [str(x) for x in emb.meta.get("labels", [])]
        mat = np.asarray(emb.label_matrix(labels), dtype=np.float32)
        mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        gamma, seen = self._zero_shot_bias("devise", bias)
        offset = np.array([gamma if x.lower() in seen else 0.0 for x in labels], np.float32)
        # the candidates' ids only; their payloads and vectors come once, with `retrieve`
        (pool,) = self.store.search_images_batch(
            "devise",
            mat[label][None, :],
            max(LABEL_CANDIDATES, 20 * k),
            replace(flt, min_score=None),
            exact=False,
            with_payload=False,
        )
        # the pool's vectors without payloads; payloads for the k shown only (a payload costs
        # more to bring into Python than the margin does to compute)
        by_id = {
            r.id: r
            for r in self.store.retrieve_images(
                [h.id for h in pool], ["devise"], with_payload=False
            )
        }
        hits = [by_id[h.id] for h in pool if "devise" in getattr(by_id.get(h.id), "vectors", {})]
        if not hits:
            return [], ""
        x = np.stack([np.asarray(r.vectors["devise"], np.float32) for r in hits])
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        calibrated = x @ mat.T - offset
        rivals = np.delete(calibrated, label, axis=1)
        margin = calibrated[:, label] - (rivals.max(axis=1) if rivals.shape[1] else 0.0)
        order = [
            int(j)
            for j in np.argsort(-margin, kind="stable")
            if flt.min_score is None or margin[j] >= flt.min_score
        ][:k]
        shown = self.store.retrieve_images([hits[j].id for j in order])
        payloads = {r.id: r.payload for r in shown}
        results = [
            ImageResult.of(Hit(hits[j].id, float(margin[j]), payloads[hits[j].id]))
            for j in order
            if hits[j].id in payloads
        ]
        how = f"seen labels less {gamma:.2f}" if gamma else "no zero-shot bias"
        note = f"{labels[label]} (the model's label: score = its margin over the next label, {how})"
        return results[:k], note

    def _concept_query(self, text: str) -> int | None:
        """The ImageNet concept (label or hypernym) a whole query names, when the index's
        conse points carry their concepts; else None (plain word-vector search)."""
        from model.vocab.hierarchy import imagenet_concepts

        found = imagenet_concepts().find(text)
        if found is None:
            return None
        first = next(iter(self.store.scroll_images(batch=1)), None)
        if first is None or "conse_top" not in first.payload:
            log.info("conse points carry no concepts (an older index): re-ingest to search by them")
            return None
        return found

    def _other_senses(self, text: str, concept: int) -> list[str]:
        """A note when the query's name is shared (`crane`: the bird and the machine): which
        sense answered, and how to ask for the others."""
        from model.vocab.hierarchy import imagenet_concepts

        cs = imagenet_concepts()
        others = [cs.concepts[i].name for i in cs.named(text) if i != concept]
        if not others:
            return []
        ask = " or ".join(f"'{name}'" for name in others)
        return [f"{text!r} read as {cs.concepts[concept].name}; for the other sense search {ask}"]

    def _concept_images(
        self, concept: int, vector: Float32Array, k: int, flt: SearchFilter
    ) -> tuple[list[ImageResult], list[str]]:
        """Images under a concept, best first by the probability mass of their classes under
        it (hedging): a German shepherd is a `dog` although GloVe puts the breed's name far
        from `dog`. The score is that mass, or a detector's score (a face: `person`) where
        higher; fewer than `k` under it are followed by the nearest other images, also scored
        by their (smaller) mass. With none under it the word vectors rank the images, and
        the notes (the second item) say so."""
        from dataclasses import replace

        from model.embedders.conse import top_probs
        from model.vocab.hierarchy import MIN_MASS, imagenet_concepts

        cs = imagenet_concepts()
        c = cs.concepts[concept]
        members = cs.members[concept]
        # points ingested before concepts were keyed by wnid hold lower-case names: an
        # unshared name still finds them (a shared one would mix its senses)
        keys = (c.key,) if c.plain.lower() in cs.senses else (c.key, c.plain.lower())
        plain = replace(flt, min_score=None)  # the floor applies to the mass, not the cosine
        under = self.store.search_images(
            "conse", vector, max(k, CONCEPT_CANDIDATES), replace(plain, concepts=keys)
        )
        seen = {str(h.id) for h in under}
        if len(under) < k:
            rest = self.store.search_images("conse", vector, k + len(under), plain)
            under = under + [h for h in rest if str(h.id) not in seen]

        def mass(h: Hit) -> float:
            by_classes = float(top_probs(h.payload.get("conse_top") or []) @ members)
            detected = h.payload.get("detected") or {}
            return max(by_classes, float(detected.get(c.key, 0.0)))

        scored = sorted(((mass(h), float(h.score), h) for h in under), key=lambda t: t[:2])
        # images with next to no mass under the concept are not answers; when none has any,
        # the plain word-vector search is the better guess, and the answer says so
        scored = [t for t in scored if t[0] >= MIN_MASS]
        if not scored:
            note = f"no image indexed under '{c.name}'; ranked by word-vector similarity instead"
            return self._images("conse", vector, k, flt), [note]
        out = [
            ImageResult.of(h, m)
            for m, _, h in reversed(scored)
            if flt.min_score is None or m >= flt.min_score
        ]
        return out[:k], []

    def image_vector(self, image: ImageInput, model: str) -> tuple[Float32Array, str | None]:
        """(vector, indexed path or None). An indexed path reuses its stored vector."""
        if isinstance(image, (str, Path)):
            path = abs_posix(image)
            rec = self.store.find_by_path([path]).get(path)
            if rec is not None and model in (self.meta().get("models") or {}):
                stored = self.store.retrieve_images([rec.id], with_vectors=[model])
                vec = stored[0].vectors.get(model) if stored else None
                if vec is not None:
                    return np.asarray(vec, dtype=np.float32), path
        emb = self.embedder(model)
        return np.asarray(emb.embed_images([self._decode(image)])[0], dtype=np.float32), None

    def run(self, request: QueryRequest) -> Answer:
        """The one way in for a query, whichever face asked it."""
        r = request
        if r.kind == "tag":
            if r.image is None:
                raise BadQueryError("tag needs an image")
            return self.tag(
                r.image, model=r.model, k=r.k, min_score=r.min_score,
                generality=r.generality, zero_shot_bias=r.zero_shot_bias,
            )  # fmt: skip
        if r.kind == "similar":
            if r.image is None:
                raise BadQueryError("similar needs an image")
            return self.similar(
                r.image, model=r.model, labels=r.labels, folder=r.folder,
                min_score=r.min_score, k=r.k, photo=r.photo,
            )  # fmt: skip
        return self.search_text(
            r.text, image=r.image, model=r.model, labels=r.labels, folder=r.folder,
            min_score=r.min_score, k=r.k, zero_shot_bias=r.zero_shot_bias, photo=r.photo,
        )  # fmt: skip

    def similar(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        labels: Sequence[str] = (),
        folder: str | None = None,
        min_score: float | None = None,
        k: int = 10,
        photo: PhotoFilter | None = None,
    ) -> Answer:
        """Images like `image` (an indexed one's stored vector is reused, and it is left out
        of the results); `photo` narrows by EXIF (see `photo_filter`)."""
        validate(k, min_score)
        t0 = time.perf_counter()
        model, why = self.pick_model(model)
        self._require_images(model)
        vector, path = self.image_vector(image, model)
        flt = self._filter(labels, folder, min_score, photo)
        results = self._images(model, vector, k, flt, exclude=path)
        answer = Answer(model, (time.perf_counter() - t0) * 1000, results)
        return self._with_note(self._explain_empty(answer, labels, folder, flt), why)

    def tag(
        self,
        image: ImageInput,
        *,
        model: str | None = None,
        k: int = 10,
        min_score: float | None = None,
        max_rank: int = DEFAULT_MAX_RANK,
        generality: str = "specific",
        zero_shot_bias: str | float = "auto",
    ) -> Answer:
        """What is in the picture. For conse, labels and hypernyms scored by the probability
        mass of the classes under them (hedging); for devise, the nearest labels, hypernyms
        and frequent words; never a fragment of a multi-word label."""
        validate(k, min_score)
        if generality not in GENERALITY:
            raise BadQueryError(f"generality must be specific or general, got {generality!r}")
        t0 = time.perf_counter()
        model, why = self.pick_model(model, "tag")
        # no image of the index is needed: an image it lacks is embedded; conse tags need
        # only the classifier, devise tags the model and the vocabulary
        if model == "conse":
            results = self._conse_tags(image, k, min_score, generality)
            return self._with_note(Answer(model, (time.perf_counter() - t0) * 1000, results), why)
        vector, _ = self.image_vector(image, model)
        if model == "clip":
            t_load = time.perf_counter()
            self.ensure_clip_vocabulary()
            t0 += time.perf_counter() - t_load  # took_ms is the query's, not the embedding's
            results = self._clip_tags(vector, k, min_score)
        else:
            if not (self.meta().get("words") or {}).get("count"):
                t_load = time.perf_counter()
                self.ensure_vocabulary(self._words_source(model))
                t0 += time.perf_counter() - t_load  # took_ms is the query's, not the load's
            gamma = self._zero_shot_bias(model, zero_shot_bias)
            results = self._word_tags(vector, model, k, min_score, max_rank, gamma)
        return self._with_note(Answer(model, (time.perf_counter() - t0) * 1000, results), why)

    def ensure_clip_vocabulary(self, clip: Any = None) -> bool:
        """CLIP's text vectors of the tag vocabulary, embedded once per CLIP model (saying how
        long it will take, with a progress bar) and kept in the words collection; True when
        it embedded them now. `clip`: the embedder to use (the index's by default)."""
        from ingest.vocabulary import clip_tag_words, embed_clip_vocabulary

        with self._vocabulary_lock:
            rec = self._model_record("clip")
            done = (self.meta().get("words") or {}).get("clip") or {}
            if done.get("entries") and done.get("id") == (
                clip.content_id if clip is not None else rec.get("id")
            ):
                return False
        if not (self.meta().get("words") or {}).get("count"):
            self.ensure_vocabulary()
        with self._vocabulary_lock:
            clip = clip if clip is not None else self.embedder("clip")
            self.notify(
                "embedding the tag vocabulary (labels, hypernyms and the "
                f"{clip_tag_words():,} most frequent words) with clip's text tower, once for "
                "this model: about 15 s on 2 desktop cores, a minute or more on a slow CPU"
            )
            summary = embed_clip_vocabulary(self.store, clip, self.progress)
            if summary is not None:
                self.notify(
                    f"embedded {summary.entries:,} tag words with clip in {summary.seconds:.1f}s"
                )
            return summary is not None

    def _clip_tags(self, vector: Float32Array, k: int, min_score: float | None) -> list[TagResult]:
        """CLIP's tags, composed like devise's: its best three ImageNet labels, then two
        hypernyms, then the nearest frequent words, each by cosine of CLIP's vectors."""
        from ingest.vocabulary import CLIP_WORD_VECTOR

        pairs: list[tuple[str, float, str]] = []
        taken: set[str] = set()
        for kind, quota in (("label", 3), ("hypernym", 2), ("word", k)):
            flt = SearchFilter(kinds=(kind,), min_score=min_score)
            hits = self.store.search_words(vector, quota + len(taken), flt, using=CLIP_WORD_VECTOR)
            fresh = [
                (str(h.payload.get("word")), float(h.score), kind)
                for h in hits
                if str(h.payload.get("word")).lower() not in taken
            ][:quota]
            taken |= {w.lower() for w, _, _ in fresh}
            pairs += fresh
        return [TagResult(w, sc, kd) for w, sc, kd in pairs[:k]]

    def _zero_shot_bias(self, model: str, bias: str | float) -> tuple[float, set[str]]:
        """(gamma, the checkpoint's seen labels): calibrated stacking for devise tags."""
        if model != "devise" or bias == "off":
            return 0.0, set()
        meta = getattr(self.embedder(model), "meta", {}) or {}
        seen = {str(x).lower() for x in meta.get("seen", meta.get("labels", []))}
        if bias == "auto":
            gamma = float((meta.get("calibration") or {}).get("gamma", 0.0))
        else:
            gamma = float(bias)
        return gamma, seen

    def _conse_evidence(self, image: ImageInput) -> tuple[Float32Array, dict[str, float]]:
        """ConSE's ImageNet class probabilities and what the face detector found (concept
        key -> score): from the payload of an indexed image (no backbone needed), else from
        the classifier and the detector."""
        from model.embedders.conse import top_probs

        if isinstance(image, (str, Path)):
            rec = self.store.find_by_path([abs_posix(image)]).get(abs_posix(image))
            if rec is not None and rec.payload.get("conse_top"):
                detected = rec.payload.get("detected") or {}
                return top_probs(rec.payload["conse_top"]), {
                    str(key): float(v) for key, v in detected.items()
                }
        emb = self.embedder("conse")
        picture = self._decode(image)
        probs = np.asarray(emb.probs_images([picture])[0], dtype=np.float32)
        inspect = getattr(emb, "inspect", None)
        return probs, (inspect(picture) if inspect is not None else {})

    def _conse_tags(
        self, image: ImageInput, k: int, min_score: float | None, generality: str
    ) -> list[TagResult]:
        from model.vocab.hierarchy import GENERAL, MIN_MASS, SPECIFIC, imagenet_concepts

        probs, detected = self._conse_evidence(image)
        lam = SPECIFIC if generality == "specific" else GENERAL
        floor = max(MIN_MASS, min_score or 0.0)
        ranked = imagenet_concepts().ranked(probs, k, lam=lam, min_mass=floor, detected=detected)
        return [TagResult(c.name, m, c.kind) for c, m in ranked]

    def _word_tags(
        self,
        vector: Float32Array,
        model: str,
        k: int,
        min_score: float | None,
        max_rank: int,
        bias: tuple[float, set[str]] = (0.0, set()),
    ) -> list[TagResult]:
        """The model's own labels first (the best three), then their hypernyms (two), then
        the nearest frequent words, each by cosine; the seen labels' scores less `bias`'s
        gamma (calibrated stacking, model/gzsl.py). A word of a multi-word label never
        stands alone."""
        if not (self.meta().get("words") or {}).get("count"):
            raise EmptyIndexError("the index has no vocabulary yet: run `devise words`")
        gamma, seen = bias
        own = self._model_concepts(model)
        found = self.store.find_words([name for name, _ in own.values()]) if own else {}
        scored: dict[str, list[tuple[str, float]]] = {"label": [], "hypernym": []}
        for key, (name, kind) in own.items():
            vec = found.get(name)
            if vec is None:
                continue
            score = float(np.dot(np.asarray(vec, np.float32), vector))
            if key in seen:
                score -= gamma
            if min_score is None or score >= min_score:
                scored[kind].append((name, score))
        pairs: list[tuple[str, float, str]] = []
        for kind, quota in (("label", 3), ("hypernym", 2)):
            best = sorted(scored[kind], key=lambda p: -p[1])[:quota]
            pairs += [(n, sc, kind) for n, sc in best]
        from model.vocab.hierarchy import label_fragments

        fragments = label_fragments(name for name, _ in own.values())
        taken = {p[0].lower() for p in pairs}
        words = self.store.search_words(
            vector, k * 3, SearchFilter(max_rank=max_rank, min_score=min_score)
        )
        plain = [
            (str(h.payload.get("word")), float(h.score))
            for h in words
            if str(h.payload.get("word")).lower() not in taken | fragments
        ]
        plain = [(w, sc - (gamma if w.lower() in seen else 0.0)) for w, sc in plain]
        plain.sort(key=lambda p: -p[1])
        pairs += [(w, sc, "word") for w, sc in fold_inflections(plain)]
        return [TagResult(w, sc, kd) for w, sc, kd in pairs[:k]]

    def _model_concepts(self, model: str) -> dict[str, tuple[str, str]]:
        """The labels and hypernyms `model` knows: lower-case name -> (name, kind)."""
        with self._lock:
            cache = self._concept_names
            if model not in cache:
                from ingest.vocabulary import concepts_for

                rec = dict((self.meta().get("models") or {}).get(model) or {})
                if model == "devise" and self.checkpoint is not None:
                    rec["checkpoint"] = str(self.checkpoint)
                own: dict[str, tuple[str, str]] = {}
                for cs in concepts_for({model: rec}):
                    for c in cs.concepts:
                        if c.name.lower() not in own or c.kind == "label":
                            own[c.name.lower()] = (c.name, c.kind)
                cache[model] = own
            return cache[model]

    def _decode(self, image: ImageInput) -> Any:
        """A path, raw bytes or a PIL image as an RGB PIL image (the decoder's rules)."""
        from PIL import Image as PILImage

        from model.data.images import decode_image

        if isinstance(image, PILImage.Image):
            return image.convert("RGB")
        return decode_image(image if isinstance(image, bytes) else Path(image))

    def duplicates(
        self,
        *,
        model: str | None = None,
        threshold: float | None = None,
        folder: str | None = None,
    ) -> DuplicateReport:
        """Groups of near-duplicate images (named vector `model`'s cosine at least
        `threshold`) and of identical files (same sha256), under `folder` when given.
        Deletes nothing. See app/search/duplicates.py."""
        t0 = time.perf_counter()
        model = model or DUP_MODEL
        if model not in DEFAULT_THRESHOLDS:
            raise BadQueryError(
                f"unknown model {model!r}: choose from {', '.join(DEFAULT_THRESHOLDS)}"
            )
        try:
            value = check_threshold(DEFAULT_THRESHOLDS[model] if threshold is None else threshold)
        except DuplicatesError as e:
            raise BadQueryError(str(e)) from None
        self._require_images(model)
        folder = folder.strip() if folder else None
        if folder:
            note = self.unmatched_filter((), folder)
            if note:
                took = (time.perf_counter() - t0) * 1000
                return DuplicateReport(model, value, took, note=note)
        report = scan(self.store, model, value, folder or None)
        report.took_ms = (time.perf_counter() - t0) * 1000
        return report

    def compare(
        self,
        kind: str,
        query: Any,
        *,
        labels: Sequence[str] = (),
        folder: str | None = None,
        min_score: float | None = None,
        k: int = 10,
        photo: PhotoFilter | None = None,
    ) -> dict[str, Answer | str]:
        """The same query answered by every model in the index: an Answer or an error text.
        `photo` narrows image results by EXIF; tags have no image to filter."""
        out: dict[str, Answer | str] = {}
        for model in self.models():
            try:
                if kind == "text":
                    out[model] = self.search_text(
                        query,
                        model=model,
                        labels=labels,
                        folder=folder,
                        min_score=min_score,
                        k=k,
                        photo=photo,
                    )
                elif kind == "image":
                    out[model] = self.similar(
                        query,
                        model=model,
                        labels=labels,
                        folder=folder,
                        min_score=min_score,
                        k=k,
                        photo=photo,
                    )
                else:
                    out[model] = self.tag(query, model=model, k=k, min_score=min_score)
            except (ServiceError, ValueError) as e:
                out[model] = str(e)
        return out
