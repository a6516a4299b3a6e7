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
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from ingest.exif import EXIF_VERSION, exif_payload
from model.data.images import Preprocess, is_image_path
from model.data.loader import default_workers, iter_batches
from model.data.thumbs import Thumbnails, default_folder
from model.device import Device, default_batch_size, default_device
from model.vocab.words import label_name
from qdrant.filters import SearchFilter
from qdrant.schema import SCHEMA_VERSION, abs_posix, check_schema, image_payload, image_point_id
from qdrant.store import Record, Store

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]


# How many unchanged files' EXIF goes to the store in one call.
EXIF_BATCH = 256


class IngestError(RuntimeError):
    pass


class ArrayEmbedder(Protocol):
    """What ingest needs of an embedder: its identity, its input spec, and a batch call."""

    name: str

    @property
    def dim(self) -> int: ...

    @property
    def content_id(self) -> str: ...

    @property
    def preprocess(self) -> Preprocess: ...

    def embed_arrays(self, arrays: Float32Array) -> Float32Array: ...


@dataclass
class IngestSummary:
    indexed: int = 0
    unchanged: int = 0
    moved: int = 0
    pruned: int = 0
    twins: int = 0  # points of an older index stored under a symlink path, now settled
    exif_added: int = 0  # unchanged files whose points were given their EXIF fields
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    embed_seconds: float = 0.0
    wait_seconds: float = 0.0  # time the embedders waited for the loader threads
    batches: int = 0
    to_embed: int = 0  # files found new or changed, to embed: what a progress bar counts to

    def to_json(self) -> dict[str, Any]:
        return {
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "moved": self.moved,
            "pruned": self.pruned,
            "failed": dict(self.failed),
            "seconds": round(self.seconds, 3),
        }

    def line(self) -> str:
        failed = sum(self.failed.values())
        why = ", ".join(f"{r}: {n}" for r, n in sorted(self.failed.items()))
        return (
            f"indexed {self.indexed}, unchanged {self.unchanged}, moved {self.moved}, "
            f"pruned {self.pruned}, failed {failed}"
            + (f" ({why})" if why else "")
            + (f", {self.twins} symlinked twin(s) settled" if self.twins else "")
            + (f", EXIF added to {self.exif_added} unchanged" if self.exif_added else "")
            + f" in {self.seconds:.1f}s"
        )


@dataclass(frozen=True)
class FileEntry:
    path: str  # absolute posix path, symlinks resolved: one file, one point
    size: int
    mtime: float
    label: str


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


def _check_models(store: Store, embedders: Sequence[ArrayEmbedder], reembed: bool) -> None:
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

    _check_models(store, embedders, reembed)
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
    to_embed = _reuse_moved(
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


def _reuse_moved(
    store: Store,
    todo: Sequence[FileEntry],
    hashes: dict[str, str],
    exif: dict[str, dict[str, Any]],
    refresh: set[str],
    names: Sequence[str],
    summary: IngestSummary,
    skip: Callable[[str, str], None],
) -> list[FileEntry]:
    """The files of `todo` to embed, given their `hashes` and `exif` fields. One whose
    content is already a point with every vector, under another path, is not: a moved file
    takes that point over, a copy gets a point of its own with the same vectors. Files in
    `refresh` are always embedded."""
    to_embed: list[FileEntry] = []
    by_hash = store.find_by_sha256(sorted(set(hashes.values()))) if hashes else {}
    for f in todo:
        digest = hashes.get(f.path)
        if digest is None:
            skip(f.path, "unreadable")
            continue
        if f.path in refresh:
            to_embed.append(f)
            continue
        donor = _reusable(store, by_hash.get(digest, []), f.path, names)
        if donor is None:
            to_embed.append(f)
            continue
        payload = dict(donor.payload)
        payload.update(
            image_payload(
                f.path,
                label=f.label,
                width=payload.get("width", 0),
                height=payload.get("height", 0),
                size_bytes=f.size,
                mtime=f.mtime,
                sha256=digest,
            )
        )
        payload.update(exif[f.path])
        reused = {n: donor.vectors[n][None, :] for n in names}
        store.upsert_images([image_point_id(f.path)], [payload], reused)  # type: ignore[list-item]
        if not os.path.exists(donor.payload.get("path", "")):
            store.delete_images([donor.id])  # after the upsert: a kill in between loses nothing
            summary.moved += 1
        else:
            summary.indexed += 1  # a copy of an indexed file: same vectors, new point
    return to_embed


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
    inspected: Sequence[dict[str, float]] | None = None,
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
) -> Callable[[Any], dict[str, float]] | None:
    """The embedders' `inspect(image)` hooks as one (a face detector, for ConSE), to run in
    the loader threads on each decoded picture; None when no embedder has one."""
    hooks = [h for e in embedders if (h := getattr(e, "inspect", None)) is not None]
    if not hooks:
        return None

    def inspect(image: Any) -> dict[str, float]:
        out: dict[str, float] = {}
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


