"""CLIP beside DeViSE and ConSE: tower throughput, and what a user waits for.

Stand-in ViT-B-32 weights (random, in the Hugging Face hub cache's layout, as
tests/standins.py writes them) stand for `laion2b_s34b_b79k`: speed does not depend on the
values. In one run, on one CPU:

- image throughput (img/s, batch 32, 224 px): CLIP's image tower as ingest runs it (the
  OpenVINO fast path) and eagerly in PyTorch; the efficientnet_lite0 backbone that devise
  and conse share (devise adds a 1280x50 projection, conse a 1000-way classifier);
- text throughput (prompts/s): CLIP's text tower on the prompts' own tokens (compiled) and
  on the padded 77-token context (open_clip's own `encode_text`, eager); devise and conse
  look a word's vector up, in microseconds;
- the wall time of whole processes against a small index: `devise search TEXT --model
  clip` (goal <= 1.5 s) and `devise tag PHOTO --model clip` for a photo the index lacks
  (goal <= 2 s), once the towers and the tag vocabulary are cached; and `tag` inside a
  running app (goal <= 100 ms); the first embedding of the tag vocabulary, once per model.

    python bench/bench_clip.py [--n 64] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import report
from report import add_json_flag

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_tags import cpu_name  # noqa: E402
from tests.standins import write_clip_hf  # noqa: E402


def rate(fn, batch: object, n_items: int, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn(batch)  # warm: compilation, first-call allocations
    t = time.perf_counter()
    for _ in range(repeat):
        fn(batch)
    return n_items * repeat / (time.perf_counter() - t)


def wall(cmd: list[str], env: dict[str, str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-500:]}")
    return statistics.median(times)


def main() -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="images per throughput figure")
    add_json_flag(ap)
    args = ap.parse_args()

    import open_clip
    import torch

    from model.embedders.clip import ClipEmbedder
    from model.embedders.conse import ConseEmbedder

    work = Path(tempfile.mkdtemp(prefix="bench-clip-"))
    env = {
        **os.environ,
        "HF_HOME": str(work / "hf"),
        "HF_HUB_OFFLINE": "1",
        "DEVISE_CACHE": str(work / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    os.environ["DEVISE_CACHE"] = env["DEVISE_CACHE"]
    weights = write_clip_hf(work / "hf" / "hub", "ViT-B-32", "laion2b_s34b_b79k")
    out: dict[str, object] = {"cpu": cpu_name()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3, 224, 224)).astype(np.float32)
    reps = max(1, args.n // 32)

    clip = ClipEmbedder(weights_file=weights)
    t = time.perf_counter()
    clip.embed_arrays(x[:1])
    out["clip_compile_image_s"] = time.perf_counter() - t
    img = {"clip (fast path)": rate(clip.embed_arrays, x, 32, reps)}
    model = clip._build()
    with torch.inference_mode():
        img["clip (PyTorch eager)"] = rate(
            lambda b: model.encode_image(torch.from_numpy(b)), x, 32, reps
        )
    conse = ConseEmbedder()
    img["efficientnet_lite0 (devise, conse)"] = rate(conse.backbone.features, x, 32, reps)
    out["image_img_per_s"] = img

    from model.vocab.words import imagenet_class_names

    prompts = [f"a photo of a {n}." for n in imagenet_class_names()[:256]]
    tok = open_clip.get_tokenizer("ViT-B-32")
    padded = tok(prompts)
    text = {
        "clip text, own tokens (fast path)": rate(clip.encode_prompts, prompts, len(prompts), 1)
    }
    with torch.inference_mode():
        text["clip text, 77 tokens (open_clip, eager)"] = rate(
            model.encode_text, padded[:64], 64, 1
        )
    from model.vocab.words import load_words

    words = load_words()
    names = [n.split()[0].lower() for n in imagenet_class_names()[:256]]
    known = [w for w in names if w in words]
    text["glove lookup (devise, conse)"] = rate(
        lambda ws: [words.kv[w] for w in ws], known, len(known), 20
    )
    out["text_per_s"] = text

    # whole processes, as a user runs them
    photos = work / "photos"
    import skimage

    data = Path(skimage.__file__).parent / "data"
    for name in ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"):
        (photos / name.split(".")[0]).mkdir(parents=True)
        shutil.copy(data / name, photos / name.split(".")[0] / name)
    fresh = work / "fresh.png"
    shutil.copy(data / "motorcycle_left.png", fresh)
    devise = [sys.executable, "-m", "app.cli"]
    idx = str(work / "index")
    t = time.perf_counter()
    subprocess.run(
        [*devise, "ingest", str(photos), "--models", "clip", "--index", idx],
        env=env,
        check=True,
        capture_output=True,
    )
    out["first_ingest_s"] = time.perf_counter() - t
    meta = json.loads((work / "index" / "meta.json").read_text())
    out["tag_vocabulary"] = meta["words"]["clip"]
    out["process_s"] = {
        "devise search 'a dog on the grass' --model clip": wall(
            [*devise, "search", "a dog on the grass", "--model", "clip", "--index", idx], env
        ),
        "devise tag NEW_PHOTO --model clip": wall(
            [*devise, "tag", str(fresh), "--model", "clip", "--index", idx], env
        ),
        "devise tag INDEXED_PHOTO --model clip": wall(
            [
                *devise,
                "tag",
                str(photos / "chelsea" / "chelsea.png"),
                "--model",
                "clip",
                "--index",
                idx,
            ],
            env,
        ),
        "python -c 'import torch' (for scale)": wall([sys.executable, "-c", "import torch"], env),
    }

    from app.search.service import SearchService
    from qdrant import open_store

    store = open_store(Path(idx), None)
    try:
        service = SearchService(store)
        service.tag(fresh, model="clip", k=10)  # warm: the towers load once per app
        t = time.perf_counter()
        for _ in range(5):
            service.tag(fresh.read_bytes(), model="clip", k=10)
        out["app_tag_ms"] = (time.perf_counter() - t) / 5 * 1000
        t = time.perf_counter()
        for q in ("a dog", "a cat", "coffee", "a rocket", "people"):
            service.search_text(q, model="clip", k=10)
        out["app_search_ms"] = (time.perf_counter() - t) / 5 * 1000
    finally:
        store.close()
    shutil.rmtree(work, ignore_errors=True)

    print(f"CPU: {out['cpu']}")
    print("\nimage towers, batch 32, 224 px       img/s")
    for k, v in img.items():
        print(f"  {k:<36} {v:8.1f}")
    print("\ntext                                   prompts/s")
    for k, v in text.items():
        print(f"  {k:<36} {v:10.1f}")
    tv = out["tag_vocabulary"]
    print(
        f"\nfirst ingest (4 photos, converting both towers, embedding {tv['entries']:,} tag "  # type: ignore[index]
        f"words in {tv['seconds']:.1f} s): {out['first_ingest_s']:.1f} s"  # type: ignore[index]
    )
    print("\nwhole processes (median of 3)            s")
    for k, v in out["process_s"].items():  # type: ignore[attr-defined]
        print(f"  {k:<50} {v:5.2f}")
    print(
        f"\ninside a running app: tag {out['app_tag_ms']:.0f} ms, "
        f"search {out['app_search_ms']:.0f} ms"
    )
    return out


if __name__ == "__main__":
    report.run(__file__, main)
