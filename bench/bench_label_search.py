"""Text search for the checkpoint's own labels on devise: word-vector cosine (what `devise
search LABEL` did before) against the calibrated margin it ranks by now
(app/search/ranking/label.py `label_images`), per label: average precision over the whole
index, precision@10 and @20, and the rank of the first right image. The images' `label`
payload is the truth; photos whose label is none of the checkpoint's are the distractors.
Asserts nothing.
From the repository root, after `devise demo --no-launch`:

    python bench/bench_label_search.py [--index DIR] [--checkpoint CKPT]

(AP is over the first 1,000 results, the most a query returns.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import report
from report import add_json_flag


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--index", type=Path, default=Path("data/index"))
    p.add_argument("--checkpoint", type=Path, default=Path("data/demo/devise.safetensors"))
    add_json_flag(p)
    args = p.parse_args()

    import numpy as np
    from bench_tags import cpu_name  # type: ignore[import-not-found]

    from app.search.service import SearchService
    from model.evaluate import _ap
    from qdrant.edge import EdgeStore

    store = EdgeStore(args.index)
    try:
        service = SearchService(store, checkpoint=args.checkpoint)
        n = min(store.count("images"), 1000)
        meta = service.embedder("devise").meta
        labels, holdout = list(meta["labels"]), set(meta.get("holdout", []))
        print(f"{n} images; gamma {meta['calibration']['gamma']:.3f}; CPU: {cpu_name()}")
        print(
            f"{'label':12s} {'':6s} | cosine: AP   p@10 p@20 first | margin: AP   p@10 p@20 first"
        )
        rows = []
        for label in labels:
            truth = sum(1 for r in store.scroll_images() if r.payload.get("label") == label)
            vec = service.text_vector(label, "devise")
            before = [h.payload["label"] == label for h in store.search_images("devise", vec, n)]
            after = [r.label == label for r in service.search_text(label, k=n).results]
            cells = []
            for ranked in (before, after):
                rel = np.asarray(ranked, dtype=bool)
                first = int(np.argmax(rel)) + 1 if rel.any() else 0
                cells.append((_ap(rel, truth), rel[:10].mean(), rel[:20].mean(), first))
            rows.append(cells)
            (a, p10, p20, f), (a2, q10, q20, f2) = cells
            kind = "unseen" if label in holdout else "seen"
            print(
                f"{label:12s} {kind:6s} | {a:10.3f} {p10:4.2f} {p20:4.2f} {f:5d} |"
                f" {a2:10.3f} {q10:4.2f} {q20:4.2f} {f2:5d}"
            )
        m = np.asarray([[c[0] for c in r] for r in rows])
        print(f"{'mean AP':19s} | {m[:, 0].mean():10.3f} {'':16s}| {m[:, 1].mean():10.3f}")
    finally:
        store.close()


if __name__ == "__main__":
    report.run(__file__, main)
