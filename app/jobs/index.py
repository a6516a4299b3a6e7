"""The web app's background index job: one folder at a time, on the app's own store."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.search.service import SearchService
    from ingest.pipeline import ArrayEmbedder, IngestSummary


log = logging.getLogger(__name__)


class Outcome(Protocol):
    """What a queued job returns: an ingest's summary, a vocabulary load's, a recorded
    evaluation's."""

    @property
    def failed(self) -> Mapping[str, int]: ...

    def line(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


#: one queued job: `run(request, on_batch)` does the work, holding the store's write slot
Runner = Callable[["IngestRequest", Callable[["IngestSummary"], None]], Outcome]

#: finished requests kept for their callers to read
KEEP_REQUESTS = 64


@dataclass
class IngestRequest:
    """One ingest sent to the app (by the CLI or the folder watcher), and how it went."""

    id: int
    paths: list[Path]
    source: str = "cli"
    #: what the messages call it: the paths, else a job's name ("loading the words")
    label: str = ""
    state: str = "queued"  # queued | running | done | failed
    message: str = ""
    done: int = 0  # files embedded or failed so far
    total: int = 0  # files to embed (known once the run has looked for changes)
    summary: dict[str, Any] = field(default_factory=dict)
    line: str = ""
    failed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "message": self.message, "done": self.done,
            "total": self.total, "summary": self.summary, "line": self.line,
        }  # fmt: skip


class IndexJob:
    """Indexes folders in a background thread on the app's own store; one job at a time."""

    def __init__(
        self,
        service: SearchService,
        embedders: Callable[[], Sequence[ArrayEmbedder]],
        *,
        allowed: Sequence[Path],
        model_meta: Callable[[], dict[str, dict[str, Any]]] | None = None,
        on_done: Callable[[list[Path]], None] | None = None,
    ) -> None:
        self.service = service
        self._embedders = embedders
        self._model_meta = model_meta
        self.allowed = [Path(os.path.realpath(p)) for p in allowed]
        self._on_done = on_done
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.state = "idle"  # idle | running | done | failed
        self.message = "no indexing job yet"
        self.done_files = 0
        # One ingest at a time on the store, whoever asks (the Index box, the CLI, the
        # watcher): the others wait here, in order, and say so.
        self._ingest_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._requests: dict[int, IngestRequest] = {}
        self._now: IngestRequest | None = None
        self._holder: str | None = None  # what holds the write slot outside a job
        #: called after every job on the store ends, however it went (GraphJob.poke)
        self.after_write: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def check_folder(self, folder: str) -> Path:
        folder = (folder or "").strip()
        if not folder:
            raise ValueError("type the folder to index, such as /home/me/Pictures")
        path = Path(os.path.abspath(os.path.expanduser(folder)))
        if not path.is_dir():
            raise ValueError(f"not a folder: {path}")
        real = Path(os.path.realpath(path))
        if not any(real == a or real.is_relative_to(a) for a in self.allowed):
            where = ", ".join(str(a) for a in self.allowed) or "nowhere (start with --ingest-root)"
            raise ValueError(f"this app may index folders under {where} only, not {path}")
        return path

    def start(self, folder: str) -> str:
        path = self.check_folder(folder)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise ValueError(f"an indexing job is already running: {self.message}")
            self.state, self.done_files = "running", 0
            self.message = f"indexing {path}: starting"
            self._thread = threading.Thread(
                target=self._run, args=(path,), name="devise-index", daemon=True
            )
            self._thread.start()
        return self.message

    def _run(self, path: Path) -> None:
        from app.jobs.faces import face_stage_shown
        from ingest.pipeline import ingest

        def progress(summary: IngestSummary) -> None:
            self.done_files = summary.indexed + sum(summary.failed.values())
            self.message = (
                f"indexing {path}: {summary.indexed} new, {summary.unchanged} unchanged, "
                f"{sum(summary.failed.values())} skipped so far"
            )

        if not self._ingest_lock.acquire(blocking=False):
            self.message = f"indexing {path}: waiting for the running ingest to finish"
            self._ingest_lock.acquire()
        try:
            embedders = list(self._embedders())
            meta = self._model_meta() if self._model_meta else {}
            summary = ingest(
                self.service.store,
                [path],
                embedders,
                progress=False,
                model_meta=meta,
                on_batch=progress,
            )
            summary.faces = face_stage_shown(self.service.store, [path], self._show)
            self.message = f"indexed {path}: {summary.line()}"
            self.state = "done"
            if self._on_done is not None:
                self._on_done([path])
        except Exception as e:  # noqa: BLE001 - a job's failure is reported, never raised
            log.exception("indexing %s failed", path)
            self.message = f"indexing {path} failed: {e}"
            self.state = "failed"
        finally:
            self._wrote()  # before the release: who waits for the slot sees the poke
            self._ingest_lock.release()

    def _show(self, message: str) -> None:
        self.message = message

    def _wrote(self) -> None:
        for hook in self.after_write:
            hook()

    @contextlib.contextmanager
    def write_slot(self, doing: str) -> Iterator[None]:
        """Holds the store's one write slot for work other than a queued job (the
        background graph build's copy and swap); `doing` is what waiting requests say."""
        self._ingest_lock.acquire()
        self._holder = doing
        try:
            yield
        finally:
            self._holder = None
            self._ingest_lock.release()

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self._ingest_lock.acquire(timeout=-1 if timeout is None else timeout):
            self._ingest_lock.release()

    # ------------------------------------------------------------ requests (CLI, watcher)

    def submit(
        self,
        paths: Sequence[Path],
        run: Runner,
        *,
        source: str = "cli",
        on_end: Callable[[IngestRequest], None] | None = None,
        label: str = "",
    ) -> IngestRequest:
        """Queues an ingest (or another write, named by `label`): `run(request, on_batch)`
        does it, holding the store's one ingest slot; a request that finds the slot taken
        waits, and its message says so. The paths must have been checked by the caller."""
        req = IngestRequest(next(self._ids), list(paths), source, label=label)
        req.message = f"queued: {label or ', '.join(str(p) for p in req.paths)}"
        with self._lock:
            self._requests[req.id] = req
            for old in sorted(self._requests)[:-KEEP_REQUESTS]:
                if self._requests[old].state in ("done", "failed"):
                    del self._requests[old]
        threading.Thread(
            target=self._serve_request, args=(req, run, on_end), name=f"devise-ingest-{req.id}",
            daemon=True,
        ).start()  # fmt: skip
        return req

    def request(self, req_id: int) -> IngestRequest | None:
        with self._lock:
            return self._requests.get(req_id)

    def _serve_request(
        self, req: IngestRequest, run: Runner, on_end: Callable[[IngestRequest], None] | None
    ) -> None:
        where = req.label or ", ".join(str(p) for p in req.paths)
        if not self._ingest_lock.acquire(blocking=False):
            busy = self._now.message if self._now is not None else self._holder or self.message
            req.message = f"waiting for the running ingest to finish ({busy})"
            self._ingest_lock.acquire()
        self._now = req
        t0 = time.perf_counter()
        try:
            doing = where if req.label else f"indexing {where}"
            req.state, req.message = "running", f"{doing}: starting"

            def on_batch(summary: IngestSummary) -> None:
                req.failed = sum(summary.failed.values())
                req.done, req.total = summary.indexed + req.failed, summary.to_embed
                req.message = (
                    f"indexing {where}: {summary.indexed} new, {summary.unchanged} unchanged, "
                    f"{req.failed} skipped so far"
                )

            summary = run(req, on_batch)
            req.summary, req.line = summary.to_json(), summary.line()
            req.failed = sum(summary.failed.values())
            req.message = f"{where}: {req.line}" if req.label else f"indexed {where}: {req.line}"
            req.state = "done"
            if self._on_done is not None and req.paths:
                self._on_done([p if p.is_dir() else p.parent for p in req.paths])
        except Exception as e:  # noqa: BLE001 - a request's failure is reported, never raised
            log.info("ingest of %s failed: %s", where, e)
            req.message = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
            req.state = "failed"
        finally:
            self._now = None
            self._wrote()
            self._ingest_lock.release()
            log.debug("ingest %d took %.1f s", req.id, time.perf_counter() - t0)
        if on_end is not None:
            on_end(req)


