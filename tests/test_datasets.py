"""Data set readers and exporters, on tiny synthetic files and (when installed) the real ones."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from PIL import Image

from model.data import datasets
from model.data.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SYSTEM_DIR,
    PHOTO_LABELS,
    DatasetError,
    export_fashion_mnist,
    export_imagenette,
    export_photos,
    extract_imagenette,
    read_fashion_mnist,
    read_idx,
    stratified_indices,
)
from model.data.images import decode_image


def idx_bytes(array: np.ndarray, compress: bool = True) -> bytes:
    """An idx file of unsigned bytes, written by hand from the format's description."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def synthetic(n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Image i is filled with i % 256 and has label i % 10, so files can be traced back."""
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.broadcast_to((np.arange(n) % 256).astype(np.uint8)[:, None, None], (n, 28, 28))
    return np.ascontiguousarray(images), labels


def write_fashion(folder: Path, images: np.ndarray, labels: np.ndarray, split: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_bytes(images))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_bytes(labels))
    return folder


def test_classes_are_ten_plain_folder_names() -> None:
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[0] == "t-shirt"
    assert FASHION_MNIST_CLASSES[9] == "ankle boot"
    assert all("/" not in c for c in FASHION_MNIST_CLASSES)


def test_read_idx_parses_header_and_data() -> None:
    images, labels = synthetic(7)
    raw = idx_bytes(images, compress=False)
    assert raw[:4] == b"\x00\x00\x08\x03" and len(raw) == 16 + 7 * 28 * 28  # data at 16
    assert len(idx_bytes(labels, compress=False)) == 8 + 7  # data at 8
    for compress in (True, False):
        np.testing.assert_array_equal(read_idx(idx_bytes(images, compress)), images)
        np.testing.assert_array_equal(read_idx(idx_bytes(labels, compress)), labels)
    assert read_idx(idx_bytes(labels)).flags.writeable


def test_read_idx_refuses_bad_files(tmp_path: Path) -> None:
    good = idx_bytes(synthetic(3)[1], compress=False)
    with pytest.raises(DatasetError, match="bad magic number 00000901"):
        read_idx(b"\x00\x00\x09\x01" + good[4:], name="labels")  # 0x09 is signed bytes
    with pytest.raises(DatasetError, match="bad magic number"):
        read_idx(b"<html>not found</html>")
    with pytest.raises(DatasetError, match="header promises 3"):
        read_idx(good[:-1])
    with pytest.raises(DatasetError, match="broken gzip"):
        read_idx(gzip.compress(good)[:-6])
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DatasetError, match=str(path)):
        read_idx(path)


def test_read_fashion_mnist_from_a_folder(tmp_path: Path) -> None:
    images, labels = synthetic(30)
    folder = write_fashion(tmp_path / "fm", images, labels, "test")
    got_images, got_labels = read_fashion_mnist("test", folder)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    with pytest.raises(DatasetError, match="lacks train-images"):
        read_fashion_mnist("train", folder)
    write_fashion(tmp_path / "short", images, labels[:-1], "test")
    with pytest.raises(DatasetError, match="30 images but 29 labels"):
        read_fashion_mnist("test", tmp_path / "short")
    write_fashion(tmp_path / "odd", images, labels + 5, "test")
    with pytest.raises(DatasetError, match="label 14"):
        read_fashion_mnist("test", tmp_path / "odd")
    with pytest.raises(ValueError, match="split"):
        read_fashion_mnist("valid", folder)  # type: ignore[arg-type]


