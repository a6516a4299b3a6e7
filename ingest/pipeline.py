"""Folders of images become points: walk -> hash what changed -> load -> embed -> upsert.

Idempotent and incremental:
- a file whose path, mtime and size match its point is skipped;
- a file whose content (sha256) is already indexed under a path that is gone is a move:
  its vectors are reused, nothing is re-embedded;
- every batch is upserted as soon as it is embedded, so a killed run loses only the batch
  in flight, and the rerun finishes the job (point ids are uuid5 of the path: no duplicates);
- each file's EXIF (date, camera, position: ingest/exif.py) goes into its payload; an
  unchanged file whose point lacks it (an index made before) gets it by a payload update,
  without embedding.

Beside it: `ingest.base` (the types every stage shares, exported here too), `ingest.records`
(what the index records of a run) and `ingest.moves` (moved, symlinked and gone files).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from ingest.base import ArrayEmbedder, FileEntry, IngestError, IngestSummary
from ingest.exif import EXIF_VERSION, exif_payload
from ingest.moves import prune_missing, reuse_moved, settle_symlinked_points
from ingest.records import check_models, record_models, record_precisions, record_roots
from model.data.images import Preprocess, is_image_path
from model.data.loader import default_workers, iter_batches
from model.data.thumbs import Thumbnails, default_folder
from model.device import Device, default_batch_size, default_device
from model.vocab.words import label_name
from qdrant.schema import abs_posix, image_payload, image_point_id
from qdrant.store import Record, Store

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]


# How many unchanged files' EXIF goes to the store in one call.
EXIF_BATCH = 256


def _label_for(path: Path, root: Path) -> str:
    """The class folder name: the file's parent folder (wnids mapped to names)."""
    parent = path.parent if path.parent != root.parent else root
    return label_name(parent.name or root.name)


