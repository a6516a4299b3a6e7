from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from model.backbones import BackboneError, load_backbone
from model.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint
from model.data.features import DataError, scan_image_folder
from model.embedders.devise import DeviseHead, cosine_loss, hinge_rank_loss
from model.train import resolve_holdout, split_indices
from model.vocab.words import UnknownLabelsError, WordVectors, label_name, unit


def test_hinge_rank_loss_matches_hand_computation() -> None:
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    pred = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    target = torch.tensor([0, 0])
    # sample 1: scores 0.6, 0.8, 1.0 -> (0.1-0.6+0.8) + (0.1-0.6+1.0) = 0.3 + 0.5 = 0.8
    # sample 2: scores 1.0, 0.0, 0.6 -> max(0, 0.1-1+0) + max(0, 0.1-1+0.6) = 0
    loss = hinge_rank_loss(pred, target, labels, margin=0.1)
    assert loss.item() == pytest.approx(0.4, abs=1e-6)
    # the true label never counts against itself, whatever the margin
    assert hinge_rank_loss(pred[1:], target[1:], labels, margin=0.5).item() == pytest.approx(0.1)


def test_cosine_loss() -> None:
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pred = torch.tensor([[0.6, 0.8]])
    assert cosine_loss(pred, torch.tensor([0]), labels).item() == pytest.approx(0.4)


def test_head_output_is_unit_norm() -> None:
    for kind in ("linear", "mlp"):
        head = DeviseHead(8, 3, kind)  # type: ignore[arg-type]
        head.eval()
        out = head(torch.randn(5, 8))
        assert out.shape == (5, 3)
        assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


def test_multi_word_label_is_mean_of_known_words(toy_words: WordVectors) -> None:
    v = toy_words.label_vector("ankle boot")
    expected = unit(np.array([[0, 0, 1, 1]], dtype=np.float32))[0]
    assert v is not None and np.allclose(v, expected)
    # separators and unknown parts: only the known words count
    assert np.allclose(toy_words.label_vector("ankle_boot"), expected)  # type: ignore[arg-type]
    assert np.allclose(toy_words.label_vector("ankle/boot/zzz"), expected)  # type: ignore[arg-type]


def test_unknown_labels_are_all_listed(toy_words: WordVectors) -> None:
    with pytest.raises(UnknownLabelsError) as e:
        toy_words.label_matrix(["cat", "qwerty", "ankle boot", "zero", "blorp"])
    # "zero" is an all-zero GloVe-style row: it has no direction, so it is unknown too
    assert e.value.labels == ["qwerty", "zero", "blorp"]
    assert "qwerty" in str(e.value) and "blorp" in str(e.value)


def test_wnid_folders_map_to_class_names() -> None:
    assert label_name("n01440764") == "tench"
    assert label_name("n02102040") == "English springer"
    assert label_name("n99999999") == "n99999999"  # unknown wnids stay as they are
    assert label_name("dog") == "dog"


def test_packaged_glove_labels(glove: WordVectors) -> None:
    assert glove.dim == 50
    for label in ["t-shirt", "ankle boot", "golden_retriever", "trouser", "English springer"]:
        v = glove.label_vector(label)
        assert v is not None and abs(float(np.linalg.norm(v)) - 1) < 1e-5, label
    nearest = [w for w, _ in glove.kv.most_similar("cat", topn=5)]
    assert "dog" in nearest


def test_split_is_stratified_seeded_and_excludes_holdout() -> None:
    targets = np.repeat(np.arange(4), 50)
    tr, va, zs = split_indices(targets, [3], 0.2, seed=7)
    assert set(np.unique(targets[zs])) == {3}
    assert not set(tr) & set(va) and not (set(tr) | set(va)) & set(zs)
    for c in range(3):
        assert int(np.sum(targets[va] == c)) == 10
    tr2, va2, _ = split_indices(targets, [3], 0.2, seed=7)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)


def test_holdout_names_must_exist(tiny_folder: Path) -> None:
    data = scan_image_folder(tiny_folder)
    assert resolve_holdout(data, ("Truck",)) == [1]
    with pytest.raises(DataError, match="'bus'"):
        resolve_holdout(data, ("bus",))
    with pytest.raises(DataError, match="every label"):
        resolve_holdout(data, ("cat", "truck"))