def test_offline_without_the_package_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "apt_install_command", lambda: None)
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")

    def offline(url: str, timeout: float) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "urlopen", offline)
    with pytest.raises(DatasetError, match="apt-get install -y dataset-fashion-mnist"):
        read_fashion_mnist("test", cache_dir=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").rglob("*.part"))


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_download_is_cached_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = synthetic(20)
    served = {
        "t10k-images-idx3-ubyte.gz": idx_bytes(images),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(labels),
    }
    fetched: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> FakeResponse:
        assert url.startswith(datasets.FASHION_MNIST_URL)
        fetched.append(url)
        return FakeResponse(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    monkeypatch.setattr(datasets, "urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    # Not Fashion-MNIST's content: refused, and nothing is kept.
    with pytest.raises(DatasetError, match="not Fashion-MNIST"):
        read_fashion_mnist("test", cache_dir=cache, progress=False)
    assert not any((cache / "fashion-mnist").iterdir())

    digests = {
        name.removesuffix("-ubyte.gz"): datasets._sha256(gzip.decompress(data))
        for name, data in served.items()
    }
    monkeypatch.setattr(datasets, "_FASHION_SHA256", digests)
    monkeypatch.setattr(datasets, "_FASHION_COUNTS", {"train": 60_000, "test": 20})
    fetched.clear()
    got, _ = read_fashion_mnist("test", cache_dir=cache, progress=False)
    np.testing.assert_array_equal(got, images)
    assert len(fetched) == 2
    read_fashion_mnist("test", cache_dir=cache, progress=False)
    assert len(fetched) == 2  # the second read comes from the cache


def test_stratified_indices() -> None:
    _, labels = synthetic(200)
    chosen = stratified_indices(labels, 25, seed=0)
    assert len(chosen) == 25 and chosen == sorted(chosen) and len(set(chosen)) == 25
    per_class = np.bincount(labels[chosen], minlength=10)
    assert per_class.tolist() == [3] * 5 + [2] * 5
    assert stratified_indices(labels, 25, seed=0) == chosen
    assert stratified_indices(labels, 25, seed=1) != chosen
    assert set(chosen) <= set(stratified_indices(labels, 60, seed=0))  # a larger limit keeps them
    assert stratified_indices(labels, None) == list(range(200))
    assert stratified_indices(labels, 10_000) == list(range(200))
    assert stratified_indices(labels, 0) == []
    with pytest.raises(ValueError):
        stratified_indices(labels, -1)


def test_export_is_stratified_and_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = synthetic(200)
    source = write_fashion(tmp_path / "src", images, labels, "train")
    out = tmp_path / "out"
    counts = export_fashion_mnist(out, "train", limit=25, source_dir=source, progress=False)
    assert list(counts) == FASHION_MNIST_CLASSES
    assert list(counts.values()) == [3] * 5 + [2] * 5
    files = sorted(out.rglob("*.png"))
    assert len(files) == 25 and not list(out.rglob("*.part"))
    for path in files:
        index = int(path.stem.removeprefix("train_"))
        assert path.stem == f"train_{index:05d}"
        assert path.parent.name == FASHION_MNIST_CLASSES[labels[index]]
        with Image.open(path) as im:
            assert im.size == (28, 28) and im.mode == "L"
            assert np.array_equal(np.asarray(im), images[index])

    # A second run writes nothing: every save would fail.
    def no_save(*args: object, **kwargs: object) -> None:
        raise AssertionError("rewrote an existing file")

    monkeypatch.setattr(Image.Image, "save", no_save)
    assert export_fashion_mnist(out, "train", limit=25, source_dir=source, progress=False) == counts
    monkeypatch.undo()
    bigger = export_fashion_mnist(out, "train", limit=40, source_dir=source, progress=False)
    assert sum(bigger.values()) == 40 and len(list(out.rglob("*.png"))) == 40


@pytest.mark.skipif(
    not (FASHION_MNIST_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"no {FASHION_MNIST_SYSTEM_DIR}: install the Debian package dataset-fashion-mnist",
)
def test_real_fashion_mnist(tmp_path: Path) -> None:
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels = read_fashion_mnist(split, progress=False)  # type: ignore[arg-type]
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.uint8
        assert labels.min() == 0 and labels.max() == 9
        assert np.bincount(labels).tolist() == [n // 10] * 10
    counts = export_fashion_mnist(tmp_path, "test", limit=20, progress=False)
    assert counts == dict.fromkeys(FASHION_MNIST_CLASSES, 2)
    for path in tmp_path.rglob("*.png"):
        assert decode_image(path).size == (28, 28)


def make_tgz(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def test_extract_imagenette_maps_wnids_to_names(tmp_path: Path) -> None:
    archive = make_tgz(
        tmp_path / "imagenette2-160.tgz",
        {
            "imagenette2-160/train/n01440764/a.JPEG": b"tench picture",
            "imagenette2-160/train/n01440764/b.JPEG": b"another tench",
            "imagenette2-160/val/n03888257/c.JPEG": b"parachute picture",
            "imagenette2-160/noisy_imagenette.csv": b"path,label\n",
        },
    )
    out = tmp_path / "out"
    counts = extract_imagenette(archive, out, progress=False)
    assert counts == {"train/tench": 2, "val/parachute": 1}
    assert (out / "train" / "tench" / "a.JPEG").read_bytes() == b"tench picture"
    assert (out / "val" / "parachute" / "c.JPEG").read_bytes() == b"parachute picture"
    assert not (out / "noisy_imagenette.csv").exists()
    assert extract_imagenette(archive, out, progress=False) == counts  # again: nothing new


@pytest.mark.parametrize(
    ("member", "link"),
    [
        ("/etc/evil.JPEG", None),
        ("imagenette2-160/train/../../../evil.JPEG", None),
        ("imagenette2-160/train/n01440764/link.JPEG", "/etc/passwd"),
    ],
)
def test_extract_refuses_unsafe_archives(tmp_path: Path, member: str, link: str | None) -> None:
    good = {"imagenette2-160/train/n01440764/a.JPEG": b"fine"}
    if link is None:
        archive = make_tgz(tmp_path / "bad.tgz", {**good, member: b"evil"})
    else:
        archive = make_tgz(tmp_path / "bad.tgz", good, {member: link})
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="refusing member"):
        extract_imagenette(archive, out, progress=False)
    assert not out.exists()  # checked before a single file is written
    assert not (tmp_path.parent / "evil.JPEG").exists()


def test_export_imagenette_offline_and_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float) -> None:
        assert url.endswith("/imagenette2-160.tgz")
        raise URLError("no route to host")

    monkeypatch.setattr(datasets, "urlopen", offline)
    with pytest.raises(DatasetError, match="Imagenette needs internet"):
        export_imagenette(tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    cached = tmp_path / "cache" / "imagenette" / "imagenette2-160.tgz"
    make_tgz(cached, {"imagenette2-160/val/n02102040/d.JPEG": b"dog"})
    counts = export_imagenette(tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert counts == {"val/English springer": 1}
    with pytest.raises(ValueError, match="size"):
        export_imagenette(tmp_path / "out", size="640")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="broken archive"):
        cached.write_bytes(b"not a tgz")
        export_imagenette(tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)


def test_export_photos_writes_readable_labelled_images(tmp_path: Path) -> None:
    pytest.importorskip("skimage", reason="the photos come with scikit-image")
    written = export_photos(tmp_path)
    assert written == {f"{name}.png": label for name, label in PHOTO_LABELS.items()}
    for key, label in {"chelsea": "cat", "coffee": "coffee", "rocket": "rocket"}.items():
        assert written[f"{key}.png"] == label
    for filename in written:
        im = decode_image(tmp_path / filename)
        assert im.mode == "RGB" and min(im.size) >= 100, filename
    horse = np.asarray(decode_image(tmp_path / "horse.png"))
    assert horse[0, 0].tolist() == [255, 255, 255] and horse.min() == 0  # black on white
