"""The `devise` command line. Flags and environment are read here, once, and passed down.

Heavy imports (torch, gensim, qdrant) happen inside each command, so `devise --help` and
text searches stay quick.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from app.remote import app_holding

EXIT_USAGE = 2
EXIT_ERROR = 1


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= v < 1.0 or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def _when(text: str) -> str:
    """--after / --before: checked here (a bad date is a usage error), read by the service."""
    from app.search.filters import FilterError, parse_when

    try:
        parse_when(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _near(text: str) -> str:
    from app.search.filters import FilterError, parse_near

    try:
        parse_near(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _radius(text: str) -> float:
    from app.search.filters import FilterError, parse_radius

    try:
        return parse_radius(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _cache_dir(args: argparse.Namespace) -> Path:
    from model.paths import default_cache_dir

    return Path(args.cache) if getattr(args, "cache", None) else default_cache_dir()


# ---------------------------------------------------------------------------- commands


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


def _settings(args: argparse.Namespace) -> Any:
    from app.settings import Settings

    return Settings.from_env(
        index=getattr(args, "index", None),
        qdrant_url=getattr(args, "qdrant_url", None),
        checkpoint=getattr(args, "checkpoint", None),
        precision=getattr(args, "precision", None),
    )


def _open_store(args: argparse.Namespace) -> Any:
    settings = _settings(args)
    if settings.qdrant_url is None and getattr(args, "must_exist", False):
        if not settings.index.exists():
            raise CliError(
                f"no index at {settings.index}: fill one with `devise ingest DIR`, "
                "or point --index / DEVISE_INDEX at it"
            )
    return settings, settings.open_store()


def _model_options(args: argparse.Namespace) -> Any:
    """The flags that choose the models' weights, as plain values."""
    from app.search.embedders import ModelOptions

    clip_weights = getattr(args, "clip_weights", None)
    return ModelOptions(
        weights=args.weights,
        clip_model=getattr(args, "clip_model", "ViT-B-32"),
        clip_pretrained=getattr(args, "clip_pretrained", "laion2b_s34b_b79k"),
        clip_weights=Path(clip_weights) if clip_weights else None,
        cache_dir=_cache_dir(args),
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.pipeline import ingest

    settings = _settings(args)
    for d in args.dirs:
        if not Path(d).exists():
            raise CliError(f"not found: {d}")
    remote = app_holding(settings)
    if remote is not None:
        return _remote_ingest(args, settings, remote)
    from app.search.embedders import build_embedders

    embedders, extra = build_embedders(args.models, settings, _model_options(args))
    store = settings.open_store()
    try:
        if settings.shards or settings.replicas:
            store.ensure_collections(
                {e.name: e.dim for e in embedders},
                shard_number=settings.shards,
                replication_factor=settings.replicas,
            )
        summary = ingest(
            store,
            [Path(d) for d in args.dirs],
            embedders,
            prune=args.prune,
            reembed=args.reembed,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=not args.json and sys.stderr.isatty() or args.progress,
            model_meta=extra,
        )
        # points from before `folder_ids`, `camera_id` and `vectors` get them, once: the
        # folder and camera filters then check numbers, not names, and `devise status`
        # counts each vector's points from an index (qdrant/schema.py)
        filled = store.fill_numbers()
        if filled and not args.json:
            print(
                f"numbered the folders and cameras of {filled} image(s) indexed before: "
                "folder and camera filters now check numbers, and `devise status` counts "
                "from an index (faster on large libraries)",
                file=sys.stderr,
            )
        outdated = store.graphs_outdated()
        if outdated and not args.json:
            print(
                "rebuilding the search graphs with links per folder and label (built before "
                "them; minutes on a large library, once)",
                file=sys.stderr,
            )
        changed = summary.indexed or summary.moved or summary.pruned or filled
        if changed or outdated or store.graph_pending():
            # merges segments and builds the vectors' graphs where a segment has grown past
            # the indexing threshold (also when this run changed nothing but the app's
            # ingests left graphs unbuilt, or graphs were built with older settings), so
            # that searches and `devise duplicates` stay quick at 100k images. Here, not in
            # the web app's ingest: it holds the GIL.
            store.optimize()
        service = _service(store, settings)
        service.ensure_vocabulary()  # the first ingest loads the words
        clip = next((e for e in embedders if e.name == "clip"), None)
        if clip is not None:  # CLIP's tags then answer at once, from the words collection
            service.ensure_clip_vocabulary(clip)
    finally:
        store.close()
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        print(summary.line())
        if args.verbose and summary.batches:
            print(
                f"backbone waited {summary.wait_seconds / summary.batches * 1000:.1f} ms per "
                f"batch for the loader; embedding took {summary.embed_seconds:.1f}s"
            )
    return 0


def _abs(path: Any) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _say_waiting() -> Callable[[dict[str, Any]], None]:
    """Says once that a job sent to the app waits for the ingest before it."""
    said: list[bool] = []

    def on_progress(state: dict[str, Any]) -> None:
        if not said and state["state"] == "queued" and state["message"].startswith("waiting"):
            said.append(True)
            _say(f"{state['message']}; this one starts after it")

    return on_progress


def _remote_ingest(args: argparse.Namespace, settings: Any, remote: Any) -> int:
    """`devise ingest` run by the app that holds the index, in its background job: the same
    models, the same progress bar and the same summary."""
    from tqdm import tqdm

    options = {
        "models": list(args.models) if args.models is not None else None,
        "checkpoint": _abs(settings.checkpoint), "weights": _abs(args.weights),
        "clip_weights": _abs(args.clip_weights), "clip_model": args.clip_model,
        "clip_pretrained": args.clip_pretrained, "precision": settings.precision,
        "prune": args.prune, "reembed": args.reembed, "batch_size": args.batch_size,
        "workers": args.workers, "cache": _abs(args.cache),
    }  # fmt: skip
    show = not args.json and sys.stderr.isatty() or args.progress
    bar = tqdm(desc="ingest", unit="img", dynamic_ncols=True, disable=not show, file=sys.stderr)
    waiting = _say_waiting()

    def progress(state: dict[str, Any]) -> None:
        waiting(state)
        if state["total"] and bar.total != state["total"]:
            bar.total = state["total"]
            bar.refresh()
        step = min(state["done"], bar.total or state["done"]) - bar.n
        if step > 0:
            bar.update(step)

    try:
        state = remote.ingest([str(d) for d in args.dirs], options, on_progress=progress)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(state["summary"]))
    else:
        print(state["line"])
    return 0


