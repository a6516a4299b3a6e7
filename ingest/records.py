"""What the index records about an ingest run in its metadata: the models whose vectors it
holds (checked before a run, so two models' vectors never mix under one name), the
precisions that made them, and the folders given to ingest."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingest.base import ArrayEmbedder, IngestError
from qdrant.schema import SCHEMA_VERSION, abs_posix, check_schema
from qdrant.store import Store

log = logging.getLogger(__name__)


def check_models(store: Store, embedders: Sequence[ArrayEmbedder], reembed: bool) -> None:
    """Refuse to mix vectors of two models under one name, unless asked to replace them."""
    meta = store.get_meta()
    check_schema(meta, store.describe())
    sizes = store.vector_sizes()
    for emb in embedders:
        rec = (meta.get("models") or {}).get(emb.name)
        if rec and rec.get("id") != emb.content_id:
            matches_legacy = getattr(emb, "matches_legacy", None)
            if matches_legacy is not None and matches_legacy(rec.get("id")):
                continue  # the same weights, named the older way: record_models renames it
            if not reembed:
                raise IngestError(
                    f"the index {store.describe()} holds {emb.name} vectors of model "
                    f"{rec.get('id')}, not {emb.content_id}. Re-run with --reembed to replace "
                    f"them, or use another --index."
                )
            log.warning("replacing %s vectors of model %s", emb.name, rec.get("id"))
            if emb.name in sizes:
                store.drop_vector(emb.name)
        elif emb.name in sizes and sizes[emb.name] != emb.dim:
            raise IngestError(
                f"the index has {emb.name} vectors of dimension {sizes[emb.name]}, "
                f"the model makes {emb.dim}: re-run with --reembed or use another --index"
            )


def record_models(
    store: Store, embedders: Sequence[ArrayEmbedder], extra: dict[str, dict[str, Any]]
) -> None:
    meta = store.get_meta()
    check_schema(meta, store.describe())
    meta["schema"] = SCHEMA_VERSION
    models = dict(meta.get("models") or {})
    for emb in embedders:
        old = models.get(emb.name) or {}
        # the same model's vectors keep the record of the precisions they were made at
        kept = {k: old[k] for k in NUMERICS_FIELDS if k in old and old.get("id") == emb.content_id}
        models[emb.name] = {
            "dim": emb.dim,
            "id": emb.content_id,
            **kept,
            **extra.get(emb.name, {}),
        }
    meta["models"] = models
    store.set_meta(meta)


NUMERICS_FIELDS = ("precision", "numerics", "precisions")


def record_precisions(store: Store, embedders: Sequence[ArrayEmbedder]) -> None:
    """Record the numerics that made each model's vectors in this run, in its record:
    `precision` (fp32, bf16, int8: what ran, after any first-batch fallback), `numerics`
    (what computed them, `cpu-openvino-bf16` say) and `precisions`, every precision its
    vectors were ever made at. A query may run at another precision: every bf16 or int8
    backbone checks its first batch against fp32 (cosine 0.995) and falls back below it."""
    meta = store.get_meta()
    models = dict(meta.get("models") or {})
    changed = False
    for emb in embedders:
        bb = getattr(emb, "_backbone", None)  # only a backbone this run built and used
        if bb is None or emb.name not in models:
            continue
        rec = dict(models[emb.name])
        seen = sorted({*rec.get("precisions", []), bb.precision})
        new = {"precision": bb.precision, "numerics": bb.numerics, "precisions": seen}
        if any(rec.get(k) != v for k, v in new.items()):
            models[emb.name] = {**rec, **new}
            changed = True
    if changed:
        meta["models"] = models
        store.set_meta(meta)


def record_roots(store: Store, roots: Sequence[Path]) -> None:
    """Remember the folders (or files) given to ingest: the web app serves images from
    these only."""
    meta = store.get_meta()
    known = [str(r) for r in meta.get("roots") or []]
    new = [abs_posix(r) for r in roots if abs_posix(r) not in known]
    if new:
        meta["roots"] = sorted(known + new)
        store.set_meta(meta)