def test_empty_data_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class folders"):
        scan_image_folder(tmp_path)
    with pytest.raises(DataError, match="not found"):
        scan_image_folder(tmp_path / "nope")


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(3, 4), "b.c": torch.arange(5)}
    meta = {"backbone": "resnet18", "labels": ["cat", "dog"], "metrics": {"x": 1.0}}
    path = tmp_path / "ck.safetensors"
    digest = save_checkpoint(path, tensors, meta)
    ck = load_checkpoint(path)
    assert ck.content_id == digest and len(digest) == 16
    assert torch.equal(ck.tensors["a"], tensors["a"]) and torch.equal(
        ck.tensors["b.c"], tensors["b.c"]
    )
    assert read_meta(path) == ck.meta  # header-only read, without torch
    # same content -> same hash; metrics do not change the identity of the model
    assert save_checkpoint(tmp_path / "ck2.safetensors", tensors, dict(meta, metrics={})) == digest
    tensors["a"][0, 0] += 1
    assert save_checkpoint(tmp_path / "ck3.safetensors", tensors, meta) != digest
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_planted_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "ck.safetensors"
    evil.write_bytes(pickle.dumps({"head.weight": _Evil()}))
    with pytest.raises(CheckpointError, match="not a devise-search checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="not a devise-search checkpoint"):
        read_meta(evil)
    torch.save({"x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(BackboneError, match="cannot load weights"):
        load_backbone("resnet18", tmp_path / "evil.pth")
    assert not (tmp_path / "PWNED").exists()


def test_checkpoint_from_another_version(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    p = tmp_path / "old.safetensors"
    save_file({"a": torch.zeros(1)}, str(p), metadata={"devise": json.dumps({"format": "v0"})})
    with pytest.raises(CheckpointError, match="another version"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_offline_resnet_without_cache_names_the_ways_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import urllib.request

    def refuse(*a: object, **k: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(BackboneError) as e:
        load_backbone("resnet50", "default")
    assert "--weights" in str(e.value) and "efficientnet_lite0" in str(e.value)


def test_resnet_weights_from_explicit_file(tmp_path: Path) -> None:
    ref = load_backbone("resnet18", None)
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in ref.body.state_dict().items()}
    state.update({f"fc.{k}": v.contiguous() for k, v in ref.classifier.state_dict().items()})
    save_file(state, str(tmp_path / "r18.safetensors"))
    b = load_backbone("resnet18", tmp_path / "r18.safetensors")
    assert b.weights_id.startswith("sha256:")
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert np.allclose(b.features(x), ref.features(x), atol=1e-5)


def test_bf16_falls_back_to_fp32_when_it_disagrees(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from model.backbones import Backbone

    b = load_backbone("resnet18", None, "bf16")
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    monkeypatch.setattr(Backbone, "BF16_MIN_COSINE", 1.01)  # no bf16 result can pass this
    out = b.features(x)
    assert b.precision == "fp32" and "falling back to fp32" in caplog.text
    assert np.allclose(out, load_backbone("resnet18", None, "fp32").features(x), atol=1e-4)


@pytest.mark.slow
@pytest.mark.weights
def test_bf16_embeddings_match_fp32_on_real_photos(tmp_path: Path) -> None:
    """The fast path's results must not change: cosine >= 0.995 on real photos."""
    from model.backbones import cpu_has_bf16
    from model.data.datasets import export_photos
    from model.data.images import load_array

    export_photos(tmp_path, names=["chelsea", "rocket"])  # emulated bf16 is slow: two photos
    fp32 = load_backbone("efficientnet_lite0", "default", "fp32")
    bf16 = load_backbone("efficientnet_lite0", "default", "bf16")
    arr = np.stack([load_array(p, fp32.spec.preprocess) for p in sorted(tmp_path.glob("*.png"))])
    a, b = unit(fp32.features(arr)), unit(bf16.features(arr))
    assert bf16.precision == "bf16", f"bf16 fell back (native bf16: {cpu_has_bf16()})"
    assert float((a * b).sum(axis=1).min()) >= 0.995


@pytest.mark.weights
def test_efficientnet_lite0_sees_a_cat_in_chelsea() -> None:
    """The packaged ImageNet weights are real: scikit-image's cat photo is a cat class."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from model.data.images import to_array
    from model.vocab.words import imagenet_class_names

    b = load_backbone("efficientnet_lite0", "default", "fp32")
    arr = to_array(Image.fromarray(skimage_data.chelsea()), b.spec.preprocess)[None]
    top5 = [imagenet_class_names()[i] for i in np.argsort(-b.logits(b.features(arr))[0])[:5]]
    assert {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"} & set(top5), top5
