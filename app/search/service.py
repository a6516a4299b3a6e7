"""The one search service behind every face: CLI, Gradio UI and Gradio's HTTP API.

Three questions in one vector space, each filterable by label, folder and score:
text -> images, image -> images, image -> tags. Image results also filter by the photo's
EXIF: when it was taken, with which camera, and where (app/search/filters.py reads those). Text
queries read word vectors from the index's own `words` collection, so they never load the
backbone (nor gensim).

The service only chooses and composes: which model answers and its embedder
(app/search/models.py), the query's terms and their vector (app/search/vectors.py), the
filter (app/search/scope.py), then one scoring mode (app/search/ranking/: cosine, concept,
label, joint) or the tagging (app/search/tags.py), each told what it needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.search import people

# `name as name`: the faces, tests and benches import these from here
from app.search.answers import MAX_K as MAX_K
from app.search.answers import Answer, TagResult, end_weak, validate
from app.search.answers import ImageResult as ImageResult
from app.search.duplicates import (
    DEFAULT_THRESHOLDS,
    DUP_MODEL,
    DuplicateReport,
    DuplicatesError,
    check_threshold,
    scan,
)
from app.search.errors import BadQueryError, EmptyIndexError, ServiceError
from app.search.errors import ModelMissingError as ModelMissingError
from app.search.filters import PhotoFilter, read_photo_filter
from app.search.models import DEFAULT_VOCABULARY as DEFAULT_VOCABULARY
from app.search.models import MODELS as MODELS
from app.search.models import Models, index_meta, index_models, index_status, require_images
from app.search.query import Reading, Term, read_query, reading
from app.search.ranking import joint
from app.search.ranking.concept import concept_images, concept_query, other_senses
from app.search.ranking.cosine import conse_images, nearest_images, phrase_vectors
from app.search.ranking.label import label_images, own_label
from app.search.request import ImageInput, QueryRequest
from app.search.scope import search_filter, unmatched_filter
from app.search.tags import (
    DEFAULT_MAX_RANK,
    classified_evidence,
    clip_tags,
    conse_tags,
    indexed_evidence,
    word_tags,
    zero_shot_bias,
)
from app.search.tags import fold_inflections as fold_inflections
from app.search.vectors import check_length, compose, decode, image_term_path, unknown_message
from app.search.vectors import query_terms as terms_of
from qdrant.filters import SearchFilter
from qdrant.schema import abs_posix
from qdrant.store import Store

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

GENERALITY = ("specific", "general")


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
        # notify: where one-line notices go (the CLI prints them to stderr); progress: bars
        self._models = Models(
            checkpoint=checkpoint,
            precision=precision,
            embedders=embedders,
            factory=embedder_factory,
            notify=notify or log.warning,
            progress=progress,
        )
        #: the constants of the joint ranking of several terms (app/search/ranking/joint.py)
        self.joint_calibration: Any = None

    @property
    def checkpoint(self) -> Path | None:
        return self._models.checkpoint

    @property
    def precision(self) -> str:
        return self._models.precision

    # each model's labels and hypernyms as Models caches them, under the name tests seed
    @property
    def _concept_names(self) -> dict[str, dict[str, tuple[str, str]]]:
        return self._models.concept_names

    # ------------------------------------------------------------------ state

    def meta(self) -> dict[str, Any]:
        return index_meta(self.store)

    def models(self) -> list[str]:
        """The models whose vectors the index holds and that answer searches, in display
        order (not the near-duplicate vector, which only `duplicates` reads)."""
        return index_models(self.meta())

    def pick_model(self, model: str | None, kind: str = "search") -> tuple[str, str | None]:
        """(the model a query runs on, why it is not devise). A named `model` is kept. With
        none: devise where the index holds its vectors (to tag: or a devise model is at
        hand), else the first model the index holds (conse, then clip); to tag with neither,
        conse, which needs no checkpoint. A search of an empty index gets its message."""
        return (model, None) if model else self._models.pick(self.models(), kind)

    @staticmethod
    def _with_note(answer: Answer, note: str | None) -> Answer:
        if note:
            answer.note = "; ".join([note] + ([answer.note] if answer.note else []))
        return answer

    def labels(self) -> list[str]:
        return sorted(self.store.facet_labels())

    def status(self) -> dict[str, Any]:
        return index_status(self.store)

    def graph_pending(self) -> int:
        """Image vectors still searched exactly while they wait for their graph (`devise
        ingest` builds it); 0 once built, or below the size where exact search is kept."""
        return self.store.graph_pending()

    def require_images(self, model: str) -> dict[str, Any]:
        """What the index records of `model`; raises when it holds no images, or none of
        `model`'s vectors: image searches cannot do without them."""
        return require_images(self.store, model)

    # ------------------------------------------------------------------ embedders

    def embedder(self, model: str) -> Any:
        """The embedder that made `model`'s vectors; refuses one with another content id.

        An index with no `model` vectors (no images at all, say) needs none to embed a query
        image: the model is built from its defaults (conse, clip) or --checkpoint (devise).
        """
        return self._models.embedder(self.store, model)

    def ensure_vocabulary(self, source: str | None = None) -> bool:
        """Loads the default vocabulary (the 100,000 most frequent words) into an index that
        has none, saying so in one line; True when it loaded. Once: the index then has one."""
        return self._models.ensure_vocabulary(self.store, source)

    # ------------------------------------------------------------------ queries

    def _filter(
        self,
        labels: Sequence[str] | None,
        folder: str | None,
        min_score: float | None,
        photo: PhotoFilter | None = None,
    ) -> SearchFilter:
        return search_filter(self.store, labels, folder, min_score, photo)

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

    def text_vector(self, text: str, model: str) -> Float32Array:
        """A text query in `model`'s space: mean of word vectors, or CLIP's text encoder."""
        text = (text or "").strip()
        if not text:
            raise BadQueryError("the query is empty: type a word such as 'dog'")
        check_length(text)
        if model == "clip":
            self.require_images("clip")  # images to search among, before any model loads
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
        self._models.vocabulary_for(self.store, model, self.require_images(model))
        return phrase_vectors(self.store, texts)

    def _unknown_message(self, unknown: Sequence[str]) -> str:
        return unknown_message((self.meta().get("words") or {}).get("source"), unknown)

    def unmatched_filter(
        self, labels: Sequence[str], folder: str | None, flt: SearchFilter | None = None
    ) -> str | None:
        """Which filter no indexed image matches, in one line; None when each matches some.
        `flt`'s EXIF filters (dates, cameras, place) are checked too."""
        return unmatched_filter(self.store, labels, folder, flt)

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
        return terms_of(text, image)

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
        self.require_images(model)
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
            vectors[i], where = self.image_vector(image_term_path(t), model)
            if where is not None and t.weight > 0:
                indexed.append(where)
        if not vectors:
            raise BadQueryError(self._unknown_message(unknown))
        if unknown:
            log.warning("ignoring unknown word(s): %s", ", ".join(unknown))
        vector, used = compose(terms, vectors)
        return vector, indexed, used

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
        results, note, notes = self._rank(model, used, vector, indexed, k, flt, zero_shot_bias)
        results = end_weak(results, notes)  # results end where evidence ends, or soon after
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

    def _rank(
        self,
        model: str,
        used: Sequence[Term],
        vector: Float32Array,
        indexed: Sequence[str],
        k: int,
        flt: SearchFilter,
        zero_shot_bias: str | float,
    ) -> tuple[list[ImageResult], str, list[str]]:
        """(images, how the query was read where the scoring says so, notes) for a read
        query, by the one scoring mode it calls for (app/search/ranking/)."""
        # one plain word or phrase that names a concept (`dog`, `drink`): conse answers it
        # by the probability mass under the concept, not by the word's vector
        # (an unknown word beside it is left out, and named)
        plain = all(t.text is not None and t.weight == 1 for t in used)
        whole = " ".join(t.text or "" for t in used)
        concept = concept_query(self.store, whole) if plain and model == "conse" else None
        label = self._own_label(whole) if plain and model == "devise" else None
        if concept is not None:
            results, notes = concept_images(self.store, concept, vector, k, flt)
            return results, "", notes + other_senses(whole, concept)
        if label is not None:
            emb = self.embedder("devise")
            bias = self._zero_shot_bias("devise", zero_shot_bias)
            results, note = label_images(self.store, emb, label, k, flt, bias)
            return results, note, []
        if model == "conse" and joint.joins(self.store, used):
            # _compound read and checked these words already: only their vectors are wanted
            words, _ = phrase_vectors(self.store, [t.text or "" for t in used])
            cal = self.joint_calibration or joint.DEFAULT
            results, notes = joint.joint_images(self.store, used, words, vector, k, flt, cal)
            return results, "", notes
        if model == "conse" and plain:  # words no concept names: evidence is their cosine
            cal = self.joint_calibration or joint.DEFAULT
            hits = conse_images(self.store, vector, k + len(indexed), flt, None, cal.center)
        else:
            hits = nearest_images(self.store, model, vector, k + len(indexed), flt)
        return [r for r in hits if r.path not in indexed][:k], "", []

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
        """The devise checkpoint's label that a whole query names (`label.own_label`), else
        None; also when the checkpoint is not at hand: the word-vector search needs none."""
        try:
            emb = self.embedder("devise")
        except ServiceError as e:
            log.info("label query %r searched by its word vector: %s", text, e)
            return None
        return own_label(emb, text)

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
        return np.asarray(emb.embed_images([decode(image)])[0], dtype=np.float32), None

    def run(self, request: QueryRequest) -> Answer:
        """The one way in for a query, whichever face asked it."""
        r, only_people = people.with_people(self.store, request)  # names: filters, or the answer
        if only_people is not None:
            return only_people
        if r.kind == "tag":
            if r.image is None:
                raise BadQueryError("tag needs an image")
            return people.name_people_in_tags(self.store, r.image, self.tag(
                r.image, model=r.model, k=r.k, min_score=r.min_score,
                generality=r.generality, zero_shot_bias=r.zero_shot_bias,
            ))  # fmt: skip
        if r.kind == "similar":
            if r.image is None:
                raise BadQueryError("similar needs an image")
            return people.name_people_in_note(self.store, r.image, self.similar(
                r.image, model=r.model, labels=r.labels, folder=r.folder,
                min_score=r.min_score, k=r.k, photo=r.photo,
            ))  # fmt: skip
        return people.with_people_read(r, self.search_text(
            r.text, image=r.image, model=r.model, labels=r.labels, folder=r.folder,
            min_score=r.min_score, k=r.k, zero_shot_bias=r.zero_shot_bias, photo=r.photo,
        ))  # fmt: skip

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
        self.require_images(model)
        vector, path = self.image_vector(image, model)
        flt = self._filter(labels, folder, min_score, photo)
        results = nearest_images(self.store, model, vector, k, flt, exclude=path)
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
            evidence = indexed_evidence(self.store, image)
            if evidence is None:
                emb = self.embedder("conse")
                evidence = classified_evidence(emb, decode(image))
            results = conse_tags(evidence, k, min_score, generality)
            return self._with_note(Answer(model, (time.perf_counter() - t0) * 1000, results), why)
        vector, _ = self.image_vector(image, model)
        if model == "clip":
            t_load = time.perf_counter()
            self.ensure_clip_vocabulary()
            t0 += time.perf_counter() - t_load  # took_ms is the query's, not the embedding's
            results = clip_tags(self.store, vector, k, min_score)
        else:
            if not (self.meta().get("words") or {}).get("count"):
                t_load = time.perf_counter()
                self.ensure_vocabulary(self._models.words_source(self.store, model))
                t0 += time.perf_counter() - t_load  # took_ms is the query's, not the load's
            gamma = self._zero_shot_bias(model, zero_shot_bias)
            results = self._word_tags(vector, model, k, min_score, max_rank, gamma)
        return self._with_note(Answer(model, (time.perf_counter() - t0) * 1000, results), why)

    def ensure_clip_vocabulary(self, clip: Any = None) -> bool:
        """CLIP's text vectors of the tag vocabulary, embedded once per CLIP model (saying how
        long it will take, with a progress bar) and kept in the words collection; True when
        it embedded them now. `clip`: the embedder to use (the index's by default)."""
        return self._models.ensure_clip_vocabulary(self.store, clip)

    def _zero_shot_bias(self, model: str, bias: str | float) -> tuple[float, set[str]]:
        """(gamma, the checkpoint's seen labels): calibrated stacking for devise tags."""
        if model != "devise" or bias == "off":
            return 0.0, set()
        return zero_shot_bias(getattr(self.embedder(model), "meta", {}) or {}, bias)

    def _word_tags(
        self,
        vector: Float32Array,
        model: str,
        k: int,
        min_score: float | None,
        max_rank: int,
        bias: tuple[float, set[str]] = (0.0, set()),
    ) -> list[TagResult]:
        if not (self.meta().get("words") or {}).get("count"):
            raise EmptyIndexError("the index has no vocabulary yet: run `devise words`")
        own = self._model_concepts(model)
        return word_tags(self.store, vector, own, k, min_score, max_rank, bias)

    def _model_concepts(self, model: str) -> dict[str, tuple[str, str]]:
        """The labels and hypernyms `model` knows: lower-case name -> (name, kind)."""
        return self._models.concepts(self.store, model)

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
        self.require_images(model)
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
                        query, model=model, labels=labels, folder=folder,
                        min_score=min_score, k=k, photo=photo,
                    )  # fmt: skip
                elif kind == "image":
                    out[model] = self.similar(
                        query, model=model, labels=labels, folder=folder,
                        min_score=min_score, k=k, photo=photo,
                    )  # fmt: skip
                else:
                    out[model] = self.tag(query, model=model, k=k, min_score=min_score)
            except (ServiceError, ValueError) as e:
                out[model] = str(e)
        return out
