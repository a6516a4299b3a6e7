"""Labelled images to train, evaluate and demo on, written as ImageFolder trees.

- Fashion-MNIST: from the Debian package `dataset-fashion-mnist` when installed, else
  downloaded from the dataset's own release into a cache. 10 classes, 28x28 grey.
- Imagenette: fastai's release (internet only); its wnid folders are mapped to class names.
- Photos: the real photographs that scikit-image ships inside its wheel, with hand labels.

Nothing here runs at import time; network and scikit-image are only touched when asked for.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import shutil
import struct
import subprocess
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Literal
from urllib.error import URLError
from urllib.request import urlopen

import numpy as np
import numpy.typing as npt
from PIL import Image
from tqdm import tqdm

from model.paths import default_cache_dir
from model.vocab.words import label_name

UInt8Array = npt.NDArray[np.uint8]
Split = Literal["train", "test"]
ImagenetteSize = Literal["160", "320", "full"]

#: Class-folder names in label order (index = the dataset's label). Plain words GloVe knows;
#: the dataset's own "T-shirt/top" has a slash, which cannot be a folder name.
FASHION_MNIST_CLASSES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
#: Where the Debian package `dataset-fashion-mnist` puts the idx files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Environment variable naming another folder that holds the four idx files.
FASHION_MNIST_ENV = "DEVISE_FASHION_MNIST_DIR"


def fashion_mnist_dir() -> Path:
    """The folder read before any download: `$DEVISE_FASHION_MNIST_DIR`, else the package's."""
    env = os.environ.get(FASHION_MNIST_ENV)
    return Path(env) if env else FASHION_MNIST_SYSTEM_DIR


