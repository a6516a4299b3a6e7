"""Backbone speed at fp32, bf16 and int8, ingest end to end for each, and the CPU's peak.

For each backbone, in one run (batch 32 at 224 px):

- plain fp32 PyTorch img/s (contiguous NCHW, no autocast);
- the fast path (OpenVINO) at each precision: fp32, bf16 (`INFERENCE_PRECISION_HINT=bf16`,
  native only with AVX-512 BF16 or AMX) and int8 (NNCF post-training quantisation,
  `model/quantize.py`), each with its ratio to the fp32 fast path;
- ingest end to end (decode of camera-sized JPEGs, the backbone, the store) at each
  precision;
- each one's fraction of the CPU's peak: FLOPs per image (counted by
  `torch.utils.flop_counter`, 2 per multiply-add) times img/s, against cores x GHz x
  FLOPs per cycle per core of the units that precision uses (`PEAKS`, with their sources);
- the cosine between plain fp32 and each precision's features of real photos
  (scikit-image's and darknet's).

The first-batch fallback is off here, so each precision is measured as it is; what
`--precision auto` picks is printed. ResNet weights are random (none ship offline): speed
does not depend on them. Also the wall time of whole `devise search` and `devise tag`
processes against a small index.

    python bench/bench_backbones.py [--backbones efficientnet_lite0,resnet50] [--n 640] [--rounds 3]
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
import report
from report import add_json_flag

#: ingest with the fast path, as a multiple of plain fp32 backbone-only throughput (issue #7)
GOALS = {"efficientnet_lite0": 3.0, "resnet50": 2.5}

#: Peak FLOPs per cycle per core of the units each precision runs on, per CPU kind. Sources:
#: AMD's Software Optimization Guide for AMD Family 19h Processors (Zen 4: two 256-bit FMA
#: pipes, AVX-512 runs as two 256-bit halves; VDPBF16PS does 2 bf16 multiply-adds per fp32
#: lane, VPDPBUSD 4 int8 ones per int32 lane) and Intel's 64 and IA-32 Architectures
#: Optimization Reference Manual (two 512-bit FMA units on Xeon; AMX TMUL: 1024 bf16 and
#: 2048 int8 operations per cycle). Counted as 2 FLOPs per multiply-add, int8 ops as FLOPs.
PEAKS: dict[str, dict[str, int]] = {
    "zen4 (AVX-512 BF16, VNNI; 2x256-bit FMA)": {"fp32": 32, "bf16": 64, "int8": 128},
    "xeon with AMX": {"fp32": 64, "bf16": 1024, "int8": 2048},
    "xeon AVX-512 (BF16/VNNI, no AMX)": {"fp32": 64, "bf16": 128, "int8": 256},
    "AVX2 (2 FMA units)": {"fp32": 32, "bf16": 32, "int8": 64},
}


def cpu_kind() -> str:
    flags: set[str] = set()
    vendor = ""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("vendor_id") and not vendor:
                vendor = line.split(":", 1)[1].strip()
    if "amx_bf16" in flags:
        return "xeon with AMX"
    if "avx512f" in flags:
        if vendor == "AuthenticAMD":
            return "zen4 (AVX-512 BF16, VNNI; 2x256-bit FMA)"
        return "xeon AVX-512 (BF16/VNNI, no AMX)"
    return "AVX2 (2 FMA units)"


def cpu_ghz() -> float:
    """The clock /proc/cpuinfo reports (in a VM, the host's nominal clock; boost unknown)."""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000
    return float("nan")


def flops_per_image(backbone) -> float:  # type: ignore[no-untyped-def]
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    size = backbone.spec.preprocess.size
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        backbone(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


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
    p.add_argument("--precisions", default="fp32,bf16,int8")
    p.add_argument("--n", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--skip-cli", action="store_true")
    p.add_argument(
        "--rounds", type=int, default=3, help="turns over the precisions; medians are printed"
    )
    add_json_flag(p)
    args = p.parse_args()

    import torch

    from bench.bench_ingest import make_photos
    from bench.bench_tags import cpu_name
    from ingest.pipeline import ingest
    from model import fastpath
    from model.backbones import Backbone, cpu_has_bf16, load_backbone, resolve_precision
    from model.data.datasets import export_photos
    from model.data.images import load_array
    from model.quantize import DARKNET_PHOTOS
    from model.vocab.words import unit
    from qdrant.edge import EdgeStore

    # each precision measured as it is: no first-batch fallback to fp32
    Backbone.BF16_MIN_COSINE = -1.0
    kind, ghz, cores = cpu_kind(), cpu_ghz(), len(os.sched_getaffinity(0))
    print(
        f"CPU: {cpu_name()}; native bf16: {cpu_has_bf16()} (OpenVINO: "
        f"{fastpath.openvino_has_bf16()}); torch threads {torch.get_num_threads()}; batch "
        f"{args.batch_size} at 224 px\npeak assumed: {kind}, {cores} cores x {ghz:.2f} GHz "
        f"(/proc/cpuinfo) x FLOPs/cycle {PEAKS[kind]} (sources: bench_backbones.PEAKS)"
    )
    precisions = args.precisions.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export_photos(root / "real")
        real = sorted((root / "real").glob("*.png")) + sorted(DARKNET_PHOTOS.glob("*.jpg"))
        make_photos(root / "photos", args.n)
        for name in args.backbones.split(","):
            weights = "default" if name == "efficientnet_lite0" else None
            slow = load_backbone(name, weights, "fp32", runtime="torch")
            flops = flops_per_image(slow)
            x = (
                np.random.default_rng(0)
                .standard_normal((args.batch_size, 3, 224, 224))
                .astype(np.float32)
            )

            def plain(a: np.ndarray, bb=slow) -> np.ndarray:  # type: ignore[no-untyped-def]
                bb.to(memory_format=torch.contiguous_format)
                with torch.inference_mode():
                    return bb(torch.from_numpy(a)).numpy()

            arr = np.stack([load_array(f, slow.spec.preprocess) for f in real])
            ref = unit(plain(arr))
            print(
                f"{name}: {flops / 1e9:.2f} GFLOPs per image; --precision auto runs "
                f"{resolve_precision('auto', name)}"
            )
            # Load (compile, quantise) every precision first, then measure them in turns,
            # `--rounds` times: on a shared or virtual machine the speed drifts by 2x over
            # minutes, and measuring one precision after another would credit that drift
            # to the precision. Each figure is the median of its rounds.
            quick: dict[str, Backbone] = {}
            for prec in precisions:
                t = time.perf_counter()
                try:
                    bb = load_backbone(name, weights, prec)
                    bb.features(x[:1])  # compile, or quantise (or read either from the cache)
                except Exception as e:  # noqa: BLE001 - a precision this CPU cannot run
                    print(f"  {prec:22s} not available: {type(e).__name__}: {e}")
                    continue
                if bb.precision != prec or bb.runtime != "openvino":
                    print(f"  {prec:22s} not run natively here ({bb.numerics}): skipped")
                    continue
                quick[prec] = bb
                print(f"  {prec:22s} ready in {time.perf_counter() - t:.1f} s")
            plain_rates: list[float] = []
            rates: dict[str, list[float]] = {p: [] for p in quick}
            ends: dict[str, list[float]] = {p: [] for p in quick}
            waits: dict[str, list[float]] = {p: [] for p in quick}
            for r in range(args.rounds):
                plain_rates.append(throughput(plain, x, min(args.n, 128)))  # the slow one
                for prec, bb in quick.items():
                    rates[prec].append(throughput(bb.features, x, args.n))
                    with EdgeStore(root / f"index-{name}-{prec}-{r}") as store:
                        s = ingest(
                            store,
                            [root / "photos"],
                            [_Features(bb)],
                            batch_size=args.batch_size,  # type: ignore[list-item]
                            progress=False,
                        )
                    ends[prec].append(s.indexed / s.seconds)
                    waits[prec].append(s.wait_seconds / max(1, s.batches))
            fp32 = float(np.median(plain_rates))
            print(
                f"  medians of {args.rounds} rounds (each round's figures in brackets)\n"
                f"  {'':22s} {'img/s':>7s} {'vs fp32 fast':>12s} {'of peak':>8s}  "
                f"{'ingest img/s':>12s} {'vs fp32 fast':>12s} {'vs plain':>8s}  "
                f"cosine min (photos)\n"
                f"  {'plain fp32 PyTorch':22s} {fp32:7.1f} {'':12s} "
                f"{_peak(flops * fp32, cores, ghz, PEAKS[kind]['fp32']):>8s}  "
                f"({_rounds(plain_rates)})"
            )
            med = {p: (float(np.median(rates[p])), float(np.median(ends[p]))) for p in quick}
            b_rate, b_end = med.get("fp32", (float("nan"), float("nan")))
            for prec, bb in quick.items():
                rate, end = med[prec]
                cos = (ref * unit(bb.features(arr))).sum(axis=1)
                goal = GOALS.get(name) if prec == "fp32" else None
                verdict = (
                    ""
                    if goal is None
                    else f"; goal {goal}x plain: {'met' if end / fp32 >= goal else 'NOT met'}"
                )
                print(
                    f"  {'fast path ' + prec:22s} {rate:7.1f} {rate / b_rate:11.2f}x "
                    f"{_peak(flops * rate, cores, ghz, PEAKS[kind][prec]):>8s}  "
                    f"{end:12.1f} {end / b_end:11.2f}x {end / fp32:7.2f}x  {cos.min():.4f}\n"
                    f"  {'':22s} backbone ({_rounds(rates[prec])}) ingest ({_rounds(ends[prec])}); "
                    f"loader wait {np.median(waits[prec]) * 1000:.0f} ms/batch{verdict}"
                )
            if name == "resnet50" and kind == "xeon with AMX":
                best = max(quick, key=lambda p: med[p][1])
                end = med[best][1]
                print(
                    f"  AMX goals (resnet50 ingest >= 100 img/s and >= 6x plain fp32): best is "
                    f"{best}, {end:.1f} img/s and {end / fp32:.1f}x plain: "
                    f"{'met' if end >= 100 and end / fp32 >= 6 else 'NOT met'}"
                )

    if not args.skip_cli:
        cli_times()


def _rounds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _peak(flops_per_s: float, cores: int, ghz: float, per_cycle: int) -> str:
    return f"{flops_per_s / (cores * ghz * 1e9 * per_cycle):.0%}"


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
    report.run(__file__, main)
