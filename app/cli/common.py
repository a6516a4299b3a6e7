"""What every family of `devise` commands shares: the user-facing error, the settings and
store the flags name, the search service as the CLI runs it, and messages on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def cache_dir(args: argparse.Namespace) -> Path:
    """--cache, else the default cache folder."""
    from model.paths import default_cache_dir

    return Path(args.cache) if getattr(args, "cache", None) else default_cache_dir()


def read_settings(args: argparse.Namespace) -> Any:
    """The settings the flags name, the environment filling in the rest."""
    from app.settings import Settings

    return Settings.from_env(
        index=getattr(args, "index", None),
        qdrant_url=getattr(args, "qdrant_url", None),
        checkpoint=getattr(args, "checkpoint", None),
        precision=getattr(args, "precision", None),
    )


def open_store(args: argparse.Namespace) -> Any:
    """The settings and their store; CliError when the command needs an index that is not there."""
    settings = read_settings(args)
    if settings.qdrant_url is None and getattr(args, "must_exist", False):
        if not settings.index.exists():
            raise CliError(
                f"no index at {settings.index}: fill one with `devise ingest DIR`, "
                "or point --index / DEVISE_INDEX at it"
            )
    return settings, settings.open_store()


def absolute(path: Any) -> str | None:
    """A path as the app that holds the index reads it (absolute), or None."""
    return str(Path(path).expanduser().resolve()) if path else None


def say_waiting() -> Callable[[dict[str, Any]], None]:
    """Says once that a job sent to the app waits for the ingest before it."""
    said: list[bool] = []

    def on_progress(state: dict[str, Any]) -> None:
        if not said and state["state"] == "queued" and state["message"].startswith("waiting"):
            said.append(True)
            say(f"{state['message']}; this one starts after it")

    return on_progress


def cli_service(store: Any, settings: Any) -> Any:
    """The search service as the CLI runs it: notices on stderr, bars on a terminal."""
    from app.search.service import SearchService

    return SearchService(
        store,
        checkpoint=settings.checkpoint,
        precision=settings.precision,
        notify=say,
        progress=sys.stderr.isatty(),
    )


def say(text: str) -> None:
    """Print to stderr even when the text holds undecodable path bytes (surrogates)."""
    data = text.encode(sys.stderr.encoding or "utf-8", errors="backslashreplace")
    print(data.decode(sys.stderr.encoding or "utf-8", errors="replace"), file=sys.stderr)