def walk_images(roots: Sequence[Path], on_error: Callable[[str, str], None]) -> Iterator[FileEntry]:
    """Image files under `roots`, following folder symlinks but never around a loop."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for root in roots:
        root = Path(abs_posix(root))
        if root.is_file():
            candidates: Iterator[tuple[Path, Path]] = iter([(root, root.parent)])
        elif root.is_dir():
            candidates = _walk_dir(root, seen_dirs, on_error)
        else:
            raise IngestError(f"not a folder or image file: {root}")
        for path, label_root in candidates:
            if not is_image_path(path):
                continue
            # the real path: a file reached through a symlinked folder is the file itself;
            # its label stays the class folder it was reached through
            key = abs_posix(path)
            if key in seen_files:
                continue
            seen_files.add(key)
            try:
                st = Path(key).stat()
            except FileNotFoundError:
                on_error(key, "missing")
                continue
            except OSError as e:
                on_error(key, "unreadable" if not isinstance(e, RecursionError) else "symlink loop")
                continue
            if not Path(key).is_file():
                continue
            yield FileEntry(key, st.st_size, st.st_mtime, _label_for(path, label_root))


def _walk_dir(
    root: Path, seen_dirs: set[tuple[int, int]], on_error: Callable[[str, str], None]
) -> Iterator[tuple[Path, Path]]:
    def onerror(e: OSError) -> None:
        on_error(str(e.filename), "unreadable folder")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a symlink loop or a folder reached twice: walk it once
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                yield Path(dirpath) / f, root


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Skip(Protocol):
    """Count a file as failed for `reason`, and say so."""

    def __call__(self, path: str, reason: str, detail: str = "") -> None: ...


@dataclass
class _Plan:
    """What a run does with the files it found (`_plan`), and what reading the ones to
    embed or move gave (`_read_changed`)."""

    todo: list[FileEntry] = field(default_factory=list)  # new, changed, or to embed again
    # unchanged files whose points lack one of these models' vectors or payload fields:
    # embedded again, but only these models' vectors and fields are updated
    refresh: set[str] = field(default_factory=set)
    lacking: set[str] = field(default_factory=set)  # of `refresh`: those missing a vector
    exif_only: list[str] = field(default_factory=list)  # unchanged, their EXIF fields old
    hashes: dict[str, str] = field(default_factory=dict)  # sha256 of each readable `todo`
    exif: dict[str, dict[str, Any]] = field(default_factory=dict)  # and its EXIF fields


def ingest(
    store: Store,
    roots: Sequence[Path],
    embedders: Sequence[ArrayEmbedder],
    *,
    prune: bool = False,
    reembed: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    model_meta: dict[str, dict[str, Any]] | None = None,
    on_batch: Callable[[IngestSummary], None] | None = None,
    gpu_decode: bool = True,
    thumbnails: Thumbnails | None = None,
) -> IngestSummary:
    """Index every image under `roots` with every embedder; see the module doc.

    The models run on the process's device (`model.device.default_device`); `batch_size`
    None is that device's default (32 on the CPU, larger on a GPU). `gpu_decode`: on a GPU,
    decode JPEGs there with nvJPEG (False: PIL in the loader threads, as on the CPU).
    `thumbnails` keeps the app's thumbnails of HEIC files from the pictures decoded here
    (default: in the cache folder, where the app looks for them)."""
    t0 = time.perf_counter()
    device = default_device()
    batch_size = batch_size or default_batch_size(device)
    if not embedders:
        raise IngestError("no model to ingest with: pass --checkpoint or --models conse")
    summary = IngestSummary()

    def skip(path: str, reason: str, detail: str = "") -> None:
        summary.failed[reason] += 1
        msg = f"skipping {path!r}: {reason}" + (f" ({detail})" if detail else "")
        tqdm.write(msg, file=sys.stderr) if progress else log.warning(msg)

    check_models(store, embedders, reembed)
    store.ensure_collections({e.name: e.dim for e in embedders})
    record_models(store, embedders, model_meta or {})
    record_roots(store, roots)
    summary.twins = settle_symlinked_points(store)

    files = list(walk_images(roots, lambda p, r: skip(p, r)))
    plan = _plan(store, files, embedders, summary)
    n_workers = workers or default_workers(device)
    if plan.exif_only:
        summary.exif_added = _add_exif(store, plan.exif_only, n_workers, progress)
    _read_changed(plan, n_workers)
    names = [e.name for e in embedders]
    to_embed = reuse_moved(
        store, plan.todo, plan.hashes, plan.exif, plan.refresh, names, summary, skip
    )
    made = _embed_and_upsert(
        store,
        embedders,
        to_embed,
        plan,
        summary,
        skip,
        batch_size=batch_size,
        workers=n_workers,
        device=device,
        gpu_decode=gpu_decode,
        thumbnails=thumbnails,
        progress=progress,
        on_batch=on_batch,
    )

    # only the models that made vectors in this run: a run with nothing new made none
    record_precisions(store, [e for e in embedders if e.name in made])
    if prune:
        summary.pruned = prune_missing(store, roots)
    summary.seconds = time.perf_counter() - t0
    return summary


def _plan(
    store: Store,
    files: Sequence[FileEntry],
    embedders: Sequence[ArrayEmbedder],
    summary: IngestSummary,
) -> _Plan:
    """Which files are unchanged (counted) and which to embed, by their points' size, mtime,
    vectors and payload fields."""
    names = [e.name for e in embedders]
    existing = store.find_by_path([f.path for f in files]) if files else {}
    has_vectors = _vectors_present(store, existing, names)
    plan = _Plan()
    for f in files:
        rec = existing.get(f.path)
        same = (
            rec is not None
            and int(rec.payload.get("bytes", -1)) == f.size
            # stores keep mtime to the microsecond at best: compare within a millisecond
            and abs(float(rec.payload.get("mtime", -1)) - f.mtime) < 1e-3
        )
        if same:
            if has_vectors.get(f.path, set()) >= set(names) and _has_extra_fields(rec, embedders):
                summary.unchanged += 1
                if _lacks_exif(rec):
                    plan.exif_only.append(f.path)
            else:
                # an unchanged file whose point lacks one of these models' vectors (an index
                # made before the `dup` vector, or a model added later) or their payload
                # fields (before ConSE stored its top classes, detections and concepts by
                # wnid): embed it once more, but update only these models' vectors and
                # fields, keeping every other model's
                plan.refresh.add(f.path)
                if not has_vectors.get(f.path, set()) >= set(names):
                    plan.lacking.add(f.path)
                plan.todo.append(f)
        else:
            plan.todo.append(f)
    return plan


def _read_changed(plan: _Plan, workers: int) -> None:
    """Hash what changed (in threads: it is I/O) to find moved files; read its EXIF alongside."""
    if not plan.todo:
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="hash") as pool:
        read = pool.map(_read_file, [f.path for f in plan.todo])
        for f, (digest, fields) in zip(plan.todo, read, strict=True):
            if digest:
                plan.hashes[f.path] = digest
                plan.exif[f.path] = fields


def _embed_and_upsert(
    store: Store,
    embedders: Sequence[ArrayEmbedder],
    to_embed: list[FileEntry],
    plan: _Plan,
    summary: IngestSummary,
    skip: _Skip,
    *,
    batch_size: int,
    workers: int,
    device: Device,
    gpu_decode: bool,
    thumbnails: Thumbnails | None,
    progress: bool,
    on_batch: Callable[[IngestSummary], None] | None,
) -> set[str]:
    """Embed `to_embed` in batches, each upserted as soon as it is embedded; returns the
    models whose backbones embedded a batch."""
    summary.to_embed = len(to_embed)
    made: set[str] = set()
    bar = tqdm(
        total=len(to_embed),
        desc="ingest",
        unit="img",
        dynamic_ncols=True,
        disable=not progress,
        file=sys.stderr,
    )
    try:
        specs = _unique_specs(embedders)
        paths = [f.path for f in to_embed]
        for batch in iter_batches(
            paths,
            [s for s, _ in specs],
            batch_size,
            workers,
            device=device,
            gpu_decode=gpu_decode,
            inspect=_inspector(embedders),
            keep=(thumbnails or Thumbnails(default_folder())).keep,
        ):
            summary.batches += 1
            summary.wait_seconds += batch.wait_s
            for i, err in batch.failures:
                skip(to_embed[i].path, err.reason, err.detail)
            if batch.indices:
                te = time.perf_counter()
                extras: list[dict[str, Any]] = [{} for _ in batch.indices]
                vectors = embed_batch(specs, batch.arrays, extras, batch.inspected)
                made.update(vectors)
                summary.embed_seconds += time.perf_counter() - te
                entries = [to_embed[i] for i in batch.indices]
                _upsert_batch(store, entries, batch.sizes, vectors, extras, plan, summary)
            bar.update(len(batch.indices) + len(batch.failures))
            if on_batch is not None:
                on_batch(summary)
    finally:
        bar.close()
        store.flush()
    return made


def _upsert_batch(
    store: Store,
    entries: Sequence[FileEntry],
    sizes: Sequence[tuple[int, int]],
    vectors: dict[str, Float32Array],
    extras: Sequence[dict[str, Any]],
    plan: _Plan,
    summary: IngestSummary,
) -> None:
    """One embedded batch into the store: new points for new and changed files, and only
    these models' vectors and fields for the files in `plan.refresh`."""
    payloads = [
        {
            **image_payload(
                f.path,
                label=f.label,
                width=w,
                height=h,
                size_bytes=f.size,
                mtime=f.mtime,
                sha256=plan.hashes[f.path],
            ),
            **plan.exif[f.path],
            **extra,
        }
        for f, (w, h), extra in zip(entries, sizes, extras, strict=True)
    ]
    fresh = [i for i, f in enumerate(entries) if f.path not in plan.refresh]
    stale = [i for i, f in enumerate(entries) if f.path in plan.refresh]
    if fresh:
        store.upsert_images(
            [image_point_id(entries[i].path) for i in fresh],
            [payloads[i] for i in fresh],  # type: ignore[misc]
            {n: v[fresh] for n, v in vectors.items()},
        )
    if stale:
        ids = [image_point_id(entries[i].path) for i in stale]
        for n, v in vectors.items():
            store.update_vectors(ids, n, v[stale])
        for pid, i in zip(ids, stale, strict=True):
            store.set_image_payload(pid, dict(payloads[i]))
    embedded = sum(1 for i in stale if entries[i].path in plan.lacking)
    summary.indexed += len(fresh) + embedded
    summary.unchanged += len(stale) - embedded


