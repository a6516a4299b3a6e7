"""Training end to end: a random-init smoke test, and real Fashion-MNIST when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from model.checkpoint import read_meta
from model.embedders.embedder import DeviseEmbedder
from model.evaluate import evaluate_checkpoint
from model.train import TrainConfig, train
from model.vocab.words import WordVectors
from tests.conftest import draw_image


def test_training_smoke_random_resnet18(
    tiny_folder: Path, tmp_path: Path, glove: WordVectors
) -> None:
    out = tmp_path / "ck.safetensors"
    cfg = TrainConfig(
        backbone="resnet18",
        weights=None,
        epochs=15,
        lr=3e-3,
        batch_size=8,
        val_fraction=0.25,
        cache_dir=tmp_path / "cache",
    )
    result = train(tiny_folder, out, cfg, words=glove)
    assert result.losses[-1] < result.losses[0]
    assert min(result.losses) < 0.5 * result.losses[0]
    meta = read_meta(out)
    assert meta["backbone"] == "resnet18" and meta["weights"] == "random-init"
    assert meta["labels"] == ["cat", "truck"] and meta["words"] == {
        "source": "glove-6b-50d",
        "dim": 50,
    }
    assert meta["content_hash"] == result.content_hash
    # the checkpoint carries its random backbone, so it embeds the same way after reload
    model = DeviseEmbedder(out)
    vecs = model.embed_images([draw_image("disc", 999), draw_image("stripes", 998)])
    assert vecs.shape == (2, 50) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    scores = vecs @ model.label_vectors.T
    assert scores[0].argmax() == 0 and scores[1].argmax() == 1
    # a second run reads the feature cache instead of recomputing
    again = train(tiny_folder, tmp_path / "ck2.safetensors", cfg, words=glove)
    assert "extract_img_per_s" not in again.metrics


def test_unknown_labels_fail_before_training(tmp_path: Path, glove: WordVectors) -> None:
    for label in ("cat", "xqzzyv", "blorptastic"):
        d = tmp_path / "data" / label
        d.mkdir(parents=True)
        draw_image("disc", 1).save(d / "a.png")
    cfg = TrainConfig(backbone="resnet18", weights=None, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="'blorptastic', 'xqzzyv'") as e:
        train(tmp_path / "data", tmp_path / "ck.safetensors", cfg, words=glove)
    assert "2 label(s)" in str(e.value)
    assert not (tmp_path / "cache").exists()  # nothing expensive started
    assert not (tmp_path / "ck.safetensors").exists()


def test_cli_reports_bad_input_with_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(tmp_path), "--checkpoint", str(tmp_path / "nope.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "devise train" in err
    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path), "--out", "x", "--epochs", "0"])
    assert e.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path), "--out", "x", "--backbone", "vgg"])
    assert e.value.code == 2


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.weights
@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST idx files absent (Debian package dataset-fashion-mnist) and tests "
    "never download",
)
def test_fashion_mnist_end_to_end(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert main(["datasets", "fashion-mnist", str(tmp_path / "train"), "--limit", "300"]) == 0
    assert (
        main(
            [
                "datasets",
                "fashion-mnist",
                str(tmp_path / "test"),
                "--split",
                "test",
                "--limit",
                "200",
            ]
        )
        == 0
    )
    ck = tmp_path / "ck.safetensors"
    assert (
        main(
            [
                "--cache",
                str(cache),
                "train",
                str(tmp_path / "train"),
                "--out",
                str(ck),
                "--holdout",
                "sandal,shirt",
                "--epochs",
                "30",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "--cache",
                str(cache),
                "eval",
                str(tmp_path / "test"),
                "--checkpoint",
                str(ck),
                "--json",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report) >= {"labels", "holdout", "chance", "models"}
    assert report["holdout"] == ["sandal", "shirt"]
    devise = report["models"]["devise"]
    chance = report["chance"]
    assert devise["flat_hit@1"] > 3 * chance["flat_hit@1"]  # well above 0.1
    assert devise["zeroshot_hit@5"] > chance["zeroshot_hit@5"]
    assert report["models"]["softmax"]["flat_hit@1"] > 3 * chance["flat_hit@1"]
    assert "zeroshot_hit@1" not in report["models"]["softmax"]  # does not apply: left out
    # evaluating on the training folder uses only its held-back images
    direct = evaluate_checkpoint(tmp_path / "train", ck, cache_dir=cache)
    assert direct.counts["flat"] < 300 * 0.8 * 0.3


def test_finetune_trains_only_the_last_stage(
    tiny_folder: Path, tmp_path: Path, glove: WordVectors
) -> None:
    import torch

    from model.backbones import load_backbone
    from model.checkpoint import load_checkpoint

    out = tmp_path / "ft.safetensors"
    cfg = TrainConfig(
        backbone="resnet18",
        weights=None,
        epochs=3,
        batch_size=8,
        val_fraction=0.25,
        cache_dir=tmp_path / "cache",
        finetune_epochs=1,
        finetune_lr=1e-3,
    )
    result = train(tiny_folder, out, cfg, words=glove)
    assert len(result.losses) == 4  # 3 head epochs, then 1 fine-tuning epoch
    ck = load_checkpoint(out)
    assert ck.meta["finetuned"] is True
    base = load_backbone("resnet18", None).state_dict()
    tuned = ck.prefixed("backbone")
    assert torch.equal(tuned["body.layer1.0.conv1.weight"], base["body.layer1.0.conv1.weight"])
    assert not torch.equal(tuned["body.layer4.1.conv2.weight"], base["body.layer4.1.conv2.weight"])
    # a reload embeds with the tuned backbone
    model = DeviseEmbedder(out)
    assert torch.equal(
        model.backbone.state_dict()["body.layer4.1.conv2.weight"],
        tuned["body.layer4.1.conv2.weight"],
    )


def test_the_bar_shows_a_validation_hit_only_where_there_is_validation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The calibration folds fit with no validation images, and their bar showed the
    negated loss as `val_hit1=-0.334`."""
    import torch

    from model.train import _fit

    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.arange(16) % 2
    cfg = TrainConfig(epochs=3, batch_size=8)
    loss = torch.nn.functional.cross_entropy
    _fit(torch.nn.Linear(4, 2), loss, x, y, x[:0], y[:0], lambda p: p, cfg, "fold")
    bar = capsys.readouterr().err
    assert "fold" in bar and "loss=" in bar and "val_hit1" not in bar
    _fit(torch.nn.Linear(4, 2), loss, x, y, x[:4], y[:4], lambda p: p, cfg, "fit")
    assert "val_hit1=" in capsys.readouterr().err
