from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.pipeline import IngestError, ingest
from qdrant.edge import EdgeStore
from qdrant.schema import IMAGES, image_point_id
from tests.conftest import draw_image
from tests.corpus import build_corpus, make_symlink_loop
from tests.fakes import FakeEmbedder


def make_tree(root: Path) -> list[Path]:
    """Nested class folders: root/animals/cat/*.png, root/animals/dog/*.png, root/vehicles/truck."""
    files = []
    # seeds fixed and apart per folder: two folders drawing the same picture would make a
    # touched file a copy of another (its vectors reused, nothing embedded)
    for base, (sub, kind, n) in enumerate(
        [
            ("animals/cat", "disc", 5),
            ("animals/dog", "disc", 4),
            ("vehicles/truck", "stripes", 6),
        ]
    ):
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            p = d / f"{i}.png"
            draw_image(kind, seed=base * 1000 + i).save(p)
            files.append(p)
    return files


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = EdgeStore(tmp_path / "index")
    yield s
    s.close()


def run(store: EdgeStore, roots: list[Path], emb: FakeEmbedder, **kw: object):  # type: ignore[no-untyped-def]
    return ingest(store, roots, [emb], progress=False, batch_size=4, workers=2, **kw)  # type: ignore[arg-type]


def test_ingest_is_idempotent_and_incremental(tmp_path: Path, store: EdgeStore) -> None:
    root = tmp_path / "photos"
    files = make_tree(root)
    emb = FakeEmbedder()
    s1 = run(store, [root], emb)
    assert (s1.indexed, s1.unchanged, s1.moved, dict(s1.failed)) == (15, 0, 0, {})
    assert store.count(IMAGES) == 15 and emb.calls == 15
    assert store.facet_labels() == {"cat": 5, "dog": 4, "truck": 6}
    rec = store.retrieve_images([image_point_id(files[0])])[0]
    assert rec.payload["folders"][-2:] == [str(root / "animals"), str(root / "animals/cat")]
    assert rec.payload["width"] == 64 and len(rec.payload["sha256"]) == 64

    # rerun: nothing new, nothing embedded
    s2 = run(store, [root], emb)
    assert (s2.indexed, s2.unchanged) == (0, 15) and emb.calls == 15

    # touch one file: re-embedded
    t = time.time() + 5
    os.utime(files[0], (t, t))
    s3 = run(store, [root], emb)
    assert (s3.indexed, s3.unchanged) == (1, 14) and emb.calls == 16

    # move one file: its vector is reused, the old point is gone, the label follows
    new = root / "vehicles/truck/moved_cat.png"
    shutil.move(files[1], new)
    s4 = run(store, [root], emb)
    assert (s4.moved, s4.indexed) == (1, 0) and emb.calls == 16
    assert store.count(IMAGES) == 15
    assert not store.retrieve_images([image_point_id(files[1])])
    moved = store.retrieve_images([image_point_id(new)], with_vectors=["devise"])[0]
    assert moved.payload["label"] == "truck" and moved.vectors["devise"].shape == (8,)

    # a copy reuses the vectors too, and adds a point
    shutil.copy(files[2], root / "copy.png")
    s5 = run(store, [root], emb)
    assert (s5.indexed, s5.moved) == (1, 0) and emb.calls == 16 and store.count(IMAGES) == 16

    # delete one: only --prune removes it
    files[3].unlink()
    assert run(store, [root], emb).pruned == 0 and store.count(IMAGES) == 16
    s6 = run(store, [root], emb, prune=True)
    assert s6.pruned == 1 and store.count(IMAGES) == 15


