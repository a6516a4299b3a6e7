"""Stand-in weights and data, written exactly where the upstream tools keep the real ones.

Nothing here reaches the network. Each writer puts random (or tiny) content in the file and
folder layout that the real download leaves behind, so that the product's own loading code
runs on it unchanged:

- open_clip pretrained tags in the Hugging Face hub cache (`huggingface_hub`'s layout:
  `models--ORG--NAME/{blobs,snapshots/REV,refs/main}`), and in open_clip's URL cache
  (`~/.cache/clip/<file>`, a TorchScript archive as OpenAI publishes);
- torchvision ImageNet weights in torch hub's `checkpoints/` folder, named as torchvision's
  weight enums name them;
- a gensim downloader name in gensim's data folder (`~/gensim-data/NAME/NAME.gz`);
- Fashion-MNIST's four idx `.gz` files and Imagenette's archive in devise's download cache.

The values are random: only the layouts, formats and shapes are real.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

# A commit id of the kind huggingface_hub writes into refs/main (any 40 hex digits).
_REVISION = "0123456789abcdef0123456789abcdef01234567"


def hf_repo_file(hub_cache: Path, repo_id: str, filename: str, data: bytes) -> Path:
    """Place `data` as `filename` of model repo `repo_id` in a Hugging Face hub cache, as
    `hf_hub_download` leaves it: the content in `blobs/<sha256>`, a relative symlink to it
    in `snapshots/<revision>/`, and the revision in `refs/main`. Returns the snapshot path."""
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snap = repo / "snapshots" / _REVISION / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    if snap.exists() or snap.is_symlink():
        snap.unlink()
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(_REVISION)
    return snap


def random_clip(model_name: str, quick_gelu: bool = False, seed: int = 0) -> Any:
    """An untrained open_clip model of `model_name` (deterministic for a seed).

    The last one made is kept and handed out again for the same arguments: RN50 `openai`
    is written both to the hub cache and as a TorchScript archive, and a random RN50 takes
    seconds to initialise. READ-ONLY by convention: callers read its weights or script it,
    never train or change it. `forget_random_clip()` lets it go."""
    return _random_clip(model_name, quick_gelu, seed)


@functools.lru_cache(maxsize=1)  # one model at a time: a ViT-B-32 holds 600 MB
def _random_clip(model_name: str, quick_gelu: bool, seed: int) -> Any:
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)


def forget_random_clip() -> None:
    """Drop the model `random_clip` keeps (its memory back at the end of a module)."""
    _random_clip.cache_clear()


def clip_weights_bytes(model_name: str, quick_gelu: bool = False, seed: int = 0) -> bytes:
    """A safetensors file of an untrained `model_name`, as open_clip's HF repos hold it."""
    from safetensors.torch import save

    model = random_clip(model_name, quick_gelu, seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save(state)


def write_clip_hf(hub_cache: Path, model_name: str, tag: str, seed: int = 0) -> Path:
    """Random weights for an open_clip pretrained tag where open_clip 3.3 downloads it: the
    tag's `hf_hub` repo in the hub cache, as `open_clip_model.safetensors` (the file
    open_clip asks for first). Returns the snapshot path."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    repo_id, filename = os.path.split(cfg["hf_hub"])
    if filename.endswith((".bin", ".pth")):
        filename = filename[:-4] + ".safetensors"
    data = clip_weights_bytes(model_name, bool(cfg.get("quick_gelu", False)), seed)
    return hf_repo_file(hub_cache, repo_id, filename or HF_SAFE_WEIGHTS_NAME, data)


def write_clip_url(clip_cache: Path, model_name: str, tag: str, seed: int = 0) -> Path:
    """Random weights for an OpenAI tag where the URL download leaves them
    (`~/.cache/clip/<basename of the url>`): a TorchScript archive, the format OpenAI
    publishes. Returns its path."""
    import open_clip
    import torch

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    target = clip_cache / os.path.basename(cfg["url"])
    target.parent.mkdir(parents=True, exist_ok=True)
    model = random_clip(model_name, bool(cfg.get("quick_gelu", False)), seed).eval()
    torch.jit.script(model).save(str(target))
    return target


def write_clip_file(path: Path, model_name: str, seed: int = 0) -> Path:
    """Random weights as a plain file for `--clip-weights FILE` (safetensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(clip_weights_bytes(model_name, False, seed))
    return path


def write_torchvision_weights(torch_home: Path, backbone: str = "resnet18") -> Path:
    """Random ResNet weights where torchvision's `weights.get_state_dict()` caches the
    default ImageNet weights: `$TORCH_HOME/hub/checkpoints/<file of the url>`."""
    import torch
    import torchvision.models as tvm

    builder = getattr(tvm, backbone)
    weights = tvm.get_model_weights(backbone).DEFAULT
    target = torch_home / "hub" / "checkpoints" / os.path.basename(weights.url)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(builder(weights=None).state_dict(), target)
    return target


def write_gensim_data(data_dir: Path, name: str, words: list[str], dim: int, seed: int = 0) -> Path:
    """A gensim downloader model in gensim's data folder as `gensim.downloader.load(name)`
    finds it offline: `<data_dir>/<name>/<name>.gz` (word2vec text format, gzipped) and the
    `__init__.py` whose `load_data()` the downloader imports."""
    rng = np.random.default_rng(seed)
    folder = data_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{len(words)} {dim}"]
    for w in words:
        lines.append(w + " " + " ".join(f"{x:.5f}" for x in rng.standard_normal(dim)))
    with gzip.open(folder / f"{name}.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    (folder / "__init__.py").write_text(
        "import os\n\n"
        "from gensim.models import KeyedVectors\n\n"
        "base_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)))\n\n\n"
        "def load_data():\n"
        f"    path = os.path.join(base_dir, {name!r} + '.gz')\n"
        "    return KeyedVectors.load_word2vec_format(path)\n"
    )
    return folder


def write_fashion_mnist_gz(folder: Path, counts: dict[str, int] | None = None) -> Path:
    """The four idx files of Fashion-MNIST, gzipped and named as its release names them,
    holding `counts` images per file prefix (`train`, `t10k`): plain grey squares whose
    shade follows the label, labels cycling through the ten classes (they compress to a few
    kilobytes, where the real images take 30 MB)."""
    counts = counts or {"train": 60_000, "t10k": 10_000}
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.repeat((labels * 25).astype(np.uint8), 28 * 28).reshape(n, 28, 28)
        head_i = np.array([2051, n, 28, 28], dtype=">i4").tobytes()
        head_l = np.array([2049, n], dtype=">i4").tobytes()
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(head_i + images.tobytes())
        with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(head_l + labels.tobytes())
    return folder


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    return dst