def _devise(service: SearchService) -> ArrayEmbedder:
    """The DeViSE model that built the index (or the one the app was started with)."""
    from app.search.service import ModelMissingError

    if service.store.count("images") > 0:
        emb: ArrayEmbedder = service.embedder("devise")
        return emb
    if service.checkpoint is None:
        raise ModelMissingError(
            "an empty index needs a DeViSE checkpoint: start the app with --checkpoint CKPT"
        )
    from model.embedders.embedder import DeviseEmbedder

    return DeviseEmbedder(service.checkpoint, precision=service.precision)


def _dup(service: SearchService) -> list[ArrayEmbedder]:
    """The near-duplicate vector, made as `devise ingest` makes it, so that folders indexed
    here join `duplicates`; none when the index holds dup vectors made otherwise (another
    backbone or weights file), which the job must not mix in."""
    from model.embedders.factory import duplicate_embedder

    recorded = (service.meta().get("models") or {}).get("devise") or {}
    ckpt = service.checkpoint or recorded.get("checkpoint")
    try:
        dup = duplicate_embedder(
            checkpoint=Path(ckpt) if ckpt else None, precision=service.precision
        )
        have = ((service.meta().get("models") or {}).get("dup") or {}).get("id")
        if have is not None and have != dup.content_id:
            log.warning("not adding dup vectors: the index's were made by another model")
            return []
    except Exception as e:  # noqa: BLE001 - duplicates are a bonus, never a failed job
        log.warning("not adding dup vectors: %s", e)
        return []
    return [dup]


def default_embedders(service: SearchService) -> list[ArrayEmbedder]:
    """The DeViSE model that built the index, and the near-duplicate vector."""
    return [_devise(service), *_dup(service)]


def devise_meta(service: SearchService) -> dict[str, dict[str, Any]]:
    """What ingest records about the DeViSE model, as `devise ingest` does."""
    emb = _devise(service)
    words = getattr(emb, "words_source", None)
    ckpt = service.checkpoint or (service.meta().get("models") or {}).get("devise", {}).get(
        "checkpoint"
    )
    rec: dict[str, Any] = {}
    if words:
        rec["words"] = words
    if ckpt:
        rec["checkpoint"] = str(Path(ckpt).resolve())
    meta = getattr(emb, "meta", None)
    if isinstance(meta, dict) and "backbone" in meta:
        rec["backbone"] = meta["backbone"]
    return {"devise": rec}
