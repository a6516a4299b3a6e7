"""bench_queries.py --scenes: queries on the real photos, bench/scenes.py's scenes and
Fashion-MNIST garments, on conse, today and with regions, each half apart.

A fresh gallery: scikit-image's, darknet's and Gradio's photos, the scenes (made at bench
time), and `--garments` Fashion-MNIST test garments. Two indexes of it: `plain` (ingested
as today) and `regions` (the same, ingested again with `--regions`). Then:

- natural queries (bench_queries.QUERIES): the share with a right photo in the top 3 of the
  gallery less the scenes (a scene holding the subject is right too, but the table names
  photos), for the tuning half (even places in the table) and the held-out half (odd
  places) apart;
- one-word queries (the table's, and each scene subject's word): the first right photo's
  rank, today (`--baseline`: another checkout's code, such as main's, on the plain index)
  and after (this checkout, with regions), and every word that loses rank;
- scene words: for each scene and each word of its subjects, the scene's rank among the
  gallery less the other scenes (what a library holding only that scene would answer),
  top 3 or not, tuning and held-out scenes apart; for every scene, and for those where a
  region holds the word (at least REGION_MIN: "a subject present in a region").

`--ranks INDEX OUT` (internal) writes every query's ranked paths as JSON: it runs under the
baseline's PYTHONPATH too, so it only uses `SearchService.search_text`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

K = 300


def all_queries(scene_words: list[str]) -> list[str]:
    from bench_queries import QUERIES  # type: ignore[import-not-found]
    from bench_tags import TRUTH  # type: ignore[import-not-found]

    return list(dict.fromkeys([*QUERIES, *TRUTH, *scene_words]))


def write_ranks(index: Path, out: Path, queries: list[str]) -> None:
    """Every query's ranked (path, weak) pairs from `index`, as JSON into `out`."""
    from app.search.service import SearchService
    from qdrant.edge import EdgeStore

    try:  # the ranking, not the page: every weaker match kept (what a capped list would
        # hide could be in a library's top 3 once the other scenes are left out)
        from app.search import answers

        answers.WEAK_SHOWN = K  # type: ignore[misc]
    except ImportError:
        pass
    store = EdgeStore(index)
    try:
        service = SearchService(store)
        ranked: dict[str, list[tuple[str, bool]]] = {}
        for q in queries:
            answer = service.search_text(q, model="conse", k=K)
            ranked[q] = [(r.path, bool(getattr(r, "weak", False))) for r in answer.results]
    finally:
        store.close()
    out.write_text(json.dumps(ranked))


def build(root: Path, garments: int) -> tuple[Path, Path, list[Any]]:
    from PIL import Image

    from bench.scenes import make_scenes, source_photos
    from model.data.datasets import FASHION_MNIST_CLASSES, read_fashion_mnist, stratified_indices

    photos = source_photos(root / "photos")
    scenes = make_scenes(photos, root / "scenes")
    plain, regions = root / "plain", root / "regions"
    if plain.is_dir() and regions.is_dir():  # made by an earlier run into the same DIR
        return plain, regions, scenes
    images, labels = read_fashion_mnist("test", progress=False)
    for i in stratified_indices(labels, garments):
        out = root / "fashion" / FASHION_MNIST_CLASSES[int(labels[i])]
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(out / f"{i:05d}.png")
    folders = [str(root / "photos"), str(root / "scenes"), str(root / "fashion")]
    ingest = [sys.executable, "-m", "app.cli", "ingest", *folders, "--models", "conse"]
    subprocess.run([*ingest, "--index", str(plain)], check=True, stdout=subprocess.DEVNULL)
    shutil.copytree(plain, regions)
    subprocess.run(
        [*ingest, "--regions", "--index", str(regions)], check=True, stdout=subprocess.DEVNULL
    )
    return plain, regions, scenes


