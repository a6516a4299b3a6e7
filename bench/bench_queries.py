"""Natural queries, as people type them, on the demo gallery plus every real photo at hand.

The gallery is the demo index (`devise demo --no-launch`: 1,000 Fashion-MNIST test garments
and scikit-image's 17 photos) with Debian darknet's 7 photos and Gradio's 6 photos ingested
beside them (into `<demo dir>/extra/`, once). Each query below lists its right photos (by
file stem, judged by eye) or a garment label. For conse and devise, before and after:

- before: the query's every word as a term, function words included, ranked by the cosine
  to the mean of their vectors (what `devise search` did with several words; a query of one
  plain concept word was already answered by its mass, as it is now);
- after: `SearchService.search_text`, which reads the query (app/search/query.py) and, on conse,
  joins its terms (app/search/ranking/joint.py).

It prints the rank of the first right photo and the average precision (over the first 1,000
results) per query, the share of queries with a right photo in the top 3, mean AP, and, for
conse, the same for a few calibrations of the joint ranking (`--sweep`). Asserts nothing.
From the repository root:

    python bench/bench_queries.py [--index data/index] [--demo data/demo] [--sweep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import report
from report import add_json_flag

DARKNET = Path("/usr/share/darknet/data")
ANIMALS = ("chelsea", "eagle", "giraffe", "horses", "horse", "lion", "cheetah", "cheetah1")
ANIMALS += ("cheetah2", "dog", "person")
CHEETAHS = ("cheetah", "cheetah1", "cheetah2")

# query -> right photos: file stems, or `label:NAME` for every garment of a label.
# darknet's person.jpg shows a woman from behind with a dog, and horses in a field behind
# them; its dog.jpg a dog on a porch by a bicycle, a truck behind; its kite.jpg a beach with
# people and kites in the sky; giraffe.jpg a giraffe and zebras; horses.jpg horses in a field
QUERIES: dict[str, tuple[str, ...]] = {
    # the table
    "a dog on the grass": ("dog", "person"),
    "horses in a field": ("horses", "person"),
    "bird in the sky": ("eagle",),
    "a cup of coffee": ("coffee",),
    "person with a dog": ("person",),
    "animal -dog": tuple(a for a in ANIMALS if a not in ("dog", "person")),
    "dog grass": ("dog", "person"),
    # more, as people type them
    "people on the beach": ("kite",),
    "a big cat": ("lion", *CHEETAHS, "chelsea"),
    "big cats -lion": CHEETAHS,
    "a lion resting on a rock": ("lion",),
    "a cheetah running": CHEETAHS,
    "the face of a cheetah": CHEETAHS,
    "an astronaut in a space suit": ("astronaut",),
    "a man with a camera": ("camera",),
    "a woman walking her dog": ("person",),
    "giraffes and zebras": ("giraffe",),
    "an eagle by the water": ("eagle",),
    "a bird of prey": ("eagle",),
    "a rocket on the launch pad": ("rocket",),
    "the moon at night": ("moon",),
    "a motorcycle": ("motorcycle",),
    "a bicycle on a porch": ("dog",),
    "kites flying over the sea": ("kite",),
    "a painting of a screaming man": ("scream",),
    "the eiffel tower": ("tower",),
    "an old clock": ("clock",),
    "coins on a table": ("coins",),
    "a brick wall": ("brick",),
    "a page of text": ("page", "text"),
    "galaxies in deep space": ("hubble_deep_field",),
    "a tabby cat": ("chelsea",),
    "espresso in a white cup": ("coffee",),
    "a german shepherd": ("dog",),
    "a pair of sneakers": ("label:sneaker",),
    "ankle boots": ("label:ankle boot",),
    "a leather bag": ("label:bag",),
    "dresses": ("label:dress",),
}


@dataclass
class Cell:
    first: int | None  # rank of the first right photo (1-based), None: not in the results
    ap: float


def gather_photos(demo: Path) -> list[Path]:
    """Copy darknet's and Gradio's photos under `demo/extra/` (once); their folders."""
    out: list[Path] = []
    dark = demo / "extra" / "darknet"
    if DARKNET.is_dir():
        dark.mkdir(parents=True, exist_ok=True)
        for p in sorted(DARKNET.glob("*.jpg")):
            if not (dark / p.name).exists():
                shutil.copy2(p, dark / p.name)
        out.append(dark)
    try:
        import gradio
    except ImportError:
        return out
    root = Path(gradio.__file__).parent
    wanted = [root / "media_assets" / "images" / n for n in ("cheetah.jpg", "cheetah1.jpg")]
    wanted += [root / "media_assets" / "images" / n for n in ("lion.jpg", "tower.jpg")]
    wanted += [root / "media_assets" / "images" / "groot.jpeg", root / "test_data" / "cheetah2.jpg"]
    grad = demo / "extra" / "gradio"
    grad.mkdir(parents=True, exist_ok=True)
    for p in wanted:
        if p.is_file() and not (grad / p.name).exists():
            shutil.copy2(p, grad / p.name)
    out.append(grad)
    return out


def score(paths: list[str], labels: list[str], right: tuple[str, ...]) -> Cell:
    from model.evaluate import _ap

    stems = {r for r in right if not r.startswith("label:")}
    want = {r[6:] for r in right if r.startswith("label:")}
    rel = np.array(
        [
            Path(p).stem in stems or (lab in want and "/fashion/" in p)
            for p, lab in zip(paths, labels, strict=True)
        ],
        dtype=bool,
    )
    return Cell(
        int(np.argmax(rel)) + 1 if rel.any() else None, float(_ap(rel, max(1, n_right(right))))
    )


_COUNTS: dict[str, int] = {}


def n_right(right: tuple[str, ...]) -> int:
    return sum(_COUNTS.get(r, 1 if not r.startswith("label:") else 0) for r in right)


def before(service: Any, query: str, model: str, k: int) -> tuple[list[str], list[str]]:
    """The old reading: every word a term, function words included; cosine to their mean.
    A query of one plain term was answered as now."""
    from app.search.query import parse_query

    terms = parse_query(query)
    if len(terms) == 1 and terms[0].weight == 1:
        a = service.search_text(query, model=model, k=k)
        return [r.path for r in a.results], [r.label for r in a.results]
    vec = service.query_vector(terms, model)
    hits = service.store.search_images(model, vec, k)
    return [str(h.payload.get("path")) for h in hits], [str(h.payload.get("label")) for h in hits]


def after(service: Any, query: str, model: str, k: int) -> tuple[list[str], list[str]]:
    a = service.search_text(query, model=model, k=k)
    return [r.path for r in a.results], [r.label for r in a.results]


def summary(cells: list[Cell]) -> str:
    top3 = sum(1 for c in cells if c.first is not None and c.first <= 3) / len(cells)
    return f"top-3 {top3:.0%}, mean AP {np.mean([c.ap for c in cells]):.3f}"


def fmt(c: Cell) -> str:
    return f"{c.first if c.first is not None else '-'} / {c.ap:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--index", type=Path, default=Path("data/index"))
    p.add_argument("--demo", type=Path, default=Path("data/demo"))
    p.add_argument("--sweep", action="store_true", help="compare joint calibrations on conse")
    p.add_argument(
        "--scenes",
        type=Path,
        default=None,
        metavar="DIR",
        help="instead: a fresh conse gallery in DIR with bench/scenes.py's scenes, today and "
        "with regions, tuning and held-out halves apart (bench/scene_queries.py)",
    )
    p.add_argument("--garments", type=int, default=300, help="with --scenes: garments mixed in")
    p.add_argument(
        "--baseline",
        default=None,
        metavar="PYTHONPATH",
        help="with --scenes: a checkout whose code answers 'today' (main's, say)",
    )
    add_json_flag(p)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.scenes is not None:
        sys.path.insert(0, str(Path(__file__).parents[1]))
        from scene_queries import report as scene_report  # type: ignore[import-not-found]

        scene_report(args.scenes, args.garments, args.baseline)
        return
    from bench_tags import cpu_name  # type: ignore[import-not-found]

    from app.search.ranking.joint import DEFAULT, Calibration
    from app.search.service import MAX_K, SearchService
    from qdrant.edge import EdgeStore

    checkpoint = args.demo / "devise.safetensors"
    folders = gather_photos(args.demo)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "ingest",
            *map(str, folders),
            "--checkpoint",
            str(checkpoint),
            "--index",
            str(args.index),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    store = EdgeStore(args.index)
    try:
        for r in store.scroll_images():
            path = str(r.payload.get("path"))
            key = f"label:{r.payload.get('label')}" if "/fashion/" in path else Path(path).stem
            _COUNTS[key] = _COUNTS.get(key, 0) + 1
        service = SearchService(store, checkpoint=checkpoint)
        k = MAX_K
        print(f"gallery: {store.count('images')} images; {len(QUERIES)} queries; CPU: {cpu_name()}")
        print("\nfirst right photo's rank / AP ('-': not in the first 1,000)\n")
        print("| query | conse before | conse after | devise before | devise after |")
        print("|---|---|---|---|---|")
        cols: list[list[Cell]] = [[], [], [], []]
        for q, right in QUERIES.items():
            row = []
            for model in ("conse", "devise"):
                for how in (before, after):
                    row.append(score(*how(service, q, model, k), right))
            for col, c in zip(cols, row, strict=True):
                col.append(c)
            print(f"| `{q}` | " + " | ".join(fmt(c) for c in row) + " |")
        names = ("conse before", "conse after", "devise before", "devise after")
        for name, col in zip(names, cols, strict=True):
            print(f"{name}: {summary(col)}")
        misses = [
            q for q, c in zip(QUERIES, cols[1], strict=True) if c.first is None or c.first > 3
        ]
        print("conse misses (after):", "; ".join(misses) or "none")
        if args.sweep:
            print("\n## conse, joint calibrations\n")
            print("| center | scale | cap | eps | word weight | result |")
            print("|---|---|---|---|---|---|")
            trials = [DEFAULT]
            for center in (0.62, 0.66):
                for eps in (0.02, 0.1):
                    for word_weight in (1.0, 0.5, 0.25):
                        trials.append(Calibration(center=center, eps=eps, word_weight=word_weight))
            trials.append(Calibration(cap=1.0))
            trials.append(Calibration(scale=0.08))
            for cal in trials:
                service.joint_calibration = cal
                cells = [score(*after(service, q, "conse", k), r) for q, r in QUERIES.items()]
                shown = (cal.center, cal.scale, cal.cap, cal.eps, cal.word_weight, summary(cells))
                print("| " + " | ".join(map(str, shown)) + " |")
            service.joint_calibration = None
    finally:
        store.close()


if __name__ == "__main__":
    report.run(__file__, main)
