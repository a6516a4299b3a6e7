"""The GPU path, measured in one run (issue 13). Needs a CUDA GPU; elsewhere it says so and
exits cleanly.

For efficientnet_lite0 (its packaged weights), resnet50 and open_clip ViT-B-32 (random
weights: speed does not depend on them), it prints:
- backbone-only img/s at batch 64, 128 and 256 (inputs already on the GPU);
- ingest end to end, img/s: 224-px JPEGs, and 12-megapixel JPEGs with nvJPEG and with CPU
  (PIL) decoding, all generated here; with each, the fraction of the embedding loop the GPU
  waited for the loader, and the fraction spent outside the models;
- the cosine between GPU (mixed precision, the default) and CPU fp32 embeddings of the same
  real photos (scikit-image's, saved as JPEG), on the same input arrays and through each
  device's whole decode path, and GPU fp32 against CPU fp32;
then, on 3,000 Fashion-MNIST images, `devise train` on the GPU and on the CPU with the
eval metrics of both (they must agree within 0.5 points), and the time of one
`--finetune 1` epoch on the GPU.

    python bench/bench_gpu.py            # about 5-8 minutes on an H100/H200
    python bench/bench_gpu.py --quick    # fewer images, a smoke run

Goals (issue 13): resnet50 ingest of 224-px images >= 0.8 of its backbone-only rate,
12-megapixel JPEGs >= 500 img/s, the GPU waiting <= 20% of the time, cosine >= 0.999.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import report
from PIL import Image
from report import add_json_flag

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("efficientnet_lite0", "resnet50", "clip")


def say(text: str) -> None:
    print(text, flush=True)


def make_jpegs(root: Path, n: int, size: tuple[int, int], quality: int = 90) -> None:
    """`n` JPEGs of smooth content (like photos: a noise picture would be unlike any camera's)
    in four class folders, written by every core."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx * 0.004), np.cos(yy * 0.003), np.sin((xx + yy) * 0.002)], axis=-1)

    def one(i: int) -> None:
        d = root / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        shift = np.float32(i * 0.37)
        img = ((np.sin(base * (1 + i % 7) + shift) + 1) * 127).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i}.jpg", quality=quality)

    with ThreadPoolExecutor(os.cpu_count() or 4) as pool:
        list(pool.map(one, range(n)))


class _Features:
    """Unit-normalised pooled features as an embedder: the ingest cost without a head."""

    name = "devise"

    def __init__(self, model: Any, preprocess: Any, tag: str) -> None:
        from model.vocab.words import unit

        self.model = model
        self.preprocess = preprocess
        self.content_id = f"bench-gpu-{tag}"
        self._unit = unit
        self.dim = int(
            self.embed_arrays(np.zeros((1, 3, preprocess.size, preprocess.size), np.float32)).shape[
                1
            ]
        )

    def embed_arrays(self, a: Any) -> np.ndarray:
        f = (
            self.model.embed_arrays(a)
            if hasattr(self.model, "embed_arrays")
            else self.model.features(a)
        )
        return self._unit(np.asarray(f, np.float32))


def build(name: str, device: Any) -> tuple[Any, Any]:
    """(model with `.features` or `.embed_arrays`, its Preprocess) on `device`."""
    from model.device import set_default_device

    previous = set_default_device(device)
    try:
        if name == "clip":
            import open_clip
            import torch

            from model.embedders.clip import ClipEmbedder

            torch.manual_seed(0)  # the same random model on both devices
            model, _, pre = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
            tok = open_clip.get_tokenizer("ViT-B-32")
            emb = ClipEmbedder._for_tests(model, pre, tok, 512)
            return emb, emb.preprocess
        from model.backbones import load_backbone

        weights = "default" if name == "efficientnet_lite0" else None
        bb = load_backbone(name, weights, "fp32", runtime="torch", device=device)
        return bb, bb.spec.preprocess
    finally:
        set_default_device(previous)


def run_model(model: Any, x: Any) -> np.ndarray:
    if hasattr(model, "embed_arrays") and not hasattr(model, "features"):
        return np.asarray(model.embed_arrays(x), np.float32)
    return np.asarray(model.features(x), np.float32)


def backbone_rates(model: Any, pre: Any, device: Any, seconds: float) -> dict[int, float]:
    import torch

    out = {}
    for bs in (64, 128, 256):
        x = torch.randn(bs, 3, pre.size, pre.size, device=device.torch_name)
        for _ in range(3):  # cudnn.benchmark picks its kernels; autocast is checked
            run_model(model, x)
        torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3 * bs:
            run_model(model, x)  # returns host numpy: the work is finished
            n += bs
        out[bs] = n / (time.perf_counter() - t0)
    return out