def test_bad_files_are_reported_and_good_ones_indexed(
    tmp_path: Path, store: EdgeStore, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = build_corpus(tmp_path / "corpus")
    make_symlink_loop(tmp_path / "corpus" / "bad")
    (tmp_path / "corpus" / "good" / "loop").symlink_to("..")  # a folder loop
    emb = FakeEmbedder()
    s = run(store, [tmp_path / "corpus"], emb)
    assert store.count(IMAGES) == len(good) == s.indexed
    expected: dict[str, int] = {}
    for path, reason in bad.items():
        if path.is_file():
            expected[reason] = expected.get(reason, 0) + 1
    expected["unreadable"] = expected.get("unreadable", 0) + 2  # loop_a.jpg, loop_b.jpg
    assert dict(s.failed) == expected
    for path in bad:
        if path.is_file():
            assert store.find_by_path([str(path)]) == {}
    # the same bad files are reported again on a rerun, and nothing else changes
    s2 = run(store, [tmp_path / "corpus"], emb)
    assert s2.unchanged == len(good) and dict(s2.failed) == expected


def test_a_different_model_is_refused_unless_reembed(tmp_path: Path, store: EdgeStore) -> None:
    root = tmp_path / "p"
    make_tree(root)
    run(store, [root], FakeEmbedder(content_id="model-a"))
    with pytest.raises(IngestError, match="model-a"):
        run(store, [root], FakeEmbedder(content_id="model-b"))
    other = FakeEmbedder(content_id="model-b")
    s = run(store, [root], other, reembed=True)
    assert s.indexed == 15 and other.calls == 15
    assert store.get_meta()["models"]["devise"]["id"] == "model-b"


def test_a_second_model_adds_its_vector_to_existing_points(
    tmp_path: Path, store: EdgeStore
) -> None:
    root = tmp_path / "p"
    make_tree(root)
    run(store, [root], FakeEmbedder())
    conse = FakeEmbedder(name="conse", content_id="c-1")
    ingest(store, [root], [FakeEmbedder(), conse], progress=False)  # type: ignore[list-item]
    assert store.count(IMAGES) == 15 and store.count_vectors("conse") == 15
    assert set(store.get_meta()["models"]) == {"devise", "conse"}


class FieldsEmbedder(FakeEmbedder):
    """A fake with payload fields of its own, as ConSE's `conse_top` and `concepts`."""

    extra_fields = ("fake_top",)

    def embed_payload(self, arrays: Any, inspected: Any = None) -> tuple[Any, list[dict[str, Any]]]:
        return self.embed_arrays(arrays), [{"fake_top": [float(a.mean())]} for a in arrays]


def test_new_payload_fields_keep_other_models_vectors(tmp_path: Path, store: EdgeStore) -> None:
    """An index made before a model stored its fields: the next ingest with that model alone
    adds them, and every other model's vectors stay (nothing is upserted over them)."""
    root = tmp_path / "p"
    make_tree(root)
    ingest(
        store,
        [root],
        [FakeEmbedder(), FakeEmbedder(name="conse", content_id="c-1")],  # type: ignore[list-item]
        progress=False,
    )
    conse = FieldsEmbedder(name="conse", content_id="c-1")
    s = ingest(store, [root], [conse], progress=False)  # type: ignore[list-item]
    assert s.indexed == 0 and s.unchanged == 15 and conse.calls == 15
    assert store.count_vectors("devise") == 15 and store.count_vectors("conse") == 15
    recs = list(store.scroll_images(batch=100))
    assert all("fake_top" in r.payload and "sha256" in r.payload for r in recs)
    # and now nothing is left to do
    again = FieldsEmbedder(name="conse", content_id="c-1")
    assert ingest(store, [root], [again], progress=False).unchanged == 15  # type: ignore[list-item]
    assert again.calls == 0


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from ingest.pipeline import ingest
    from qdrant.edge import EdgeStore
    from tests.fakes import FakeEmbedder
    store = EdgeStore(Path({index!r}))
    print("started", flush=True)
    s = ingest(store, [Path({root!r})], [FakeEmbedder(delay=0.05)], progress=False,
               batch_size=4, workers=2)
    store.close()
    print("done", s.indexed, s.unchanged, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL ingest 10 times at random moments; every rerun completes with no duplicates."""
    import random

    root = tmp_path / "p"
    files = make_tree(root)
    for i in range(45):  # 60 good files in all
        draw_image("stripes" if i % 2 else "disc", seed=500 + i).save(root / f"extra{i}.png")
    good = len(files) + 45
    (root / "broken.jpg").write_bytes(b"not an image")
    script = tmp_path / "run.py"
    repo = str(Path(__file__).resolve().parents[1])
    script.write_text(KILL_SCRIPT.format(repo=repo, index=str(tmp_path / "index"), root=str(root)))
    rng = random.Random(1234)
    kills = 0
    for trial in range(10):
        # every trial has the whole tree to re-embed, so each kill lands mid-run
        t = time.time() + trial + 1
        for f in root.rglob("*.png"):
            os.utime(f, (t, t))
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        time.sleep(rng.uniform(0.0, 0.7))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += proc.returncode == -signal.SIGKILL
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    )
    assert "done" in done.stdout
    assert kills >= 8  # most kills landed mid-run
    with EdgeStore(tmp_path / "index") as store:
        paths = [r.payload["path"] for r in store.scroll_images()]
        assert store.count(IMAGES) == good == len(paths) == len(set(paths))
        assert "broken.jpg" not in " ".join(paths)
        assert store.count_vectors("devise") == good


def test_file_deleted_between_scan_and_load(tmp_path: Path, store: EdgeStore) -> None:
    root = tmp_path / "p"
    files = make_tree(root)
    victim = files[-1]  # in the last batch
    state = {"first": True}

    def delete_once(summary: object) -> None:
        if state["first"]:
            victim.unlink()
            state["first"] = False

    # One image a batch: the loader reads LOOKAHEAD_BATCHES + 1 batches ahead, so the last
    # file is not yet submitted when the first batch comes back and deletes it.
    s = ingest(
        store,
        [root],
        [FakeEmbedder()],  # type: ignore[list-item]
        progress=False,
        batch_size=1,
        workers=1,
        on_batch=delete_once,
    )
    assert dict(s.failed) == {"missing": 1} and s.indexed == 14
    assert store.find_by_path([str(victim)]) == {}


def test_queries_keep_answering_during_an_ingest_on_a_server(tmp_path: Path) -> None:
    """With a Qdrant server (qdrant-client local mode here), ingest and serving share it."""
    import threading

    from qdrant_client import QdrantClient

    from app.search.service import SearchService
    from qdrant.server import ServerStore

    store = ServerStore(QdrantClient(":memory:"), "memory")
    first = tmp_path / "first"
    make_tree(first)
    emb = FakeEmbedder()
    ingest(store, [first], [emb], progress=False)  # type: ignore[list-item]
    second = tmp_path / "second"
    for i in range(40):
        d = second / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        draw_image("disc" if i % 2 else "stripes", seed=900 + i).save(d / f"{i}.png")
    service = SearchService(store, embedder_factory=lambda m, r: emb)
    query = first / "animals/cat/0.png"
    worker = threading.Thread(
        target=ingest,
        args=(store, [second], [FakeEmbedder(delay=0.05)]),
        kwargs={"progress": False, "batch_size": 4},
    )
    worker.start()
    answered = 0
    counts = []
    while worker.is_alive():
        a = service.similar(query, k=5)
        assert len(a.results) == 5
        answered += 1
        counts.append(store.count(IMAGES))
    worker.join()
    assert answered >= 3 and counts[0] < 55 and store.count(IMAGES) == 55


def test_a_model_added_alone_keeps_the_others_vectors(tmp_path: Path, store: EdgeStore) -> None:
    """An index made before the `dup` vector: ingesting with that model alone adds it to
    every unchanged point in place, and the points keep their devise vectors."""
    root = tmp_path / "p"
    make_tree(root)
    run(store, [root], FakeEmbedder())
    before = {r.id: r.vectors["devise"] for r in store.scroll_images(with_vectors=["devise"])}
    dup = FakeEmbedder(name="dup", content_id="d-1")
    s = ingest(store, [root], [dup], progress=False)  # type: ignore[list-item]
    assert s.indexed == 15 and dup.calls == 15
    assert store.count(IMAGES) == 15
    assert store.count_vectors("devise") == 15 and store.count_vectors("dup") == 15
    after = {r.id: r.vectors["devise"] for r in store.scroll_images(with_vectors=["devise"])}
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[k], before[k]) for k in before)
    again = FakeEmbedder(name="dup", content_id="d-1")
    assert ingest(store, [root], [again], progress=False).unchanged == 15  # type: ignore[list-item]
    assert again.calls == 0
