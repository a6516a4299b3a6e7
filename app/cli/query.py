"""`devise search`, `devise similar`, `devise tag` and `devise duplicates`: the commands
that ask the index, locally or through the app that holds it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

from app.cli.common import CliError, absolute, cli_service, open_store, read_settings
from app.cli.flags import bias_flag, index_flags, query_flags
from app.remote import app_holding


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
            print(f"{r.score:7.3f}  {r.kind:<8}  {r.word}" + (_part(r.box) if r.box else ""))
    else:
        print(f"{'score':>7}  {'label':<16} path")
        weak = False
        for r in answer.results:
            if r.weak and not weak:
                weak = True  # where evidence ends: what follows shows no sign of the query
                print("  -- weaker matches: no evidence of the query in these --")
            exif = ", ".join(x for x in ((r.taken or "").replace("T", " "), r.camera or "") if x)
            # a path or folder name with a newline in it stays on its result's line
            label, path = printable(r.label[:16]), printable(r.path)
            where = "  " + "; ".join(_part(b).strip() for b in r.boxes) if r.boxes else ""
            print(f"{r.score:7.3f}  {label:<16} {path}" + (f"  ({exif})" if exif else "") + where)
    print(f"({len(answer.results)} results, {answer.model}, {answer.took_ms:.1f} ms)")


def _part(box: list[float]) -> str:
    """A region's box as a reader sees it: `  (part: x 0.50-1.00, y 0.00-0.50)`."""
    x0, y0, x1, y1 = box
    return f"  (part: x {x0:.2f}-{x1:.2f}, y {y0:.2f}-{y1:.2f})"


def _request(args: argparse.Namespace, kind: str) -> Any:
    """The query as the flags ask it. The flag types have read each date and the place;
    here they are checked together, once (an empty date range is a BadQueryError)."""
    from app.search.filters import checked_photo_filter, read_people
    from app.search.request import Kind, QueryRequest

    fields: dict[str, Any] = {"model": args.model, "min_score": args.min_score, "k": args.k}
    if kind in ("search", "tag"):
        fields["zero_shot_bias"] = args.zero_shot_bias
    if kind == "search":
        fields["text"] = args.text
    if kind == "tag":
        return QueryRequest("tag", generality=args.generality, **fields)
    photo = checked_photo_filter(
        after=args.after, before=args.before, cameras=args.camera or (), near=args.near,
        radius_km=args.radius_km,
    )  # fmt: skip
    return QueryRequest(
        cast(Kind, kind), labels=tuple(args.label or ()), folder=args.folder, photo=photo,
        people=read_people(args.person or ()), **fields,
    )  # fmt: skip


def _remote_query(args: argparse.Namespace, kind: str, remote: Any) -> Any:
    """The answer of the app that holds the index, as an Answer to print."""
    from app.search.service import Answer, ImageResult, TagResult

    record = remote.record
    if args.checkpoint and absolute(args.checkpoint) != record.checkpoint:
        raise CliError(
            f"the app at {record.url} (PID {record.pid}) holds this index and answers with "
            "its own checkpoint: drop --checkpoint, or stop the app"
        )
    request = _request(args, kind)
    image = getattr(args, "image", None)
    data = remote.query(kind, request.to_json(), _image_arg(image) if image else None)
    results = [
        TagResult.from_json(r) if "word" in r else ImageResult.from_json(r) for r in data["results"]
    ]
    return Answer(data["model"], data["took_ms"], results, data.get("note"), data.get("query"))


def _query(args: argparse.Namespace, kind: str) -> int:
    # tagging needs no image in the index, so not even an index made yet
    args.must_exist = kind != "tag"
    remote = app_holding(read_settings(args))
    if remote is not None:
        _print_answer(_remote_query(args, kind, remote), args.json, _kind(kind))
        return 0
    settings, store = open_store(args)
    try:
        service = cli_service(store, settings)
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
    remote = app_holding(read_settings(args))
    if remote is not None:
        report = _remote_duplicates(args, remote)
    else:
        settings, store = open_store(args)
        try:
            report = cli_service(store, settings).duplicates(
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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`devise search`, `devise similar`, `devise tag` and `devise duplicates`."""
    _add_search(sub)
    _add_similar(sub)
    _add_tag(sub)
    _add_duplicates(sub)


def _add_search(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s1 = sub.add_parser(
        "search",
        help="text -> images: find images of a compound query, such as 'beach 2:dog -people'",
        description="Terms: words, quoted phrases and image paths; 2:dog weighs a term, "
        "-people (or -2:people) subtracts one. Quote the whole query; one that starts with "
        "- goes after --.",
    )
    s1.add_argument("text", nargs="?", default="", help="the query (may be empty with --image)")
    s1.add_argument("--image", default=None, help="an example image, added to the query's terms")
    bias_flag(
        s1,
        "devise: a query that is one of the checkpoint's labels ranks images by how "
        "far that label beats every other label, seen labels less this (calibrated "
        "stacking); auto: the checkpoint's value (default)",
    )
    query_flags(s1)
    s1.set_defaults(func=cmd_search)


def _add_similar(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s2 = sub.add_parser("similar", help="image -> images: find images like this one")
    s2.add_argument("image")
    query_flags(s2)
    s2.set_defaults(func=cmd_similar)


def _add_tag(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    bias_flag(
        s3,
        "devise: subtract this from the score of every label the checkpoint was "
        "trained on, so that unseen labels and plain words can win (calibrated "
        "stacking); auto: the value the checkpoint chose on validation (default)",
    )
    query_flags(s3, filters=False)
    s3.set_defaults(func=cmd_tag)


def _add_duplicates(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "(default 0.7 for dup, measured on planted copies: see docs/duplicates.md)",
    )
    dp.add_argument("--folder", default=None, help="only images under this folder")
    dp.add_argument("--json", action="store_true", help="print JSON")
    index_flags(dp)
    dp.set_defaults(func=cmd_duplicates)
