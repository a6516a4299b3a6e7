"""Eval metrics, embedding agreement and tags at fp32, bf16 and int8, with real numerics.

For one DeViSE checkpoint and an ImageFolder test tree (the demo's: `devise demo
--no-launch` writes `data/demo/devise.safetensors` and `data/demo/gallery/fashion`), each
precision runs the backbone as `--precision` would (OpenVINO: `INFERENCE_PRECISION_HINT`
bf16, or the NNCF int8 model), each with its own feature cache, with the first-batch
fallback switched off so that the precision is measured, not replaced. Prints:

- every eval metric of devise, its softmax probe and conse, and the difference from fp32
  in points (the rule: within 0.5 points);
- the cosine of each image's features against fp32 (min, 1st and 10th percentile, mean);
- the photos whose top-5 tags (scikit-image's and darknet's photos) differ from fp32's.

Real bf16 needs a CPU with AVX-512 BF16 or AMX (elsewhere OpenVINO cannot run it and the
script says so). Run from the repository root:

    python bench/bench_precision.py [--checkpoint C] [--data D] [--precisions fp32,bf16,int8]

`--precisions fp32,fp32@torch` compares two fp32 implementations (OpenVINO's, PyTorch's):
how far a metric moves when only the order of floating-point sums changes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import report
from report import add_json_flag


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default="data/demo/devise.safetensors")
    p.add_argument("--data", default="data/demo/gallery/fashion")
    p.add_argument("--precisions", default="fp32,bf16,int8")
    p.add_argument("--cache", default=None, help="cache folder (default: a temporary one)")
    add_json_flag(p)
    args = p.parse_args()

    from bench.bench_tags import cpu_name
    from model import fastpath
    from model.backbones import Backbone, cpu_has_bf16, load_backbone
    from model.data.datasets import export_photos
    from model.data.features import extract_features, scan_image_folder
    from model.embedders.factory import available_models
    from model.evaluate import evaluate_models
    from model.quantize import DARKNET_PHOTOS
    from model.vocab.words import unit

    # measure each precision as it is: no first-batch fallback to fp32
    Backbone.BF16_MIN_COSINE = -1.0
    fastpath.SAME_VECTORS_COSINE = -1.0
    print(
        f"CPU: {cpu_name()}; native bf16: {cpu_has_bf16()} (OpenVINO: "
        f"{fastpath.openvino_has_bf16()})"
    )
    ckpt, data = Path(args.checkpoint), Path(args.data)
    paths = scan_image_folder(data).paths
    with tempfile.TemporaryDirectory() as tmp:
        cache_root = Path(args.cache) if args.cache else Path(tmp)
        photos = cache_root / "photos"
        export_photos(photos)
        photo_files = sorted(photos.glob("*.png")) + sorted(DARKNET_PHOTOS.glob("*.jpg"))
        reports: dict[str, dict[str, dict[str, float]]] = {}
        feats: dict[str, np.ndarray] = {}
        tags: dict[str, list[list[str]]] = {}
        for run in args.precisions.split(","):
            # `fp32@torch`: fp32 in PyTorch, to see how far two fp32 implementations differ
            prec, _, runtime = run.partition("@")
            fastpath.set_default_runtime(runtime or None)
            cache = cache_root / f"cache-{run}"  # features of one precision only
            avail = available_models(["devise", "conse"], checkpoint=ckpt, precision=prec)
            devise, conse = avail.models["devise"], avail.models["conse"]
            assert devise is not None and conse is not None, avail.messages
            meta = devise.meta  # type: ignore[attr-defined]
            # the checkpoint's own backbone weights where it names a file (a resnet50 trained
            # on a weights file), else the packaged ImageNet ones
            bb = load_backbone(meta["backbone"], meta.get("weights_path") or "default", prec)
            devise.set_backbone(bb)  # type: ignore[attr-defined]
            conse.set_backbone(bb)  # type: ignore[attr-defined]
            f = extract_features(bb, paths, cache_dir=cache, desc=f"{run} features")
            if bb.precision != prec:
                print(f"{prec}: not available here (ran {bb.precision}); skipped")
                continue
            if runtime and bb.runtime != runtime:
                print(f"{run}: not available here (ran {bb.runtime}); skipped")
                continue
            feats[run] = unit(f.features)
            report = evaluate_models(data, {"devise": devise, "conse": conse}, cache_dir=cache)
            reports[run] = {k: v for k, v in report.models.items() if v is not None}
            probs = conse.probs_images(  # type: ignore[attr-defined]
                [_open(p) for p in photo_files]
            )
            tags[run] = [_top_tags(row) for row in probs]
        _print(reports, feats, tags, [p.name for p in photo_files])


def _open(path: Path):  # type: ignore[no-untyped-def]
    from model.data.images import decode_image

    return decode_image(path)


def _top_tags(probs: np.ndarray, k: int = 5) -> list[str]:
    from model.vocab.hierarchy import imagenet_concepts

    return [c.name for c, _ in imagenet_concepts().ranked(probs, k)]


def _print(
    reports: dict[str, dict[str, dict[str, float]]],
    feats: dict[str, np.ndarray],
    tags: dict[str, list[list[str]]],
    photo_names: list[str],
) -> None:
    base = reports.get("fp32")
    if base is None:
        return
    for prec, rep in reports.items():
        if prec == "fp32":
            continue
        print(f"\n{prec} against fp32 (points; the rule: every metric within 0.5)")
        worst = 0.0
        for model, metrics in rep.items():
            for key, value in metrics.items():
                if key == "ms_per_image" or key not in base.get(model, {}):
                    continue
                ref = base[model][key]
                d = (value - ref) * 100
                if model in ("devise", "softmax"):
                    worst = max(worst, abs(d))
                print(f"  {model:8s} {key:20s} fp32 {ref:.3f}  {prec} {value:.3f}  {d:+.2f}")
        c = (feats[prec] * feats["fp32"]).sum(axis=1)
        print(
            f"  devise and softmax: largest change {worst:.2f} points "
            f"({'holds' if worst <= 0.5 + 1e-9 else 'MISSES'} the 0.5-point rule)\n"
            f"  feature cosine against fp32 over {len(c)} images: min {c.min():.4f}, "
            f"p1 {np.percentile(c, 1):.4f}, p10 {np.percentile(c, 10):.4f}, mean {c.mean():.5f}"
        )
        changed = [
            (n, a, b)
            for n, a, b in zip(photo_names, tags["fp32"], tags[prec], strict=True)
            if a != b
        ]
        print(f"  conse top-5 tags on {len(photo_names)} real photos: {len(changed)} differ")
        for n, a, b in changed:
            print(f"    {n}: fp32 {', '.join(a)} | {prec} {', '.join(b)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    report.run(__file__, main)
