"""Generalised zero-shot on the demo split: seen and unseen hit@1, H and AUSUC per variant.

Trains DeViSE (efficientnet_lite0 + GloVe 50d) on the demo's training folder with `sandal`
and `shirt` held out, once per variant (loss, and how far label vectors move towards their
WordNet hypernyms), and evaluates the demo's gallery. gamma is the one each checkpoint chose
on validation (model/train.py `calibrate`); "best H" is the test curve's own best, shown only
to judge the choice; "val H" and "val AUSUC" are the validation folds' (simulated unseen
labels), the only figures a choice of variant may rest on. Features come from the cache, so
a variant takes seconds. Asserts nothing. From the repository root, after `devise demo --no-launch`:

    python bench/bench_gzsl.py [--train data/demo/train] [--test data/demo/gallery/fashion]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import report
from report import add_json_flag

VARIANTS = (
    ("hinge, plain label vectors", {"loss": "hinge", "hypernym_weight": 0.0}),
    ("cosine, plain label vectors", {"loss": "cosine", "hypernym_weight": 0.0}),
    ("hinge, margin 0.3", {"loss": "hinge", "hypernym_weight": 0.0, "margin": 0.3}),
    ("hinge, hypernyms 0.5 (default)", {"loss": "hinge", "hypernym_weight": 0.5}),
    ("hinge, hypernyms 1.0", {"loss": "hinge", "hypernym_weight": 1.0}),
    ("hinge, hypernyms 2.0", {"loss": "hinge", "hypernym_weight": 2.0}),
    ("hinge, hypernyms 3.0", {"loss": "hinge", "hypernym_weight": 3.0}),
    ("cosine, hypernyms 1.0", {"loss": "cosine", "hypernym_weight": 1.0}),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train", type=Path, default=Path("data/demo/train"))
    p.add_argument("--test", type=Path, default=Path("data/demo/gallery/fashion"))
    add_json_flag(p)
    args = p.parse_args()

    import numpy as np
    from bench_tags import cpu_name  # type: ignore[import-not-found]

    from model import gzsl
    from model.data.features import extract_features, scan_image_folder
    from model.embedders.embedder import DeviseEmbedder
    from model.evaluate import evaluate_checkpoint
    from model.paths import default_cache_dir
    from model.train import TrainConfig, train

    print(f"CPU: {cpu_name()}")
    print(f"train {args.train}, test {args.test}, hold-out sandal, shirt\n")
    head = (
        f"{'variant':<32}{'flat@1':>8}{'softmax':>8}{'gamma':>7}{'seen@1':>8}{'unseen@1':>9}"
        f"{'H':>7}{'AUSUC':>7}{'best H':>8}{'val H':>7}{'val AUSUC':>10}"
    )
    print(head + "\n" + "-" * len(head))
    tmp = Path(tempfile.mkdtemp(prefix="bench-gzsl-"))
    cache = default_cache_dir()  # the features, once for all variants
    data = scan_image_folder(args.test)
    for name, opts in VARIANTS:
        cfg = TrainConfig(holdout=("sandal", "shirt"), cache_dir=cache, **opts)  # type: ignore[arg-type]
        ckpt = tmp / "devise.safetensors"
        train(args.train, ckpt, cfg)
        rep = evaluate_checkpoint(args.test, ckpt, cache_dir=cache)
        d, sm = rep.models["devise"] or {}, rep.models["softmax"] or {}
        # the test curve's own best H, to judge how well validation chose gamma
        model = DeviseEmbedder(ckpt)
        feats = extract_features(model.backbone, data.paths, desc="test", cache_dir=cache)
        labels = list(model.labels)
        y = np.asarray([labels.index(data.labels[t]) for t in data.targets[feats.ok]])
        scores = model.embed_features(feats.features) @ model.label_matrix(labels).T
        seen = [labels.index(x) for x in model.meta["seen"]]
        unseen = [labels.index(x) for x in model.meta["holdout"]]
        best = float(gzsl.curve(scores, y, seen, unseen).h.max())
        cal = model.meta.get("calibration") or {}
        nan = float("nan")
        print(
            f"{name:<32}{d['flat_hit@1']:>8.3f}{sm.get('flat_hit@1', float('nan')):>8.3f}"
            f"{d['gamma']:>7.3f}{d['gzsl_seen@1']:>8.3f}{d['gzsl_unseen@1']:>9.3f}"
            f"{d['gzsl_H']:>7.3f}{d['ausuc']:>7.3f}{best:>8.3f}"
            f"{cal.get('val_gzsl_H', nan):>7.3f}{cal.get('val_ausuc', nan):>10.3f}",
            flush=True,
        )


if __name__ == "__main__":
    report.run(__file__, main)
