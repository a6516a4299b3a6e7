"""Which model answers a query, and its embedder: built lazily, at most once, and checked
against the identity the index recorded of the model that made its vectors; and the
vocabularies (word vectors, CLIP's tag words) an index loads on first need."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.search.duplicates import DUP_MODEL
from app.search.errors import EmptyIndexError, ModelMissingError
from ingest import people as book
from qdrant.schema import FACES, IMAGES, PEOPLE, WORDS, check_schema
from qdrant.store import Store

log = logging.getLogger(__name__)

DEFAULT_VOCABULARY = 100_000  # what an index with no vocabulary loads by itself (~8 s)
DEFAULT_WORDS = "glove-6b-50d"  # the packaged word space, the default of every model
MODELS = ("devise", "conse", "clip")


def index_meta(store: Store) -> dict[str, Any]:
    """The index's metadata, refused when its schema is not this version's."""
    meta = store.get_meta()
    check_schema(meta, store.describe())
    return meta


def index_models(meta: dict[str, Any]) -> list[str]:
    """The models whose vectors the index holds and that answer searches, in display
    order (not the near-duplicate vector, which only `duplicates` reads)."""
    present = set((meta.get("models") or {}).keys()) - {DUP_MODEL}
    return [m for m in MODELS if m in present] + sorted(present - set(MODELS))


def require_images(store: Store, model: str) -> dict[str, Any]:
    """What the index records of `model`; raises when it holds no images, or none of
    `model`'s vectors: image searches cannot do without them."""
    # one point is enough to know: an exact count costs ~20 ms at 100,000 points
    if next(iter(store.scroll_images(batch=1)), None) is None:
        raise EmptyIndexError(
            f"the index {store.describe()} holds no images yet: fill it with "
            "`devise ingest DIR` (or `devise demo` for the sample)"
        )
    rec = (index_meta(store).get("models") or {}).get(model)
    if rec is None:
        present = index_models(index_meta(store))
        raise ModelMissingError(
            f"the index holds no {model!r} vectors (it has: {', '.join(present) or 'none'}). "
            f"Add them with `devise ingest DIR --models {model}"
            + (" --checkpoint CKPT`" if model == "devise" else "`")
            + (f", or use --model {present[0]}." if present else ".")
        )
    return dict(rec)


def index_status(store: Store) -> dict[str, Any]:
    """What the index holds: its images, words and each model's vectors."""
    meta = index_meta(store)
    models = {}
    for name, rec in (meta.get("models") or {}).items():
        models[name] = {
            "dim": rec.get("dim"),
            "id": rec.get("id"),
            "points": store.count_vectors(name),
        }
        if rec.get("precision"):  # what made its vectors (ingest/pipeline.py)
            models[name]["precision"] = rec["precision"]
            models[name]["precisions"] = rec.get("precisions") or [rec["precision"]]
    out: dict[str, Any] = {
        "index": store.describe(),
        "images": store.count(IMAGES),
        "words": store.count(WORDS),
        "models": models,
    }
    faces = store.count(FACES)
    if faces:  # the face stage's work (docs/people.md): people from the photos' indexed ids
        people = store.facet_values(PEOPLE)
        named = book.names(store)
        out.update(faces=faces, people=len(people), named=sum(1 for p in people if p in named))
    return out


