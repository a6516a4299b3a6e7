"""One-off: move the README's sections into docs/ pages by line range (issue #36).

Kept for the record of where each line went; run once on the 1,721-line README.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# page -> (title, [(first line, last line), ...]) in the README's 1-based numbering
PAGES: dict[str, tuple[str, list[tuple[int, int]]]] = {
    "getting-started.md": ("Getting started", [(19, 69)]),
    "models.md": ("Models and training", [(70, 240)]),
    "queries.md": ("Index and search", [(241, 269), (279, 309), (324, 498)]),
    "exif.md": ("EXIF: when, with which camera, where", [(270, 278), (310, 324)]),
    "tags.md": ("Tags", [(499, 581)]),
    "duplicates.md": ("Near-duplicates", [(582, 659)]),
    "web-app.md": ("The web app", [(660, 777)]),
    "serving.md": ("Serving: one index, many hands", [(797, 907)]),
    "scale.md": ("Scale", [(778, 796), (908, 1340)]),
    "speed.md": ("Speed and precision", [(1355, 1704)]),
    "benchmarks.md": ("Benchmarks", [(1705, 1721)]),
}


def fix(line: str) -> str:
    line = line.replace("](docs/", "](")
    line = line.replace("](#clip-with-real-weights)", "](models.md#clip-with-real-weights)")
    # the README's ###/## headings become the page's own ## sections
    m = re.match(r"^(#{2,4}) (.*)$", line)
    if m:
        return "## " + m.group(2)
    return line


def main() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    if len(lines) != 1721:
        sys.exit("the README is no longer the one this script was written for")
    for name, (title, ranges) in PAGES.items():
        out = [f"# {title}", ""]
        for a, b in ranges:
            out += [fix(x) for x in lines[a - 1 : b]]
            out.append("")
        (ROOT / "docs" / name).write_text("\n".join(out).rstrip() + "\n")


if __name__ == "__main__":
    main()
