"""What the generated pages share: write a page, or say that it is stale.

`docs/gen_cli.py` and `docs/gen_bench.py` each render their page as a string; this writes it,
or with `--check` compares it with the page on disk. `load` imports a generator by its file
path, for tests/test_docs.py, which renders the pages in memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

DOCS = Path(__file__).resolve().parent


def main(page: Path, render: Callable[[], str], script: str, argv: list[str] | None = None) -> int:
    """`python docs/<script>` rewrites `page` with `render()`; `--check` exits 1 when stale."""
    ap = argparse.ArgumentParser(description=f"Write {page.relative_to(DOCS.parent)}.")
    ap.add_argument("--check", action="store_true", help="exit 1 when stale; write nothing")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if page.read_text() != text:
            print(f"{page} is stale: run python docs/{script}", file=sys.stderr)
            return 1
        return 0
    page.write_text(text)
    print(f"wrote {page.relative_to(DOCS.parent)}")
    return 0


def load(name: str) -> ModuleType:
    """docs/<name>.py as a module (docs/ is not a package)."""
    if str(DOCS) not in sys.path:
        sys.path.insert(0, str(DOCS))
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
