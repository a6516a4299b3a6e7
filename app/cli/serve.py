"""`devise serve` and `devise demo`: the commands that start the web app."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.common import CliError, cache_dir, read_settings
from app.cli.flags import device_flag, index_flags, positive_int
from app.remote import app_holding


def cmd_serve(args: argparse.Namespace) -> int:
    from app.web import serve

    roots = [Path(r) for r in args.ingest_root] if args.ingest_root else None
    for w in args.watch or ():
        if not Path(w).is_dir():
            raise CliError(f"--watch: not a folder: {w}")
    settings = read_settings(args)
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
        cache_dir=cache_dir(args),
        settings=read_settings(args),
        host=args.host,
        port=args.port,
        train_size=args.train,
        gallery_size=args.gallery,
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`devise serve` and `devise demo`."""
    _add_serve(sub)
    _add_demo(sub)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    device_flag(sv)
    sv.set_defaults(func=cmd_serve)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("demo", help="build the offline Fashion-MNIST demo and launch the web app")
    m.add_argument("--dir", default="data/demo", help="where the demo's data lives")
    m.add_argument("--no-launch", action="store_true", help="stop after building")
    m.add_argument(
        "--train",
        type=positive_int,
        default=None,
        metavar="N",
        help="Fashion-MNIST images to train on (default 3000; CI builds a smaller demo)",
    )
    m.add_argument(
        "--gallery",
        type=positive_int,
        default=None,
        metavar="N",
        help="Fashion-MNIST test images to index and search (default 1000)",
    )
    m.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    m.add_argument("--port", type=int, default=7860)
    index_flags(m)
    device_flag(m)
    m.set_defaults(func=cmd_demo)
