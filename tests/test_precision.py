"""Numerics: the feature cache keeps fp32, bf16 (and int8) features apart, `--precision auto`
picks bf16 only where the CPU has it natively and it was measured to hold, and the index
records the precision its vectors were made with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.backbones import Backbone, load_backbone
from model.data.datasets import export_photos
from model.data.features import extract_features

pytest.importorskip("openvino", reason="the fast path needs OpenVINO (a project dependency)")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("photos")
    export_photos(out, names=["chelsea", "coffee", "rocket", "astronaut"])
    return sorted(out.glob("*.png"))


def test_bf16_features_are_never_read_for_an_fp32_run_nor_the_reverse(
    photos: list[Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    fp32 = load_backbone("resnet18", None, "fp32")
    bf16 = load_backbone("resnet18", None, "bf16")
    a = extract_features(fp32, photos, batch_size=4, cache_dir=cache)
    b = extract_features(bf16, photos, batch_size=4, cache_dir=cache)
    assert not a.cached and not b.cached, "bf16 read the fp32 run's features"
    assert bf16.precision == "bf16", "bf16 fell back: the test would prove nothing"
    assert not np.array_equal(a.features, b.features), "bf16 ran as fp32"
    assert len(list((cache / "features").glob("*.safetensors"))) == 2
    # each precision reads back its own features, and only those
    again_fp32 = extract_features(load_backbone("resnet18", None, "fp32"), photos, cache_dir=cache)
    again_bf16 = extract_features(load_backbone("resnet18", None, "bf16"), photos, cache_dir=cache)
    assert again_fp32.cached and np.array_equal(again_fp32.features, a.features)
    assert again_bf16.cached and np.array_equal(again_bf16.features, b.features)


def test_the_runtime_is_part_of_the_key(photos: list[Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ov = load_backbone("resnet18", None, "bf16", runtime="openvino")
    eager = load_backbone("resnet18", None, "bf16", runtime="torch")
    assert ov.numerics != eager.numerics
    extract_features(ov, photos[:2], batch_size=2, cache_dir=cache)
    assert not extract_features(eager, photos[:2], batch_size=2, cache_dir=cache).cached


def test_bf16_that_falls_back_stores_its_features_as_fp32(
    photos: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(Backbone, "BF16_MIN_COSINE", 1.01)  # no bf16 result passes this
    fell = load_backbone("resnet18", None, "bf16")
    got = extract_features(fell, photos, batch_size=4, cache_dir=cache)
    assert fell.precision == "fp32" and fell.numerics.endswith("-fp32")
    # what it made is fp32: an fp32 run reads it, a bf16 run does not
    fp32 = extract_features(load_backbone("resnet18", None, "fp32"), photos, cache_dir=cache)
    assert fp32.cached and np.array_equal(fp32.features, got.features)
    monkeypatch.setattr(Backbone, "BF16_MIN_COSINE", 0.995)
    bf16 = extract_features(load_backbone("resnet18", None, "bf16"), photos, cache_dir=cache)
    assert not bf16.cached
