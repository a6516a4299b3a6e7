"""Pictures the classifier cannot read, among real photos, under conse. Prints figures.

    python bench/bench_conse_confidence.py [--out DIR]

A library of real photos (scikit-image's and Debian darknet's) and pictures a photo
library holds beside them that ImageNet's classifier cannot read: noise (3), pages of text
(3), screenshots (3). Ingested with conse through the CLI; then, from the index's own
vectors and payloads, for cosine alone and for cosine weighed by the classifier's top-T
probability mass (what `devise similar` and a word no image is under use):

1. the share of the top-5 places of "similar" for every real photo taken by such pictures;
2. for 8 words, each with a photo it names, that photo's rank when the images are ranked by
   the word's vector, and how many such pictures are in each word's top 5.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from app.cli import main as cli
from model.data.datasets import export_photos
from model.embedders.conse import top_probs
from qdrant.edge import EdgeStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, run from anywhere
import report
from report import add_json_flag

from tests.corpus import unreadable_pictures  # noqa: E402

DARKNET = Path("/usr/share/darknet/data")
#: a word, and the photos it names
WORDS = {
    "horse": ("horse", "horses"),
    "bird": ("eagle",),
    "giraffe": ("giraffe",),
    "kite": ("kite",),
    "rocket": ("rocket",),
    "coffee": ("coffee",),
    "moon": ("moon",),
    "clock": ("clock",),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    add_json_flag(p)
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="conse-confidence-"))
    photos = out / "library" / "photos"
    export_photos(photos)
    for f in sorted(DARKNET.glob("*.jpg")):
        shutil.copy2(f, photos / f.name)
    unreadable_pictures(out / "library" / "unreadable")
    index = out / "index"
    assert cli(["ingest", str(out / "library"), "--models", "conse", "--index", str(index)]) == 0

    store = EdgeStore(index)
    try:
        recs = list(store.scroll_images(with_vectors=["conse"]))
        from app.search.service import SearchService

        words = {w: SearchService(store).text_vector(w, "conse") for w in WORDS}
    finally:
        store.close()
    names = [Path(r.payload["path"]).stem for r in recs]
    junk = np.array([Path(r.payload["path"]).parent.name == "unreadable" for r in recs])
    vecs = np.stack([np.asarray(r.vectors["conse"], np.float32) for r in recs])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    mass = np.array([float(top_probs(r.payload["conse_top"]).sum()) for r in recs])
    real = np.flatnonzero(~junk)
    print(f"{len(real)} real photos, {int(junk.sum())} unreadable pictures; top-T mass: "
          f"photos median {np.median(mass[real]):.2f}, unreadable median "
          f"{np.median(mass[junk]):.2f}")  # fmt: skip
    for label, weight in (("cosine", np.ones_like(mass)), ("cosine x mass", mass)):
        taken = 0
        for i in real:
            s = (vecs @ vecs[i]) * weight
            s[i] = -np.inf
            taken += int(junk[np.argsort(-s)[:5]].sum())
        ranks, junk5 = [], 0
        for w, targets in WORDS.items():
            order = list(np.argsort(-(vecs @ words[w]) * weight))
            ranks.append(min(order.index(names.index(t)) + 1 for t in targets))
            junk5 += int(junk[order[:5]].sum())
        each = ", ".join(f"{w} {r}" for w, r in zip(WORDS, ranks, strict=True))
        print(f"{label:>14}: similar, unreadable in the top 5: {taken}/{5 * len(real)} "
              f"({taken / (5 * len(real)):.0%}); words, first right photo at mean rank "
              f"{np.mean(ranks):.1f} ({each}), unreadable in the top 5: "
              f"{junk5}/{5 * len(WORDS)}")  # fmt: skip


if __name__ == "__main__":
    report.run(__file__, main)
