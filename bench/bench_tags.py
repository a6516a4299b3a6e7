"""ConSE tags and general-word search on real photos, before and after the tag vocabulary.

Before: the nearest of the 20,000 most frequent GloVe words to the ConSE vector (what
`devise tag --model conse` did). After: ImageNet labels and their WordNet hypernyms,
scored by the probability mass of the classes under them and ordered by hedging.

Then text search on a gallery of the real photos mixed into Fashion-MNIST test images: for
`dog`, `cat`, `bird`, `drink` (and a few more), the rank of the first right photo and the
average precision, by three rankings: the word's vector (before), the best member class's
vector, and the stored concept mass (after). Asserts nothing. From the repository root:

    python bench/bench_tags.py [--fashion 1000]

Photos: scikit-image's, plus Debian darknet's dog, eagle, giraffe, horses and person when
/usr/share/darknet/data holds them (a dog and a bird are only there).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import report
from report import add_json_flag

DARKNET = Path("/usr/share/darknet/data")
# which photos are right answers for each query (by file stem), judged by eye
TRUTH = {
    "dog": {"dog", "person"},  # darknet's person.jpg has a dog beside the woman
    "cat": {"chelsea"},
    "bird": {"eagle"},
    "drink": {"coffee"},
    "coffee": {"coffee"},
    "vehicle": {"motorcycle"},
    "horse": {"horse", "horses", "person"},
    "animal": {"chelsea", "dog", "eagle", "giraffe", "horses", "horse", "person"},
    # people: the astronaut (a frontal face), the cameraman (in profile), darknet's person.jpg
    # (seen from behind); only the first has a face the detector can find
    "person": {"astronaut", "camera", "person"},
}


def cpu_name() -> str:
    """The CPU's model name and the cores this process may use, for the figures' caption."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in out.splitlines())
    )
    name = fields.get("Model name", "unknown CPU")
    # a VM may name only the brand ("AMD EPYC"): family and model tell the generation
    if "CPU family" in fields:
        name += f" (family {fields['CPU family']}, model {fields.get('Model', '?')})"
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def ranks(scores: np.ndarray, relevant: list[int]) -> tuple[int, float]:
    order = np.argsort(-scores, kind="stable")
    pos = sorted(int(np.flatnonzero(order == i)[0]) + 1 for i in relevant)
    return pos[0], float(np.mean([(j + 1) / r for j, r in enumerate(pos)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--fashion", type=int, default=1000, help="Fashion-MNIST test images mixed in")
    p.add_argument("-k", type=int, default=5)
    p.add_argument(
        "--scenes",
        action="store_true",
        help="instead: tags of bench/scenes.py's scenes, the whole photo's and with regions",
    )
    add_json_flag(p)
    args = p.parse_args()
    if args.scenes:
        scene_tags(args.k)
        return

    from model.data.datasets import (
        PHOTO_LABELS,
        export_photos,
        read_fashion_mnist,
        stratified_indices,
    )
    from model.data.images import decode_image
    from model.embedders.conse import ConseEmbedder, conse_vectors
    from model.vocab.hierarchy import GENERAL, imagenet_concepts
    from model.vocab.words import alphabetic_vocabulary, unit

    print(f"CPU: {cpu_name()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-tags-"))
    export_photos(tmp)
    photos = sorted(tmp.glob("*.png")) + sorted(DARKNET.glob("*.jpg"))
    emb = ConseEmbedder()
    cs = imagenet_concepts()
    images = [decode_image(p) for p in photos]
    probs = emb.probs_images(images)
    detected = emb.detect_images(images)  # a face is a `person`
    vecs = conse_vectors(probs, emb.class_vectors, emb.top_t)
    vocab = [w for _, w in alphabetic_vocabulary(emb.words, 20_000)]
    mat = unit(np.stack([emb.words.kv[w] for w in vocab]).astype(np.float32))

    print(f"\n## ConSE tags, top {args.k} (before: nearest frequent words; after: hedged)\n")
    print("| photo | before | after |")
    print("|---|---|---|")
    general = []
    for path, v, pr, seen in zip(photos, vecs, probs, detected, strict=True):
        before = ", ".join(vocab[j] for j in np.argsort(-(mat @ v))[: args.k])
        after = ", ".join(f"{c.name} ({m:.2f})" for c, m in cs.ranked(pr, args.k, detected=seen))
        gen = ", ".join(
            f"{c.name} ({m:.2f})" for c, m in cs.ranked(pr, args.k, lam=GENERAL, detected=seen)
        )
        name = PHOTO_LABELS.get(path.stem, path.stem)
        print(f"| {name} | {before} | {after} |")
        general.append(f"| {name} | {gen} |")
    print("\n## The same, --generality general (plain probability order)\n")
    print("| photo | general |")
    print("|---|---|")
    print("\n".join(general))

    # the search gallery: Fashion-MNIST test images and the photos
    fm_all, fm_labels = read_fashion_mnist("test", progress=False)
    fm = fm_all[stratified_indices(fm_labels, args.fashion)]
    from PIL import Image

    fm_images = [Image.fromarray(a).convert("RGB") for a in fm]
    fm_probs = np.concatenate(
        [emb.probs_images(fm_images[i : i + 64]) for i in range(0, len(fm_images), 64)]
    )
    all_probs = np.concatenate([fm_probs, probs])
    all_seen = emb.detect_images(fm_images) + detected
    all_vecs = conse_vectors(all_probs, emb.class_vectors, emb.top_t)
    stems = [""] * len(fm_images) + [p.stem for p in photos]
    print(
        f"\n## Text search, conse, gallery of {len(fm_images)} Fashion-MNIST + {len(photos)} photos"
    )
    print("first right photo's rank / average precision\n")
    print("| query | word vector (before) | best member class | concept mass (after) |")
    print("|---|---|---|---|")
    mass = cs.mass(all_probs)
    for i, seen in enumerate(all_seen):  # what the face detector found, as ingest stores it
        for key, score in seen.items():
            t = cs.index(key)
            if t is not None:
                mass[i, t] = max(mass[i, t], score)
    for q, right in TRUTH.items():
        rel = [i for i, s in enumerate(stems) if s in right]
        if not rel:
            continue
        t = cs.find(q)
        assert t is not None, q
        members = np.flatnonzero(cs.members[t] > 0)
        word = all_vecs @ emb.words.label_vector(q)
        best = (all_vecs @ emb.class_vectors[members].T).max(axis=1)
        hedged = mass[:, t] + 1e-3 * word  # ties (no mass) by the word's cosine
        cells = [ranks(x, rel) for x in (word, best, hedged)]
        print(f"| {q} | " + " | ".join(f"{r} / {ap:.2f}" for r, ap in cells) + " |")


def scene_tags(k: int) -> None:
    """For each scene of bench/scenes.py and each of its subjects' words: whether a tag
    (of the first `k`) names the word's concept or a kind of it, from the whole photo alone
    and with its regions (app/search/tags.py's conse_tags); and how often a tag names another
    subject's word (wrong), tuning and held-out scenes apart."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from app.search.tags import conse_tags
    from bench.scenes import SUBJECTS, make_scenes, source_photos
    from model.data.images import decode_image
    from model.embedders.conse import ConseEmbedder
    from model.vocab.hierarchy import imagenet_concepts

    print(f"CPU: {cpu_name()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-tags-scenes-"))
    scenes = make_scenes(source_photos(tmp / "photos"), tmp / "scenes")
    emb = ConseEmbedder()
    cs = imagenet_concepts()
    words = sorted({w for ws in SUBJECTS.values() for w in ws})
    under = {w: cs.members[cs.find(w)] > 0 for w in words}  # type: ignore[index]
    counts = {(held, how): [0, 0, 0, 0] for held in (False, True) for how in ("whole", "regions")}
    for s in scenes:
        im = decode_image(tmp / "scenes" / f"{s.name}.jpg")
        probs = emb.probs_images([im])[0]
        regions = emb.read_regions(im)
        for how, ev in (("whole", (probs, {}, [])), ("regions", (probs, {}, regions))):
            tags = conse_tags(ev, k, None, "specific")
            named = set()
            for t in tags:
                i = cs.find(t.word)
                if i is None:
                    continue
                named |= {w for w in words if not ((cs.members[i] > 0) & ~under[w]).any()}
            acc = counts[(s.held_out, how)]
            acc[0] += len(named & set(s.truth))
            acc[1] += len(s.truth)
            acc[2] += len(named - set(s.truth))
            acc[3] += len(set(words) - set(s.truth))
    print(f"\n## Scene tags, top {k}: subject words named (found) and others named (wrong)\n")
    print("| half | whole photo: found | wrong | with regions: found | wrong |")
    print("|---|---|---|---|---|")
    for held in (False, True):
        cells = []
        for how in ("whole", "regions"):
            f, n, w, m = counts[(held, how)]
            cells += [f"{f}/{n} ({100 * f / n:.0f}%)", f"{w}/{m} ({100 * w / m:.1f}%)"]
        print(f"| {'held-out' if held else 'tuning'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    report.run(__file__, main)
