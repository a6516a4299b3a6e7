"""Make the pages' lists render in MkDocs as they do on GitHub (issue #36).

Python-Markdown, unlike GitHub, needs a blank line before a list that follows a paragraph and
four spaces (not two) for what is nested in a list item. The pages moved from the README use
GitHub's habits; this rewrites them in place, outside fenced code:

- a blank line before every list item whose previous line is not blank (a paragraph inside
  an item otherwise swallows the next item);
- inside a list, every indented line's indentation doubled (2 -> 4, 4 -> 8).

    python tools/md_lists.py docs/models.md docs/queries.md ...
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ITEM = re.compile(r"^(\s*)([-*]|\d+\.) ")


def normalise(text: str) -> str:
    out: list[str] = []
    fenced = False
    in_list = False
    prev = ""
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("```") and indent == 0:
            fenced = not fenced
            in_list = False if fenced else in_list
            out.append(line)
            prev = line
            continue
        if fenced:
            out.append(line)
            prev = line
            continue
        m = ITEM.match(line)
        if m and (indent == 0 or in_list):
            if prev.strip():
                out.append("")
            in_list = True
        elif stripped and indent == 0 and not prev.strip():
            in_list = False
        if in_list and indent and stripped:
            line = " " * (2 * indent) + stripped
        out.append(line)
        prev = line
    return "\n".join(out) + "\n"


def main(paths: list[str]) -> None:
    for p in paths:
        path = Path(p)
        path.write_text(normalise(path.read_text()))


if __name__ == "__main__":
    main(sys.argv[1:])
