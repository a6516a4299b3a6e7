"""`devise demo`: build the offline Fashion-MNIST demo, skipping stages already done."""

from __future__ import annotations

import json
from pathlib import Path

DEMO_HOLDOUT = ("sandal", "shirt")
TRAIN_LIMIT = 6000
GALLERY_LIMIT = 2000


def run_demo(root: Path, *, launch: bool, cache_dir: Path | None) -> int:
    import model.datasets as datasets
    from model.evaluate import evaluate_checkpoint
    from model.train import TrainConfig, train

    root.mkdir(parents=True, exist_ok=True)
    train_dir, gallery = root / "train", root / "gallery"
    ckpt = root / "devise.safetensors"
    if not (train_dir / ".done").exists():
        print(f"[1/3] exporting {TRAIN_LIMIT} Fashion-MNIST training images to {train_dir}")
        datasets.export_fashion_mnist(train_dir, split="train", limit=TRAIN_LIMIT)
        (train_dir / ".done").touch()
    if not (gallery / ".done").exists():
        print(f"[1/3] exporting a {GALLERY_LIMIT}-image gallery and sample photos to {gallery}")
        datasets.export_fashion_mnist(gallery / "fashion", split="test", limit=GALLERY_LIMIT)
        datasets.export_photos(gallery / "photos")
        (gallery / ".done").touch()
    if not ckpt.exists():
        print(f"[2/3] training DeViSE (efficientnet_lite0 + GloVe 50d), hold-out {DEMO_HOLDOUT}")
        train(train_dir, ckpt, TrainConfig(holdout=DEMO_HOLDOUT, cache_dir=cache_dir))
    report_file = root / "eval.json"
    if not report_file.exists():
        print("[3/3] evaluating on the gallery")
        report = evaluate_checkpoint(gallery / "fashion", ckpt, cache_dir=cache_dir)
        report_file.write_text(json.dumps(report.to_json(), indent=2))
        print(report.table())
    else:
        print(f"already built: {ckpt} ({report_file})")
    if launch:
        print("the web app arrives with the app issue; rerun with --no-launch for scripts")
    return 0
