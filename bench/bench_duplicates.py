"""`devise duplicates`: which vector finds planted near-duplicates, and how long a scan takes.

Prints figures, asserts nothing. From the repository root:

    python bench/bench_duplicates.py [--checkpoint CKPT] [--fashion DIR] [--sizes 10000,100000]
                                     [--skip-planted] [--skip-scan]

1. Planted copies (bench/planted.py): scikit-image's and Debian darknet's photos, 100 LFW
   faces and Fashion-MNIST test images (`--fashion DIR`, else 500 exported here), with
   resized, recompressed, cropped and shrunk-and-recompressed copies of every photo and of
   every 5th face or garment. Ingested with the real models (EfficientNet-Lite0: conse and
   dup; devise too with `--checkpoint`), then scanned by the service at each threshold, as
   `devise duplicates --model M --threshold T --folder F` would. Precision and recall are
   over pairs: a pair is found when both files land in one group, and true when both come
   from one source. `real/` holds the camera photos; `all` adds the 25-28 px faces and
   garments, which look alike within a class at that size.
2. The scan at N synthetic points (128 d, like `dup`; every 20th point has a near copy) in
   an embedded store: the time to build the dup vector's HNSW graph (what `devise ingest`
   does at its end), then the time of the scan itself, and how many planted pairs it found.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report
from bench_tags import cpu_name  # noqa: E402
from planted import plant  # noqa: E402
from report import add_json_flag

THRESHOLDS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98)


def pairs_of(groups: Sequence[Sequence[str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for g in groups:
        out.update(itertools.combinations(sorted(g), 2))
    return out


def true_pairs(truth: dict[str, str], under: str | None) -> set[tuple[str, str]]:
    by_source: dict[str, list[str]] = {}
    for path, source in truth.items():
        if under is None or path.startswith(under + "/"):
            by_source.setdefault(source, []).append(path)
    return pairs_of(list(by_source.values()))


def planted(args: argparse.Namespace) -> None:
    from app.search.service import SearchService
    from ingest.pipeline import ingest
    from model.embedders.conse import ConseEmbedder
    from model.embedders.embedder import DeviseEmbedder, DuplicateEmbedder
    from qdrant.edge import EdgeStore

    tmp = Path(tempfile.mkdtemp(prefix="bench-dup-"))
    fashion = Path(args.fashion) if args.fashion else None
    if fashion is None:
        from model.data.datasets import export_fashion_mnist

        fashion = tmp / "fashion-mnist"
        export_fashion_mnist(fashion, split="test", limit=500)
    root = tmp / "planted"
    truth = plant(root, fashion)
    root = root.resolve()
    conse = ConseEmbedder()
    embedders: list[object] = [conse, DuplicateEmbedder(backbone=conse.backbone)]
    if args.checkpoint:
        devise = DeviseEmbedder(Path(args.checkpoint))
        embedders.insert(0, devise)
    sources = len(set(truth.values()))
    print(f"\n## Planted copies: {len(truth)} files from {sources} distinct photos\n")
    with EdgeStore(tmp / "index") as store:
        t0 = time.perf_counter()
        ingest(store, [root], embedders, progress=False)  # type: ignore[arg-type]
        print(f"ingested in {time.perf_counter() - t0:.0f} s")
        service = SearchService(store)
        models = [m for m in ("dup", "devise", "conse") if m in store.vector_sizes()]
        print("\n| vector | folder | threshold | precision | recall | groups |")
        print("|---|---|---|---|---|---|")
        for model in models:
            for name, folder in (("real", str(root / "real")), ("all", None)):
                want = true_pairs(truth, folder)
                for t in THRESHOLDS:
                    report = service.duplicates(model=model, threshold=t, folder=folder)
                    found = pairs_of([[im.path for im in g.images] for g in report.groups])
                    hit = len(found & want)
                    precision = hit / len(found) if found else 1.0
                    recall = hit / len(want) if want else 1.0
                    print(
                        f"| {model} | {name} | {t:.2f} | {precision:.3f} | {recall:.3f} "
                        f"| {len(report.groups)} |"
                    )


def scan(sizes: Sequence[int]) -> None:
    from app.search.service import SearchService
    from qdrant.edge import EdgeStore
    from qdrant.schema import image_payload, image_point_id

    print("\n## The scan on the embedded store (128 d, every 20th point has a near copy)\n")
    print("| points | build the graph | scan | groups | planted pairs found |")
    print("|---|---|---|---|---|")
    for n in sizes:
        rng = np.random.default_rng(n)
        # 1,000 clusters: many points are alike (cosine ~0.5-0.7), few are copies (~0.99)
        centres = rng.standard_normal((1000, 128)).astype(np.float32)
        vecs = centres[rng.integers(0, 1000, n)] + rng.standard_normal((n, 128)).astype(np.float32)
        copies = np.arange(0, n - 1, 20)
        vecs[copies + 1] = vecs[copies] + 0.1 * rng.standard_normal((len(copies), 128))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        paths = [f"/bench/{i // 1000:03d}/{i:06d}.jpg" for i in range(n)]
        with tempfile.TemporaryDirectory(prefix="bench-dup-scan-") as tmp:
            with EdgeStore(Path(tmp) / "index") as store:
                store.ensure_collections({"dup": 128})
                for start in range(0, n, 4096):
                    stop = min(n, start + 4096)
                    store.upsert_images(
                        [image_point_id(p) for p in paths[start:stop]],
                        [
                            image_payload(
                                p,
                                label="x",
                                width=640,
                                height=480,
                                size_bytes=10_000,
                                mtime=1.7e9,
                                sha256=f"{i:064x}",
                            )
                            for i, p in enumerate(paths[start:stop], start)
                        ],  # fmt: skip
                        {"dup": vecs[start:stop]},
                    )
                store.set_meta({"models": {"dup": {"dim": 128, "id": "bench"}}})
                t0 = time.perf_counter()
                store.optimize()
                build = time.perf_counter() - t0
                t0 = time.perf_counter()
                report = SearchService(store).duplicates(threshold=0.9)
                took = time.perf_counter() - t0
                found = pairs_of([[im.path for im in g.images] for g in report.groups])
                want = {(paths[i], paths[i + 1]) for i in copies}
                print(
                    f"| {n:,} | {build:.1f} s | {took:.1f} s | {len(report.groups)} "
                    f"| {len(found & want)} of {len(want)} |",
                    flush=True,
                )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="a DeViSE checkpoint, to measure devise")
    p.add_argument("--fashion", default=None, help="a folder of Fashion-MNIST PNGs")
    p.add_argument("--sizes", default="10000,100000", help="points for the scan timing")
    p.add_argument("--skip-planted", action="store_true")
    p.add_argument("--skip-scan", action="store_true")
    add_json_flag(p)
    args = p.parse_args()
    print(f"CPU: {cpu_name()}")
    if not args.skip_planted:
        planted(args)
    if not args.skip_scan:
        scan([int(x) for x in args.sizes.split(",") if x])


if __name__ == "__main__":
    report.run(__file__, main)
