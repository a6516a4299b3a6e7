"""`devise datasets`, `devise train` and `devise eval`: the commands that make and measure
models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.cli.common import CliError, _cache_dir, _say_waiting, _settings
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
        cache_dir=_cache_dir(args),
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
        cache_dir=_cache_dir(args),
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
        cache_dir=_cache_dir(args),
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
        text = tags_report(_cache_dir(args) / "photos", models)
        Path(args.report).write_text(text)
        print(f"wrote {args.report}")
    if args.record:
        record_evaluation(args, report.to_json(), Path(args.data))
    return 0


def record_evaluation(args: argparse.Namespace, data: dict[str, Any], where: Path) -> None:
    """Keep the table in the index's meta, where the web app's Compare tab shows it (through
    the app when one holds the index)."""
    from app.search.evaluation import record_in

    settings = _settings(args)
    data = dict(data, data=str(where.resolve()))
    remote = app_holding(settings)
    if remote is not None:
        state = remote.record_evaluation(data, on_progress=_say_waiting())
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
