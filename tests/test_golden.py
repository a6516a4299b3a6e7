"""The golden run: a fixed list of `devise` commands (search, similar, tag, status,
duplicates; words, phrases, compound queries, filters; plain and --json) on a conse index of
scikit-image's and Debian darknet's photos, printed as a user sees them and compared with
tests/golden/run.txt, recorded before the house was rebuilt (issue #35). A move that changes
no behaviour prints the same text.

Timings and the temporary folder are masked. Scores are compared to within 0.002, not to
the byte: the file was recorded on one CPU, and another CPU's kernels round differently in
the last digits. To record it again after a change of behaviour that is meant:
`DEVISE_GOLDEN=write pytest tests/test_golden.py`, and say why in the commit.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.cli import main

DARKNET = Path("/usr/share/darknet/data")
GOLDEN = Path(__file__).parent / "golden" / "run.txt"

# `{g}` is the gallery folder, `{p}` its photos
COMMANDS: list[str] = [
    "status",
    "status --json",
    "search dog",
    "search dog --json -k 5",
    "search 'a dog on the grass'",
    "search 'horses in a field' --json -k 5",
    "search 'bird in the sky' -k 3",
    "search 'a cup of coffee' -k 4",
    "search 'dog -grass' -k 5",
    "search 'cat or dog' -k 5 --json",
    "search animal -k 6",
    "search trouser -k 5",
    "search 'shoes' --folder {g}/fashion -k 5",
    "search dog --folder {p} --min-score 0.2",
    "search coffee --label photos -k 3",
    "search shirt --label 6 --label 0 -k 4 --json",
    "search zzqxv",
    "search 'dgo' -k 3",
    "similar {p}/dog.jpg -k 5",
    "similar {p}/chelsea.png -k 4 --json",
    "similar {p}/horses.jpg --folder {p} -k 3",
    "search {p}/dog.jpg -k 3",
    "tag {p}/dog.jpg",
    "tag {p}/horses.jpg --json -k 5",
    "tag {p}/coffee.png -k 5 --generality general",
    "tag {p}/eagle.jpg -k 5 --zero-shot-bias off",
    "duplicates",
    "duplicates --json",
]


def _mask(text: str, root: Path) -> str:
    text = text.replace(root.as_posix(), "<root>")
    text = re.sub(r'"(took_ms|seconds)": [0-9.e-]+', r'"\1": T', text)
    text = re.sub(r"\b[0-9]+(\.[0-9]+)? ms\b", "T ms", text)
    text = re.sub(r"\b[0-9]+\.[0-9]+ s\b", "T s", text)
    return text


def _run(command: str, root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    import shlex

    gallery = root / "gallery"
    argv = shlex.split(command.format(g=gallery, p=gallery / "photos"))
    code = main([*argv, "--index", str(root / "index")])
    out = capsys.readouterr()
    body = f"$ devise {command}\n[exit {code}]\n{out.out}"
    if out.err.strip():
        body += "[stderr]\n" + out.err
    return _mask(body, root)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    if not sorted(DARKNET.glob("*.jpg")):
        pytest.skip("Debian darknet's photos are absent: apt-get install darknet")
    from model.data.datasets import export_photos, read_fashion_mnist, stratified_indices

    root = tmp_path_factory.mktemp("golden")
    photos = root / "gallery" / "photos"
    export_photos(photos)
    for p in sorted(DARKNET.glob("*.jpg")):
        shutil.copy2(p, photos / p.name)
    try:
        images, labels = read_fashion_mnist("test", progress=False)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST is absent ({e}): apt-get install dataset-fashion-mnist")
    for i in stratified_indices(labels, 40):
        out = root / "gallery" / "fashion" / str(int(labels[i]))
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(out / f"{i:05d}.png")
    # a copy, for duplicates to find
    shutil.copy2(photos / "dog.jpg", root / "gallery" / "dog copy.jpg")
    idx = ["--index", str(root / "index")]
    assert main(["ingest", str(root / "gallery"), "--models", "conse,dup", *idx]) == 0
    yield root


def _blocks(text: str) -> list[str]:
    return [b for b in re.split(r"(?m)^(?=\$ devise )", text) if b.strip()]


NUMBER = re.compile(r"-?[0-9]+\.[0-9]+(?:e-?[0-9]+)?")


SCORED_LINE = re.compile(r"^\s+(-?[0-9]+\.[0-9]+)\s")


def _ties_sorted(value: Any) -> Any:
    """JSON with the results that tie exactly on score in one order: which of two identical
    pictures comes first follows their point ids, uuids of the paths, so of the temp folder."""
    if isinstance(value, dict):
        return {k: _ties_sorted(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_ties_sorted(v) for v in value]
        if items and all(isinstance(v, dict) and "score" in v for v in items):
            out: list[Any] = []
            for _, tie in itertools.groupby(items, key=lambda v: v["score"]):
                out += sorted(tie, key=lambda v: json.dumps(v, sort_keys=True))
            return out
        return items
    return value


def _canonical(block: str) -> str:
    """A block with exact ties in one order, in JSON and in the printed tables."""
    lines: list[str] = []
    for line in block.splitlines():
        if line.startswith("{"):  # the JSON answer, its masked timings made strings
            data = json.loads(re.sub(r'": T([,}])', r'": "T"\1', line))
            line = json.dumps(_ties_sorted(data))
        lines.append(line)
    out: list[str] = []
    for _, run in itertools.groupby(
        lines, key=lambda x: m.group(1) if (m := SCORED_LINE.match(x)) else object()
    ):
        out += sorted(run)
    return "\n".join(out) + "\n"


def _same(got: str, want: str, tol: float = 0.002) -> bool:
    """Equal text, with every decimal number equal to within `tol` (exact ties in any order)."""
    got, want = _canonical(got), _canonical(want)
    if NUMBER.sub("#", got) != NUMBER.sub("#", want):
        return False
    a, b = NUMBER.findall(got), NUMBER.findall(want)
    return all(math.isclose(float(x), float(y), abs_tol=tol) for x, y in zip(a, b, strict=True))


def test_the_golden_run_prints_what_it_printed(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = "".join(_run(c, root, capsys) for c in COMMANDS)
    if os.environ.get("DEVISE_GOLDEN") == "write":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got)
        pytest.skip(f"recorded {GOLDEN}")
    want = GOLDEN.read_text()
    got_blocks, want_blocks = _blocks(got), _blocks(want)
    assert [b.splitlines()[0] for b in got_blocks] == [b.splitlines()[0] for b in want_blocks]
    for g, w in zip(got_blocks, want_blocks, strict=True):
        assert _same(g, w), f"the golden run changed:\n--- was\n{w}\n--- now\n{g}"
