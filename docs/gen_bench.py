"""Write docs/benchmarks.md from the benches themselves: what each measures and how to run it
(its docstring), and its last table (docs/bench/<script>.json, what `--json` wrote).

    python docs/gen_bench.py          # write the page
    python docs/gen_bench.py --check  # exit 1 when the page is stale

`python bench/bench_all.py --record [--only NAME]` runs benches, records them and calls this.
No figure on the page is typed by hand, so none can drift from what the bench printed.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import pagegen

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RECORDS = ROOT / "docs" / "bench"
PAGE = ROOT / "docs" / "benchmarks.md"

HEAD = """# Benchmarks

<!-- Written by docs/gen_bench.py from bench/*.py and docs/bench/*.json: do not edit by hand.
     `python bench/bench_all.py --record` runs the benches and writes this page again. -->

Every script in `bench/` prints its figures and asserts nothing. Run one from the
repository root (`.venv/bin/python bench/NAME.py`), or all of them with `make bench`.
With `--json OUT` a bench also writes what it printed, with its CPU, date and commit;
`python bench/bench_all.py --record [--only NAME,...]` does that into `docs/bench/` and
writes this page again, so each table below is the bench's own last output, not a copy.

Figures are measured on shared 2-core machines whose CPU changes between sessions: compare
figures within one run (each bench measures its own baseline beside its subject), and read
the CPU named under each, and its load average (a bench counts in it; well above the cores
means other work shared them, and absolute figures are lower than alone). The pages on
[speed](speed.md), [scale](scale.md), [serving](serving.md) and [models](models.md) discuss
what these figures decided.
"""


def describe(script: Path) -> tuple[str, list[str]]:
    """A bench's docstring: its first paragraph, and its usage lines (`python bench/...`)."""
    doc = ast.get_docstring(ast.parse(script.read_text())) or ""
    paragraphs = [p for p in doc.split("\n\n") if p.strip()]
    first = " ".join(line.strip() for line in paragraphs[0].splitlines()) if paragraphs else ""
    usage = [
        line.strip()
        for line in doc.splitlines()
        if line.strip().startswith(("python bench/", "python -m bench"))
    ]
    return first, usage


def machine_line(m: dict[str, Any]) -> str:
    cpu = str(m.get("cpu", "unknown CPU"))
    if m.get("family_model"):
        family, _, model = str(m["family_model"]).partition("/")
        cpu += f" (family {family}, model {model})"
    parts = [cpu, f"{m.get('cores', '?')} cores"]
    flags = m.get("flags") or []
    if flags:
        parts.append(", ".join(flags))
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']}")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    return "; ".join(parts)


def section(script: Path) -> str:
    first, usage = describe(script)
    out = [f"## {script.name}", "", first, ""]
    out += ["```bash", *(usage or [f"python bench/{script.name}"]), "```", ""]
    record = RECORDS / f"{script.stem}.json"
    if not record.exists():
        out += [
            f"*Not recorded yet*: `python bench/bench_all.py --record --only {script.stem}`.",
            "",
        ]
        return "\n".join(out)
    r = json.loads(record.read_text())
    commit = f", commit `{r['commit']}`" if r.get("commit") else ""
    busy = ""
    load = r.get("load_average")
    if load:  # the bench's own threads count too: more than the cores means it shared them
        busy = f" Load average {load['start']:.1f} at the start, {load['end']:.1f} at the end."
    out += [
        f"Last run {r['date']}{commit}, on {machine_line(r.get('machine', {}))}.{busy}",
        f"Command: `{r['command']}`",
        "",
        "```text",
        *r.get("output", []),
        "```",
        "",
    ]
    return "\n".join(out)


def benches() -> list[Path]:
    return [p for p in sorted(BENCH.glob("bench_*.py")) if p.name != "bench_all.py"]


def page() -> str:
    return HEAD + "\n" + "\n".join(section(s) for s in benches()).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    return pagegen.main(PAGE, page, "gen_bench.py", argv)


if __name__ == "__main__":
    sys.exit(main())
