"""The `devise` command line. Flags and environment are read here, once, and passed down.

This file is the way in: the root parser, `main`, and how errors end a command. Each family
of commands adds its own sub-parsers and holds its handlers (model.py: datasets, train, eval;
index.py: ingest, words, status; query.py: search, similar, tag, duplicates; serve.py: serve,
demo); flags.py defines the flags they share, common.py what else they share (CliError).

Heavy imports (torch, gensim, qdrant) happen inside each command, so `devise --help` and
text searches stay quick.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from app.cli import index, model, people, query, serve
from app.cli.common import CliError, say

# tests/test_gzsl.py checks the --zero-shot-bias type as app.cli._bias
from app.cli.flags import bias as _bias
from app.cli.query import _print_answer

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "CliError", "_bias", "_print_answer", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_ERROR = 1


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
    model.add_parsers(sub)
    index.add_parsers(sub)
    query.add_parsers(sub)
    people.add_parsers(sub)
    serve.add_parsers(sub)
    return p


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
            say(f"error: {e}")
            return EXIT_ERROR
        if args.verbose or os.environ.get("DEVISE_DEBUG"):
            raise
        say(f"error: {type(e).__name__}: {e} (run with -v for the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