def ingest_rate(
    emb: _Features, folder: Path, index: Path, device: Any, gpu_decode: bool, batch: int
) -> dict[str, float]:
    from ingest.pipeline import ingest
    from model.device import set_default_device
    from qdrant.edge import EdgeStore

    # (time, embed seconds, wait seconds) after each batch: the steady state is measured
    # from the first batch's end to the last one's, leaving out the loader's start-up
    stamps: list[tuple[float, float, float]] = []
    previous = set_default_device(device)
    try:
        with EdgeStore(index) as store:
            t0 = time.perf_counter()
            s = ingest(
                store,
                [folder],
                [emb],  # type: ignore[list-item]
                batch_size=batch,
                progress=False,
                gpu_decode=gpu_decode,
                on_batch=lambda x: stamps.append(
                    (time.perf_counter(), x.embed_seconds, x.wait_seconds)
                ),
            )
            t1 = time.perf_counter()
    finally:
        set_default_device(previous)
    if len(stamps) > 1:
        (ta, ea, wa), (tb, eb, wb) = stamps[0], stamps[-1]
        loop, embed, wait = tb - ta, eb - ea, wb - wa
    else:
        loop, embed, wait = t1 - t0, s.embed_seconds, s.wait_seconds
    loop = max(loop, 1e-9)
    return {
        "img_s": s.indexed / max(1e-9, t1 - t0),
        "indexed": float(s.indexed),
        "failed": float(sum(s.failed.values())),
        "wait": min(1.0, wait / loop),
        "outside": max(0.0, 1.0 - embed / loop),
    }


def cosines(name: str, gpu: Any, cpu_dev: Any, real_jpgs: list[Path]) -> dict[str, float]:
    """GPU-vs-CPU-fp32 cosines of real photos: same arrays (numerics only), and each device's
    whole decode path (nvJPEG + torch resize against PIL)."""
    from model.data.loader import iter_batches
    from model.fastpath import set_default_runtime
    from model.vocab.words import unit

    g_model, pre = build(name, gpu)
    saved = set_default_runtime("torch")  # the reference is plain PyTorch fp32 on the CPU
    try:
        c_model, _ = build(name, cpu_dev)
    finally:
        set_default_runtime(saved)
    g32, _ = build(name, gpu)
    g32_runner = getattr(g32, "_gpu", None)
    if g32_runner is not None:
        g32_runner.dtype = None  # fp32 on the GPU
    cpu_b = next(iter_batches(real_jpgs, pre, len(real_jpgs), 4))
    gpu_b = next(iter_batches(real_jpgs, pre, len(real_jpgs), 4, device=gpu))
    ref = unit(run_model(c_model, cpu_b.array))
    same = unit(run_model(g_model, cpu_b.array))
    whole = unit(run_model(g_model, gpu_b.array))
    fp32 = unit(run_model(g32, cpu_b.array))
    runner = getattr(g_model, "_gpu", None)
    return {
        "same_arrays": float((ref * same).sum(1).min()),
        "whole_path": float((ref * whole).sum(1).min()),
        "gpu_fp32": float((ref * fp32).sum(1).min()),
        "mixed": 0.0 if runner is None or runner.dtype is None else 1.0,
    }


def cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(f"devise {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0, r.stdout


def training(root: Path, n_train: int, n_test: int) -> None:
    import json

    from model.data.datasets import export_fashion_mnist

    train_dir, test_dir = root / "fm-train", root / "fm-test"
    export_fashion_mnist(train_dir, split="train", limit=n_train)
    export_fashion_mnist(test_dir, split="test", limit=n_test)
    base_env = {**os.environ, "PYTHONPATH": str(ROOT)}
    hold = "sandal,shirt"
    results = {}
    for dev in ("cuda", "cpu"):
        # a cache per device: the feature cache is device-independent, and would otherwise
        # hand the CPU run the GPU's features
        env = {**base_env, "DEVISE_CACHE": str(root / f"cache-{dev}")}
        ckpt = root / f"fm-{dev}.safetensors"
        wall, _ = cli(
            ["train", str(train_dir), "--out", str(ckpt), "--holdout", hold, "--device", dev],
            env,
        )
        _, _ = cli(
            [
                "eval",
                str(test_dir),
                "--checkpoint",
                str(ckpt),
                "--models",
                "devise",
                "--holdout",
                hold,
                "--device",
                dev,
                "--json",
                str(root / f"eval-{dev}.json"),
            ],
            env,
        )
        m = json.loads((root / f"eval-{dev}.json").read_text())["models"]["devise"]
        results[dev] = m
        say(f"  train on {dev}: {wall:.1f} s (a whole process, features included)")
    for key in ("flat_hit@1", "flat_hit@5", "zeroshot_hit@1", "zeroshot_hit@5"):
        g, c = results["cuda"].get(key), results["cpu"].get(key)
        if g is None or c is None:
            continue
        d = abs(g - c) * 100
        say(
            f"  eval {key:<15} gpu {g:.4f}  cpu {c:.4f}  |diff| {d:.2f} points "
            f"({'ok' if d <= 0.5 else 'OVER 0.5'})"
        )
    # one fine-tune epoch: the same training again with --finetune 1 (features cached)
    env = {**base_env, "DEVISE_CACHE": str(root / "cache-cuda")}
    base, _ = cli(
        [
            "train",
            str(train_dir),
            "--out",
            str(root / "a.safetensors"),
            "--holdout",
            hold,
            "--device",
            "cuda",
        ],
        env,
    )
    ft, _ = cli(
        [
            "train",
            str(train_dir),
            "--out",
            str(root / "b.safetensors"),
            "--holdout",
            hold,
            "--device",
            "cuda",
            "--finetune",
            "1",
        ],
        env,
    )
    say(
        f"  devise train --finetune 1 on the GPU, {n_train} images: {ft:.1f} s in all; "
        f"the fine-tune epoch (and re-extracting validation features) {ft - base:.1f} s"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--n-small", type=int, default=4096, help="224-px JPEGs to ingest")
    p.add_argument("--n-large", type=int, default=768, help="12-megapixel JPEGs to ingest")
    p.add_argument("--seconds", type=float, default=3.0, help="per backbone-only figure")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--fashion", type=int, default=3000, help="Fashion-MNIST training images")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--quick", action="store_true", help="a smoke run: few images, short timings")
    add_json_flag(p)
    args = p.parse_args()
    if args.quick:
        args.n_small, args.n_large, args.seconds, args.fashion = 512, 64, 0.5, 600

    import warnings

    import torch

    # torchvision >= 0.29 warns that its decoders move to TorchCodec; they still work
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
    if not torch.cuda.is_available():
        say(
            "bench_gpu: no CUDA GPU here (torch.cuda.is_available() is false); nothing to "
            "measure. Run it on a machine with an NVIDIA GPU; the CPU figures are in "
            "bench/bench_backbones.py."
        )
        return 0

    from model.data.datasets import export_photos
    from model.device import CPU, GpuJpegDecoder, autocast_dtype, decode_workers, resolve_device

    gpu = resolve_device("cuda")
    say(
        f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; autocast "
        f"{autocast_dtype(gpu)}; nvJPEG: {GpuJpegDecoder.available(gpu)}; "
        f"{os.cpu_count()} CPU cores, {decode_workers(gpu)} decode threads; batch "
        f"{args.batch_size}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_jpegs(root / "small", args.n_small, (224, 224))
        make_jpegs(root / "large", args.n_large, (4000, 3000))
        export_photos(root / "real")
        real = []
        for png in sorted((root / "real").glob("*.png")):
            jpg = png.with_suffix(".jpg")
            Image.open(png).convert("RGB").save(jpg, quality=95)
            real.append(jpg)
        say(
            f"wrote {args.n_small} 224-px and {args.n_large} 12-MP JPEGs and {len(real)} real "
            f"photos in {time.perf_counter() - t0:.1f} s"
        )
        for name in args.models.split(","):
            model, pre = build(name, gpu)
            rates = backbone_rates(model, pre, gpu, args.seconds)
            say(f"{name}:")
            say(
                "  backbone only  "
                + "  ".join(f"batch {b}: {r:7.0f} img/s" for b, r in rates.items())
            )
            emb = _Features(model, pre, name)
            runs = [
                ("224-px, nvJPEG", "small", True),
                ("12-MP, nvJPEG", "large", True),
                ("12-MP, CPU decode", "large", False),
            ]
            for label, folder, nvjpeg in runs:
                r = ingest_rate(
                    emb,
                    root / folder,
                    root / f"index-{name}-{label[:6]}-{nvjpeg}",
                    gpu,
                    nvjpeg,
                    args.batch_size,
                )
                extra = ""
                if folder == "small":
                    extra = f", {r['img_s'] / rates[args.batch_size]:.2f} of backbone-only"
                say(
                    f"  ingest {label:<18} {r['img_s']:7.0f} img/s{extra}; GPU waited "
                    f"{r['wait'] * 100:4.1f}% for the loader, {r['outside'] * 100:4.1f}% "
                    f"outside the models ({r['indexed']:.0f} indexed, {r['failed']:.0f} failed)"
                )
            c = cosines(name, gpu, CPU, real)
            ok = "ok" if min(c["same_arrays"], c["whole_path"]) >= 0.999 else "BELOW 0.999"
            say(
                f"  cosine vs CPU fp32 on {len(real)} real photos: GPU "
                f"{'mixed' if c['mixed'] else 'fp32 (autocast failed its check)'} "
                f"{c['same_arrays']:.5f} on the same arrays, {c['whole_path']:.5f} through "
                f"nvJPEG decoding; GPU fp32 {c['gpu_fp32']:.5f} ({ok})"
            )
            del model, emb
            torch.cuda.empty_cache()
        if not args.skip_train:
            say(f"training on {args.fashion} Fashion-MNIST images:")
            try:
                training(root, args.fashion, max(500, args.fashion // 3))
            except Exception as e:  # noqa: BLE001 - the figures above still stand
                say(f"  training not measured: {type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    report.run(__file__, main)
