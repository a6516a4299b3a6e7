"""The graph built in another process on a copy of the index, while the store that holds
the index answers and takes writes (qdrant/graphbuild.py): what `devise serve` runs."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qdrant import SearchFilter
from qdrant.edge import EdgeStore
from qdrant.graphbuild import COPY_DIR, OLD_DIR, WORK_DIR, GraphBuild
from qdrant.schema import IMAGES, image_payload, image_point_id
from tests.test_index_scale import VECTORS, library

pytestmark = pytest.mark.usefixtures("small_threshold")


def _indexed(s: EdgeStore) -> int:
    return int(s._require(IMAGES).info().indexed_vectors_count)


def _filled(root: Path, n: int) -> tuple[list[str], dict[str, np.ndarray]]:
    ids, payloads, vectors = library(n)
    with EdgeStore(root) as s:
        s.ensure_collections(VECTORS)
        s.upsert_images(ids, payloads, vectors)
    return ids, vectors


def _start(build: GraphBuild) -> subprocess.Popen[str]:
    """The builder process exactly as the app starts it."""
    return subprocess.Popen(
        build.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_the_graph_built_elsewhere_comes_in_with_the_writes_made_meanwhile(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ix"
    ids, vectors = _filled(root, 3000)
    with EdgeStore(root) as s:
        assert s.graph_build_due() and _indexed(s) == 0
        build = s.begin_graph_build()
        proc = _start(build)
        # the store answers, exactly, and takes writes while the copy is built
        assert s.search_images("devise", vectors["devise"][7], 1)[0].id == ids[7]
        new_path = "/lib/new/late.jpg"
        new_vec = {k: v[:1] * -1 for k, v in vectors.items()}
        s.upsert_images(
            [image_point_id(new_path)],
            [
                image_payload(
                    new_path, label="owl", width=8, height=8, size_bytes=1, mtime=0.0, sha256="x"
                )
            ],
            new_vec,
        )
        s.delete_images(ids[:20])
        s.set_image_payload(ids[100], {"label": "owl"})
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert '"indexed_vectors"' in out
        assert s.finish_graph_build(build)
        # the graph is in, with every write made during the build
        assert _indexed(s) >= 2 * (3000 - 20)
        assert not (root / WORK_DIR).exists()
        assert s.count(IMAGES) == 3000 - 20 + 1
        assert s.retrieve_images(ids[:20]) == []
        assert s.count(IMAGES, SearchFilter(labels=("owl",))) == 2
        hit = s.search_images("devise", new_vec["devise"][0], 1)[0]
        assert hit.id == image_point_id(new_path) and hit.payload["label"] == "owl"
        assert s.search_images("devise", vectors["devise"][500], 1)[0].id == ids[500]
        assert not s.graph_build_due()
    # and it is still there after a reopen
    with EdgeStore(root) as s:
        assert _indexed(s) >= 2 * (3000 - 20) and s.count(IMAGES) == 2981


def test_a_build_is_dropped_when_a_vector_is_added_meanwhile(tmp_path: Path) -> None:
    root = tmp_path / "ix"
    ids, vectors = _filled(root, 1500)
    with EdgeStore(root) as s:
        build = s.begin_graph_build()
        proc = _start(build)
        s.ensure_collections({"clip": 64})  # a write that names no points: the copy lacks it
        proc.communicate(timeout=300)
        assert not s.finish_graph_build(build)
        assert not (root / WORK_DIR).exists()
        assert "clip" in s.vector_sizes() and s.count(IMAGES) == 1500
        assert s.graph_build_due()  # still to do, from the index as it is now
        assert s.search_images("devise", vectors["devise"][3], 1)[0].id == ids[3]


def test_a_swap_cut_off_between_its_renames_leaves_the_index_as_before(tmp_path: Path) -> None:
    root = tmp_path / "ix"
    ids, vectors = _filled(root, 1200)
    with EdgeStore(root) as s:
        build = s.begin_graph_build()
        assert _start(build).wait(300) == 0
    # the app was killed after the swap's first rename: no images shard in place
    (root / IMAGES).rename(root / WORK_DIR / OLD_DIR)
    assert (root / WORK_DIR / COPY_DIR).is_dir()
    with EdgeStore(root) as s:
        assert s.count(IMAGES) == 1200
        assert s.search_images("devise", vectors["devise"][9], 1)[0].id == ids[9]
    assert not (root / WORK_DIR).exists()


def test_searches_from_other_threads_never_meet_the_swap(tmp_path: Path) -> None:
    root = tmp_path / "ix"
    ids, vectors = _filled(root, 2000)
    errors: list[BaseException] = []
    answered = [0]
    stop = threading.Event()
    with EdgeStore(root) as s:
        build = s.begin_graph_build()
        assert _start(build).wait(300) == 0

        def search() -> None:
            while not stop.is_set():
                try:
                    hits = s.search_images("devise", vectors["devise"][11], 1)
                    assert hits[0].id == ids[11]
                    assert sum(1 for _ in s.scroll_images(batch=500)) == 2000
                    answered[0] += 1
                except BaseException as e:  # noqa: BLE001 - collected for the assert
                    errors.append(e)
                    return

        threads = [threading.Thread(target=search) for _ in range(2)]
        for t in threads:
            t.start()
        assert s.finish_graph_build(build)
        stop.set()
        for t in threads:
            t.join(60)
        assert not errors, errors[0]
        assert answered[0] > 0 and _indexed(s) >= 4000


def test_no_build_without_room_on_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qdrant.graphbuild

    root = tmp_path / "ix"
    _filled(root, 1100)
    monkeypatch.setattr(qdrant.graphbuild, "DISK_FACTOR", 1e9)
    with EdgeStore(root) as s:
        with pytest.raises(Exception, match="not enough free disk"):
            s.begin_graph_build()
        assert not (root / WORK_DIR).exists()
        s.upsert_images(*library(1)[:2], {k: v[:1] for k, v in library(1)[2].items()})
        assert s.count(IMAGES) == 1100  # the same point again: writes go on


def test_the_app_builds_the_graph_after_a_write_and_answers_meanwhile(tmp_path: Path) -> None:
    """The app's jobs as `devise serve` wires them: an ingest through the write slot, then
    the GraphJob notices, builds in another process and swaps the graph in."""
    from app.jobs.graph import GraphJob
    from app.jobs.index import IndexJob
    from ingest.pipeline import IngestSummary

    root = tmp_path / "ix"
    ids, vectors = _filled(root, 500)  # below the threshold: nothing to build
    more_ids, more_payloads, more_vectors = library(2500)
    with EdgeStore(root) as s:
        service = type("Service", (), {"store": s})()
        job = IndexJob(service, lambda: [], allowed=[])  # type: ignore[arg-type]
        graphs = GraphJob(s, job.write_slot, settle_s=0.2)
        job.after_write.append(graphs.poke)
        graphs.start()
        try:
            assert graphs.wait_idle(60) and graphs.builds == 0 and _indexed(s) == 0

            def write(req: object, on_batch: object) -> IngestSummary:
                rest = {k: v[500:] for k, v in more_vectors.items()}
                s.upsert_images(more_ids[500:], more_payloads[500:], rest)
                return IngestSummary(indexed=2000)

            req = job.submit([], write, label="writing 2,000 points")
            while req.state in ("queued", "running"):
                time.sleep(0.05)
            job.wait(120)  # the job's end poked the graph job before it freed the slot
            assert req.state == "done", req.message
            seen = set()
            while not graphs.wait_idle(0.05):
                seen.add(graphs.state)
                # searches keep their answers whatever the job is doing
                assert s.search_images("devise", vectors["devise"][5], 1)[0].id == ids[5]
            assert graphs.builds == 1, graphs.describe()
            assert "building" in seen and graphs.state == "built"
            assert _indexed(s) >= 2 * 2500 and s.count(IMAGES) == 2500
        finally:
            graphs.stop()
        assert not (root / WORK_DIR).exists()


def test_a_small_write_is_known_not_to_need_a_build_without_counting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app asks after every write whether a build is due; the exact counts behind the
    answer visit every point (0.8 s at 1,000,000), so a write too small to matter is
    answered from the last count plus what was written since."""
    root = tmp_path / "ix"
    _filled(root, 1500)
    ids, payloads, vectors = library(4000)
    with EdgeStore(root) as s:
        s.optimize()
        assert not s.graph_build_due()  # counted: nothing waits
        counted: list[str] = []
        real = s.count_vectors
        monkeypatch.setattr(s, "count_vectors", lambda n: counted.append(n) or real(n))
        s.upsert_images(
            ids[1500:1510], payloads[1500:1510], {k: v[1500:1510] for k, v in vectors.items()}
        )
        assert not s.graph_build_due() and counted == []
        s.upsert_images(
            ids[1510:2800], payloads[1510:2800], {k: v[1510:2800] for k, v in vectors.items()}
        )
        assert s.graph_build_due() and counted  # enough written to be worth a count


