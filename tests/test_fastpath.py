"""The fast path: backbones compiled by OpenVINO give the eager model's results, are cached,
follow weight changes, and fall back to PyTorch on any failure."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from model import fastpath
from model.backbones import BackboneError, load_backbone
from model.vocab.words import unit

pytest.importorskip("openvino", reason="the fast path needs OpenVINO (a project dependency)")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEVISE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def batch(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((unit(a) * unit(b)).sum(axis=1))


def test_openvino_gives_the_eager_results(cache: Path) -> None:
    x = batch()
    fast = load_backbone("resnet18", None, "fp32", runtime="openvino")
    eager = load_backbone("resnet18", None, "fp32", runtime="torch")
    got, ref = fast.features(x), eager.features(x)
    assert fast.runtime == "openvino" and eager.runtime == "torch"
    assert cosines(got, ref).min() > 0.9999
    assert np.allclose(got, ref, atol=1e-3)
    assert list(cache.glob("openvino/resnet18-*.xml")), "the compiled model was not cached"


def test_the_cached_model_is_reused_not_converted_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = batch()
    first = load_backbone("resnet18", None, "fp32", runtime="openvino").features(x)

    def no_conversion(*a: object, **k: object) -> None:
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(fastpath, "_convert", no_conversion)
    second = load_backbone("resnet18", None, "fp32", runtime="openvino")
    assert np.array_equal(second.features(x), first)
    assert second.runtime == "openvino"


def test_new_weights_are_compiled_again_not_read_from_a_stale_cache(cache: Path) -> None:
    x = batch()
    bb = load_backbone("resnet18", None, "fp32", runtime="openvino")
    before = bb.features(x)
    state = {k: v.clone() for k, v in bb.state_dict().items()}
    state["body.layer4.1.conv2.weight"] *= -1.0  # other weights, same name
    bb.load_state_dict(state)
    after = bb.features(x)
    eager = load_backbone("resnet18", None, "fp32", runtime="torch")
    eager.load_state_dict(state)
    assert not np.allclose(before, after, atol=1e-3), "still the old compiled weights"
    assert cosines(after, eager.features(x)).min() > 0.9999
    # and a fresh backbone with the original weights still gets the original model
    again = load_backbone("resnet18", None, "fp32", runtime="openvino").features(x)
    assert np.allclose(again, before, atol=1e-5)


def test_training_mode_drops_the_compiled_copy(cache: Path) -> None:
    bb = load_backbone("resnet18", None, "fp32", runtime="openvino")
    bb.features(batch(1))
    bb.train()
    assert bb._fast() is None  # fine-tuning runs in torch
    bb.eval()
    assert bb._fast() is not None


def test_a_failed_conversion_falls_back_to_torch_and_says_so(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("unsupported operation aten::mystery")

    monkeypatch.setattr(fastpath, "_convert", broken)
    x = batch()
    bb = load_backbone("resnet18", None, "fp32", runtime="openvino")
    with caplog.at_level(logging.WARNING):
        got = bb.features(x)
    assert bb.runtime == "torch"
    assert "OpenVINO could not compile it" in caplog.text and "aten::mystery" in caplog.text
    ref = load_backbone("resnet18", None, "fp32", runtime="torch").features(x)
    assert np.allclose(got, ref, atol=1e-5)


def test_a_damaged_cache_is_rebuilt(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = batch()
    good = load_backbone("resnet18", None, "fp32", runtime="openvino").features(x)
    (xml,) = cache.glob("openvino/resnet18-*.xml")
    xml.write_text("<net>not really</net>")
    with caplog.at_level(logging.WARNING):
        again = load_backbone("resnet18", None, "fp32", runtime="openvino").features(x)
    assert "ignoring unreadable OpenVINO cache" in caplog.text
    assert np.allclose(again, good, atol=1e-5)
    assert "not really" not in xml.read_text()  # rewritten


def test_other_input_sizes_run_eagerly(cache: Path) -> None:
    bb = load_backbone("resnet18", None, "fp32", runtime="openvino")
    small = batch()[:, :, :64, :64]
    ref = load_backbone("resnet18", None, "fp32", runtime="torch").features(small)
    assert np.allclose(bb.features(small), ref, atol=1e-5)


def test_concurrent_callers_get_their_own_answers(cache: Path) -> None:
    bb = load_backbone("resnet18", None, "fp32", runtime="openvino")
    inputs = [batch(2, seed=s) for s in range(6)]
    expected = [bb.features(x) for x in inputs]
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        got[i] = bb.features(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, e in enumerate(expected):
        assert np.array_equal(got[i], e), f"caller {i} got another caller's features"


def test_runtime_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BackboneError, match="unknown runtime 'tensorrt'"):
        load_backbone("resnet18", None, runtime="tensorrt")
    assert load_backbone("resnet18", None, runtime="torch").runtime == "torch"
    monkeypatch.setenv("DEVISE_RUNTIME", "torch")
    assert load_backbone("resnet18", None).runtime == "torch"
    previous = fastpath.set_default_runtime("openvino")
    try:
        assert load_backbone("resnet18", None).runtime == "openvino"  # beats the environment
    finally:
        fastpath.set_default_runtime(previous)
    monkeypatch.setattr(fastpath, "openvino_version", lambda: None)  # as if not installed
    assert load_backbone("resnet18", None, runtime="auto").runtime == "torch"
    with pytest.raises(BackboneError, match="pip install openvino"):
        load_backbone("resnet18", None, runtime="openvino")


def test_cli_runtime_flag_is_checked_and_leaves_no_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.cli import main

    with pytest.raises(SystemExit):
        main(["--runtime", "cuda", "search", "dog"])
    assert "invalid choice: 'cuda'" in capsys.readouterr().err
    main(["--runtime", "torch", "--cache", "/nonexistent/x", "search", "dog", "--index", "/no"])
    assert fastpath._default_runtime is None
    assert os.environ.get("DEVISE_CACHE") != "/nonexistent/x"


# ------------------------------------------------------------------ queries without torch


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_the_numpy_head_is_the_torch_head(kind: str) -> None:
    import torch

    from model.embedders.devise import DeviseHead
    from model.embedders.embedder import head_forward

    torch.manual_seed(1)
    head = DeviseHead(64, 50, kind, hidden=32)  # type: ignore[arg-type]
    head.set_feature_stats(torch.randn(64), torch.rand(64) + 0.5)
    if kind == "mlp":  # non-trivial running statistics, as after training
        bn = head.proj[1]  # type: ignore[index]
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    head.eval()
    x = np.random.default_rng(2).standard_normal((5, 64)).astype(np.float32)
    with torch.no_grad():
        ref = head(torch.from_numpy(x)).numpy()
    state = {k: v.numpy() for k, v in head.state_dict().items()}
    assert np.allclose(head_forward(state, kind, x), ref, atol=1e-5)


def test_a_compiled_backbone_needs_no_torch_and_matches(cache: Path) -> None:
    x = batch()
    bb = load_backbone("resnet18", None, "fp32", runtime="openvino")
    assert fastpath.load_compiled("resnet18", "random-init", "fp32") is None  # not cached yet
    feats = bb.features(x)
    compiled = fastpath.load_compiled("resnet18", "random-init", "fp32")
    assert compiled is not None and compiled.runtime == "openvino"
    assert np.allclose(compiled.features(x), feats, atol=1e-5)
    assert np.allclose(compiled.logits(feats), bb.logits(feats), atol=1e-4)
    with pytest.raises(ValueError, match=r"takes \(N, 3, 224, 224\) arrays"):
        compiled.features(x[:, :, :64, :64])
    previous = fastpath.set_default_runtime("torch")
    try:
        assert fastpath.load_compiled("resnet18", "random-init", "fp32") is None
    finally:
        fastpath.set_default_runtime(previous)


def test_tag_runs_without_torch_once_compiled(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Once ingest has compiled the checkpoint's backbone, `devise tag` reads it from the
    cache and imports no torch, and it answers as PyTorch does."""
    import json
    import subprocess
    import sys

    from tests.conftest import make_image_folder

    data = make_image_folder(tmp_path / "data", {"cat": "disc", "truck": "stripes"}, 3)
    query = tmp_path / "query.png"
    (data / "cat" / "000.png").rename(query)
    env = {**os.environ, "DEVISE_CACHE": str(tmp_path / "cache")}
    idx = ["--index", str(tmp_path / "index")]

    def cli(*argv: str, runtime: str = "auto") -> str:
        code = (
            "import sys; from app.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr); "
            "sys.exit(rc)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, "--runtime", runtime, *argv, *idx],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return r.stdout + r.stderr

    ingest = cli("ingest", str(data), "--checkpoint", str(tiny_checkpoint), "--models", "devise")
    cli("words", "--top", "5000")
    second = cli("tag", str(query), "--json")
    eager = cli("tag", str(query), "--json", runtime="torch")
    assert "TORCH" in ingest.split()  # the first use compiles with torch, and caches
    assert "NO-TORCH" in second.split()
    assert "TORCH" in eager.split()

    def tags(out: str) -> list[tuple[str, float]]:
        doc = json.loads(out[: out.rindex("}") + 1])
        return [(r["word"], r["score"]) for r in doc["results"]]

    a, b = tags(second), tags(eager)
    assert [t for t, _ in a] == [t for t, _ in b]
    assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-4)


def test_clip_image_tower_takes_the_fast_path_with_the_same_vectors() -> None:
    from tests.conftest import draw_image
    from tests.test_compare import _tiny_clip

    images = [draw_image("disc", 1), draw_image("stripes", 2, size=90)]
    previous = fastpath.set_default_runtime("torch")
    try:
        eager = _tiny_clip()
        ref = eager.embed_images(images)
        assert eager.runtime == "torch"
    finally:
        fastpath.set_default_runtime(previous)
    fast = _tiny_clip()
    fast._model.load_state_dict(eager._model.state_dict())  # the same random weights
    got = fast.embed_images(images)
    assert fast.runtime == "openvino"
    assert cosines(got, ref).min() > 0.9999