#: The dataset's own release (Zalando Research).
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_FASHION_COUNTS = {"train": 60_000, "test": 10_000}
# SHA-256 of the *decompressed* idx data (gzip headers differ between copies; the data does
# not). Computed from the Debian package's files; a download must match them.
_FASHION_SHA256 = {
    "train-images-idx3": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_OFFLINE_FASHION = (
    f"no internet and no {FASHION_MNIST_SYSTEM_DIR}: run "
    "`sudo apt-get install -y dataset-fashion-mnist` (or set DEVISE_FASHION_MNIST_DIR)"
)

#: fastai's Imagenette release; `{}` is "-160", "-320" or "" (full size).
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2{}.tgz"
_IMAGENETTE_SUFFIX = {"160": "-160", "320": "-320", "full": ""}
_IMAGENETTE_SPLITS = ("train", "val")

_IDX_UBYTE = 0x08
_CHUNK = 1 << 20


class DatasetError(RuntimeError):
    """A data set that cannot be read, downloaded or written; the message says what to do."""


# ---------------------------------------------------------------------------- downloads


def _download(url: str, dest: Path, *, offline_hint: str, progress: bool = True) -> Path:
    """Fetch `url` into `dest` through a `.part` file, so a broken download is never used."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urlopen(url, timeout=60) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"downloading {dest.name}",
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DatasetError(f"cannot download {url} ({reason}): {offline_hint}") from e
    os.replace(part, dest)
    return dest


# ---------------------------------------------------------------------------- Fashion-MNIST


def read_idx(source: Path | bytes, name: str = "") -> UInt8Array:
    """Parse an idx file of unsigned bytes (gzip-compressed or not) into an array.

    The header is two zero bytes, the type 0x08 (unsigned byte), the number of dimensions,
    then each dimension as a big-endian uint32; the data follows (at offset 16 for images,
    8 for labels). Raises DatasetError on a bad magic number or a size that does not match.
    """
    if isinstance(source, Path):
        name = name or str(source)
        try:
            raw = source.read_bytes()
        except OSError as e:
            raise DatasetError(f"{name}: cannot read ({e.strerror or e})") from e
    else:
        raw = source
    name = name or "<idx>"
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{name}: broken gzip data ({e})") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _IDX_UBYTE or not 1 <= raw[3] <= 4:
        raise DatasetError(
            f"{name}: bad magic number {raw[:4].hex() or 'none'} "
            "(an idx file of unsigned bytes starts 0000080N)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{name}: the header is cut short")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DatasetError(
            f"{name}: holds {len(raw) - header} bytes of data, "
            f"its header promises {'x'.join(map(str, dims))} = {math.prod(dims)}"
        )
    # bytearray: the array is writable without a second copy.
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def apt_install_command() -> list[str] | None:
    """The command that installs the Debian package here, or None when it cannot run.

    It can when apt-get exists and we are root or have passwordless sudo.
    """
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return ["apt-get"]
    if (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    ):
        return ["sudo", "-n", "apt-get"]
    return None


def _apt_install_fashion(apt: list[str]) -> bool:
    """Install dataset-fashion-mnist with `apt` (after one `update` if needed); True on success."""
    print(
        "Fashion-MNIST is not here and cannot be downloaded: "
        "installing dataset-fashion-mnist with apt-get"
    )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*apt, "install", "-y", "-qq", "--no-install-recommends", "dataset-fashion-mnist"]
    if subprocess.run(install, env=env, capture_output=True).returncode == 0:
        return True
    subprocess.run([*apt, "update", "-qq"], env=env, capture_output=True)
    return subprocess.run(install, env=env, capture_output=True).returncode == 0


def _complete(folder: Path, names: Sequence[str]) -> tuple[Path, Path] | None:
    """The (images, labels) files when `folder` holds every one of `names`, else None."""
    if all((folder / n).is_file() for n in names):
        return folder / names[0], folder / names[1]
    return None


def _fashion_files(
    split: str, source_dir: Path | None, cache_dir: Path | None, progress: bool
) -> tuple[Path, Path]:
    names = _FASHION_FILES[split]
    if source_dir is not None:
        missing = [n for n in names if not (source_dir / n).is_file()]
        if missing:
            raise DatasetError(f"{source_dir} lacks {', '.join(missing)}")
        return source_dir / names[0], source_dir / names[1]
    system = fashion_mnist_dir()
    if (found := _complete(system, names)) is not None:
        return found
    cache = (cache_dir or default_cache_dir()) / "fashion-mnist"
    for n in names:
        path = cache / n
        if path.is_file():
            continue
        try:
            _download(FASHION_MNIST_URL + n, path, offline_hint=_OFFLINE_FASHION, progress=progress)
        except DatasetError:
            apt = apt_install_command()
            if apt is not None and _apt_install_fashion(apt):
                # the package installs into its own folder, whatever the variable says
                for where in (system, FASHION_MNIST_SYSTEM_DIR):
                    if (found := _complete(where, names)) is not None:
                        return found
            raise
        digest = _sha256(gzip.decompress(path.read_bytes()))
        if digest != _FASHION_SHA256[n.removesuffix("-ubyte.gz")]:
            path.unlink()
            raise DatasetError(
                f"{FASHION_MNIST_URL + n}: the download is not Fashion-MNIST (sha256 {digest})"
            )
    return cache / names[0], cache / names[1]


def read_fashion_mnist(
    split: Split = "train",
    source_dir: Path | None = None,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[UInt8Array, UInt8Array]:
    """Fashion-MNIST images uint8 (N, 28, 28) and labels uint8 (N,), N = 60000 or 10000.

    Read from `source_dir` when given (nothing is downloaded then), else from the Debian
    package's folder, else from `cache_dir/fashion-mnist` (default `~/.cache/devise-search`),
    downloading the files there from the dataset's release when absent.
    """
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    images_path, labels_path = _fashion_files(split, source_dir, cache_dir, progress)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: holds {images.shape}, not N x 28 x 28 images")
    if labels.ndim != 1:
        raise DatasetError(f"{labels_path}: holds {labels.shape}, not a list of labels")
    if len(images) != len(labels):
        raise DatasetError(f"{images_path.parent}: {len(images)} images but {len(labels)} labels")
    if source_dir is None and len(images) != _FASHION_COUNTS[split]:
        raise DatasetError(
            f"{images_path}: {len(images)} images, expected {_FASHION_COUNTS[split]}"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DatasetError(f"{labels_path}: label {int(labels.max())} is not one of the 10 classes")
    return images, labels


def stratified_indices(labels: UInt8Array, limit: int | None, seed: int = 0) -> list[int]:
    """`limit` indices spread evenly over the classes, sorted; all indices when `limit` is None.

    Each class draws from its own fixed shuffle (seeded by `seed` and the class), so a larger
    limit keeps every image a smaller one chose, and re-running picks the same images.
    """
    if limit is None:
        return list(range(len(labels)))
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    classes = range(len(FASHION_MNIST_CLASSES))
    chosen: list[int] = []
    for c in classes:
        quota = limit // len(classes) + (1 if c < limit % len(classes) else 0)
        members = np.flatnonzero(labels == c)
        order = np.random.default_rng([seed, c]).permutation(members)
        chosen.extend(int(i) for i in order[:quota])
    return sorted(chosen)


@contextlib.contextmanager
def _atomic_write(dest: Path) -> Iterator[IO[bytes]]:
    """Write through a `.part` file: an interrupted export never leaves a half file behind
    that a re-run would then take as done."""
    part = dest.with_name(dest.name + ".part")
    try:
        with open(part, "wb") as f:
            yield f
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def export_fashion_mnist(
    out: Path,
    split: Split = "train",
    limit: int | None = None,
    seed: int = 0,
    *,
    source_dir: Path | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Write Fashion-MNIST as PNGs `out/<class>/<split>_<index:05d>.png`; counts per class.

    `limit` is the total number of images, taken evenly across the 10 classes and chosen
    the same way every time. Files already there are left as they are, so a re-run (or a
    larger limit) only writes what is missing.
    """
    images, labels = read_fashion_mnist(split, source_dir, cache_dir=cache_dir, progress=progress)
    chosen = stratified_indices(labels, limit, seed)
    counts = dict.fromkeys(FASHION_MNIST_CLASSES, 0)
    for name in FASHION_MNIST_CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i in tqdm(chosen, desc=f"fashion-mnist {split}", unit="img", disable=not progress):
        name = FASHION_MNIST_CLASSES[labels[i]]
        dest = out / name / f"{split}_{i:05d}.png"
        counts[name] += 1
        if dest.exists():
            continue
        with _atomic_write(dest) as f:
            Image.fromarray(images[i]).save(f, format="PNG")
    return counts


# ---------------------------------------------------------------------------- Imagenette


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    path = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or path.is_absolute() or ":" in path.parts[0]:
        raise DatasetError(f"{archive}: refusing member with an absolute path: {member.name!r}")
    if ".." in path.parts or "\\" in member.name:
        raise DatasetError(f"{archive}: refusing member that climbs out: {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise DatasetError(f"{archive}: refusing member that is a link or device: {member.name!r}")


def _folder_name(wnid: str) -> str:
    # A class name becomes a folder: no path separators in it.
    return label_name(wnid).replace("/", "-").strip() or wnid


def extract_imagenette(archive: Path, out: Path, *, progress: bool = True) -> dict[str, int]:
    """Extract an Imagenette tgz as `out/train/<class name>/...` and `out/val/<class name>/...`.

    Every member is checked before anything is written: absolute paths, `..`, links and
    devices make the whole archive refused. Folders named by wnid become class names
    (`n01440764` -> `tench`). Returns counts keyed `split/class name`. Files already
    extracted with the right size are skipped.
    """
    counts: dict[str, int] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m, archive)
            wanted = []
            for m in members:
                parts = PurePosixPath(m.name).parts
                # imagenette2-160/train/n01440764/ILSVRC2012_val_00000293.JPEG
                if m.isfile() and len(parts) == 4 and parts[1] in _IMAGENETTE_SPLITS:
                    wanted.append((m, parts[1], _folder_name(parts[2]), parts[3]))
            for m, split, label, filename in tqdm(
                wanted, desc=f"extracting {archive.name}", unit="img", disable=not progress
            ):
                dest = out / split / label / filename
                key = f"{split}/{label}"
                counts[key] = counts.get(key, 0) + 1
                if dest.is_file() and dest.stat().st_size == m.size:
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is None:
                    raise DatasetError(f"{archive}: cannot read member {m.name!r}")
                with src, _atomic_write(dest) as f:
                    shutil.copyfileobj(src, f)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DatasetError(f"{archive}: broken archive ({e})") from e
    return dict(sorted(counts.items()))


def export_imagenette(
    out: Path,
    size: ImagenetteSize = "160",
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Download fastai's Imagenette (`size` px on the short side, or "full") and extract it.

    Layout: `out/train/<class name>/...` and `out/val/<class name>/...`. Needs internet;
    the archive is kept in `cache_dir/imagenette` (default `~/.cache/devise-search`).
    """
    if size not in _IMAGENETTE_SUFFIX:
        raise ValueError(f"size must be '160', '320' or 'full', not {size!r}")
    url = IMAGENETTE_URL.format(_IMAGENETTE_SUFFIX[size])
    archive = (cache_dir or default_cache_dir()) / "imagenette" / url.rsplit("/", 1)[1]
    if not archive.is_file():
        hint = "Imagenette needs internet; offline, use `devise datasets fashion-mnist`"
        _download(url, archive, offline_hint=hint, progress=progress)
    return extract_imagenette(archive, out, progress=progress)


# ---------------------------------------------------------------------------- photos

#: Hand labels of the real photographs inside the scikit-image wheel (no download needed).
#: Keys are the file stems `export_photos` writes.
PHOTO_LABELS: dict[str, str] = {
    "astronaut": "astronaut",
    "camera": "photographer",
    "chelsea": "cat",
    "coffee": "coffee",
    "rocket": "rocket",
    "horse": "horse",
    "motorcycle": "motorcycle",
    "hubble_deep_field": "galaxy",
    "immunohistochemistry": "cells",
    "coins": "coins",
    "moon": "moon",
    "page": "page",
    "text": "text",
    "clock": "clock",
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
}
# The scikit-image loader of each photo, where it is not the photo's own name.
_PHOTO_LOADERS = {"motorcycle": "stereo_motorcycle"}


def _photo_array(name: str) -> UInt8Array:
    import skimage.data

    loaded = getattr(skimage.data, _PHOTO_LOADERS.get(name, name))()
    arr = np.asarray(loaded[0] if isinstance(loaded, tuple) else loaded)
    if arr.dtype == bool:  # the horse is a silhouette: black horse on white
        arr = np.where(arr, 255, 0)
    return arr.astype(np.uint8)


def export_photos(out: Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """Write scikit-image's real photos to `out/<name>.png`; returns {file name: label}.

    Needs scikit-image (no network). Files already there are kept.
    """
    try:
        import skimage.data  # noqa: F401
    except ImportError as e:
        raise DatasetError("the photos come with scikit-image: pip install scikit-image") from e
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for name in names if names is not None else PHOTO_LABELS:
        dest = out / f"{name}.png"
        if not dest.exists():
            with _atomic_write(dest) as f:
                Image.fromarray(_photo_array(name)).save(f, format="PNG", compress_level=1)
        written[dest.name] = PHOTO_LABELS[name]
    return written