def ranks_of(index: Path, queries: list[str], pythonpath: str, out: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    here = str(Path(__file__).resolve())
    subprocess.run(
        [sys.executable, here, "--ranks", str(index), str(out), json.dumps(queries)],
        check=True,
        env=env,
    )
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def first_right(ranked: list[list[Any]], right: set[str], label: set[str]) -> int | None:
    """The first right photo's rank in the gallery less the scenes (the table's gallery)."""
    # the scenes' own folder (DIR/scenes), not any path with "scenes" in it (DIR itself)
    ranked = [r for r in ranked if Path(r[0]).parent.name != "scenes"]
    for i, (path, _) in enumerate(ranked):
        p = Path(path)
        if p.stem in right or ("/fashion/" in path and p.parent.name in label):
            return i + 1
    return None


def report(root: Path, garments: int, baseline: str | None) -> None:
    from bench_queries import QUERIES  # type: ignore[import-not-found]
    from bench_tags import TRUTH, cpu_name  # type: ignore[import-not-found]

    from bench.scenes import SUBJECTS

    plain, regions, scenes = build(root, garments)
    words = sorted({w for s in scenes for w in s.truth})
    queries = all_queries(words)
    here = str(Path(__file__).resolve().parents[1])
    runs = {"today": (plain, baseline), "plain": (plain, here), "regions": (regions, here)}
    got = {
        name: ranks_of(index, queries, path, root / f"{name}.json")
        for name, (index, path) in runs.items()
        if path is not None
    }
    print(f"\n## scenes: {len(scenes)} scenes, {garments} garments; CPU: {cpu_name()}")

    def right_of(q: str) -> tuple[set[str], set[str]]:
        right = QUERIES.get(q) or tuple(TRUTH.get(q, ()))
        stems = {r for r in right if not r.startswith("label:")}
        labels = {r[6:] for r in right if r.startswith("label:")}
        if not right:  # a scene word: the subject photos it names
            stems = {s for s, ws in SUBJECTS.items() if q in ws}
        return stems, labels

    print("\nnatural queries, a right photo in the top 3 (tuning half / held-out half):")
    natural = list(QUERIES)
    for name, ranked in got.items():
        halves = []
        for half in (0, 1):
            qs = natural[half::2]
            hits = sum(
                1 for q in qs if (f := first_right(ranked[q], *right_of(q))) is not None and f <= 3
            )
            halves.append(f"{hits}/{len(qs)} ({100 * hits / len(qs):.0f}%)")
        print(f"  {name:<8} tuning {halves[0]}, held-out {halves[1]}")
        for half, label in ((0, "tuning"), (1, "held-out")):
            misses = [
                f"{q} ({first_right(ranked[q], *right_of(q)) or '-'})"
                for q in natural[half::2]
                if (f := first_right(ranked[q], *right_of(q))) is None or f > 3
            ]
            print(f"    {label} misses: " + ("; ".join(misses) or "none"))
    weak_places(got, queries, right_of)
    if "today" in got:
        one = [q for q in queries if len(q.split()) == 1 or q in words]
        worse = []
        for q in one:
            a = first_right(got["today"][q], *right_of(q))
            b = first_right(got["regions"][q], *right_of(q))
            if a is not None and (b is None or b > a):
                worse.append(f"{q}: {a} -> {b}")
        print(f"\none-word queries ({len(one)}), first right rank today -> with regions, worse:")
        print("  " + ("; ".join(worse) or "none"))
    scene_words(got, scenes, regions)


def weak_places(got: dict[str, Any], queries: list[str], right_of: Any) -> None:
    """Where the first right photo is a weaker match, its place among them (how many weaker
    matches a page must show to keep it: WEAK_SHOWN was chosen from this)."""
    print("\nfirst right photo among the weaker matches: query (its place among them)")
    for name, ranked in got.items():
        places = []
        for q in queries:
            gallery = [r for r in ranked[q] if Path(r[0]).parent.name != "scenes"]
            f = first_right(ranked[q], *right_of(q))
            if f is not None and gallery[f - 1][1]:
                places.append(f"{q} ({f - sum(1 for r in gallery if not r[1])})")
        print(f"  {name:<8} {len(places)} of {len(queries)}: " + ("; ".join(places) or "none"))


def scene_words(got: dict[str, Any], scenes: list[Any], index: Path) -> None:
    from app.search.regions import region_evidence
    from model.vocab.hierarchy import imagenet_concepts
    from qdrant.edge import EdgeStore

    cs = imagenet_concepts()
    store = EdgeStore(index)
    try:
        payload = {
            Path(str(r.payload["path"])).stem: r.payload
            for r in store.scroll_images()
            if Path(str(r.payload.get("path"))).parent.name == "scenes"
        }
    finally:
        store.close()
    names = {s.name for s in scenes}
    print("\nscene words: the scene in the top 3 of the gallery less the other scenes")
    print("  (all scenes / scenes where a region holds the word), tuning | held-out")
    for run, ranked in got.items():
        cells = []
        missed: list[str] = []
        for held in (False, True):
            every = [0, 0]
            present = [0, 0]
            for s in scenes:
                if s.held_out != held:
                    continue
                for w in s.truth:
                    order = [
                        Path(p).stem
                        for p, _ in ranked[w]
                        if Path(p).stem not in names or Path(p).stem == s.name
                    ]
                    hit = s.name in order[:3]
                    c = cs.find(w)
                    there = c is not None and region_evidence(payload[s.name], cs.members[c])[0] > 0
                    every = [every[0] + hit, every[1] + 1]
                    if there:
                        present = [present[0] + hit, present[1] + 1]
                        if not hit:
                            at = order.index(s.name) + 1 if s.name in order else "-"
                            missed.append(f"{s.name}: {w} at {at}")
            cells.append(f"{every[0]}/{every[1]} , {present[0]}/{present[1]}")
        print(f"  {run:<8} {cells[0]} | {cells[1]}")
        if missed:
            print("    present in a region, not in the top 3: " + "; ".join(missed))


if __name__ == "__main__" and sys.argv[1:2] == ["--ranks"]:
    sys.path.insert(0, str(Path(__file__).parent))
    write_ranks(Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4]))
