"""`devise serve --watch DIR...`: new, changed, moved and deleted photos indexed while the
app runs.

File events (watchdog: inotify on Linux) only mark a watched folder as changed; a worker
waits until the events settle (or a burst has gone on for `max_wait_s`) and then runs one
incremental ingest of that folder, with `--prune`, in the app's background job. So a burst of
1,000 copied files becomes a few ingests embedding in batches, never one ingest per file;
a moved file is found by its content hash and keeps its vectors; a deleted one is pruned.
Where events do not arrive (network mounts), a rescan every `rescan_s` finds what changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.data.images import is_image_path

if TYPE_CHECKING:
    from app.jobs.index import IndexJob, IngestRequest
    from ingest.pipeline import IngestSummary

log = logging.getLogger(__name__)

SETTLE_S = 1.0  # quiet time after the last event before indexing
MAX_WAIT_S = 5.0  # the longest a busy burst waits before a first ingest
RESCAN_S = 300.0  # the fallback: every watched folder re-walked this often

Runner = Callable[["IngestRequest", Callable[["IngestSummary"], None]], "IngestSummary"]


class FolderWatcher:
    """Watches folders and indexes what changes under them, in batches, through `job`."""

    def __init__(
        self,
        job: IndexJob,
        roots: Sequence[Path],
        runner: Callable[[], Runner],
        *,
        settle_s: float = SETTLE_S,
        max_wait_s: float = MAX_WAIT_S,
        rescan_s: float | None = RESCAN_S,
        events: bool = True,
    ) -> None:
        self.job = job
        self.roots = [Path(os.path.abspath(r)) for r in roots]
        for r in self.roots:
            if not r.is_dir():
                raise ValueError(f"--watch: not a folder: {r}")
        self._runner = runner
        self.settle_s, self.max_wait_s = settle_s, max_wait_s
        self.rescan_s = rescan_s if rescan_s else None
        self._events = events
        self._cond = threading.Condition()
        self._dirty: set[Path] = set()
        self._pending: set[str] = set()  # changed paths not yet indexed
        self._first = self._last = 0.0
        self._stop = False
        self._observer: Any = None
        self._thread: threading.Thread | None = None
        # what the page shows
        self.indexed = self.removed = self.failed = self.batches = 0
        self.state = "starting"
        self.message = ""
        self._in_flight = 0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._events:
            from watchdog.observers import Observer

            observer = Observer()
            handler: Any = _Handler(self)  # watchdog calls only its dispatch()
            for r in self.roots:
                observer.schedule(handler, str(r), recursive=True)
            observer.daemon = True
            observer.start()
            self._observer = observer
        # a first scan: what changed while the app was down
        self.mark(self.roots, [])
        self._thread = threading.Thread(target=self._loop, name="devise-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    # ---------------------------------------------------------------- events

    def root_of(self, path: str) -> Path | None:
        p = Path(path)
        for r in self.roots:
            if p == r or p.is_relative_to(r):
                return r
        return None

    def mark(self, roots: Sequence[Path], paths: Sequence[str]) -> None:
        now = time.monotonic()
        with self._cond:
            if not self._dirty:
                self._first = now
            self._dirty.update(roots)
            self._pending.update(paths)
            self._last = now
            self._cond.notify_all()

    def on_event(self, paths: Sequence[str], is_dir: bool) -> None:
        hits = [p for p in paths if p and (is_dir or is_image_path(p))]
        roots = {r for r in (self.root_of(p) for p in hits) if r is not None}
        if roots:
            self.mark(sorted(roots), [p for p in hits if not is_dir])

    # ---------------------------------------------------------------- the worker

    def _loop(self) -> None:
        next_rescan = time.monotonic() + self.rescan_s if self.rescan_s else None
        while True:
            with self._cond:
                while not self._stop:
                    now = time.monotonic()
                    if next_rescan is not None and now >= next_rescan:
                        self._dirty.update(self.roots)
                        self._first = self._first or now
                        next_rescan = now + (self.rescan_s or 0)
                    if self._dirty and (
                        now - self._last >= self.settle_s or now - self._first >= self.max_wait_s
                    ):
                        break
                    self.state = "watching" if not self._dirty else "waiting for quiet"
                    wait = self.settle_s / 2
                    if next_rescan is not None:
                        wait = min(wait, max(0.05, next_rescan - now))
                    self._cond.wait(wait if self._dirty else min(wait * 10, 5.0))
                if self._stop:
                    self.state = "stopped"
                    return
                roots, self._dirty = sorted(self._dirty), set()
                self._in_flight, self._pending = len(self._pending), set()
                self._first = 0.0
            self._index(roots)

    def _index(self, roots: list[Path]) -> None:
        present = [r for r in roots if r.is_dir()]
        if not present:
            return
        self.state = "indexing"
        req = self.job.submit(present, self._runner(), source="watch")
        while req.state in ("queued", "running"):
            self.message = req.message
            time.sleep(0.2)
            if self._stop:
                return
        self.batches += 1
        self._in_flight = 0
        if req.state == "done":
            s = req.summary
            self.indexed += int(s.get("indexed", 0)) + int(s.get("moved", 0))
            self.removed += int(s.get("pruned", 0))
            self.failed += sum(int(v) for v in (s.get("failed") or {}).values())
            self.message = req.line
        else:
            self.failed += 1
            self.message = f"failed: {req.message}"
            log.warning("watch: indexing %s failed: %s", present, req.message)

    # ---------------------------------------------------------------- the page

    def describe(self) -> str:
        """One line for the page: what the watcher is doing and has done."""
        with self._cond:
            queued = len(self._pending) + self._in_flight
        where = ", ".join(str(r) for r in self.roots)
        last = f" Last: {self.message}" if self.message else ""
        return (
            f"**Watching** {where}: {self.state}; queued {queued}, indexed {self.indexed}, "
            f"removed {self.removed}, failed {self.failed} ({self.batches} batches).{last}"
        )

    def counts(self) -> dict[str, Any]:
        with self._cond:
            queued = len(self._pending) + self._in_flight
        return {
            "state": self.state, "queued": queued, "indexed": self.indexed,
            "removed": self.removed, "failed": self.failed, "batches": self.batches,
        }  # fmt: skip


class _Handler:
    """watchdog's event handler protocol: `dispatch(event)`."""

    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def dispatch(self, event: Any) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads, not changes
        if event.is_directory and event.event_type == "modified":
            return  # a folder's mtime changes with every file: the file's event says more
        paths = [os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")]
        self.watcher.on_event(paths, bool(event.is_directory))
