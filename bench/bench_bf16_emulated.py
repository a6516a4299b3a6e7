"""EMULATED bf16, not real bf16: Fashion-MNIST metrics with bf16 rounding emulated in fp32.

This is an emulation for CPUs without native bf16. It rounds every layer's inputs, weights
and outputs to bf16, which costs more than real bf16 kernels (those accumulate in fp32 and
fuse layers): it overstates bf16's cost. For real bf16 (and int8) on a CPU that has it, use
`bench/bench_precision.py`, whose figures decide `--precision auto`.

Trains DeViSE (efficientnet_lite0 + GloVe 50d, the demo's hold-out labels) on fp32
features of a Fashion-MNIST training subset, then evaluates a test subset twice with the
same checkpoint: fp32 features (the default runtime), and bf16 features emulated at fp32
speed (`model.bf16.emulate_bf16`, torch eager; real bf16 autocast is ~10x slower than fp32
on a CPU without native bf16). Prints flat and zero-shot hit@k under each and the
differences in points. Asserts nothing. Run from the repository root:

    python bench/bench_bf16_emulated.py [--train 2000] [--test 1000]

Needs Fashion-MNIST offline (the Debian package dataset-fashion-mnist) or a download.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import report
from report import add_json_flag

ROWS = ("flat_hit@1", "flat_hit@5", "zeroshot_hit@1", "zeroshot_hit@5")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train", type=int, default=2000, help="training images (all 10 classes)")
    p.add_argument("--test", type=int, default=1000, help="test images (all 10 classes)")
    add_json_flag(p)
    args = p.parse_args()

    from app.cli.demo import DEMO_HOLDOUT
    from model.backbones import load_backbone
    from model.bf16 import emulate_bf16
    from model.data.datasets import export_fashion_mnist
    from model.evaluate import evaluate_checkpoint
    from model.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = root / "cache"
        export_fashion_mnist(root / "train", "train", limit=args.train, progress=False)
        export_fashion_mnist(root / "test", "test", limit=args.test, progress=False)
        ckpt = root / "devise.safetensors"
        t0 = time.perf_counter()
        cfg = TrainConfig(holdout=DEMO_HOLDOUT, cache_dir=cache)
        train(root / "train", ckpt, cfg)
        t_train = time.perf_counter() - t0

        t0 = time.perf_counter()
        fp32 = evaluate_checkpoint(root / "test", ckpt, cache_dir=cache)
        t_fp32 = time.perf_counter() - t0
        t0 = time.perf_counter()
        backbone = load_backbone(cfg.backbone, "default", "fp32", runtime="torch")
        with emulate_bf16(backbone):  # no cache_dir: these features are not fp32's
            bf16 = evaluate_checkpoint(root / "test", ckpt, backbone=backbone, batch_size=16)
        t_bf16 = time.perf_counter() - t0

    print(
        f"\nFashion-MNIST: {args.train} train, {args.test} test images "
        f"({fp32.counts['flat']} flat, {fp32.counts['zeroshot']} zero-shot: "
        f"{', '.join(fp32.holdout)}); efficientnet_lite0, DeViSE trained on fp32 features"
    )
    print(f"{'metric':<16}{'fp32':>8}{'bf16 (emulated)':>17}{'diff, points':>14}")
    for name, a, b in [(k, fp32.models["devise"], bf16.models["devise"]) for k in ROWS] + [
        ("softmax_hit@1", fp32.models["softmax"], bf16.models["softmax"])
    ]:
        key = "flat_hit@1" if name == "softmax_hit@1" else name
        x, y = (a or {}).get(key, float("nan")), (b or {}).get(key, float("nan"))
        print(f"{name:<16}{x:>8.4f}{y:>17.4f}{100 * (y - x):>+14.2f}")
    print(
        f"seconds: train {t_train:.1f} (incl. fp32 features), eval fp32 {t_fp32:.1f}, "
        f"eval emulated bf16 {t_bf16:.1f}"
    )


if __name__ == "__main__":
    report.run(__file__, main)
