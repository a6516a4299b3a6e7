"""The app's background graph build: after an ingest, and when it opens an index whose
graphs are missing or were built with older settings, `devise serve` builds them in another
process on a copy of the index (qdrant/graphbuild.py) while it keeps answering, exactly,
and swaps the built copy in when it is ready."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from qdrant.graphbuild import log_tail

if TYPE_CHECKING:
    from qdrant.graphbuild import GraphBuild
    from qdrant.store import Store

log = logging.getLogger(__name__)

#: seconds without a new write before a build starts: a folder's ingests come in bursts
SETTLE_S = 2.0
#: how often the waiting thread looks at the builder process
POLL_S = 0.5
#: the states of a build under way
BUSY = ("copying", "building", "swapping")


class GraphJob:
    """Builds the index's graphs in the background, one build at a time.

    `write_slot` is the app's one write slot (IndexJob.write_slot): held while the index is
    copied and while the built copy is swapped in, so that no ingest writes then. In between
    ingests run, and the store notes the points they write for the swap. `poke()` after
    every write; the thread decides whether a build would index anything
    (Store.graph_build_due)."""

    def __init__(
        self,
        store: Store,
        write_slot: Callable[[str], AbstractContextManager[Any]],
        *,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.store = store
        self._slot = write_slot
        self._settle_s = settle_s
        self._poked = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.state = "idle"  # idle | copying | building | swapping | built | failed
        self.message = ""
        self.since: float | None = None  # when the current build started
        self.images = 0  # image points in the copy being built
        # vectors the last build left to exact search (too few for a graph of their own)
        self._left = 0
        self._busy = False  # from a poke until the build it led to (if any) has ended
        self.builds = 0

    def start(self) -> None:
        """Starts the thread and looks once at the index as it opened."""
        self._thread = threading.Thread(target=self._loop, name="devise-graphs", daemon=True)
        self._thread.start()
        self.poke()

    def poke(self) -> None:
        """The index was written: look again whether a build is due."""
        self._poked.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Ends a build under way (its copy is dropped) and the thread."""
        self._stop.set()
        self._poked.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no build is due or under way (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while self._busy or self._poked.is_set():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def describe(self) -> dict[str, Any]:
        """What `devise status` and the app's overview say of it."""
        out: dict[str, Any] = {"state": self.state, "message": self.message}
        if self.since is not None and self.state in BUSY:
            out["seconds"] = round(time.time() - self.since, 1)
            out["images"] = self.images
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._poked.wait()
            self._busy = True
            try:
                # let a burst of writes end first
                while True:
                    self._poked.clear()
                    if self._stop.wait(self._settle_s):
                        return
                    if not self._poked.is_set():
                        break
                try:
                    self._build_if_due()
                except Exception as e:  # noqa: BLE001 - a failed build leaves the index as it was
                    log.warning("background graph build failed: %s", e)
                    self.state, self.message = "failed", str(e).strip().splitlines()[0]
            finally:
                self._busy = self._poked.is_set()

    def _build_if_due(self) -> None:
        with self._slot("copying the index for a graph build"):
            if not self.store.graph_build_due(self._left):
                return
            self.state, self.since = "copying", time.time()
            self.message = "copying the index for the graph build"
            build = self.store.begin_graph_build()
            self.images = build.points
        try:
            rc = self._run(build)
        except BaseException:
            self.store.abandon_graph_build(build)
            raise
        if rc is None:  # stopped with the app
            self.store.abandon_graph_build(build)
            self.state, self.message = "idle", "stopped with the app"
            return
        if rc != 0:
            tail = log_tail(build.log)  # before the build's files go
            self.store.abandon_graph_build(build)
            raise RuntimeError(f"the graph builder exited with status {rc}: {tail}")
        self.state, self.message = "swapping", "putting the built graph in place"
        with self._slot("putting the built graph in place"):
            done = self.store.finish_graph_build(build)
            self._left = self.store.graph_pending() if done else 0
        took = time.time() - build.started
        if not done:
            # the index changed shape during the build: build again from what it is now
            self.state, self.message = "idle", "the index changed during the build; again"
            self.poke()
            return
        self.builds += 1
        self.state = "built"
        self.message = f"graph built in the background in {took:.0f} s"
        log.info("%s (%d points)", self.message, build.points)

    def _run(self, build: GraphBuild) -> int | None:
        """Runs the builder process on the copy; its exit status, or None when the app
        stopped first."""
        self.state = "building"
        self.message = f"building the search graph of {build.points} images in the background"
        with open(build.log, "wb") as out:
            self._proc = proc = subprocess.Popen(
                build.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            while proc.poll() is None:
                if self._stop.wait(POLL_S):
                    proc.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(10)
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    return None
            return proc.returncode
        finally:
            self._proc = None
