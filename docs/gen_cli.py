"""Write docs/cli.md, the CLI reference, from the real argparse parser.

    python docs/gen_cli.py           # rewrite docs/cli.md
    python docs/gen_cli.py --check   # exit 1 when docs/cli.md is stale

The help text is formatted at a fixed width (COLUMNS=100), so that the page does not depend
on the terminal it was made in; tests/test_docs.py regenerates it in memory and compares.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pagegen

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "cli.md"
WIDTH = "100"

HEADER = """# CLI reference

Every `devise` command's `--help`, generated from the parser itself by `docs/gen_cli.py`
(`python docs/gen_cli.py`); `tests/test_docs.py` fails when this page is stale.
"""


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Each subcommand's name and parser, in the order they were added, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {child}", p) for child, p in _subcommands(sub))


def render() -> str:
    """The whole page, as it should be on disk."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from app.cli import build_parser

        parser = build_parser()
        parts = [HEADER]
        parts.append(f"## devise\n\n```text\n{parser.format_help().rstrip()}\n```\n")
        seen: set[int] = set()
        for name, sub in _subcommands(parser):
            if id(sub) in seen:  # an alias names the same parser again
                continue
            seen.add(id(sub))
            parts.append(f"## devise {name}\n\n```text\n{sub.format_help().rstrip()}\n```\n")
        return "\n".join(parts)
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def main(argv: list[str] | None = None) -> int:
    return pagegen.main(PAGE, render, "gen_cli.py", argv)


if __name__ == "__main__":
    raise SystemExit(main())
