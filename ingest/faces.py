"""The face stage of an ingest: after the photos are embedded, find their faces, store them in
the `faces` collection and group them into people (ingest/people.py).

It is its own pass, resumable: a photo's `faces_done` payload (the face finder's version) is
written only after its faces are stored, so a killed pass loses nothing and the next one
starts from the photos without it. A photo whose faces are found again (its content changed)
loses its old faces first. Deleting a photo deletes its faces (the stores' delete_images); a
moved photo keeps them (ingest/moves.py).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ingest.people import choose_person, new_person
from model.data.images import ImageError
from model.detectors.dlib_faces import (
    DETECT_SIDE,
    FACES_VERSION,
    Detector,
    FaceFinder,
    PhotoFaces,
)
from model.detectors.faces import PERSON_SCORE
from model.vocab.rules import PERSON
from qdrant.filters import SearchFilter
from qdrant.schema import FACES_DONE, FACES_SIDE, PEOPLE, abs_posix, face_point_id
from qdrant.store import Record, Store

log = logging.getLogger(__name__)

# photos decoded and searched for faces ahead of the one being stored: enough to keep the
# finder busy while the store writes, few enough that a kill wastes little
LOOKAHEAD = 4
MAX_WORKERS = 4
# fewer photos than this are searched in this process, unless the caller names the workers:
# a worker takes 3.7 CPU s to start (mostly `import torch`), a 12-megapixel photo 90 ms here
# and 140 in a worker (bench_people, 2-core Zen 3), so two workers on two cores catch up
# with this process from about 80 photos
MIN_PHOTOS_FOR_PROCESSES = 80
ORPHAN_CHECK_S = 1.0  # how often a worker looks whether its ingest is still there


@dataclass
class FaceSummary:
    """What a face pass did."""

    photos: int = 0  # photos searched for faces in this pass
    to_do: int = 0  # photos this pass set out to search
    faces: int = 0  # faces found and stored
    new_people: int = 0  # persons started by this pass
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "photos": self.photos,
            "faces": self.faces,
            "new_people": self.new_people,
            "failed": dict(self.failed),
            "seconds": round(self.seconds, 3),
        }

    def progress(self) -> str:
        """Where a running pass is, for a page or a status line."""
        return f"finding faces: {self.photos} of {self.to_do} photo(s), {self.faces} face(s) so far"

    def line(self) -> str:
        failed = sum(self.failed.values())
        why = ", ".join(f"{r}: {n}" for r, n in sorted(self.failed.items()))
        return (
            f"faces: {self.faces} in {self.photos} photo(s), {self.new_people} new "
            f"person(s), failed {failed}" + (f" ({why})" if why else "")
            + f" in {self.seconds:.1f}s"
        )  # fmt: skip


def photos_to_do(
    store: Store, roots: Sequence[Path] | None = None, side: int = DETECT_SIDE
) -> list[Record]:
    """The image points under `roots` (every one when None) whose faces were not found by
    this version of the finder, or were looked for at a detection side under `side`."""
    flts = [SearchFilter(folder=abs_posix(r)) for r in roots] if roots else [None]
    seen: set[str] = set()
    out: list[Record] = []
    for flt in flts:
        for rec in store.scroll_images(with_vectors=False, flt=flt):
            done = rec.payload.get(FACES_DONE) == FACES_VERSION
            if done and int(rec.payload.get(FACES_SIDE) or DETECT_SIDE) >= side:
                continue
            if rec.id not in seen:
                seen.add(rec.id)
                out.append(rec)
    return out


def store_faces(
    store: Store, photo: Record, found: PhotoFaces | None, side: int = DETECT_SIDE
) -> tuple[int, int]:
    """Replace a photo's faces with `found` (None: unreadable, no faces), group them, and
    mark the photo done at detection side `side`. Returns (faces stored, persons started)."""
    old = store.faces_of_photos([photo.id])
    store.delete_faces([f.id for f in old])
    faces = found.faces if found else []
    sha = str(photo.payload.get("sha256", ""))
    path = str(photo.payload.get("path", ""))
    ids, payloads, started = [], [], 0
    for i, face in enumerate(faces):
        person, _ = choose_person(store, face.descriptor, photo.id)
        if person is None:
            person, started = new_person(store), started + 1
        fid = face_point_id(photo.id, sha, i)
        payload = {
            "photo": photo.id,
            "path": path,
            "box": list(face.box),
            "score": round(face.score, 4),
            "size": face.size,
            "person": person,
        }
        # stored one at a time: the next face of this photo, or of the next, votes with it
        store.upsert_faces([fid], [payload], face.descriptor[None, :].astype(np.float32))
        ids.append(fid)
        payloads.append(payload)
    people = sorted({str(p["person"]) for p in payloads})
    update: dict[str, Any] = {PEOPLE: people, FACES_DONE: FACES_VERSION, FACES_SIDE: side}
    if ids:
        update.update(_person_concept(photo.payload))
    store.set_image_payloads([(photo.id, update)])
    return len(ids), started


def _person_concept(payload: dict[str, Any]) -> dict[str, Any]:
    """The ConSE fields that file a photo with a face under `person`, where ConSE's own
    face detector (the LBP cascade, model/detectors/faces.py) missed it: dlib finds frontal
    faces the cascade does not (7 of 7 test faces against 3 of 7, no false face on either,
    docs/people.md). Nothing for a photo without ConSE's fields, or already filed."""
    detected = dict(payload.get("detected") or {})
    if "conse_top" not in payload or PERSON in detected:
        return {}
    detected[PERSON] = PERSON_SCORE
    concepts = sorted({*(payload.get("concepts") or []), PERSON})
    return {"detected": detected, "concepts": concepts}