def cmd_words(args: argparse.Namespace) -> int:
    from ingest.vocabulary import reload_vocabulary

    settings = _settings(args)
    top = None if args.all else args.top
    remote = app_holding(settings)
    if remote is not None:  # the app that holds the index loads them, in its ingest slot
        state = remote.words(args.words, top, on_progress=_say_waiting())
        print(state["line"])
        return 0
    store = settings.open_store()
    try:
        summary = reload_vocabulary(store, args.words, top, progress=sys.stderr.isatty())
    finally:
        store.close()
    print(summary.line())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from app.jobs.graph import BUSY
    from app.search.service import SearchService

    args.must_exist = True
    remote = app_holding(_settings(args))
    pending = 0
    building: dict[str, Any] = {}
    if remote is not None:
        st = remote.status(pending=not args.json)
        pending = int(st.pop("graph_pending", 0))
        building = st.pop("graph_build", None) or {}
    else:
        _, store = _open_store(args)
        try:
            service = SearchService(store)
            st = service.status()
            pending = 0 if args.json else service.graph_pending()
        finally:
            store.close()
    if args.json:
        print(json.dumps(st))
        return 0
    print(f"index   {st['index']}")
    print(f"images  {st['images']}")
    print(f"words   {st['words']}")
    for name, m in st["models"].items():
        made = ""
        if m.get("precision"):  # the precision of the last ingest, and any other ever used
            others = [p for p in m.get("precisions") or [] if p != m["precision"]]
            made = f", {m['precision']}" + (f" (also {', '.join(others)})" if others else "")
        print(f"model   {name}: {m['points']} points, {m['dim']} d{made}, id {m['id']}")
    if not st["models"]:
        print("model   none yet: `devise ingest DIR --checkpoint CKPT`")
    state = building.get("state")
    if remote is not None and state in BUSY:
        took = int(building.get("seconds") or 0)
        doing = {"copying": "copying the index for", "swapping": "putting in place"}
        print(
            f"search  exact for now: the app at {remote.url} is "
            f"{doing.get(state, 'building')} the search graph of {building.get('images')} "
            f"images in the background ({took // 60}:{took % 60:02d} so far); it answers "
            "meanwhile"
        )
    elif pending:
        if remote is None:
            builder = "the next `devise ingest` builds it"
        elif state == "failed":
            builder = (
                f"the app's background build failed: {building.get('message')}; stop the "
                "app, then `devise ingest` builds it"
            )
        else:
            builder = f"the app at {remote.url} starts building it in the background shortly"
        print(f"search  exact for now: {pending} vectors wait for their graph ({builder})")
    return 0