def embed_batch(
    specs: Sequence[tuple[Preprocess, list[ArrayEmbedder]]],
    arrays: Sequence[Float32Array],
    extras: list[dict[str, Any]] | None = None,
    inspected: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Float32Array]:
    """Every embedder's vectors for one batch. Embedders on the same backbone (devise and
    conse on efficientnet_lite0) share one forward pass: only their heads differ.

    An embedder with an `embed_payload(x, inspected)` method (ConSE: its top classes,
    concepts and what the face detector found in `inspected`) gives its vectors and its
    per-image payload fields in one call, so its classifier runs once; the fields go into
    `extras`, one dict per image."""
    vectors: dict[str, Float32Array] = {}

    def run(emb: ArrayEmbedder, x: Float32Array, plain: Callable[[Float32Array], Any]) -> None:
        both = getattr(emb, "embed_payload", None)
        if both is None:
            vectors[emb.name] = plain(x)
            return
        vectors[emb.name], fields = both(x, inspected)
        if extras is not None:
            for row, more in zip(extras, fields, strict=True):
                row.update(more)

    for (_, members), arr in zip(specs, arrays, strict=True):
        features: dict[tuple[str, str, str], Float32Array] = {}
        for emb in members:
            backbone = getattr(emb, "backbone", None)
            head = getattr(emb, "embed_features", None)
            if backbone is None or head is None:
                run(emb, arr, emb.embed_arrays)
                continue
            wid = backbone.weights_id
            # random-init backbones are only alike if they are the same object
            key = (
                backbone.name,
                wid if wid != "random-init" else str(id(backbone)),
                backbone.precision,
            )
            if key not in features:
                features[key] = backbone.features(arr)
            run(emb, features[key], head)
    return vectors