def _reusable(
    store: Store, candidates: Sequence[Record], path: str, names: Sequence[str]
) -> Record | None:
    """A point with the same content under another path that carries every vector we need."""
    ids = [rec.id for rec in candidates if rec.payload.get("path") != path]
    if not ids:
        return None
    for rec in store.retrieve_images(ids, with_vectors=list(names)):
        if all(rec.vectors.get(n) is not None for n in names):
            return rec
    return None


def prune_missing(store: Store, roots: Sequence[Path]) -> int:
    """Delete the points under `roots` whose files are gone; returns how many."""
    gone: list[str] = []
    for root in roots:
        if not Path(root).is_dir():
            continue  # a single file given on the command line: nothing beneath it to prune
        flt = SearchFilter(folder=abs_posix(root))
        for rec in store.scroll_images(with_vectors=False, flt=flt):
            if not os.path.exists(str(rec.payload.get("path", ""))):
                gone.append(rec.id)
    for start in range(0, len(gone), 512):
        store.delete_images(gone[start : start + 512])
    return len(gone)


REAL_PATHS = "real"  # meta["paths"]: every point's stored path has its symlinks resolved


def settle_symlinked_points(store: Store) -> int:
    """Older indexes stored paths as reached, so a file ingested through a symlink too was
    two points. Once per index, each point whose stored path is not its real path is
    settled: deleted when its file is already a point (a twin), else moved to its real
    path, vectors and all. Returns how many points were settled."""
    meta = store.get_meta()
    if meta.get("paths") == REAL_PATHS:
        return 0
    stale = [
        rec
        for rec in store.scroll_images(with_vectors=False)
        if abs_posix(str(rec.payload.get("path", ""))) != rec.payload.get("path")
    ]
    real = {rec.id: abs_posix(str(rec.payload["path"])) for rec in stale}
    taken = set(store.find_by_path(sorted(set(real.values())))) if stale else set()
    twins: list[str] = []
    names = list(store.vector_sizes())
    for rec in stale:
        target = real[rec.id]
        if target in taken:
            twins.append(rec.id)
            continue
        if not os.path.isfile(target):
            continue  # a file gone: `--prune` deletes it as it does any other
        full = store.retrieve_images([rec.id], with_vectors=names)
        vectors = {n: v[None, :] for n, v in full[0].vectors.items() if v is not None}
        payload = dict(rec.payload)
        payload.update(
            image_payload(
                target,
                label=str(payload.get("label", "")),
                width=int(payload.get("width", 0)),
                height=int(payload.get("height", 0)),
                size_bytes=int(payload.get("bytes", 0)),
                mtime=float(payload.get("mtime", 0.0)),
                sha256=str(payload.get("sha256", "")),
            )
        )
        store.upsert_images([image_point_id(target)], [payload], vectors)  # type: ignore[list-item]
        twins.append(rec.id)  # after the upsert: a kill in between loses nothing
        taken.add(target)
    for start in range(0, len(twins), 512):
        store.delete_images(twins[start : start + 512])
    if twins:
        log.warning("settled %d point(s) stored under a symlinked path", len(twins))
    meta = store.get_meta()
    meta["paths"] = REAL_PATHS
    store.set_meta(meta)
    return len(twins)