def _print_answer(answer: Any, as_json: bool, kind: str) -> None:
    if as_json:
        print(json.dumps(answer.to_json()))
        return
    from model.data.images import printable

    if answer.query is not None:
        print(f"query: {answer.query}")
    if not answer.results:
        # the note says why where the service knows (a filter that cannot match); it may
        # also say only which model answered, so it goes on a line of its own
        if answer.note:
            print(f"note: {answer.note}")
        what = "no tags" if kind == "tags" else "no results"
        hint = "" if answer.note or kind == "tags" else ": loosen the filters?"
        print(f"{what} ({answer.model}, {answer.took_ms:.1f} ms){hint}")
        return
    if answer.note:
        print(f"note: {answer.note}")
    if kind == "tags":
        print(f"{'score':>7}  {'kind':<8}  tag")
        for r in answer.results:
            print(f"{r.score:7.3f}  {r.kind:<8}  {r.word}")
    else:
        print(f"{'score':>7}  {'label':<16} path")
        for r in answer.results:
            exif = ", ".join(x for x in ((r.taken or "").replace("T", " "), r.camera or "") if x)
            # a path or folder name with a newline in it stays on its result's line
            label, path = printable(r.label[:16]), printable(r.path)
            print(f"{r.score:7.3f}  {label:<16} {path}" + (f"  ({exif})" if exif else ""))
    print(f"({len(answer.results)} results, {answer.model}, {answer.took_ms:.1f} ms)")


def _service(store: Any, settings: Any) -> Any:
    """The search service as the CLI runs it: notices on stderr, bars on a terminal."""
    from app.search.service import SearchService

    return SearchService(
        store,
        checkpoint=settings.checkpoint,
        precision=settings.precision,
        notify=_say,
        progress=sys.stderr.isatty(),
    )


def _request(args: argparse.Namespace, kind: str, image: Any = None) -> Any:
    """The query as the flags ask it, filters read once (a bad one is a BadQueryError)."""
    from app.search.request import Kind, QueryRequest

    fields: dict[str, Any] = {"model": args.model, "min_score": args.min_score, "k": args.k}
    if kind in ("search", "tag"):
        fields["zero_shot_bias"] = args.zero_shot_bias
    if kind == "search":
        fields["text"] = args.text
    if kind == "tag":
        return QueryRequest("tag", image=image, generality=args.generality, **fields)
    return QueryRequest.typed(
        cast(Kind, kind), after=args.after, before=args.before, cameras=args.camera or (),
        near=args.near, radius_km=args.radius_km, labels=args.label or (), folder=args.folder,
        image=image, **fields,
    )  # fmt: skip


def _remote_query(args: argparse.Namespace, kind: str, remote: Any) -> Any:
    """The answer of the app that holds the index, as an Answer to print."""
    from app.search.service import Answer, ImageResult, TagResult

    record = remote.record
    if args.checkpoint and _abs(args.checkpoint) != record.checkpoint:
        raise CliError(
            f"the app at {record.url} (PID {record.pid}) holds this index and answers with "
            "its own checkpoint: drop --checkpoint, or stop the app"
        )
    request = _request(args, kind)
    image = getattr(args, "image", None)
    data = remote.query(kind, request.to_json(), _image_arg(image) if image else None)
    results = [
        TagResult(r["word"], r["score"], r.get("kind", "word"))
        if "word" in r
        else ImageResult(
            r["path"], r["score"], r["label"], r["folder"], r.get("taken"), r.get("camera")
        )
        for r in data["results"]
    ]
    return Answer(data["model"], data["took_ms"], results, data.get("note"), data.get("query"))