def _inspector(
    embedders: Sequence[ArrayEmbedder],
) -> Callable[[Any], dict[str, Any]] | None:
    """The embedders' `inspect(image)` hooks as one (a face detector, for ConSE), to run in
    the loader threads on each decoded picture; None when no embedder has one."""
    hooks = [h for e in embedders if (h := getattr(e, "inspect", None)) is not None]
    if not hooks:
        return None

    def inspect(image: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for hook in hooks:
            out.update(hook(image))
        return out

    return inspect


def _has_extra_fields(rec: Record | None, embedders: Sequence[ArrayEmbedder]) -> bool:
    """Whether a point carries the payload fields its embedders add (an index made before
    ConSE stored its concepts lacks them: those files are embedded again, once)."""
    if rec is None:
        return False
    for emb in embedders:
        fields = getattr(emb, "extra_fields", ())
        if any(name not in rec.payload for name in fields):
            return False
    return True


def _read_file(path: str) -> tuple[str | None, dict[str, Any]]:
    """(sha256, EXIF payload fields) of a file; (None, {}) when it cannot be read."""
    try:
        digest = sha256_file(path)
    except OSError:
        return None, {}
    return digest, exif_payload(path)


def _lacks_exif(rec: Record | None) -> bool:
    """Whether a point's EXIF fields were read by an older version, or never."""
    if rec is None:
        return False
    version = rec.payload.get("exif")
    return not isinstance(version, int) or version < EXIF_VERSION


def _add_exif(store: Store, paths: Sequence[str], workers: int, progress: bool) -> int:
    """Read the EXIF of unchanged files and merge it into their points' payloads: no
    decoding, no embedding. In batches, so a killed run keeps what it did; returns how many."""
    done = 0
    bar = tqdm(
        total=len(paths),
        desc="exif",
        unit="img",
        dynamic_ncols=True,
        disable=not progress,
        file=sys.stderr,
    )
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="exif") as pool:
            for start in range(0, len(paths), EXIF_BATCH):
                chunk = paths[start : start + EXIF_BATCH]
                fields = pool.map(exif_payload, chunk)
                updates = [(image_point_id(p), f) for p, f in zip(chunk, fields, strict=True)]
                store.set_image_payloads(updates)
                done += len(updates)
                bar.update(len(updates))
    finally:
        bar.close()
    return done


def _unique_specs(
    embedders: Sequence[ArrayEmbedder],
) -> list[tuple[Preprocess, list[ArrayEmbedder]]]:
    """Group embedders by input spec, so each image is preprocessed once per distinct spec."""
    groups: dict[Preprocess, list[ArrayEmbedder]] = {}
    for e in embedders:
        groups.setdefault(e.preprocess, []).append(e)
    return list(groups.items())


def _vectors_present(
    store: Store, existing: dict[str, Any], names: Sequence[str]
) -> dict[str, set[str]]:
    """Which of `names` each existing point already carries."""
    if not existing:
        return {}
    ids = [rec.id for rec in existing.values()]
    out: dict[str, set[str]] = {}
    for start in range(0, len(ids), 512):
        for rec in store.retrieve_images(ids[start : start + 512], with_vectors=list(names)):
            out[str(rec.payload.get("path"))] = {n for n, v in rec.vectors.items() if v is not None}
    return out
