"""`devise demo` end to end at a small size: every stage, then every stage skipped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import app.demo as demo
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
