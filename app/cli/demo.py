"""`devise demo`: build the offline Fashion-MNIST demo, skipping stages already done,
then launch the web app on it.

Stages: export images -> train -> evaluate -> ingest the gallery -> load the vocabulary.
Each is skipped when its result is there: files for the exports, the checkpoint, the
report, and the index's own counts and meta for ingest and vocabulary. So a second
`devise demo` goes straight to the app.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.remote import RemoteIndex
    from app.settings import Settings
    from qdrant.store import Store

DEMO_HOLDOUT = ("sandal", "shirt")
# Sizes that keep the first build to a few minutes on two CPU cores (~14 img/s).
TRAIN_LIMIT = 3000
GALLERY_LIMIT = 1000
VOCABULARY = 100_000


def export_labelled_photos(out: Path) -> int:
    """scikit-image's photos as `out/<label>/<name>.png`, so their label means something."""
    import model.data.datasets as datasets

    staging = out / ".staging"
    labels = datasets.export_photos(staging)
    for name, label in labels.items():
        dest = out / label / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        for src in (staging / name, out / name):  # out/<name>.png: an older demo's layout
            if src.exists() and not dest.exists():
                src.replace(dest)
    shutil.rmtree(staging, ignore_errors=True)
    for stale in out.glob("*.png"):
        stale.unlink()
    return len(labels)


def count_images(root: Path) -> int:
    from model.data.images import is_image_path

    return sum(1 for p in root.rglob("*") if is_image_path(p) and p.is_file())


def gallery_indexed(store: Store, gallery: Path, content_id: str) -> bool:
    """True when every gallery image has a point made by this checkpoint, carrying the
    payload fields conse stores now (a demo made before the face detector and the concepts
    keyed by WordNet id is refreshed by its next ingest)."""
    from model.embedders.conse import ConseEmbedder
    from qdrant.filters import SearchFilter
    from qdrant.schema import IMAGES, abs_posix

    models = store.get_meta().get("models") or {}
    rec = models.get("devise") or {}
    if rec.get("id") != content_id or "conse" not in models or "dup" not in models:
        return False
    flt = SearchFilter(folder=abs_posix(gallery))
    first = next(iter(store.scroll_images(batch=1)), None)
    if first is not None and any(f not in first.payload for f in ConseEmbedder.payload_fields):
        return False
    indexed = store.count(IMAGES, flt)
    return indexed >= count_images(gallery)


def vocabulary_loaded(store: Store, source: str, top: int) -> bool:
    from qdrant.schema import WORDS

    words = store.get_meta().get("words") or {}
    needed = min(top, int(words.get("count") or top))
    # an index made before labels and hypernyms joined the vocabulary gets them now, and
    # one made before shared names were qualified (`crane (bird)`) gets the qualified ones
    return (
        words.get("source") == source
        and bool(words.get("concepts"))
        and bool(words.get("qualified"))
        and store.count(WORDS) >= needed
    )


def check_size(done: Path, size: int, flag: str) -> bool:
    """True when this stage is done at `size`; refuses a demo built at another size, whose
    checkpoint and index would no longer match its images."""
    if not done.exists():
        return False
    built = done.read_text().strip()
    if built and int(built) != size:
        from model.data.datasets import DatasetError

        raise DatasetError(
            f"{done.parent} was built with {flag} {built}, not {size}: pass {flag} {built}, "
            "or build this size in another --dir"
        )
    return True


