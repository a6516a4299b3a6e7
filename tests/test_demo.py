"""`devise demo` end to end at a small size: every stage, then every stage skipped."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

import app.cli.demo as demo
from app.settings import Settings
from qdrant.edge import EdgeStore
from qdrant.schema import IMAGES

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.weights
@pytest.mark.skipif(
    not (FASHION / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST idx files absent (Debian package dataset-fashion-mnist)",
)
def test_demo_builds_then_skips_every_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "TRAIN_LIMIT", 60)
    monkeypatch.setattr(demo, "GALLERY_LIMIT", 20)
    monkeypatch.setattr(demo, "VOCABULARY", 5_000)
    settings = Settings(index=tmp_path / "index")
    root = tmp_path / "demo"
    assert demo.run_demo(root, launch=False, cache_dir=tmp_path / "cache", settings=settings) == 0
    out = capsys.readouterr().out
    for stage in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert stage in out
    with EdgeStore(tmp_path / "index") as store:
        n = store.count(IMAGES)
        assert n == 20 + len(list((root / "gallery" / "photos").rglob("*.png")))
        assert set(store.get_meta()["models"]) == {"devise", "conse", "dup"}
        assert store.count_vectors("conse") == n == store.count_vectors("devise")
        assert store.count_vectors("dup") == n  # the demo's Duplicates tab has its vectors
        assert store.get_meta()["evaluation"]["models"]["devise"]["flat_hit@1"] > 0
        assert store.facet_labels()["cat"] == 1  # scikit-image's cat, in photos/cat/
    t = time.perf_counter()
    assert demo.run_demo(root, launch=False, cache_dir=tmp_path / "cache", settings=settings) == 0
    again = capsys.readouterr().out
    assert "[" not in again.split("built in")[0]  # no stage ran
    assert time.perf_counter() - t < 30
    # with an app up on the index, the demo sends its index steps there and starts no other
    from tests.cli import free_port, spawn, stop, wait_for_server

    app = spawn(
        "serve", "--index", str(tmp_path / "index"), "--port", str(free_port()),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        record = wait_for_server(app, tmp_path / "index")
        assert (
            demo.run_demo(root, launch=True, cache_dir=tmp_path / "cache", settings=settings) == 0
        )
        through = capsys.readouterr().out
        assert f"through the app at {record.url}" in through
        assert f"indexed 0, unchanged {n}" in through
        assert through.rstrip().endswith(
            f"the demo is served by the app at {record.url}: open it there"
        )
        assert app.poll() is None
    finally:
        stop(app)


def test_a_demo_index_from_before_the_face_detector_is_refreshed(tmp_path: Path) -> None:
    """Points without conse's newer payload fields (`detected`, concepts by wnid) and a
    vocabulary without qualified names are not 'done': the next `devise demo` redoes them."""
    from qdrant.schema import image_point_id

    gallery = tmp_path / "gallery"
    gallery.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(gallery / "a.png")
    path = str((gallery / "a.png").resolve())
    with EdgeStore(tmp_path / "index") as store:
        store.ensure_collections({"devise": 2, "conse": 2, "dup": 2})
        meta = store.get_meta()
        meta["models"] = {"devise": {"id": "ckpt"}, "conse": {"id": "c"}, "dup": {"id": "d"}}
        meta["words"] = {"source": "glove-6b-50d", "count": 0, "concepts": 5}
        store.set_meta(meta)
        old = {"path": path, "folder": str(gallery.resolve()), "folders": [str(gallery.resolve())]}
        old |= {"label": "gallery", "conse_top": [[0, 0.9]], "concepts": ["tench"]}
        vec = {"devise": [[1.0, 0.0]], "conse": [[1.0, 0.0]], "dup": [[1.0, 0.0]]}
        store.upsert_images([image_point_id(path)], [old], vec)  # type: ignore[list-item,arg-type]
        assert not demo.gallery_indexed(store, gallery, "ckpt")
        assert not demo.vocabulary_loaded(store, "glove-6b-50d", 0)
        store.set_image_payload(image_point_id(path), {**old, "detected": {}})
        assert demo.gallery_indexed(store, gallery, "ckpt")
