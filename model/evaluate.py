"""Honest evaluation: hit@k (flat and zero-shot), retrieval precision and mAP, speed.

Metric keys are the contract of `devise eval --json` (see ARCHITECTURE.md). A metric that
does not apply to a model is left out; an absent model is `None`, never zeros.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.data.features import extract_features, scan_image_folder
from model.data.images import load_array
from model.embedders.conse import ConseEmbedder
from model.embedders.embedder import DeviseEmbedder, Embedder
from model.metrics import _ap as _ap  # benches import it from here
from model.metrics import chance_levels, embedding_metrics, gzsl_metrics, hit_at_k
from model.report import EvalReport
from model.specs import BackboneLike
from model.train import split_indices
from model.vocab.words import WordVectors, unit

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def checkpoint_gamma(meta: dict[str, Any]) -> float:
    """The calibrated-stacking gamma a checkpoint chose on validation (0 before it did)."""
    return float((meta.get("calibration") or {}).get("gamma", 0.0))


def evaluate_checkpoint(
    data_dir: Path,
    checkpoint: Path,
    *,
    holdout: Sequence[str] | None = None,
    weights: str | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    cache_dir: Path | None = None,
    words: WordVectors | None = None,
    backbone: BackboneLike | None = None,
) -> EvalReport:
    """DeViSE against its softmax probe on an ImageFolder tree.

    `backbone`: an already built backbone to extract the features with (it must be the
    checkpoint's), e.g. one running under `model.bf16.emulate_bf16`.
    """
    model = DeviseEmbedder(checkpoint, weights=weights)
    meta = model.meta
    if backbone is not None:
        if backbone.name != meta["backbone"]:
            raise ValueError(f"{backbone.name} is not the checkpoint's {meta['backbone']}")
        model.set_backbone(backbone)
    data = scan_image_folder(data_dir)
    notes: list[str] = []
    labels, label_vectors, index, seen, zeroshot = _checkpoint_labels(
        model, data.labels, holdout, words, notes
    )
    data_to_label = np.asarray([index[lab] for lab in data.labels], dtype=np.int64)

    feats = extract_features(
        model.backbone,
        data.paths,
        batch_size=batch_size,
        workers=workers,
        cache_dir=cache_dir,
        desc="eval features",
    )
    targets = data_to_label[data.targets[feats.ok]]
    rows = _training_folder_rows(data_dir, meta, data.labels, data.targets[feats.ok], notes)
    if rows is None:
        rows = np.arange(len(targets))
    x = feats.features[rows]
    y = targets[rows]
    vectors = model.embed_features(x)
    dv = embedding_metrics(vectors, y, unit(label_vectors), seen, zeroshot)
    dv.update(gzsl_metrics(vectors, y, unit(label_vectors), seen, zeroshot, checkpoint_gamma(meta)))
    sm, flat = _probe_metrics(model, index, x, y, seen)

    # Speed: a fresh end-to-end sample (decode, preprocess, backbone, head), not cache reads.
    sample = [data.paths[i] for i in feats.ok[rows[: min(64, len(rows))]]]
    if sample:
        spec = model.backbone.spec.preprocess
        t0 = time.perf_counter()
        model.embed_arrays(np.stack([load_array(p, spec) for p in sample]))
        ms = (time.perf_counter() - t0) * 1000 / len(sample)
        dv["ms_per_image"] = ms
        if sm is not None:
            sm["ms_per_image"] = ms

    chance = chance_levels(y, len(labels), y[np.isin(y, zeroshot)])
    if "gzsl_H" in dv:
        from model.gzsl import chance as gzsl_chance

        chance.update(gzsl_chance(len(seen), len(zeroshot)))
    return EvalReport(
        labels=labels,
        holdout=[labels[i] for i in zeroshot],
        chance=chance,
        models={"devise": dv, "softmax": sm},
        counts={
            "flat": int(flat.sum()),
            "zeroshot": int(np.isin(y, zeroshot).sum()),
            "skipped": len(data.paths) - len(feats.ok),
        },
        notes=notes,
    )


def _checkpoint_labels(
    model: DeviseEmbedder,
    data_labels: Sequence[str],
    holdout: Sequence[str] | None,
    words: WordVectors | None,
    notes: list[str],
) -> tuple[list[str], Float32Array, dict[str, int], list[int], list[int]]:
    """(labels, their vectors, label -> index, seen, zero-shot) for evaluating a checkpoint:
    its own labels, plus any new label in DATA (mapped through the word space: DeViSE can
    rank labels it never saw)."""
    meta = model.meta
    labels = list(model.labels)
    new = [lab for lab in data_labels if lab not in labels]
    if new and words is not None:
        model.share_words(words)
    labels += new
    label_vectors = model.label_matrix(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    seen_names = set(meta.get("seen", labels))
    zeroshot_names = set(holdout if holdout else meta.get("holdout", [])) | set(new)
    for h in zeroshot_names & seen_names:
        notes.append(f"{h!r} was seen in training: for devise it is not zero-shot")
    zeroshot_names -= seen_names
    seen = [index[n] for n in labels if n in seen_names]
    zeroshot = [index[n] for n in labels if n in zeroshot_names]
    return labels, label_vectors, index, seen, zeroshot


def _training_folder_rows(
    data_dir: Path,
    meta: dict[str, Any],
    labels: Sequence[str],
    targets: IntArray,
    notes: list[str],
) -> IntArray | None:
    """The positions in `targets` that are honest test images when DATA is the folder the
    checkpoint trained on (its held-back validation split and its hold-out classes); None
    for any other folder."""
    d = meta.get("data")
    if not d or Path(data_dir).resolve() != Path(d.get("root", "")).resolve():
        return None
    hold_idx = [i for i, lab in enumerate(labels) if lab in set(meta.get("holdout", []))]
    _, va, zs = split_indices(targets, hold_idx, d["val_fraction"], d["seed"])
    notes.append(
        f"DATA is the training folder: evaluating its {len(va)} validation and "
        f"{len(zs)} hold-out images only"
    )
    return np.sort(np.concatenate([va, zs])).astype(np.int64)


def _probe_metrics(
    model: DeviseEmbedder,
    index: dict[str, int],
    x: Float32Array,
    y: IntArray,
    seen: Sequence[int],
) -> tuple[dict[str, float] | None, npt.NDArray[np.bool_]]:
    """The softmax probe's flat hit@k, among the labels it was trained on (None without a
    probe or a seen label's image), and which rows were scored."""
    probe_labels = list(model.meta.get("seen", []))
    sm: dict[str, float] | None = None
    flat = np.isin(y, seen)
    if probe_labels and flat.any():
        probe_index = {index[n]: i for i, n in enumerate(probe_labels)}
        sy = np.asarray([probe_index.get(int(t), -1) for t in y[flat]], dtype=np.int64)
        ss = model.softmax_scores(x[flat])
        sm = {"flat_hit@1": hit_at_k(ss, sy, 1), "flat_hit@5": hit_at_k(ss, sy, 5)}
    return sm, flat


# ---------------------------------------------------------------------------- model comparison


def _decode_batch(paths: Sequence[Path]) -> tuple[list[Any], list[int]]:
    """PIL images of the decodable paths and their positions; bad files are logged."""
    from model.data.images import ImageError, decode_image

    images, ok = [], []
    for i, p in enumerate(paths):
        try:
            images.append(decode_image(p))
            ok.append(i)
        except ImageError as e:
            log.warning("skipping %s: %s", p, e)
    return images, ok


def _embed_paths(
    model: Embedder, paths: Sequence[Path], batch_size: int
) -> dict[int, Float32Array]:
    """Embed images through the model's own `embed_images` (CLIP's own preprocessing)."""
    from tqdm import tqdm

    out: dict[int, Float32Array] = {}
    for s in tqdm(range(0, len(paths), batch_size), desc=f"{model.name} images", unit="batch"):
        images, ok = _decode_batch(paths[s : s + batch_size])
        if images:
            vecs = model.embed_images(images)
            for j, v in zip(ok, vecs, strict=True):
                out[s + j] = v
    return out


def _ms_per_image(model: Embedder, paths: Sequence[Path]) -> float | None:
    """Fresh end to end (decode, preprocess, embed) on a sample: never cache reads."""
    if not paths:
        return None
    t0 = time.perf_counter()
    images, _ = _decode_batch(paths)
    if not images:
        return None
    model.embed_images(images)
    return (time.perf_counter() - t0) * 1000 / len(paths)


def _label_vectors(model: Embedder, labels: Sequence[str]) -> Float32Array:
    """Each model's own vectors for the labels: word-space labels, or CLIP's prompted texts."""
    if isinstance(model, DeviseEmbedder):
        return model.label_matrix(labels)
    if isinstance(model, ConseEmbedder):
        return unit(model.words.label_matrix(labels))
    return unit(model.embed_texts(list(labels)))


def evaluate_models(
    data_dir: Path,
    models: dict[str, Embedder | None],
    *,
    holdout: Sequence[str] | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    cache_dir: Path | None = None,
    speed_sample: int = 32,
) -> EvalReport:
    """The same metrics for every model on the same images of an ImageFolder tree.

    Every model ranks all of the dataset's labels. Flat hit@k is scored on the images of
    the labels a model was trained on; zero-shot hit@k on the hold-out labels. DeViSE was
    trained on its checkpoint's labels; ConSE and CLIP never train, so for them the
    hold-out labels are zero-shot and every other label is "flat". A DeViSE checkpoint
    also brings its softmax probe (`softmax`, flat hit@k among its training labels).
    Absent models (`None`) stay `None` in the report.
    """
    data = scan_image_folder(data_dir)
    labels = list(data.labels)
    index = {lab: i for i, lab in enumerate(labels)}
    notes: list[str] = []
    present = {n: m for n, m in models.items() if m is not None}
    devise = next((m for m in present.values() if isinstance(m, DeviseEmbedder)), None)
    conse = next((m for m in present.values() if isinstance(m, ConseEmbedder)), None)

    hold_names = (
        list(holdout) if holdout else list(devise.meta.get("holdout", [])) if devise else []
    )
    for h in hold_names:
        if h not in index:
            notes.append(f"hold-out label {h!r} is not in DATA")
    zs_names = {h for h in hold_names if h in index}

    # Rows: every image, unless DATA is the DeViSE training folder (then only its
    # validation and hold-out images are honest test images, for every model alike).
    rows = np.arange(len(data.paths))
    if devise is not None:
        honest = _training_folder_rows(data_dir, devise.meta, labels, data.targets, notes)
        rows = rows if honest is None else honest
    paths = [data.paths[i] for i in rows]
    if devise is not None and conse is not None:
        _share_devise_with_conse(devise, conse)
    vectors, feature_rows = _embed_every_model(
        present, devise, paths, batch_size, workers, cache_dir
    )

    common = sorted(set.intersection(*(set(v) for v in vectors.values()))) if vectors else []
    skipped = len(paths) - len(common)
    y = np.asarray([index[labels[int(data.targets[rows[i]])]] for i in common], dtype=np.int64)
    zeroshot = sorted(index[n] for n in zs_names)
    sample = [paths[i] for i in common[:speed_sample]]

    results, devise_gzsl = _score_every_model(
        models, vectors, feature_rows, common, y, labels, index, zs_names, zeroshot, sample, notes
    )

    zs_mask = np.isin(y, zeroshot)
    chance = chance_levels(y, len(labels), y[zs_mask])
    if devise_gzsl is not None:
        from model.gzsl import chance as gzsl_chance

        chance.update(gzsl_chance(*devise_gzsl))
    return EvalReport(
        labels=labels,
        holdout=[labels[i] for i in zeroshot],
        chance=chance,
        models=results,
        counts={"images": len(common), "zeroshot": int(zs_mask.sum()), "skipped": skipped},
        notes=notes,
    )


def _score_every_model(
    models: dict[str, Embedder | None],
    vectors: dict[str, dict[int, Float32Array]],
    feature_rows: dict[int, Float32Array],
    common: list[int],
    y: IntArray,
    labels: list[str],
    index: dict[str, int],
    zs_names: set[str],
    zeroshot: list[int],
    sample: list[Path],
    notes: list[str],
) -> tuple[dict[str, dict[str, float] | None], tuple[int, int] | None]:
    """Every model's metrics on the `common` images (None for an absent model; DeViSE's
    probe as `softmax`), and DeViSE's (seen, zero-shot) label counts where it has
    generalised zero-shot figures."""
    results: dict[str, dict[str, float] | None] = {}
    devise_gzsl: tuple[int, int] | None = None
    for name, maybe in models.items():
        if maybe is None:
            results[name] = None
            continue
        model = maybe
        v = np.stack([vectors[name][i] for i in common]) if common else np.zeros((0, 1), np.float32)
        m, seen, gzsl_counts = _model_metrics(model, v, y, labels, index, zs_names, zeroshot, notes)
        if gzsl_counts is not None:
            devise_gzsl = gzsl_counts
        ms = _ms_per_image(model, sample)
        if ms is not None:
            m["ms_per_image"] = ms
        results[name] = m
        if isinstance(model, DeviseEmbedder) and feature_rows:
            results["softmax"] = _softmax_row(model, feature_rows, common, y, labels, seen)
            if results["softmax"] is not None and ms is not None:
                results["softmax"]["ms_per_image"] = ms  # type: ignore[index]
    return results, devise_gzsl


def _share_devise_with_conse(devise: DeviseEmbedder, conse: ConseEmbedder) -> None:
    """ConSE uses DeViSE's words and backbone where they are the same ones: loaded once."""
    if conse.words_source == devise.words_source:
        devise.share_words(conse.words)
    bb = devise.backbone
    if (
        bb.name == conse.backbone_name
        and bb.weights_id != "random-init"
        and conse._backbone is None
    ):
        conse.set_backbone(bb)


def _embed_every_model(
    present: dict[str, Embedder],
    devise: DeviseEmbedder | None,
    paths: list[Path],
    batch_size: int,
    workers: int | None,
    cache_dir: Path | None,
) -> tuple[dict[str, dict[int, Float32Array]], dict[int, Float32Array]]:
    """Each model's vector of each decodable image (by position in `paths`), and DeViSE's
    backbone features (for its softmax probe). Models on the same backbone share one
    feature extraction."""
    vectors: dict[str, dict[int, Float32Array]] = {}
    feature_rows: dict[int, Float32Array] = {}
    feats_by_backbone: dict[tuple[str, str, str], tuple[Float32Array, npt.NDArray[np.int64]]] = {}
    for name, model in present.items():
        if isinstance(model, DeviseEmbedder | ConseEmbedder):
            bb = model.backbone
            key = (bb.name, bb.weights_id, bb.precision)
            if key not in feats_by_backbone:
                f = extract_features(
                    bb,
                    paths,
                    batch_size=batch_size,
                    workers=workers,
                    cache_dir=cache_dir,
                    desc=f"{bb.name} features",
                )
                feats_by_backbone[key] = (f.features, f.ok)
            x, ok = feats_by_backbone[key]
            emb = model.embed_features(x)
            vectors[name] = {int(i): v for i, v in zip(ok, emb, strict=True)}
            if model is devise:
                feature_rows = {int(i): v for i, v in zip(ok, x, strict=True)}
        else:
            vectors[name] = _embed_paths(model, paths, batch_size)
    return vectors, feature_rows


def _model_metrics(
    model: Embedder,
    v: Float32Array,
    y: IntArray,
    labels: Sequence[str],
    index: dict[str, int],
    zs_names: set[str],
    zeroshot: list[int],
    notes: list[str],
) -> tuple[dict[str, float], list[int], tuple[int, int] | None]:
    """One model's metrics on the common images, the labels it saw (every label but the
    hold-out ones, for a model that never trains), and for DeViSE with generalised zero-shot
    figures, its (seen, zero-shot) label counts."""
    if isinstance(model, DeviseEmbedder):
        seen_names = set(model.meta.get("seen", model.labels))
        for h in sorted(zs_names & seen_names):
            notes.append(f"{h!r} was seen in training: for devise it is not zero-shot")
        model_zs = [index[n] for n in labels if n in zs_names - seen_names]
        seen = [index[n] for n in labels if n in seen_names]
    else:
        model_zs = zeroshot
        seen = [c for c in range(len(labels)) if c not in set(zeroshot)]
    lv = _label_vectors(model, labels)
    m = embedding_metrics(v, y, lv, seen, model_zs)
    gzsl_counts = None
    if isinstance(model, DeviseEmbedder) and model_zs:
        m.update(gzsl_metrics(v, y, lv, seen, model_zs, checkpoint_gamma(model.meta)))
        if "gzsl_H" in m:
            gzsl_counts = (len(seen), len(model_zs))
    return m, seen, gzsl_counts


def _softmax_row(
    model: DeviseEmbedder,
    feature_rows: dict[int, Float32Array],
    common: Sequence[int],
    y: IntArray,
    labels: Sequence[str],
    seen: Sequence[int],
) -> dict[str, float] | None:
    """The checkpoint's softmax probe: flat hit@k among the labels it was trained on."""
    probe_labels = list(model.meta.get("seen", []))
    flat = np.isin(y, list(seen))
    if not probe_labels or not flat.any():
        return None
    probe_index = {labels.index(n): i for i, n in enumerate(probe_labels) if n in labels}
    sy = np.asarray([probe_index.get(int(t), -1) for t in y[flat]], dtype=np.int64)
    x = np.stack([feature_rows[i] for i, f in zip(common, flat, strict=True) if f])
    ss = model.softmax_scores(x)
    return {"flat_hit@1": hit_at_k(ss, sy, 1), "flat_hit@5": hit_at_k(ss, sy, 5)}


def _word_tagger(
    words: WordVectors, top: int = 20_000, labels: Sequence[str] = ()
) -> tuple[list[str], Float32Array, list[str]]:
    """Tag names, their unit vectors and kinds: the `top` frequent words, less the words
    of multi-word labels, plus the labels and (where WordNet is) their hypernyms."""
    from model.vocab.hierarchy import label_concepts, label_fragments
    from model.vocab.words import alphabetic_vocabulary

    concepts = list(label_concepts(labels).concepts) if labels else []
    fragments = label_fragments(c.name for c in concepts)
    names, kinds, vecs = [], [], []
    for c in concepts:
        v = words.label_vector(c.phrase)
        if v is not None:
            names.append(c.name)
            kinds.append(c.kind)
            vecs.append(v)
    taken = {n.lower() for n in names}
    for _, w in alphabetic_vocabulary(words, top):
        if w not in fragments and w not in taken:
            names.append(w)
            kinds.append("word")
            vecs.append(unit(np.asarray(words.kv[w], np.float32)))
    return names, np.stack(vecs).astype(np.float32), kinds


_KIND_MARK = {"label": "**", "hypernym": "_", "detected": "*", "word": ""}


def _tag_cell(tags: Sequence[tuple[str, float, str]]) -> str:
    return ", ".join(f"{_KIND_MARK[kd]}{w}{_KIND_MARK[kd]} ({s:.2f})" for w, s, kd in tags)


def tags_report(
    photos_dir: Path, models: dict[str, Embedder | None], k: int = 5, vocab_top: int = 20_000
) -> str:
    """Markdown: each scikit-image photo, its hand label, and every model's top-k tags,
    each with its kind (**label**, _hypernym_, *detected*, word).

    ConSE: the ImageNet labels and their hypernyms by hedged probability mass. DeViSE: the
    nearest of its labels, their hypernyms and the `vocab_top` most frequent words. CLIP:
    the nearest ImageNet class names (prompted). Photos are exported into `photos_dir` when
    missing.
    """
    from model.data.datasets import export_photos
    from model.vocab.hierarchy import imagenet_concepts

    photos = export_photos(Path(photos_dir))
    names = list(models)
    images, ok = _decode_batch([Path(photos_dir) / f for f in photos])
    files = [list(photos)[i] for i in ok]
    tags: dict[str, list[list[tuple[str, float, str]]]] = {}
    for name, model in models.items():
        if model is None:
            continue
        if isinstance(model, ConseEmbedder):
            cs = imagenet_concepts()
            probs = model.probs_images(images)
            found = model.detect_images(images)  # a face is a `person`
            tags[name] = [
                [(c.name, m, c.kind) for c, m in cs.ranked(row, k, detected=seen)]
                for row, seen in zip(probs, found, strict=True)
            ]
            continue
        if isinstance(model, DeviseEmbedder):
            words, mat, kinds = _word_tagger(model.words, vocab_top, model.labels)
        elif hasattr(model, "tag_vocabulary"):
            words, mat = model.tag_vocabulary()
            kinds = ["label"] * len(words)
        else:
            continue
        vecs = model.embed_images(images)
        scores = vecs @ mat.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        tags[name] = [
            [(words[j], float(scores[r, j]), kinds[j]) for j in top[r]] for r in range(len(files))
        ]
    lines = [
        f"# Top-{k} tags on scikit-image photos",
        "",
        "Kinds: **label**, _hypernym_, *detected* (a face: person), word. ConSE: ImageNet "
        "labels and their WordNet "
        "hypernyms, scored by the probability of the classes under them; DeViSE: nearest of "
        f"its labels, their hypernyms and the {vocab_top:,} most frequent words; CLIP: "
        "nearest ImageNet class names.",
        "",
        "| photo | label | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r, f in enumerate(files):
        cells = []
        for name in names:
            if name not in tags:
                cells.append("absent")
            else:
                cells.append(_tag_cell(tags[name][r]))
        lines.append(f"| {Path(f).stem} | {photos[f]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