def test_a_failed_build_says_why_and_leaves_the_index_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from app.jobs.graph import GraphJob
    from app.web import _lone_slot

    root = tmp_path / "ix"
    ids, vectors = _filled(root, 1500)
    monkeypatch.setattr(
        GraphBuild,
        "command",
        lambda self: [sys.executable, "-c", "import sys; print('out of memory'); sys.exit(3)"],
    )
    with EdgeStore(root) as s:
        graphs = GraphJob(s, _lone_slot(), settle_s=0.05)
        graphs.start()
        try:
            assert graphs.wait_idle(60)
        finally:
            graphs.stop()
        assert graphs.state == "failed" and graphs.builds == 0
        assert "exited with status 3: out of memory" in graphs.message
        assert not (root / WORK_DIR).exists() and _indexed(s) == 0
        assert s.search_images("devise", vectors["devise"][8], 1)[0].id == ids[8]
        assert s.graph_build_due()  # still to do: the next write tries again


def test_the_page_says_while_the_graph_is_built(tmp_path: Path) -> None:
    from app.jobs.graph import GraphJob
    from app.search.service import SearchService
    from app.web import _lone_slot
    from app.web.handlers import WebHandlers

    _filled(tmp_path / "ix", 1100)
    with EdgeStore(tmp_path / "ix") as s:
        handlers = WebHandlers(SearchService(s))
        handlers.graphs = GraphJob(s, _lone_slot())  # not started: its state set by hand
        assert "1100 images" in handlers.overview()
        assert "background" not in handlers.overview()
        for state in ("copying", "building", "swapping"):
            handlers.graphs.state = state
            assert "search graph is being built in the background" in handlers.overview()
        handlers.graphs.state = "built"
        assert "background" not in handlers.overview()
