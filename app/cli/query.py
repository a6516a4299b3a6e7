"""`devise search`, `devise similar`, `devise tag` and `devise duplicates`: the commands
that ask the index, locally or through the app that holds it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

from app.cli.common import CliError, _abs, _open_store, _service, _settings
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
            print(f"{r.score:7.3f}  {r.kind:<8}  {r.word}")
    else:
        print(f"{'score':>7}  {'label':<16} path")
        for r in answer.results:
            exif = ", ".join(x for x in ((r.taken or "").replace("T", " "), r.camera or "") if x)
            # a path or folder name with a newline in it stays on its result's line
            label, path = printable(r.label[:16]), printable(r.path)
            print(f"{r.score:7.3f}  {label:<16} {path}" + (f"  ({exif})" if exif else ""))
    print(f"({len(answer.results)} results, {answer.model}, {answer.took_ms:.1f} ms)")


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
