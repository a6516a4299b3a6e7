"""`devise ingest`, `devise words` and `devise status`: the commands that fill the index and
say what it holds. Each goes through the app when one holds the index."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.cli.common import (
    CliError,
    absolute,
    cache_dir,
    cli_service,
    open_store,
    read_settings,
    say_waiting,
)
from app.cli.flags import (
    comma_list,
    device_flag,
    face_side,
    index_flags,
    positive_int,
    precision_flag,
)
from app.remote import app_holding


def _model_options(args: argparse.Namespace) -> Any:
    """The flags that choose the models' weights, as plain values."""
    from app.search.embedders import ModelOptions

    clip_weights = getattr(args, "clip_weights", None)
    return ModelOptions(
        weights=args.weights,
        clip_model=getattr(args, "clip_model", "ViT-B-32"),
        clip_pretrained=getattr(args, "clip_pretrained", "laion2b_s34b_b79k"),
        clip_weights=Path(clip_weights) if clip_weights else None,
        cache_dir=cache_dir(args),
        regions=bool(getattr(args, "regions", False)),
    )


def _keep_regions(store: Any, embedders: list[Any], extra: dict[str, Any], quiet: bool) -> None:
    """An index made with --regions goes on reading them: a later ingest without the flag
    would leave its new photos without the parts its older ones have."""
    conse = next((e for e in embedders if e.name == "conse"), None)
    record = (store.get_meta().get("models") or {}).get("conse") or {}
    if conse is None or conse.regions or not record.get("regions"):
        return
    conse.regions = True
    extra.setdefault("conse", {})["regions"] = True
    if not quiet:
        print("this index reads photos' regions (made with --regions): so does this ingest",
              file=sys.stderr)  # fmt: skip


def cmd_ingest(args: argparse.Namespace) -> int:
    from ingest.pipeline import ingest

    settings = read_settings(args)
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
        _keep_regions(store, embedders, extra, bool(args.json))
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
        summary.faces = _face_pass(args, store)
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
        service = cli_service(store, settings)
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


def _remote_ingest(args: argparse.Namespace, settings: Any, remote: Any) -> int:
    """`devise ingest` run by the app that holds the index, in its background job: the same
    models, the same progress bar and the same summary."""
    from tqdm import tqdm

    options = {
        "models": list(args.models) if args.models is not None else None,
        "checkpoint": absolute(settings.checkpoint), "weights": absolute(args.weights),
        "clip_weights": absolute(args.clip_weights), "clip_model": args.clip_model,
        "clip_pretrained": args.clip_pretrained, "precision": settings.precision,
        "prune": args.prune, "reembed": args.reembed, "batch_size": args.batch_size,
        "workers": args.workers, "cache": absolute(args.cache), "regions": args.regions,
        "no_faces": args.no_faces, "face_detector": args.face_detector,
        "face_side": args.face_side,
    }  # fmt: skip
    show = not args.json and sys.stderr.isatty() or args.progress
    bar = tqdm(desc="ingest", unit="img", dynamic_ncols=True, disable=not show, file=sys.stderr)
    waiting = say_waiting()

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

    settings = read_settings(args)
    top = None if args.all else args.top
    remote = app_holding(settings)
    if remote is not None:  # the app that holds the index loads them, in its ingest slot
        state = remote.words(args.words, top, on_progress=say_waiting())
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
    remote = app_holding(read_settings(args))
    pending = 0
    building: dict[str, Any] = {}
    if remote is not None:
        st = remote.status(pending=not args.json)
        pending = int(st.pop("graph_pending", 0))
        building = st.pop("graph_build", None) or {}
    else:
        _, store = open_store(args)
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
    if st.get("faces"):
        faces = f"{st['faces']} face" + ("s" if st["faces"] != 1 else "")
        print(f"people  {st['people']} ({st['named']} named), from {faces}")
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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`devise ingest`, `devise words` and `devise status`."""
    _add_ingest(sub)
    _add_words(sub)
    _add_status(sub)


def _face_pass(args: argparse.Namespace, store: Any) -> Any:
    """The face stage after the embedding (ingest/faces.py): None when turned off or when
    dlib is absent (said on stderr)."""
    if args.no_faces:
        return None
    from app.jobs.faces import face_stage

    return face_stage(
        store,
        [Path(d) for d in args.dirs],
        detector=args.face_detector,
        side=args.face_side,
        progress=not args.json and sys.stderr.isatty() or args.progress,
        say=lambda text: print(text, file=sys.stderr),
    )


def _add_ingest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        type=comma_list,
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
        "--batch-size", type=positive_int, default=None, help="default 32 (256 on a GPU)"
    )
    device_flag(i)
    i.add_argument("--workers", type=positive_int, default=None, help="decode threads")
    precision_flag(
        i,
        None,
        "backbone numerics: auto (the default: bf16 where the CPU has it natively, for "
        "the backbones measured to keep their results, see docs/speed.md; else fp32), fp32, "
        "bf16, or int8 (OpenVINO post-training quantisation; CPU only; fastest, and moves "
        "some eval metrics by a little more than auto allows: see docs/speed.md)",
    )
    _add_seeing_flags(i)
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar even when stderr is not a terminal",
    )
    index_flags(i)
    i.set_defaults(func=cmd_ingest)


def _add_seeing_flags(i: argparse.ArgumentParser) -> None:
    """What ingest looks for beyond the whole photo: regions (issue #38) and faces (#37)."""
    i.add_argument(
        "--regions",
        action="store_true",
        help="conse also reads each photo's regions (a 3x3 grid of half-size crops), so tags "
        "and searches find what it holds beyond its main subject; about half the ingest rate "
        "(see docs/regions.md). An index made without them gets them on the next ingest "
        "with --regions; one made with them goes on reading them",
    )
    i.add_argument(
        "--no-faces",
        action="store_true",
        help="skip the face stage (finding faces and grouping them into people, after the "
        "embedding; docs/people.md)",
    )
    i.add_argument(
        "--face-detector",
        choices=("hog", "cnn"),
        default="hog",
        help="dlib's face detector: hog (the default, quick on a CPU) or cnn (faces at more "
        "angles, by dlib's account; about 20 s a photo on 2 CPU cores; docs/people.md)",
    )
    i.add_argument(
        "--face-side",
        type=face_side,
        default=None,
        metavar="PX",
        help="the longest side of the copy faces are looked for in (default 1024): a face "
        "narrower than about 80/PX of the photo's longest side is not found, so 1024 finds "
        "faces of 8%% of it and up, 3072 of 2.6%% (small faces in a group photo) at about 8 "
        "times the cost. Photos searched at a smaller side are searched again, and the index "
        "keeps the side for its later ingests, the app's included (docs/people.md)",
    )


def _add_words(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = sub.add_parser("words", help="load the vocabulary's word vectors into the index")
    w.add_argument(
        "--words",
        default=None,
        help="word source (default: the one the DeViSE checkpoint was trained with)",
    )
    w.add_argument(
        "--top",
        type=positive_int,
        default=100_000,
        help="the N most frequent alphabetic words (default 100000)",
    )
    w.add_argument("--all", action="store_true", help="the whole vocabulary")
    index_flags(w)
    w.set_defaults(func=cmd_words)


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = sub.add_parser("status", help="what the index holds")
    st.add_argument("--json", action="store_true")
    index_flags(st)
    st.set_defaults(func=cmd_status)
