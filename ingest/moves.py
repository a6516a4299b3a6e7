"""Points whose files moved: a moved (or copied) file reuses its content's vectors
(`reuse_moved`), an older index's point stored under a symlinked path is settled at its
real path (`settle_symlinked_points`), and a point whose file is gone is pruned
(`prune_missing`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingest.base import FileEntry, IngestSummary
from qdrant.filters import SearchFilter
from qdrant.schema import FACES_DONE, PEOPLE, abs_posix, image_payload, image_point_id
from qdrant.store import Record, Store

log = logging.getLogger(__name__)


def reuse_moved(
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
        moved = not os.path.exists(donor.payload.get("path", ""))
        if moved:
            # its faces follow it, before the new point exists: a kill in between leaves
            # them on the new id, which the next run's move writes again
            move_faces(store, donor.id, image_point_id(f.path), f.path)
        else:
            # a copy gets faces of its own from the face pass
            payload.pop(FACES_DONE, None)
            payload.pop(PEOPLE, None)
        store.upsert_images([image_point_id(f.path)], [payload], reused)  # type: ignore[list-item]
        if moved:
            store.delete_images([donor.id])  # after the upsert: a kill in between loses nothing
            summary.moved += 1
        else:
            summary.indexed += 1  # a copy of an indexed file: same vectors, new point
    return to_embed


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


def move_faces(store: Store, old_id: str, new_id: str, path: str) -> None:
    """The faces of image point `old_id` now belong to `new_id`, at `path`."""
    faces = store.faces_of_photos([old_id])
    store.set_face_payloads([(f.id, {"photo": new_id, "path": abs_posix(path)}) for f in faces])


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
        payload.pop(FACES_DONE, None)  # the old point's faces go with it: found again
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
