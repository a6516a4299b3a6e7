"""Ingest throughput against the backbone's own forward throughput, in one run.

Prints: backbone-only img/s (same batch size and precision), ingest end-to-end img/s on a
folder of real-sized JPEG photos, their ratio (goal >= 0.85), the loader wait per batch,
and `devise words` time for 100,000 words (goal <= 30 s).

    python bench/bench_ingest.py [--backbone efficientnet_lite0] [--n 256] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import report
from PIL import Image
from report import add_json_flag


def make_photos(root: Path, n: int) -> None:
    """Camera-sized JPEGs (1600x1200) with smooth content, like real photos to decode."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1200, 0:1600].astype(np.float32)
    for i in range(n):
        d = root / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0.002, 0.02, 3)
        img = np.stack([np.sin(xx * a + i), np.cos(yy * b), np.sin((xx + yy) * c)], axis=-1)
        Image.fromarray(((img + 1) * 127).astype(np.uint8)).save(d / f"{i}.jpg", quality=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="auto")
    p.add_argument("--skip-words", action="store_true")
    add_json_flag(p)
    args = p.parse_args()

    import torch

    from ingest.pipeline import ingest
    from model.backbones import load_backbone
    from model.checkpoint import save_checkpoint
    from model.embedders.devise import DeviseHead
    from model.embedders.embedder import DeviseEmbedder
    from qdrant.edge import EdgeStore

    backbone = load_backbone(args.backbone, "default", args.precision)
    print(
        f"backbone {backbone.name}, precision {backbone.precision}, "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_photos(root / "photos", args.n)
        print(f"wrote {args.n} 1600x1200 JPEGs in {time.perf_counter() - t:.1f}s")

        # Backbone alone: preprocessed tensors already in memory.
        x = (
            np.random.default_rng(0)
            .standard_normal((args.batch_size, 3, 224, 224))
            .astype(np.float32)
        )
        backbone.features(x[:2])
        t = time.perf_counter()
        done = 0
        while done < args.n:
            backbone.features(x)
            done += args.batch_size
        fwd = done / (time.perf_counter() - t)
        print(f"backbone forward alone: {fwd:.1f} img/s")

        # A real checkpoint head on this backbone (random projection: speed only).
        head = DeviseHead(backbone.feature_dim, 50)
        tensors = {f"head.{k}": v for k, v in head.state_dict().items()}
        tensors["labels.vectors"] = torch.nn.functional.normalize(torch.randn(4, 50), dim=1)
        ck = root / "ck.safetensors"
        save_checkpoint(
            ck,
            tensors,
            {
                "backbone": backbone.name,
                "weights": backbone.weights_id,
                "words": {"source": "glove-6b-50d", "dim": 50},
                "labels": ["a", "b", "c", "d"],
                "head": "linear",
            },
        )
        emb = DeviseEmbedder(ck, precision=args.precision)
        emb.set_backbone(backbone)
        with EdgeStore(root / "index") as store:
            s = ingest(store, [root / "photos"], [emb], batch_size=args.batch_size, progress=False)
        rate = s.indexed / s.seconds
        print(
            f"ingest end to end: {rate:.1f} img/s ({s.indexed} images in {s.seconds:.1f}s); "
            f"ratio to backbone alone {rate / fwd:.2f} (goal >= 0.85)"
        )
        print(
            f"  backbone waited {s.wait_seconds / max(1, s.batches) * 1000:.1f} ms per batch "
            f"for the loader; embedding {s.embed_seconds:.1f}s of {s.seconds:.1f}s"
        )

        if not args.skip_words:
            from ingest.vocabulary import load_vocabulary
            from model.vocab.words import load_words

            t = time.perf_counter()
            words = load_words()
            with EdgeStore(root / "index2") as store:
                v = load_vocabulary(store, words, 100_000, progress=False)
            print(
                f"devise words, 100,000 words: {time.perf_counter() - t:.1f}s "
                f"(load {v.seconds:.1f}s in the store; goal <= 30 s)"
            )


if __name__ == "__main__":
    report.run(__file__, main)