def run_demo(
    root: Path,
    *,
    launch: bool,
    cache_dir: Path | None,
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    train_size: int | None = None,
    gallery_size: int | None = None,
) -> int:
    """Build the demo (sizes: Fashion-MNIST images to train on and to search), then serve."""
    import model.data.datasets as datasets
    from app.settings import Settings

    t_start = time.perf_counter()
    n_train = train_size or TRAIN_LIMIT
    n_gallery = gallery_size or GALLERY_LIMIT
    root.mkdir(parents=True, exist_ok=True)
    train_dir, gallery = root / "train", root / "gallery"
    ckpt = root / "devise.safetensors"
    if not check_size(train_dir / ".done", n_train, "--train"):
        print(f"[1/5] exporting {n_train} Fashion-MNIST training images to {train_dir}")
        datasets.export_fashion_mnist(train_dir, split="train", limit=n_train)
        (train_dir / ".done").write_text(f"{n_train}\n")
    if not check_size(gallery / ".done", n_gallery, "--gallery"):
        print(f"[1/5] exporting a {n_gallery}-image gallery and sample photos to {gallery}")
        datasets.export_fashion_mnist(gallery / "fashion", split="test", limit=n_gallery)
        export_labelled_photos(gallery / "photos")
        (gallery / ".done").write_text(f"{n_gallery}\n")
    elif any((gallery / "photos").glob("*.png")):
        export_labelled_photos(gallery / "photos")  # an older demo: photos into label folders
    if not ckpt.exists():
        from model.train import TrainConfig, train

        print(f"[2/5] training DeViSE (efficientnet_lite0 + GloVe 50d), hold-out {DEMO_HOLDOUT}")
        train(train_dir, ckpt, TrainConfig(holdout=DEMO_HOLDOUT, cache_dir=cache_dir))
    report_file = root / "eval.json"
    if not report_file.exists():
        from model.embedders.factory import available_models
        from model.evaluate import evaluate_models

        print("[3/5] evaluating devise and conse on the gallery")
        models = available_models(["devise", "conse"], checkpoint=ckpt, cache_dir=cache_dir)
        report = evaluate_models(gallery / "fashion", models.models, cache_dir=cache_dir)
        report_file.write_text(json.dumps(report.to_json(), indent=2))
        print(report.table())

    settings = settings or Settings.from_env()
    settings = dataclasses.replace(settings, checkpoint=ckpt.resolve())
    from app.remote import app_holding

    remote = app_holding(settings)
    if remote is not None:  # an app holds the index: it indexes the gallery itself
        return build_through_app(remote, gallery, ckpt, report_file)
    store = settings.open_store()
    try:
        build_index(store, gallery, ckpt)
        record_report(store, report_file, gallery / "fashion")
        if not launch:
            print(f"built in {time.perf_counter() - t_start:.1f}s: {store.describe()}")
            return 0
    finally:
        store.close()
    from app.web import serve

    print(f"starting the app ({time.perf_counter() - t_start:.1f}s since start)")
    return serve(settings, host=host, port=port, ingest_roots=[root.resolve()])


def build_through_app(remote: RemoteIndex, gallery: Path, ckpt: Path, report_file: Path) -> int:
    """Steps 4 and 5 sent to the app that holds the index (`devise serve`, an earlier demo):
    the gallery ingested in its background job (which loads the vocabulary an index without
    one needs), the evaluation kept in its meta; then the app's address, not a second app."""
    print(
        f"[4/5] indexing the gallery {gallery} through the app at {remote.url} "
        f"(PID {remote.record.pid}), which holds the index (devise, conse, dup)"
    )
    state = remote.ingest(
        [str(gallery)], {"models": ["devise", "conse", "dup"], "checkpoint": str(ckpt.resolve())}
    )
    print(state["line"])
    if report_file.exists():
        data = dict(json.loads(report_file.read_text()), data=str((gallery / "fashion").resolve()))
        remote.record_evaluation(data)
    print(f"the demo is served by the app at {remote.url}: open it there")
    return 0


def record_report(store: Store, report_file: Path, where: Path) -> None:
    """The demo's evaluation table, kept in the index for the app's Compare tab."""
    if not report_file.exists():
        return
    data = dict(json.loads(report_file.read_text()), data=str(where.resolve()))
    meta = store.get_meta()
    if meta.get("evaluation") != data:
        meta["evaluation"] = data
        store.set_meta(meta)


def build_index(store: Store, gallery: Path, ckpt: Path) -> None:
    """Ingest the gallery and load the vocabulary, each only when not already done."""
    from model.checkpoint import read_meta

    meta = read_meta(ckpt)
    content_id = str(meta["content_hash"])
    words_source = str(meta["words"]["source"])
    if not gallery_indexed(store, gallery, content_id):
        from ingest.pipeline import ingest
        from model.embedders.conse import ConseEmbedder
        from model.embedders.embedder import DeviseEmbedder, DuplicateEmbedder

        print(f"[4/5] indexing the gallery {gallery} into {store.describe()} (devise, conse, dup)")
        emb = DeviseEmbedder(ckpt)
        # ConSE and the near-duplicate vector on the same backbone: one forward pass per image
        # serves all three models
        conse = ConseEmbedder(emb.meta["backbone"], emb.words, backbone=emb.backbone)
        dup = DuplicateEmbedder(backbone=emb.backbone)
        summary = ingest(
            store,
            [gallery],
            [emb, conse, dup],
            model_meta={
                "devise": {
                    "words": emb.words_source,
                    "checkpoint": str(ckpt.resolve()),
                    "backbone": emb.meta["backbone"],
                },
                "conse": {
                    "words": conse.words_source,
                    "backbone": conse.backbone.name,
                    "weights": conse.backbone.weights_id,
                    "top_t": conse.top_t,
                },
                "dup": {"backbone": dup.backbone.name, "weights": dup.backbone.weights_id},
            },
        )
        print(summary.line())
    if not vocabulary_loaded(store, words_source, VOCABULARY):
        from ingest.vocabulary import concepts_for, load_vocabulary
        from model.vocab.words import load_words

        print(
            f"[5/5] loading the {VOCABULARY} most frequent words of {words_source}, "
            "with the models' labels and their hypernyms"
        )
        models = store.get_meta().get("models") or {}
        load_vocabulary(store, load_words(words_source), VOCABULARY, concepts=concepts_for(models))