class Models:
    """The embedders one service answers with, each built lazily and at most once, and the
    one-off loads of vocabulary; every method is told the store it works on."""

    def __init__(
        self,
        *,
        checkpoint: Path | None,
        precision: str,
        embedders: dict[str, Any] | None,
        factory: Callable[[str, dict[str, Any]], Any] | None,
        notify: Callable[[str], None],
        progress: bool,
    ) -> None:
        self.checkpoint = checkpoint
        self.precision = precision
        self.loaded: dict[str, Any] = dict(embedders or {})
        self.factory = factory
        self.lock = threading.Lock()
        self.vocabulary_lock = threading.Lock()
        #: each model's labels and hypernyms: lower-case name -> (name, kind)
        self.concept_names: dict[str, dict[str, tuple[str, str]]] = {}
        self.notify = notify
        self.progress = progress

    def pick(self, have: list[str], kind: str) -> tuple[str, str | None]:
        """(the model a query names none runs on, why it is not devise), of the models the
        index holds (`have`): see SearchService.pick_model."""
        # a tag needs no index: devise tags wherever a devise model is at hand
        at_hand = self.checkpoint is not None or "devise" in self.loaded or self.factory
        if "devise" in have or (kind == "tag" and at_hand):
            return "devise", None
        if not have:
            if kind == "tag":
                return "conse", "tagged with conse: no DeViSE checkpoint (pass --checkpoint CKPT)"
            return "devise", None  # the empty index's message
        if len(have) == 1:
            return have[0], None  # the only model the index holds: nothing to choose
        return have[0], (
            f"answered with {have[0]}: the index holds no devise vectors (it was ingested "
            "without --checkpoint); --model picks another"
        )

    def embedder(self, store: Store, model: str) -> Any:
        """See SearchService.embedder."""
        rec = self.record(store, model)
        with self.lock:
            emb = self.loaded.get(model)
            if emb is None:
                emb = self.build(model, rec)
                self.loaded[model] = emb
        if rec.get("id") is not None and getattr(emb, "content_id", rec["id"]) != rec["id"]:
            if model == "clip" and getattr(emb, "matches_legacy", lambda _: False)(rec["id"]):
                migrate_model_id(store, model, rec["id"], emb.content_id)
                return emb
            raise ModelMissingError(
                f"the index's {model} vectors were made by model {rec.get('id')}, but the "
                f"loaded {model} model is {emb.content_id}: its answers would be wrong. Use the "
                f"checkpoint that built the index, or re-ingest with --reembed."
            )
        return emb

    def record(self, store: Store, model: str) -> dict[str, Any]:
        """What the index records of `model`, or {} where the defaults (or --checkpoint) do."""
        rec = (index_meta(store).get("models") or {}).get(model)
        if rec is not None:
            return dict(rec)
        if model == "devise" and self.checkpoint is None and self.factory is None:
            if model not in self.loaded:
                raise ModelMissingError(
                    "the index records no DeViSE model: pass --checkpoint CKPT (train one with "
                    "`devise train DATA --out CKPT`), or use --model conse"
                )
        elif model not in MODELS:
            raise ModelMissingError(f"unknown model {model!r}: choose from {', '.join(MODELS)}")
        return {}

    def words_source(self, store: Store, model: str | None = None) -> str:
        """The word space `model`'s vectors live in (the index's first model's by default)."""
        records = index_meta(store).get("models") or {}
        for name in [model] if model else ["devise", "conse"]:
            source = (records.get(name) or {}).get("words") or getattr(
                self.loaded.get(name), "words_source", None
            )
            if source:
                return str(source)
        return DEFAULT_WORDS

    def ensure_vocabulary(self, store: Store, source: str | None = None) -> bool:
        """See SearchService.ensure_vocabulary."""
        with self.vocabulary_lock:
            if (index_meta(store).get("words") or {}).get("count"):
                return False
            from ingest.vocabulary import concepts_for, load_vocabulary
            from model.vocab.words import load_words

            source = source or self.words_source(store)
            self.notify(
                f"the index has no vocabulary yet: loading the {DEFAULT_VOCABULARY:,} most "
                f"frequent words of {source} (about 8 s; `devise words` picks another size)"
            )
            models = index_meta(store).get("models") or {}
            load_vocabulary(
                store,
                load_words(source),
                DEFAULT_VOCABULARY,
                self.progress,
                concepts=concepts_for(models),
            )
            return True

    def vocabulary_for(self, store: Store, model: str, rec: dict[str, Any]) -> None:
        """Loads the vocabulary on first need; refuses one of another word space than the
        one `model`'s vectors (recorded as `rec`) live in."""
        words_meta = index_meta(store).get("words") or {}
        # meta's count, not count(WORDS): an exact count of 100k points costs ~10 ms a query
        if not words_meta.get("count") and self.ensure_vocabulary(store, rec.get("words")):
            words_meta = index_meta(store).get("words") or {}
        if rec.get("words") and words_meta.get("source") not in (None, rec.get("words")):
            raise ModelMissingError(
                f"the vocabulary is {words_meta.get('source')} but the {model} vectors live in "
                f"{rec.get('words')}: run `devise words --words {rec.get('words')}`"
            )

    def ensure_clip_vocabulary(self, store: Store, clip: Any = None) -> bool:
        """See SearchService.ensure_clip_vocabulary."""
        from ingest.vocabulary import clip_tag_words, embed_clip_vocabulary

        with self.vocabulary_lock:
            rec = self.record(store, "clip")
            done = (index_meta(store).get("words") or {}).get("clip") or {}
            if done.get("entries") and done.get("id") == (
                clip.content_id if clip is not None else rec.get("id")
            ):
                return False
        if not (index_meta(store).get("words") or {}).get("count"):
            self.ensure_vocabulary(store)
        with self.vocabulary_lock:
            clip = clip if clip is not None else self.embedder(store, "clip")

            def announce() -> None:
                self.notify(
                    "embedding the tag vocabulary (labels, hypernyms and the "
                    f"{clip_tag_words():,} most frequent words) with clip's text tower, once "
                    "for this model: about 15 s on 2 desktop cores, a minute or more on a slow "
                    "CPU"
                )

            summary = embed_clip_vocabulary(store, clip, self.progress, announce=announce)
            if summary is not None:
                self.notify(
                    f"read clip's vectors of {summary.entries:,} tag words from this machine's "
                    "cache (another index of the same model embedded them) in "
                    f"{summary.seconds:.1f}s"
                    if summary.cached
                    else f"embedded {summary.entries:,} tag words with clip in "
                    f"{summary.seconds:.1f}s"
                )
            return summary is not None

    def concepts(self, store: Store, model: str) -> dict[str, tuple[str, str]]:
        """The labels and hypernyms `model` knows: lower-case name -> (name, kind)."""
        with self.lock:
            cache = self.concept_names
            if model not in cache:
                from ingest.vocabulary import concepts_for

                rec = dict((index_meta(store).get("models") or {}).get(model) or {})
                if model == "devise" and self.checkpoint is not None:
                    rec["checkpoint"] = str(self.checkpoint)
                own: dict[str, tuple[str, str]] = {}
                for cs in concepts_for({model: rec}):
                    for c in cs.concepts:
                        if c.name.lower() not in own or c.kind == "label":
                            own[c.name.lower()] = (c.name, c.kind)
                cache[model] = own
            return cache[model]

    def build(self, model: str, rec: dict[str, Any]) -> Any:
        """A new embedder for `model`, from the index's record of it (`rec`)."""
        if self.factory is not None:
            return self.factory(model, rec)
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


def migrate_model_id(store: Store, model: str, old: str, new: str) -> None:
    """Rewrite an identity recorded in an older form (CLIP's by tag) as the current one."""
    meta = store.get_meta()
    rec = (meta.get("models") or {}).get(model)
    if rec is None or rec.get("id") != old:
        return
    rec["id"] = new
    store.set_meta(meta)
    log.info("%s: recorded model %s is now named %s", model, old, new)
