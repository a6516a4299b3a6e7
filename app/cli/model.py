"""`devise datasets`, `devise train` and `devise eval`: the commands that make and measure
models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.cli.common import CliError, cache_dir, read_settings, say_waiting
from app.cli.flags import comma_list, device_flag, fraction, positive_int, precision_flag
from app.remote import app_holding


def cmd_datasets(args: argparse.Namespace) -> int:
    import model.data.datasets as datasets

    out = Path(args.out)
    if args.name == "fashion-mnist":
        counts = datasets.export_fashion_mnist(out, split=args.split, limit=args.limit)
    elif args.name == "imagenette":
        counts = datasets.export_imagenette(out)
    else:  # pragma: no cover - argparse restricts choices
        raise CliError(f"unknown dataset {args.name}")
    total = sum(counts.values()) if isinstance(counts, dict) else counts
    print(f"wrote {total} images in {len(counts)} class folders under {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from model.train import TrainConfig, train

    cfg = TrainConfig(
        backbone=args.backbone,
        weights=args.weights or "default",
        words=args.words,
        holdout=args.holdout,
        loss=args.loss,
        head=args.head,
        margin=args.margin,
        hypernym_weight=args.hypernym_weight,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        val_fraction=args.val_fraction,
        seed=args.seed,
        workers=args.workers,
        precision=args.precision,
        cache_dir=cache_dir(args),
        finetune_epochs=args.finetune,
        extract_batch_size=_extract_batch(argparse.Namespace(batch_size=None), cpu=64),
    )
    result = train(Path(args.data), Path(args.out), cfg)
    m = result.metrics
    print(f"checkpoint {result.checkpoint} (content {result.content_hash})")
    print(
        f"validation: devise hit@1 {m['val_flat_hit@1']:.3f} hit@5 {m['val_flat_hit@5']:.3f} | "
        f"softmax hit@1 {m['val_softmax_hit@1']:.3f} hit@5 {m['val_softmax_hit@5']:.3f} | "
        f"loss {m['train_loss_first']:.4f} -> {m['train_loss_best']:.4f} | "
        f"fit {m['fit_seconds']:.1f}s"
        + (f" | features {m['extract_img_per_s']:.1f} img/s" if "extract_img_per_s" in m else "")
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from model.embedders.factory import EMBEDDER_NAMES, available_models
    from model.evaluate import evaluate_models, tags_report

    requested = [m for m in (args.models or ()) if m != "softmax"]
    unknown = sorted(set(requested) - set(EMBEDDER_NAMES))
    if unknown:
        raise CliError(
            f"--models: unknown {', '.join(unknown)}; choose from {', '.join(EMBEDDER_NAMES)}"
        )
    explicit = bool(requested)
    names = requested or list(EMBEDDER_NAMES)
    if explicit and "devise" in names and not args.checkpoint:
        raise CliError("--models devise needs --checkpoint CKPT (from `devise train`)")
    avail = available_models(
        names,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        weights=args.weights,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
        clip_weights=Path(args.clip_weights) if args.clip_weights else None,
        precision=args.precision,
        cache_dir=cache_dir(args),
    )
    models = avail.models
    if not explicit:
        # By default every model that can run here; say once why the others cannot.
        models = {n: m for n, m in models.items() if m is not None or n == "clip"}
    for name, message in avail.messages.items():
        if name in models:
            print(message, file=sys.stderr)
    if all(m is None for m in models.values()):
        raise CliError("no model to evaluate: " + "; ".join(avail.messages.values()))
    report = evaluate_models(
        Path(args.data),
        models,
        holdout=args.holdout or None,
        batch_size=_extract_batch(args, cpu=64),
        workers=args.workers,
        cache_dir=cache_dir(args),
    )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(report.table())
    print(
        f"({report.counts.get('images', 0)} test images, {report.counts.get('zeroshot', 0)} "
        f"of them hold-out; {len(report.labels)} labels; hold-out: "
        f"{', '.join(report.holdout) or 'none'})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2))
        print(f"wrote {args.json}")
    if args.report:
        text = tags_report(cache_dir(args) / "photos", models)
        Path(args.report).write_text(text)
        print(f"wrote {args.report}")
    if args.record:
        record_evaluation(args, report.to_json(), Path(args.data))
    return 0


def record_evaluation(args: argparse.Namespace, data: dict[str, Any], where: Path) -> None:
    """Keep the table in the index's meta, where the web app's Compare tab shows it (through
    the app when one holds the index)."""
    from app.search.evaluation import record_in

    settings = read_settings(args)
    data = dict(data, data=str(where.resolve()))
    remote = app_holding(settings)
    if remote is not None:
        state = remote.record_evaluation(data, on_progress=say_waiting())
        print(state["line"])
        return
    store = settings.open_store()
    try:
        print(record_in(store, data).line())
    finally:
        store.close()


def _extract_batch(args: argparse.Namespace, cpu: int) -> int:
    """The --batch-size given, else the chosen device's default (larger on a GPU)."""
    from model.device import default_batch_size, default_device

    return int(args.batch_size or default_batch_size(default_device(), cpu=cpu))


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`devise datasets`, `devise train` and `devise eval`."""
    _add_datasets(sub)
    _add_train(sub)
    _add_eval(sub)


def _add_datasets(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("datasets", help="write a labelled dataset as class folders of images")
    d.add_argument("name", choices=["fashion-mnist", "imagenette"])
    d.add_argument("out", help="output folder")
    d.add_argument("--split", choices=["train", "test"], default="train")
    d.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="at most N images, taken evenly across classes",
    )
    d.set_defaults(func=cmd_datasets)


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("train", help="train a DeViSE projection on an ImageFolder tree")
    t.add_argument("data", help="folder with one sub-folder of images per label")
    t.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    t.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        choices=["efficientnet_lite0", "resnet50", "resnet18"],
        help="ImageNet backbone (efficientnet_lite0 works offline)",
    )
    t.add_argument(
        "--weights",
        default=None,
        help="backbone weights file (.pth/.safetensors); default: ImageNet weights",
    )
    t.add_argument(
        "--words",
        default="glove-6b-50d",
        help="word vectors: glove-6b-50d (packaged), a .txt/.bin path, or a gensim "
        "downloader name such as glove-wiki-gigaword-300",
    )
    t.add_argument(
        "--holdout",
        type=comma_list,
        default=(),
        help="comma-separated labels to keep out of training (zero-shot test)",
    )
    t.add_argument(
        "--loss",
        choices=["hinge", "cosine", "hinge+cosine", "hinge-dist"],
        default="hinge",
        help="hinge rank loss (the paper), cosine regression (the blog article), both summed, "
        "or hinge with a margin growing with the labels' word distance",
    )
    t.add_argument(
        "--head",
        choices=["linear", "mlp"],
        default="linear",
        help="linear projection (the paper) or Dense-BN-Dropout-Dense",
    )
    t.add_argument("--margin", type=float, default=0.1, help="hinge margin (default 0.1)")
    t.add_argument(
        "--hypernym-weight",
        type=float,
        default=0.5,
        help="move each label's vector towards its 3 nearest WordNet hypernyms by this "
        "weight (sandal and sneaker share shoe, footwear): unseen labels then land near their "
        "seen relatives; 0 turns it off (default 0.5, the best on validation)",
    )
    t.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="after the projection, also train the backbone's last stage for this "
        "many epochs (slow on a CPU: images are decoded every epoch)",
    )
    t.add_argument("--epochs", type=positive_int, default=40)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=positive_int, default=256)
    device_flag(t)
    t.add_argument("--val-fraction", type=fraction, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=positive_int, default=None, help="decode threads")
    precision_flag(t, "fp32", "backbone numerics for feature extraction (default fp32)")
    t.set_defaults(func=cmd_train)


def _add_eval(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("eval", help="compare models: hit@k, zero-shot hit@k, retrieval mAP, speed")
    e.add_argument("data", help="ImageFolder tree of test images")
    e.add_argument("--checkpoint", default=None, help="DeViSE checkpoint (needed for devise)")
    e.add_argument(
        "--models",
        type=comma_list,
        default=(),
        help="comma-separated: devise,conse,clip (default: every one that can run here)",
    )
    e.add_argument(
        "--holdout",
        type=comma_list,
        default=(),
        help="labels to score as zero-shot (default: the checkpoint's hold-out)",
    )
    e.add_argument("--weights", default=None, help="backbone weights file, if not the default")
    e.add_argument(
        "--batch-size", type=positive_int, default=None, help="default 64 (256 on a GPU)"
    )
    device_flag(e)
    e.add_argument("--workers", type=positive_int, default=None)
    e.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture")
    e.add_argument(
        "--clip-pretrained", default="laion2b_s34b_b79k", help="open_clip pretrained tag"
    )
    e.add_argument(
        "--clip-weights", default=None, metavar="FILE", help="open_clip weights file for clip"
    )
    precision_flag(e, "fp32", "backbone numerics (default fp32)")
    e.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
    e.add_argument(
        "--report",
        default=None,
        metavar="FILE",
        help="write each model's top tags on scikit-image's photos (markdown)",
    )
    e.add_argument(
        "--record",
        action="store_true",
        help="also keep the table in the index, for the web app's Compare tab",
    )
    e.add_argument("--index", default=None, help="index for --record (default ./data/index)")
    e.add_argument("--qdrant-url", default=None, help="Qdrant server for --record")
    e.set_defaults(func=cmd_eval)