def _query(args: argparse.Namespace, kind: str) -> int:
    # tagging needs no image in the index, so not even an index made yet
    args.must_exist = kind != "tag"
    remote = app_holding(_settings(args))
    if remote is not None:
        _print_answer(_remote_query(args, kind, remote), args.json, _kind(kind))
        return 0
    settings, store = _open_store(args)
    try:
        service = _service(store, settings)
        request = _request(args, kind)
        image = getattr(args, "image", None)
        if image:
            request = request.with_image(_image_arg(image))
        answer = service.run(request)
    finally:
        store.close()
    _print_answer(answer, args.json, _kind(kind))
    return 0


def _kind(kind: str) -> str:
    return "tags" if kind == "tag" else "images"


def _bias_flag(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument(
        "--zero-shot-bias", type=_bias, default="auto", metavar="auto|off|VALUE", help=help_text
    )


def _bias(text: str) -> str | float:
    if text in ("auto", "off"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--zero-shot-bias takes auto, off or a number, not {text!r}"
        ) from None
    if not -1.0 <= value <= 2.0 or value != value:
        raise argparse.ArgumentTypeError(f"--zero-shot-bias {text} is outside -1..2")
    return value


def _image_arg(text: str) -> Path:
    p = Path(text)
    if not p.exists():
        raise CliError(f"image not found: {text}")
    if p.is_dir():
        raise CliError(f"{text} is a folder; give one image file")
    return p


def cmd_search(args: argparse.Namespace) -> int:
    return _query(args, "search")


def cmd_similar(args: argparse.Namespace) -> int:
    return _query(args, "similar")


def cmd_tag(args: argparse.Namespace) -> int:
    return _query(args, "tag")


def cmd_duplicates(args: argparse.Namespace) -> int:
    from app.search.duplicates import human_date, human_size, small_note

    args.must_exist = True
    remote = app_holding(_settings(args))
    if remote is not None:
        report = _remote_duplicates(args, remote)
    else:
        settings, store = _open_store(args)
        try:
            report = _service(store, settings).duplicates(
                model=args.model, threshold=args.threshold, folder=args.folder
            )
        finally:
            store.close()
    if args.json:
        print(json.dumps(report.to_json()))
        return 0
    how = f"{report.model} >= {report.threshold:g}, {report.took_ms:.0f} ms"
    if report.small:
        print(small_note(report.small))
    if report.note:
        print(f"no duplicates ({how}): {report.note}")
        return 0
    if not report.groups:
        print(f"no duplicates among {report.scanned} images ({how})")
        return 0
    from model.data.images import printable

    for group in report.groups:
        print(f"{group.kind} · {len(group.images)} files")
        for im in group.images:
            score = "   -  " if im.score is None else f"{im.score:6.3f}"
            print(
                f"  {score}  {f'{im.width}x{im.height}':>11}  {human_size(im.bytes):>9}  "
                f"{human_date(im.mtime)}  {printable(im.path)}"
            )
    files = sum(len(g.images) for g in report.groups)
    print(
        f"({len(report.groups)} groups, {files} files, among {report.scanned} images; {how}; "
        "nothing was deleted)"
    )
    return 0


def _remote_duplicates(args: argparse.Namespace, remote: Any) -> Any:
    from app.search.duplicates import DuplicateGroup, DuplicateImage, DuplicateReport

    data = remote.duplicates(args.threshold, args.folder, args.model)
    groups = [
        DuplicateGroup(g["kind"], [DuplicateImage(**im) for im in g["images"]])
        for g in data["groups"]
    ]
    return DuplicateReport(
        data["model"], data["threshold"], data["took_ms"], groups, data["scanned"],
        data.get("note"), data.get("content_only", 0),
    )  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> int:
    from app.web import serve

    roots = [Path(r) for r in args.ingest_root] if args.ingest_root else None
    for w in args.watch or ():
        if not Path(w).is_dir():
            raise CliError(f"--watch: not a folder: {w}")
    settings = _settings(args)
    running = app_holding(settings)
    if running is not None:  # one app per index: the store admits one process
        raise CliError(
            f"the app already serves {settings.index} at {running.url} (PID "
            f"{running.record.pid}): open it there, or stop it first"
        )
    return serve(
        settings, host=args.host, port=args.port, auth=args.auth, ingest_roots=roots,
        watch=[Path(w) for w in args.watch] if args.watch else None, rescan_s=args.rescan,
    )  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> int:
    from app.cli.demo import run_demo

    return run_demo(
        Path(args.dir),
        launch=not args.no_launch,
        cache_dir=_cache_dir(args),
        settings=_settings(args),
        host=args.host,
        port=args.port,
        train_size=args.train,
        gallery_size=args.gallery,
    )


# ---------------------------------------------------------------------------- parser


def _device_flag(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--device",
        default=None,
        metavar="auto|cpu|cuda[:N]",
        help="where the models run: cuda (a GPU: mixed precision, larger batches, JPEGs "
        "decoded by nvJPEG), cpu (the OpenVINO fast path), or auto, the default: cuda when "
        "torch sees a GPU, else cpu ($DEVISE_DEVICE sets the default)",
    )


def _extract_batch(args: argparse.Namespace, cpu: int) -> int:
    """The --batch-size given, else the chosen device's default (larger on a GPU)."""
    from model.device import default_batch_size, default_device

    return int(args.batch_size or default_batch_size(default_device(), cpu=cpu))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="devise",
        description="DeViSE image search and tagging: images and words in one vector space.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    p.add_argument(
        "--cache",
        default=None,
        help="cache folder for features, compiled models and downloads "
        "(default $DEVISE_CACHE, else ~/.cache/devise-search)",
    )
    p.add_argument(
        "--runtime",
        choices=["auto", "openvino", "torch"],
        default=None,
        help="what runs the backbones: openvino (the fast path: the model compiled for this "
        "CPU, same results), torch (plain PyTorch), or auto, the default: openvino when "
        "installed ($DEVISE_RUNTIME sets the default)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("datasets", help="write a labelled dataset as class folders of images")
    d.add_argument("name", choices=["fashion-mnist", "imagenette"])
    d.add_argument("out", help="output folder")
    d.add_argument("--split", choices=["train", "test"], default="train")
    d.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="at most N images, taken evenly across classes",
    )
    d.set_defaults(func=cmd_datasets)

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
        type=_csv,
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
    t.add_argument("--epochs", type=_positive_int, default=40)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=_positive_int, default=256)
    _device_flag(t)
    t.add_argument("--val-fraction", type=_fraction, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=_positive_int, default=None, help="decode threads")
    t.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8", "auto"],
        default="fp32",
        help="backbone numerics for feature extraction (default fp32)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="compare models: hit@k, zero-shot hit@k, retrieval mAP, speed")
    e.add_argument("data", help="ImageFolder tree of test images")
    e.add_argument("--checkpoint", default=None, help="DeViSE checkpoint (needed for devise)")
    e.add_argument(
        "--models",
        type=_csv,
        default=(),
        help="comma-separated: devise,conse,clip (default: every one that can run here)",
    )
    e.add_argument(
        "--holdout",
        type=_csv,
        default=(),
        help="labels to score as zero-shot (default: the checkpoint's hold-out)",
    )
    e.add_argument("--weights", default=None, help="backbone weights file, if not the default")
    e.add_argument(
        "--batch-size", type=_positive_int, default=None, help="default 64 (256 on a GPU)"
    )
    _device_flag(e)
    e.add_argument("--workers", type=_positive_int, default=None)
    e.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture")
    e.add_argument(
        "--clip-pretrained", default="laion2b_s34b_b79k", help="open_clip pretrained tag"
    )
    e.add_argument(
        "--clip-weights", default=None, metavar="FILE", help="open_clip weights file for clip"
    )
    e.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8", "auto"],
        default="fp32",
        help="backbone numerics (default fp32)",
    )
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

    def index_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--index",
            default=None,
            help="embedded index folder (default $DEVISE_INDEX or ./data/index)",
        )
        sp.add_argument(
            "--qdrant-url",
            default=None,
            help="use a Qdrant server instead ($QDRANT_URL; key in $QDRANT_API_KEY)",
        )

    i = sub.add_parser("ingest", help="index folders of images (incremental, idempotent)")
    i.add_argument(
        "dirs", nargs="+", metavar="DIR",
        help="folders (or image files) to index: JPEG, PNG, GIF, WebP, BMP, TIFF, PNM, AVIF "
        "and HEIC (iPhones' photos); hidden files and folders are left out",
    )  # fmt: skip
    i.add_argument(
        "--checkpoint",
        default=None,
        help="DeViSE checkpoint ($DEVISE_CHECKPOINT); needed for --models devise",
    )
    i.add_argument(
        "--models",
        type=_csv,
        default=None,
        help="comma-separated models: devise,conse,clip,dup (default: every model that can "
        "run; dup is the near-duplicate vector that `devise duplicates` compares)",
    )
    i.add_argument(
        "--clip-model",
        default="ViT-B-32",
        help="open_clip architecture for clip (default ViT-B-32)",
    )
    i.add_argument(
        "--clip-pretrained",
        default="laion2b_s34b_b79k",
        help="open_clip pretrained tag for clip: its weights are looked for in open_clip's "
        "caches (the Hugging Face hub cache, ~/.cache/clip), else downloaded; its "
        "preprocessing and activation (quick-GELU for OpenAI's) are used with --clip-weights "
        "too (default laion2b_s34b_b79k)",
    )
    i.add_argument(
        "--clip-weights",
        default=None,
        metavar="FILE",
        help="open_clip weights file for clip (else the tag's weights in the local caches, or "
        "a download); the index is tied to the weights' content, not to where they were found",
    )
    i.add_argument("--weights", default=None, help="backbone weights file, if not the default")
    i.add_argument("--prune", action="store_true", help="delete points whose files are gone")
    i.add_argument(
        "--reembed",
        action="store_true",
        help="replace vectors made by a different model instead of refusing",
    )
    i.add_argument(
        "--batch-size", type=_positive_int, default=None, help="default 32 (256 on a GPU)"
    )
    _device_flag(i)
    i.add_argument("--workers", type=_positive_int, default=None, help="decode threads")
    i.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8", "auto"],
        default=None,
        help="backbone numerics: auto (the default: bf16 where the CPU has it natively, for "
        "the backbones measured to keep their results, see the README; else fp32), fp32, "
        "bf16, or int8 (OpenVINO post-training quantisation; CPU only; fastest, and moves "
        "some eval metrics by a little more than auto allows: see the README)",
    )
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar even when stderr is not a terminal",
    )
    index_flags(i)
    i.set_defaults(func=cmd_ingest)

    w = sub.add_parser("words", help="load the vocabulary's word vectors into the index")
    w.add_argument(
        "--words",
        default=None,
        help="word source (default: the one the DeViSE checkpoint was trained with)",
    )
    w.add_argument(
        "--top",
        type=_positive_int,
        default=100_000,
        help="the N most frequent alphabetic words (default 100000)",
    )
    w.add_argument("--all", action="store_true", help="the whole vocabulary")
    index_flags(w)
    w.set_defaults(func=cmd_words)

    st = sub.add_parser("status", help="what the index holds")
    st.add_argument("--json", action="store_true")
    index_flags(st)
    st.set_defaults(func=cmd_status)

    def query_flags(sp: argparse.ArgumentParser, filters: bool = True) -> None:
        sp.add_argument(
            "--model",
            choices=["devise", "conse", "clip"],
            default=None,
            help="which model's vectors answer (default: devise where the index holds them, "
            "else the first it holds: conse, then clip)",
        )
        if filters:
            sp.add_argument(
                "--label",
                action="append",
                default=None,
                help="only images with this label (repeatable: any of)",
            )
            sp.add_argument("--folder", default=None, help="only images under this folder")
            sp.add_argument(
                "--after",
                type=_when,
                default=None,
                metavar="DATE",
                help="only photos taken on or after DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], "
                "the camera's clock, from EXIF)",
            )
            sp.add_argument(
                "--before",
                type=_when,
                default=None,
                metavar="DATE",
                help="only photos taken before DATE (not on it: --after 2024-06-01 --before "
                "2024-07-01 is June)",
            )
            sp.add_argument(
                "--camera",
                action="append",
                default=None,
                metavar="NAME",
                help="only photos taken with a camera whose name (EXIF make and model) holds "
                "NAME, case-insensitively ('canon', 'pixel 7'); repeatable: any of",
            )
            sp.add_argument(
                "--near",
                type=_near,
                default=None,
                metavar="LAT,LON",
                help="only photos whose EXIF GPS position is within --radius-km of this point "
                "(decimal degrees)",
            )
            sp.add_argument(
                "--radius-km",
                type=_radius,
                default=None,
                metavar="KM",
                help="the radius around --near, in km (default 10)",
            )
        sp.add_argument("-k", type=int, default=10, help="number of results (1-1000)")
        sp.add_argument(
            "--min-score",
            type=float,
            default=None,
            help="drop results scoring below this cosine (0-1)",
        )
        sp.add_argument("--json", action="store_true", help="print JSON")
        # a usage error found after parsing (--radius-km alone) shows this command's usage
        sp.set_defaults(usage_error=sp.error)
        sp.add_argument(
            "--checkpoint",
            default=None,
            help="DeViSE checkpoint, if not the one that built the index",
        )
        sp.add_argument(
            "--precision",
            choices=["fp32", "bf16", "int8", "auto"],
            default=None,
            help="backbone numerics for an image the index has not embedded (as for ingest; "
            "default auto); text queries and indexed images need no backbone",
        )
        _device_flag(sp)
        index_flags(sp)

    s1 = sub.add_parser(
        "search",
        help="text -> images: find images of a compound query, such as 'beach 2:dog -people'",
        description="Terms: words, quoted phrases and image paths; 2:dog weighs a term, "
        "-people (or -2:people) subtracts one. Quote the whole query; one that starts with "
        "- goes after --.",
    )
    s1.add_argument("text", nargs="?", default="", help="the query (may be empty with --image)")
    s1.add_argument("--image", default=None, help="an example image, added to the query's terms")
    _bias_flag(
        s1,
        "devise: a query that is one of the checkpoint's labels ranks images by how "
        "far that label beats every other label, seen labels less this (calibrated "
        "stacking); auto: the checkpoint's value (default)",
    )
    query_flags(s1)
    s1.set_defaults(func=cmd_search)
    s2 = sub.add_parser("similar", help="image -> images: find images like this one")
    s2.add_argument("image")
    query_flags(s2)
    s2.set_defaults(func=cmd_similar)
    s3 = sub.add_parser(
        "tag",
        help="image -> tags: labels, their hypernyms and words for an image",
        description="Tags of an image, each with its kind: a label (a class a model knows, "
        "as a whole phrase), a hypernym (its WordNet generalisation: 'dog' for a German "
        "shepherd) or a frequent word. For conse the score is the probability of the classes "
        "under the tag; tags are ordered by how much they say (Deng et al.'s hedging), so a "
        "sure breed comes before 'dog', and 'dog' before 'animal'.",
    )
    s3.add_argument("image")
    s3.add_argument(
        "--generality",
        choices=["specific", "general"],
        default="specific",
        help="conse: prefer specific tags (a breed, 'espresso') or general ones ('dog', "
        "'drink'); default specific",
    )
    _bias_flag(
        s3,
        "devise: subtract this from the score of every label the checkpoint was "
        "trained on, so that unseen labels and plain words can win (calibrated "
        "stacking); auto: the value the checkpoint chose on validation (default)",
    )
    query_flags(s3, filters=False)
    s3.set_defaults(func=cmd_tag)

    dp = sub.add_parser(
        "duplicates",
        help="groups of near-duplicate images and of identical files (deletes nothing)",
        description="Groups of images whose vectors are within the threshold of each other "
        "(resized, recompressed or slightly cropped copies: 'near'), and of files with the "
        "same content (same sha256: 'exact'), the largest picture first, each with its "
        "dimensions, size and date, so you can choose what to keep. Nothing is deleted.",
    )
    dp.add_argument(
        "--model",
        default="dup",
        help="the vector compared: dup (default: the near-duplicate vector, which ingest "
        "stores), or devise, conse, clip (word-space vectors: poor at telling copies from "
        "look-alikes)",
    )
    dp.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine at or above which two images are near-duplicates, in (0, 1] "
        "(default 0.7 for dup, measured on planted copies: see the README)",
    )
    dp.add_argument("--folder", default=None, help="only images under this folder")
    dp.add_argument("--json", action="store_true", help="print JSON")
    index_flags(dp)
    dp.set_defaults(func=cmd_duplicates)

    sv = sub.add_parser("serve", help="start the web app")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=7860)
    sv.add_argument("--auth", default=None, help="user:pass for the web app ($DEVISE_AUTH)")
    sv.add_argument("--checkpoint", default=None)
    sv.add_argument(
        "--ingest-root",
        action="append",
        default=None,
        metavar="DIR",
        help="folders the app's Index box may index (repeatable; default: your home folder "
        "when bound to loopback, none otherwise)",
    )
    sv.add_argument(
        "--watch",
        nargs="+",
        action="extend",
        default=None,
        metavar="DIR",
        help="index new, changed, moved and deleted photos under these folders while the app "
        "runs (file events, in batches)",
    )
    sv.add_argument(
        "--rescan",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --watch: also re-walk the folders this often, for mounts that send no file "
        "events (default 300; 0: never)",
    )
    index_flags(sv)
    _device_flag(sv)
    sv.set_defaults(func=cmd_serve)

    m = sub.add_parser("demo", help="build the offline Fashion-MNIST demo and launch the web app")
    m.add_argument("--dir", default="data/demo", help="where the demo's data lives")
    m.add_argument("--no-launch", action="store_true", help="stop after building")
    m.add_argument(
        "--train",
        type=_positive_int,
        default=None,
        metavar="N",
        help="Fashion-MNIST images to train on (default 3000; CI builds a smaller demo)",
    )
    m.add_argument(
        "--gallery",
        type=_positive_int,
        default=None,
        metavar="N",
        help="Fashion-MNIST test images to index and search (default 1000)",
    )
    m.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    m.add_argument("--port", type=int, default=7860)
    index_flags(m)
    _device_flag(m)
    m.set_defaults(func=cmd_demo)
    return p


