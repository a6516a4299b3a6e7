"""`devise serve` and `devise demo`: the commands that start the web app."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.common import CliError, _cache_dir, _settings
from app.remote import app_holding


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
