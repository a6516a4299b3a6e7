"""The docs agree with the code: docs/cli.md is the parser's own help, and every `devise …`
command the README shows parses with the real parser (issue #36)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path
from types import ModuleType

import pytest

from app.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> ModuleType:
    """A generator in docs/, through docs/pagegen.py's loader (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("pagegen", ROOT / "docs" / "pagegen.py")
    assert spec and spec.loader
    pagegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pagegen)
    module: ModuleType = pagegen.load(name)
    return module


FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}


def _gen_cli() -> ModuleType:
    return _load("gen_cli")


def test_cli_reference_is_current() -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    assert page == _gen_cli().render(), "docs/cli.md is stale: run python docs/gen_cli.py"


def test_cli_reference_names_every_command() -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    for name in ("datasets", "train", "eval", "ingest", "search", "similar", "tag", "serve"):
        assert f"## devise {name}\n" in page


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for each `devise …` line in the README's shell blocks.

    Output lines (in ```text blocks, or not starting with `devise`/`$ devise`) are skipped;
    a trailing `\\` joins the next line; `# comments` are dropped by shlex."""
    found: list[tuple[int, str]] = []
    lang: str | None = None
    pending = ""
    start = 0
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if m:
            lang = None if lang is not None else m.group(1)
            continue
        if lang not in SHELL_BLOCKS:
            continue
        stripped = line.strip()
        if pending:
            pending += " " + stripped.rstrip("\\")
            if not stripped.endswith("\\"):
                found.append((start, pending))
                pending = ""
            continue
        if stripped.startswith("$ "):
            stripped = stripped[2:]
        if not stripped.startswith("devise "):
            continue
        if stripped.endswith("\\"):
            pending, start = stripped.rstrip("\\"), n
            continue
        found.append((n, stripped))
    return found


def test_readme_has_commands() -> None:
    assert len(readme_commands((ROOT / "README.md").read_text())) >= 5


@pytest.mark.parametrize(
    "lineno,command", readme_commands((ROOT / "README.md").read_text()), ids=lambda v: str(v)
)
def test_readme_command_parses(lineno: int, command: str) -> None:
    argv = shlex.split(command, comments=True)
    assert argv[0] == "devise"
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"README.md line {lineno}: `{command}` does not parse (exit {exc.code})")


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f": {page.name}\n" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


def _gen_bench() -> ModuleType:
    return _load("gen_bench")


def test_benchmark_page_is_written_from_the_benches_records() -> None:
    gen = _gen_bench()
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert page == gen.page(), "docs/benchmarks.md is stale: run python docs/gen_bench.py"


def test_every_bench_is_on_the_page_and_each_record_names_its_cpu() -> None:
    """Each bench has its section (what it measures, how to run it); each record that exists
    is the bench's own, names the CPU and holds what it printed. A bench not recorded yet says
    so on the page, with the command that records it."""
    gen = _gen_bench()
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    recorded = 0
    for script in gen.benches():
        assert f"## {script.name}\n" in page
        first, _ = gen.describe(script)
        assert first, f"{script.name} has no docstring to say what it measures"
        record = gen.RECORDS / f"{script.stem}.json"
        if not record.exists():
            assert f"--record --only {script.stem}`" in page
            continue
        recorded += 1
        r = json.loads(record.read_text())
        assert r["bench"] == script.stem and r["output"], record
        assert r["machine"]["cpu"] and r["command"].startswith(f"python bench/{script.name}")
    assert recorded >= len(gen.benches()) // 2, "most benches should have a recorded run"


def test_a_bench_records_what_it_printed_and_where(tmp_path: Path) -> None:
    """bench/report.py as a bench uses it: output kept, --json left out of the command."""
    import subprocess
    import sys

    script = tmp_path / "bench_toy.py"
    script.write_text(
        "import argparse, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "import report\n"
        "def main():\n"
        "    p = argparse.ArgumentParser(); p.add_argument('--n', type=int, default=1)\n"
        "    report.add_json_flag(p); a = p.parse_args()\n"
        "    print(f'{a.n} things'); print('| a | b |')\n"
        "    return {'n': a.n}\n"
        "report.run(__file__, main)\n"
    )
    out = tmp_path / "rec.json"
    run = subprocess.run(
        [sys.executable, str(script), "--n", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.splitlines() == ["3 things", "| a | b |"]
    r = json.loads(out.read_text())
    assert r["output"] == ["3 things", "| a | b |"] and r["figures"] == {"n": 3}
    assert r["command"] == "python bench/bench_toy.py --n 3"
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
