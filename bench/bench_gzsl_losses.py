"""GZSL table per loss on the demo split: gamma (chosen on validation), seen/unseen hit@1,
H, AUSUC, flat hit@1 and softmax hit@1 on the gallery.

    python bench/bench_gzsl.py [--data /tmp/b-data/demo] [--losses hinge,hinge+cosine]

Training reads cached features, so each row costs seconds plus the gallery's features once.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import report
from report import add_json_flag

from app.cli.demo import DEMO_HOLDOUT
from model.evaluate import evaluate_checkpoint
from model.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("data/demo"))
    ap.add_argument("--losses", default="hinge,hinge+cosine,hinge-dist,cosine")
    ap.add_argument("--hypernym-weight", type=float, default=1.0)
    add_json_flag(ap)
    args = ap.parse_args()
    keys = ("gamma", "gzsl_seen@1", "gzsl_unseen@1", "gzsl_H", "ausuc", "flat_hit@1")
    print("| loss | " + " | ".join(keys) + " | softmax_hit@1 |")
    print("|---" * (len(keys) + 2) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for loss in args.losses.split(","):
            ckpt = Path(tmp) / f"{loss}.safetensors"
            cfg = TrainConfig(
                holdout=DEMO_HOLDOUT,
                loss=loss,
                hypernym_weight=args.hypernym_weight,  # type: ignore[arg-type]
            )
            train(args.data / "train", ckpt, cfg)
            rep = evaluate_checkpoint(args.data / "gallery" / "fashion", ckpt).to_json()
            models = rep.get("models") or {}
            row = models.get("devise") or {}
            soft = (models.get("softmax") or {}).get("flat_hit@1", float("nan"))
            cells = [f"{float(row.get(k, float('nan'))):.3f}" for k in keys]
            print(f"| {loss} | " + " | ".join(cells) + f" | {float(soft):.3f} |", flush=True)


if __name__ == "__main__":
    report.run(__file__, main)