def find_faces(
    store: Store,
    finder: FaceFinder,
    roots: Sequence[Path] | None = None,
    *,
    progress: bool = True,
    on_photo: Callable[[FaceSummary], None] | None = None,
    stop: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> FaceSummary:
    """The face pass over the photos under `roots` that need it (see the module doc).
    `stop`, asked between photos, ends the pass early; what is done stays done. `workers`:
    processes that find faces (default: one per core, at most MAX_WORKERS, and none under
    MIN_PHOTOS_FOR_PROCESSES photos)."""
    least = 1 if workers else MIN_PHOTOS_FOR_PROCESSES
    workers = workers or min(MAX_WORKERS, os.cpu_count() or 1)
    t0 = time.perf_counter()
    summary = FaceSummary()
    todo = photos_to_do(store, roots, finder.detect_side)
    summary.to_do = len(todo)
    if not todo:
        return summary
    store.ensure_faces()
    bar = tqdm(total=len(todo), desc="faces", unit="photo", disable=not progress, file=sys.stderr)
    try:
        for photo, found in _found_ahead(finder, todo, summary, workers, least):
            if stop is not None and stop():
                break
            n, started = store_faces(store, photo, found, finder.detect_side)
            summary.photos += 1
            summary.faces += n
            summary.new_people += started
            bar.update(1)
            if on_photo is not None:
                on_photo(summary)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _found_ahead(
    finder: FaceFinder, todo: Sequence[Record], summary: FaceSummary, workers: int, least: int
) -> Iterator[tuple[Record, PhotoFaces | None]]:
    """Each photo of `todo` with its faces, in order, found LOOKAHEAD photos per worker
    ahead: in `workers` processes (dlib holds the GIL, so threads would take turns), or in
    one thread beside the writes for fewer than `least` photos, where starting processes
    (3.7 CPU s each, to load torch, dlib and the models) would cost more than it saves."""
    paths = [str(photo.payload.get("path", "")) for photo in todo]
    pool: Executor
    if workers > 1 and len(todo) >= least:
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(finder.detector, finder.detect_side, os.getpid()),
        )  # fmt: skip
        find: Callable[[str], tuple[PhotoFaces | None, str, str]] = _find_in_worker
    else:
        pool = ThreadPoolExecutor(1, thread_name_prefix="faces")
        find = functools.partial(_find_safely, finder)
    ahead = LOOKAHEAD * max(1, workers)
    with pool:
        pending: list[tuple[Record, Future[tuple[PhotoFaces | None, str, str]]]] = []
        for photo, path in zip(todo, paths, strict=True):
            pending.append((photo, pool.submit(find, path)))
            if len(pending) > ahead:
                yield _settled(finder, *pending.pop(0), summary)
        for rec, fut in pending:
            yield _settled(finder, rec, fut, summary)


def _settled(
    finder: FaceFinder,
    photo: Record,
    fut: Future[tuple[PhotoFaces | None, str, str]],
    summary: FaceSummary,
) -> tuple[Record, PhotoFaces | None]:
    try:
        found, reason, detail = fut.result()
    except BrokenExecutor as e:
        # a worker that could not start or died (out of memory, say): this process finds
        # the photo's faces itself, so the pass goes on, slower
        log.warning("a face worker failed (%s): finding faces in this process", e)
        found, reason, detail = _find_safely(finder, str(photo.payload.get("path", "")))
    if reason:
        summary.failed[reason] += 1
        path = photo.payload.get("path", "")
        tqdm.write(f"skipping {path!r}: {reason} (faces: {detail})", file=sys.stderr)
    return photo, found


def _find_safely(finder: FaceFinder, path: str) -> tuple[PhotoFaces | None, str, str]:
    """(faces, "", "") or (None, reason, detail): a bad photo never ends the pass."""
    try:
        return finder.find_in_file(path), "", ""
    except ImageError as e:
        return None, e.reason, str(e)
    except Exception as e:  # noqa: BLE001 - one photo must not end the pass
        return None, "face finder failed", f"{type(e).__name__}: {e}"


_WORKER: list[FaceFinder] = []  # the finder of a worker process (set by _start_worker)


def _start_worker(detector: Detector, detect_side: int, parent: int) -> None:
    _WORKER[:] = [FaceFinder(detector, detect_side=detect_side)]
    # one worker per core: torch's own threads (the descriptor, face_net.py) would only
    # fight the other workers for the cores
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    # a worker whose ingest was killed (SIGKILL: no goodbye) would wait on its queue for
    # ever, since it holds the queue's other end itself: it leaves once it is orphaned
    threading.Thread(target=_leave_with, args=(parent,), daemon=True).start()


def _leave_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(0)


def _find_in_worker(path: str) -> tuple[PhotoFaces | None, str, str]:
    return _find_safely(_WORKER[0], path)


def forget_faces(store: Store) -> int:
    """Drop every face and the photos' marks (to find them again with other settings)."""
    ids = [f.id for f in store.scroll_faces()]
    store.delete_faces(ids)
    photos = [r.id for r in store.scroll_images() if FACES_DONE in r.payload]
    store.set_image_payloads([(p, {FACES_DONE: 0, PEOPLE: []}) for p in photos])
    return len(ids)