def _say(text: str) -> None:
    """Print to stderr even when the text holds undecodable path bytes (surrogates)."""
    data = text.encode(sys.stderr.encoding or "utf-8", errors="backslashreplace")
    print(data.decode(sys.stderr.encoding or "utf-8", errors="replace"), file=sys.stderr)


def _known_errors() -> tuple[type[BaseException], ...]:
    from app.search.errors import known_errors

    errors: list[type[BaseException]] = [CliError, *known_errors()]
    remote = sys.modules.get("app.remote")
    if remote is not None:
        errors.append(remote.RemoteError)
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "radius_km", None) is not None and not args.near:
        args.usage_error("--radius-km needs --near LAT,LON")
    from model.fastpath import set_default_runtime

    saved_cache = os.environ.get("DEVISE_CACHE")
    if args.cache:
        os.environ["DEVISE_CACHE"] = str(Path(args.cache).expanduser())
    saved_runtime = set_default_runtime(args.runtime) if args.runtime else None
    from model.device import set_default_device

    saved_device = set_default_device(None)
    try:
        return _run(args)
    finally:  # main() is also called in-process (tests, the demo): leave no trace
        set_default_device(saved_device)
        if saved_cache is None:
            os.environ.pop("DEVISE_CACHE", None)
        else:
            os.environ["DEVISE_CACHE"] = saved_cache
        if args.runtime:
            set_default_runtime(saved_runtime)


def _choose_device(args: argparse.Namespace) -> None:
    """Resolve --device (or $DEVISE_DEVICE) once, for the commands that run models, and make
    it this process's device; other commands never ask torch about CUDA."""
    if not hasattr(args, "device"):
        return
    from model.device import announce, prepare, resolve_device, set_default_device

    device = resolve_device(args.device)
    set_default_device(device)
    prepare(device)
    announce(device)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _choose_device(args)
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`devise search ... --json | head`): stop quietly, and point
        # stdout at devnull so that the interpreter's last flush raises nothing either
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - known errors print one line; others re-raise
        if isinstance(e, _known_errors()):
            _say(f"error: {e}")
            return EXIT_ERROR
        if args.verbose or os.environ.get("DEVISE_DEBUG"):
            raise
        _say(f"error: {type(e).__name__}: {e} (run with -v for the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
