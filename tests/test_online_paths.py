"""Every online path, run through the CLI on a stand-in placed where the upstream tool puts
the real download: gensim's data folder, torchvision's hub cache, devise's own download
cache for Imagenette and Fashion-MNIST. Nothing reaches the network: the product's own
loading code must find the files by itself, as it would after a real download.

(CLIP's caches have their own file, tests/test_clip_real.py. A Qdrant server cannot be
installed here; the server code path runs against qdrant-client's local mode instead, in
tests/test_store.py.)
"""

from __future__ import annotations

import gzip
import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tests.cli import run
from tests.conftest import make_image_folder
from tests.standins import write_fashion_mnist_gz, write_gensim_data, write_torchvision_weights
from tests.test_datasets import make_tgz

ROOT = Path(__file__).resolve().parents[1]


#: the CLI in a process of its own, with the test's environment (env=, cwd=), 600 s at most
devise = partial(run, timeout=600)


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No proxy to anywhere, a home and caches of the test's own."""
    env = dict(os.environ)
    env.update(
        HOME=str(tmp_path / "home"),
        DEVISE_CACHE=str(tmp_path / "devise-cache"),
        HF_HUB_OFFLINE="1",
        # any stray request fails at once instead of waiting on the network
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        no_proxy="",
        NO_PROXY="",
    )
    return env


def test_gensim_downloader_name_from_gensims_data_folder(tmp_path: Path) -> None:
    name = "glove-wiki-gigaword-100"
    data = tmp_path / "gensim-data"
    words = ["the", "cat", "dog", "grass", "coffee", "rocket", "horse", "bird"]
    write_gensim_data(data, name, words, dim=100)
    # what gensim's downloader caches of its catalogue after a download
    (data / "information.json").write_text(
        json.dumps({"corpora": {}, "models": {name: {"file_name": f"{name}.gz", "parts": 1}}})
    )
    env = {**offline_env(tmp_path), "GENSIM_DATA_DIR": str(data)}
    r = devise("words", "--words", name, "--index", str(tmp_path / "idx"), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(words)} words" in r.stdout and f"{name} (100 d)" in r.stdout
    assert "Traceback" not in r.stderr  # gensim's failed catalogue request is not even made

    # without the folder, the error names the offline ways out in one line
    r = devise("words", "--words", name, "--index", str(tmp_path / "idx2"), env={
        **env, "GENSIM_DATA_DIR": str(tmp_path / "empty")}, cwd=tmp_path, timeout=300)  # fmt: skip
    assert r.returncode == 1 and "glove-6b-50d" in r.stderr.strip().splitlines()[-1]


def test_resnet_weights_from_torchvisions_hub_cache(tmp_path: Path) -> None:
    import torch
    import torchvision.models as tvm
    from safetensors import safe_open

    from model.specs import get_spec

    torch_home = tmp_path / "torch"
    cached = write_torchvision_weights(torch_home, "resnet18")
    assert cached.parent == torch_home / "hub" / "checkpoints"
    data = make_image_folder(tmp_path / "data", {"cat": "disc", "truck": "stripes"}, 6)
    env = {**offline_env(tmp_path), "TORCH_HOME": str(torch_home)}
    out = tmp_path / "r18.safetensors"
    r = devise(
        "train", str(data), "--out", str(out), "--backbone", "resnet18", "--epochs", "2",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["devise"])
    assert meta["backbone"] == "resnet18"
    assert meta["weights"] == get_spec("resnet18").default_weights_id  # the cached ImageNet file

    # the features are those of the cached weights, not of a random model
    from model.backbones import load_backbone

    os.environ["TORCH_HOME"], old = str(torch_home), os.environ.get("TORCH_HOME")
    try:
        found = load_backbone("resnet18", "default", "fp32", runtime="torch")
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old
    net = tvm.resnet18(weights=None)
    net.load_state_dict(torch.load(cached, weights_only=True))
    net.fc = torch.nn.Identity()  # type: ignore[assignment]
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        want = net.eval()(torch.from_numpy(x)).numpy()
    assert np.allclose(found.features(x), want, atol=1e-4)


def test_imagenette_from_the_cached_archive(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    archive = Path(env["DEVISE_CACHE"]) / "imagenette" / "imagenette2-160.tgz"
    archive.parent.mkdir(parents=True)
    make_tgz(
        archive,
        {
            "imagenette2-160/train/n01440764/a.JPEG": b"tench",
            "imagenette2-160/val/n02102040/b.JPEG": b"springer",
        },
    )
    out = tmp_path / "imagenette"
    r = devise("datasets", "imagenette", str(out), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "train" / "tench" / "a.JPEG").read_bytes() == b"tench"
    assert (out / "val" / "English springer" / "b.JPEG").is_file()


def test_fashion_mnist_from_the_cached_gz_files(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    # not the Debian package's folder: the download cache is what is read
    env["DEVISE_FASHION_MNIST_DIR"] = str(tmp_path / "no-package")
    cache = Path(env["DEVISE_CACHE"]) / "fashion-mnist"
    write_fashion_mnist_gz(cache, counts={"train": 60_000, "t10k": 10_000})
    with gzip.open(cache / "t10k-labels-idx1-ubyte.gz") as f:
        assert len(f.read()) == 8 + 10_000
    out = tmp_path / "fm"
    r = devise(
        "datasets", "fashion-mnist", str(out), "--split", "test", "--limit", "20",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 20 and {p.parent.name for p in pngs} >= {"t-shirt", "ankle boot"}


@pytest.mark.parametrize("what", ["gensim", "imagenette"])
def test_offline_without_the_cache_says_so_in_one_line(tmp_path: Path, what: str) -> None:
    env = {**offline_env(tmp_path), "GENSIM_DATA_DIR": str(tmp_path / "none")}
    if what == "gensim":
        args = ["words", "--words", "glove-wiki-gigaword-100", "--index", str(tmp_path / "i")]
    else:
        args = ["datasets", "imagenette", str(tmp_path / "out")]
    r = devise(*args, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error:")
