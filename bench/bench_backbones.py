"""Backbone speed: plain fp32 against the fast path, with the embeddings compared.

For each backbone, in one run: plain fp32 PyTorch img/s (contiguous NCHW, no autocast),
PyTorch in channels_last (with bf16 autocast where the CPU has AVX-512 BF16 or AMX), the fast
path that ingest uses (OpenVINO, fp32 or native bf16), ingest end to end with the fast path,
the ratios, and the cosine between plain fp32 and fast-path embeddings of real photos
(scikit-image's). Also the wall time of whole `devise search` and `devise tag` processes
against a small index. ResNet weights are random (none ship offline): speed does not depend
on them.

    python bench/bench_backbones.py [--backbones efficientnet_lite0,resnet50] [--n 128]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: ingest with the fast path, as a multiple of plain fp32 backbone-only throughput (issue #7)
GOALS = {"efficientnet_lite0": 3.0, "resnet50": 2.5}


def throughput(fn, x: np.ndarray, n: int) -> float:  # type: ignore[no-untyped-def]
    fn(x[:2])
    t = time.perf_counter()
    done = 0
    while done < n:
        fn(x)
        done += len(x)
    return done / (time.perf_counter() - t)


class _Features:
    """Unit-normalised pooled features as an embedder: ingest cost without a head."""

    name = "devise"

    def __init__(self, backbone) -> None:  # type: ignore[no-untyped-def]
        from model.vocab.words import unit

        self.backbone = backbone
        self.dim = backbone.feature_dim
        self.content_id = f"bench-{backbone.name}"
        self.preprocess = backbone.spec.preprocess
        self._unit = unit

    def embed_features(self, f: np.ndarray) -> np.ndarray:
        return self._unit(f)

    def embed_arrays(self, a: np.ndarray) -> np.ndarray:
        return self._unit(self.backbone.features(a))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbones", default="efficientnet_lite0,resnet50")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--skip-cli", action="store_true")
    args = p.parse_args()

    import torch

    from bench.bench_ingest import make_photos
    from ingest.pipeline import ingest
    from model.backbones import cpu_has_bf16, load_backbone, resolve_precision
    from model.data.datasets import export_photos
    from model.data.images import load_array
    from model.fastpath import openvino_has_bf16, resolve_runtime
    from model.vocab.words import unit
    from qdrant.edge import EdgeStore

    fast = resolve_precision("auto")
    print(
        f"CPU native bf16: {cpu_has_bf16()}; fast path: {resolve_runtime('auto')} in {fast} "
        f"(OpenVINO bf16: {fast == 'bf16' and openvino_has_bf16()}); torch threads "
        f"{torch.get_num_threads()}; batch {args.batch_size} at 224 px"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export_photos(root / "real")
        real = sorted((root / "real").glob("*.png"))
        make_photos(root / "photos", args.n)
        for name in args.backbones.split(","):
            weights = "default" if name == "efficientnet_lite0" else None
            slow = load_backbone(name, weights, "fp32", runtime="torch")
            eager = load_backbone(name, weights, fast, runtime="torch")
            quick = load_backbone(name, weights, fast)  # the default: what ingest uses
            x = (
                np.random.default_rng(0)
                .standard_normal((args.batch_size, 3, 224, 224))
                .astype(np.float32)
            )

            def plain(a: np.ndarray, bb=slow) -> np.ndarray:  # type: ignore[no-untyped-def]
                bb.to(memory_format=torch.contiguous_format)
                with torch.inference_mode():
                    return bb(torch.from_numpy(a)).numpy()

            t = time.perf_counter()
            quick.features(x[:1])  # compile (or read the compiled model from the cache)
            first_call = time.perf_counter() - t
            fp32 = throughput(plain, x, args.n)
            eager_rate = throughput(eager.features, x, args.n)
            quick_rate = throughput(quick.features, x, args.n)
            arr = np.stack([load_array(f, quick.spec.preprocess) for f in real])
            cos = (unit(plain(arr)) * unit(quick.features(arr))).sum(axis=1)

            with EdgeStore(root / f"index-{name}") as store:
                s = ingest(
                    store,
                    [root / "photos"],
                    [_Features(quick)],
                    batch_size=args.batch_size,  # type: ignore[list-item]
                    progress=False,
                )
            rate = s.indexed / s.seconds
            goal = GOALS.get(name)
            verdict = (
                ""
                if goal is None
                else f" (goal {goal}x: {'met' if rate / fp32 >= goal else 'NOT met'})"
            )
            print(
                f"{name}:\n"
                f"  plain fp32 torch (NCHW)       {fp32:6.1f} img/s\n"
                f"  torch channels_last {fast:<9} {eager_rate:6.1f} img/s  "
                f"{eager_rate / fp32:.2f}x\n"
                f"  fast path ({quick.runtime} {quick.precision}) {quick_rate:6.1f} img/s  "
                f"{quick_rate / fp32:.2f}x  (first call {first_call:.1f} s)\n"
                f"  ingest end to end, fast path  {rate:6.1f} img/s  {rate / fp32:.2f}x plain fp32"
                f"{verdict}, {rate / quick_rate:.2f} of the fast backbone; loader wait "
                f"{s.wait_seconds / max(1, s.batches) * 1000:.0f} ms/batch\n"
                f"  cosine plain fp32 vs fast path on {len(real)} real photos: min {cos.min():.5f}"
            )

    if not args.skip_cli:
        cli_times()


def cli_times() -> None:
    """Whole-process wall time of `devise search` and `devise tag` on a tiny index."""
    from PIL import Image

    from tests.conftest import make_image_folder

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_image_folder(root / "data", {"cat": "disc", "truck": "stripes"}, 8)
        ck = root / "ck.safetensors"
        run = [sys.executable, "-m", "app.cli", "--cache", str(root / "cache")]
        subprocess.run(
            [*run, "train", str(data), "--out", str(ck), "--epochs", "3"],
            check=True,
            capture_output=True,
            cwd=repo,
        )
        idx = ["--index", str(root / "index")]
        subprocess.run(
            [*run, "ingest", str(data), "--checkpoint", str(ck), "--models", "devise", *idx],
            check=True,
            capture_output=True,
            cwd=repo,
        )
        subprocess.run(
            [*run, "words", "--top", "20000", *idx], check=True, capture_output=True, cwd=repo
        )
        Image.open(data / "cat" / "000.png").save(root / "query.png")

        def wall(argv: list[str], env: dict[str, str] | None = None) -> float:
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True, cwd=repo, env=env)
                best = min(best, time.perf_counter() - t)
            return best

        search = wall([*run, "search", "cat", *idx])
        tag = wall([*run, "tag", str(root / "query.png"), *idx])
        env = {**os.environ, "DEVISE_CACHE": str(root / "cache")}
        load_torch = wall(
            [
                sys.executable,
                "-c",
                "from model.backbones import load_backbone;load_backbone('efficientnet_lite0')",
            ]
        )
        # what `devise tag` loads: the compiled backbone from the cache ingest filled
        load_fast = wall(
            [
                sys.executable,
                "-c",
                "import numpy as np;from model.embedders.embedder import load_for_inference as f;"
                "f('efficientnet_lite0','default','auto').features(np.zeros((1,3,224,224),'f4'))",
            ],
            env,
        )
        print(f"devise search (whole process, best of 3): {search:.2f}s (goal < 2 s)")
        print(
            f"devise tag (whole process, best of 3): {tag:.2f}s\n"
            f"  backbone load as tag does it (compiled, from the cache, one image run): "
            f"{load_fast:.2f}s -> tag - load = {tag - load_fast:.2f}s (goal < 0.5 s)\n"
            f"  PyTorch backbone load alone: {load_torch:.2f}s -> tag - load = "
            f"{tag - load_torch:.2f}s"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
