"""The web app: its handlers called directly, the live app driven by gradio_client, plain
HTTP requests for files it must refuse, and a headless browser running a search."""

from __future__ import annotations

import http.client
import io
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from PIL import Image

from app.jobs.index import IndexJob
from app.search.service import SearchService
from app.web import WebApp, build_demo, is_loopback, launch_app, parse_auth
from app.web.guard import ServedRoots, file_target, roots_from_index
from app.web.handlers import WebHandlers, caption, tag_key
from ingest.pipeline import ingest
from ingest.vocabulary import load_vocabulary
from model.embedders.embedder import DeviseEmbedder
from model.vocab.words import WordVectors
from qdrant.edge import EdgeStore
from tests.browser import app_page, search_text
from tests.cli import free_port
from tests.conftest import draw_image, make_image_folder

pytestmark = pytest.mark.slow


@dataclass
class WebIndex:
    root: Path  # the indexed gallery
    outside: Path  # a folder next to it, never indexed
    ckpt: Path
    service: SearchService
    store: EdgeStore


@pytest.fixture(scope="session")
def web_index(
    tmp_path_factory: pytest.TempPathFactory, glove: WordVectors, tiny_checkpoint: Path
) -> Iterator[WebIndex]:
    """A DeViSE index of drawn pictures, on the session's tiny checkpoint (conftest.py: the
    same 10 seeded epochs on the same 24 pictures this fixture trained for itself before;
    read-only, shared with the other modules that use it)."""
    base = tmp_path_factory.mktemp("web")
    ckpt = tiny_checkpoint
    root = base / "gallery"
    for folder, label, kind, n in [
        ("pets", "cat", "disc", 8),
        ("roads", "truck", "stripes", 6),
        ("roads/old", "truck", "stripes", 4),
    ]:
        d = root / folder / label
        d.mkdir(parents=True)
        for i in range(n):
            draw_image(kind, seed=500 + i + len(folder) * 37).save(d / f"{folder[:4]}_{i:02d}.png")
    emb = DeviseEmbedder(ckpt)
    store = EdgeStore(base / "index")
    ingest(
        store, [root], [emb], progress=False,
        model_meta={"devise": {"words": emb.words_source, "checkpoint": str(ckpt)}},
    )  # fmt: skip
    load_vocabulary(store, glove, 20_000, progress=False)
    # what must never be served: made after ingest so none of it is indexed
    outside = base / "outside"
    outside.mkdir()
    draw_image("disc", 1).save(outside / "secret.png")
    (outside / "secret.txt").write_text("secret")
    (root / "pets" / "notes.txt").write_text("not an image")
    (root / "pets" / "cat" / "link.png").symlink_to(outside / "secret.png")
    (root / "pets" / "away").symlink_to(outside, target_is_directory=True)
    service = SearchService(store, embedders={"devise": emb})
    try:
        yield WebIndex(root, outside, ckpt, service, store)
    finally:
        store.close()


@pytest.fixture(scope="session")
def handlers(web_index: WebIndex) -> WebHandlers:
    served = ServedRoots(roots_from_index(web_index.service))
    return WebHandlers(web_index.service, served=served)


def png_bytes(kind: str = "disc", seed: int = 7) -> bytes:
    buf = io.BytesIO()
    draw_image(kind, seed).save(buf, format="PNG")
    return buf.getvalue()


def huge_png_header(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG whose header claims width x height pixels (a decompression bomb)."""
    raw = png_bytes()
    ihdr = struct.pack(">II", width, height) + raw[24:29]
    chunk = b"IHDR" + ihdr
    return raw[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


# ---------------------------------------------------------------------------- handlers


def test_text_search_handler_matches_service(handlers: WebHandlers, web_index: WebIndex) -> None:
    out = handlers.search_text("cat", "devise", [], "", 0.0, 5)
    want = web_index.service.search_text("cat", k=5)
    assert out.ok and out.paths == [r.path for r in want.results]
    assert out.items == [(r.path, caption(r)) for r in want.results]
    label, folder, score = out.items[0][1].split(" · ")
    assert label in ("cat", "truck") and folder.startswith(str(web_index.root))
    assert float(score) == pytest.approx(want.results[0].score, abs=0.01)
    assert "5 result(s)" in out.status and "ms" in out.status
    # a note on how the query was answered shows beside the results, not only when empty
    from dataclasses import replace as with_

    noted = with_(want, note="no image indexed under 'zebra'; ranked by word-vector similarity")
    status = handlers._gallery(noted, "zebra").status
    assert status.startswith("5 result(s)") and "Note: no image indexed under 'zebra'" in status


def test_filters_narrow_results(handlers: WebHandlers, web_index: WebIndex) -> None:
    old = str(web_index.root / "roads" / "old")
    out = handlers.search_text("truck", "devise", ["truck"], old, 0.0, 50)
    assert out.ok and len(out.paths) == 4
    assert all(p.startswith(old + "/") for p in out.paths)
    cats = handlers.search_text("truck", "devise", ["cat"], "", 0.0, 50)
    assert len(cats.paths) == 8 and all("/pets/cat/" in p for p in cats.paths)
    high = handlers.search_text("truck", "devise", [], "", 0.99, 50)
    assert all(float(c.split(" · ")[-1]) >= 0.99 for _, c in high.items)


def test_handler_errors_are_messages(handlers: WebHandlers) -> None:
    for out in (
        handlers.search_text("", "devise"),
        handlers.search_text("xqzzyvblorp", "devise"),
        handlers.search_text("cat", "clip"),
        handlers.search_text("cat", "devise", k=0),
        handlers.search_image(None),
        handlers.search_image(b"not an image"),
        handlers.more_like_this([], 0),
    ):
        assert not out.ok and out.status.startswith("⚠️") and not out.items
    assert "holds no 'clip' vectors" in handlers.search_text("cat", "clip").status
    assert "not an image" in handlers.search_image(b"not an image").status


def test_upload_pixel_budget(handlers: WebHandlers) -> None:
    out = handlers.search_image(huge_png_header())
    assert not out.ok and "too many pixels" in out.status
    assert "too many pixels" in handlers.tag(huge_png_header()).status


def test_image_search_tag_and_more_like_this(
    handlers: WebHandlers, web_index: WebIndex, tmp_path: Path
) -> None:
    upload = tmp_path / "up.png"
    upload.write_bytes(png_bytes("stripes"))
    out = handlers.search_image(str(upload), "devise", [], "", 0.0, 6)
    want = web_index.service.similar(upload.read_bytes(), k=6)
    assert out.ok and out.paths == [r.path for r in want.results]

    tags = handlers.tag(str(upload), "devise", 5, 0.0)
    want_tags = web_index.service.tag(upload.read_bytes(), k=5)
    assert tags.ok and list(tags.tags) == [tag_key(r) for r in want_tags.results]
    # the Tag tab's table keeps the service's order, each tag with its kind
    assert [row[1] for row in tags.rows] == [r.kind for r in want_tags.results]
    assert [row[0].strip("*_") for row in tags.rows] == [r.word for r in want_tags.results]

    more = handlers.more_like_this(out.paths, 0, "devise", [], "", 0.0, 6)
    assert more.ok and out.paths[0] not in more.paths
    assert more.paths == [r.path for r in web_index.service.similar(out.paths[0], k=6).results]
    assert not handlers.more_like_this(out.paths, 99).ok


def test_compare_one_gallery_per_model(handlers: WebHandlers, web_index: WebIndex) -> None:
    out = handlers.compare("text", "cat", None, [], "", 0.0, 4)
    assert out.ok and list(out.answers) == ["devise"]
    slot = handlers.compare_slot(out, "devise")
    assert slot is not None
    assert slot[0].paths == [r.path for r in web_index.service.search_text("cat", k=4).results]
    assert handlers.compare_slot(out, "clip") is None  # absent model: its slot is hidden
    tagged = handlers.compare("tag", None, png_bytes(), k=3)
    slot = handlers.compare_slot(tagged, "devise")
    assert slot is not None and len(slot[1].tags) == 3
    want = tagged.answers["devise"].results  # type: ignore[union-attr]
    assert [row[1] for row in slot[1].rows] == [r.kind for r in want]  # the service's order
    assert not handlers.compare("image", None, None).ok


def test_symlink_out_of_root_is_never_shown(web_index: WebIndex) -> None:
    served = ServedRoots([web_index.root])
    assert served.allows(web_index.root / "pets" / "cat" / "pets_00.png")
    assert not served.allows(web_index.root / "pets" / "cat" / "link.png")
    assert not served.allows(web_index.root / "pets" / "away" / "secret.png")
    assert not served.allows(web_index.root / "pets" / "notes.txt")
    assert not served.allows(web_index.outside / "secret.png")
    assert file_target("/gradio_api/file=/etc/passwd") == "/etc/passwd"
    assert file_target("/gradio_api/file/etc/passwd") == "etc/passwd"
    assert file_target("/gradio_api/queue/join") is None


def test_empty_index_shows_how_to_fill_it(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "empty") as store:
        h = WebHandlers(SearchService(store))
        assert "is empty" in h.overview() and "devise ingest" in h.overview()
        out = h.search_text("cat")
        assert not out.ok and "holds no images" in out.status
        assert h.label_choices() == [] and h.model_choices() == ["devise"]
        assert "indexing from the web app is off" in h.start_index("/tmp")
        assert build_demo(h.service, handlers=h) is not None


def test_index_job_fills_an_empty_index(web_index: WebIndex, tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "pics", {"cat": "disc"}, 3)
    emb = DeviseEmbedder(web_index.ckpt)
    with EdgeStore(tmp_path / "idx") as store:
        service = SearchService(store, embedders={"devise": emb})
        done: list[list[Path]] = []
        job = IndexJob(service, lambda: [emb], allowed=[tmp_path], on_done=done.append)
        h = WebHandlers(service, job=job)
        assert "only" in h.start_index("/")  # outside the allowed folders
        assert "not a folder" in h.start_index(str(tmp_path / "nope"))
        lines = list(h.index_progress(str(folder), poll_s=0.05))
        assert lines[-1].startswith(f"indexed {folder}") and "indexed 3" in lines[-1]
        assert job.state == "done" and done == [[folder]]
        assert store.count("images") == 3
        assert store.get_meta()["roots"] == [str(folder)]


def test_auth_and_host_helpers() -> None:
    assert parse_auth("ann:p:w") == ("ann", "p:w") and parse_auth(None) is None
    with pytest.raises(ValueError):
        parse_auth("nopassword")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


# ---------------------------------------------------------------------------- live app


@pytest.fixture(scope="module")
def live(web_index: WebIndex) -> Iterator[WebApp]:
    app = launch_app(web_index.service, port=free_port(), max_file_size="300kb")
    try:
        yield app
    finally:
        app.close()


def _gallery_rows(value: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(Path(item["image"]).name, str(item["caption"])) for item in value]


def _want_rows(results: list[object]) -> list[tuple[str, str]]:
    return [(Path(r.path).name, caption(r)) for r in results]  # type: ignore[attr-defined]


def test_live_app_answers_like_the_service(live: WebApp, web_index: WebIndex) -> None:
    from gradio_client import Client, handle_file

    client = Client(live.url, verbose=False)
    svc = web_index.service
    gallery, status = client.predict(
        "cat", "devise", [], "", 0, 6, api_name="/search_text"
    )  # fmt: skip
    assert _gallery_rows(gallery) == _want_rows(svc.search_text("cat", k=6).results)
    assert "6 result(s)" in status

    old = str(web_index.root / "roads" / "old")
    gallery, _ = client.predict("truck", "devise", ["truck"], old, 0, 50, api_name="/search_text")
    want = svc.search_text("truck", labels=["truck"], folder=old, k=50).results
    assert len(gallery) == 4 and _gallery_rows(gallery) == _want_rows(want)

    probe = web_index.root / "pets" / "cat" / "pets_00.png"
    gallery, _ = client.predict(
        handle_file(str(probe)), "devise", [], "", 0, 5, api_name="/search_image"
    )
    want = svc.similar(probe.read_bytes(), k=5).results
    assert _gallery_rows(gallery) == _want_rows(want)

    tags, _ = client.predict(handle_file(str(probe)), "devise", 4, 0, api_name="/tag")
    # a table in the service's order (not re-sorted by score), with each tag's kind
    want_tags = svc.tag(probe.read_bytes(), k=4).results
    assert tags["headers"] == ["tag", "kind", "score"]
    assert [(row[0].strip("*_"), row[1]) for row in tags["data"]] == [
        (r.word, r.kind) for r in want_tags
    ]

    out = client.predict("text", "cat", None, [], "", 0, 3, api_name="/compare")
    # each slot comes back as an update: its value, its label (model and time), visibility
    devise, clip, status = out[0], out[4], out[-1]
    assert _gallery_rows(devise["value"]) == _want_rows(svc.search_text("cat", k=3).results)
    assert devise["visible"] is True and devise["label"].startswith("devise · 3 result(s)")
    assert clip["visible"] is False
    assert "devise:" in status and "ms" in status

    _, status = client.predict("", "devise", [], "", 0, 6, api_name="/search_text")
    assert status.startswith("⚠️") and "empty" in status


def _get(url: str, raw_path: str) -> int:
    """GET exactly `raw_path` (no client-side normalisation of `..`); the status code."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", raw_path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_live_app_serves_only_indexed_images(live: WebApp, web_index: WebIndex) -> None:
    root, outside = web_index.root, web_index.outside
    good = root / "pets" / "cat" / "pets_00.png"
    assert _get(live.url, f"/gradio_api/file={quote(str(good))}") == 200
    refused = [
        f"/gradio_api/file={outside}/secret.png",  # an image outside the roots
        f"/gradio_api/file={outside}/secret.txt",
        "/gradio_api/file=/etc/passwd",
        "/gradio_api/file/etc/passwd",  # the older route
        f"/gradio_api/file={root}/pets/notes.txt",  # inside a root, but not an image
        f"/gradio_api/file={root}/../outside/secret.png",  # ..
        f"/gradio_api/file={root}/pets/%2e%2e/%2e%2e/outside/secret.png",
        f"/gradio_api/file={quote(quote(str(root / '..' / 'outside' / 'secret.png')))}",
        f"/gradio_api/file={root}/pets/cat/link.png",  # a symlink out of the root
        f"/gradio_api/file={root}/pets/away/secret.png",  # a folder symlink out of it
        "/gradio_api/file=etc/passwd",  # relative: resolved against the server's cwd
        f"/gradio_api/file=file://{outside}/secret.png",
        "/gradio_api/file=http://127.0.0.1:9/x.png",
        f"/gradio_api/file={os.getcwd()}/pyproject.toml",
    ]
    for path in refused:
        assert _get(live.url, path) in (403, 404), path


def test_live_app_limits_upload_size(live: WebApp) -> None:
    import httpx

    big = io.BytesIO()
    Image.effect_noise((400, 400), 64).convert("RGB").save(big, format="PNG")
    assert big.tell() > 300_000
    files = {"files": ("big.png", big.getvalue(), "image/png")}
    r = httpx.post(f"{live.url.rstrip('/')}/gradio_api/upload", files=files, timeout=10)
    assert r.status_code == 413


# ---------------------------------------------------------------------------- browser


def test_browser_text_search(live: WebApp, web_index: WebIndex, tmp_path: Path) -> None:
    want = len(web_index.service.search_text("truck", k=7).results)
    with app_page(live.url) as page:
        images = search_text(page, "truck", 7)
        images.nth(want - 1).wait_for(timeout=30_000)
        assert images.count() == want
        # every result image arrives through the file guard, not just its tag
        page.wait_for_function(
            "() => [...document.querySelectorAll('#text-results img')]"
            ".every(i => i.complete && i.naturalWidth > 0)",
            timeout=30_000,
        )
        page.screenshot(path=str(tmp_path / "web.png"), full_page=True)
        tile = images.first.bounding_box()
        # on a phone, every result stays in the gallery's width: six fixed columns of
        # at least 100 px overflowed a 390 px screen, cutting off half of each row
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(500)
        overflow = page.evaluate(
            "() => { const g = document.querySelector('#text-results')"
            ".getBoundingClientRect(); return [...document.querySelectorAll("
            "'#text-results img')].map(i => i.getBoundingClientRect().right - g.right) }"
        )
        page.set_viewport_size({"width": 1280, "height": 900})
        # one result keeps a tile's size: Gradio widened it to the whole row (1,200 px)
        search_text(page, "truck", 1)
        page.wait_for_function(
            "() => document.querySelectorAll('#text-results img').length === 1", timeout=30_000
        )
        one = images.first.bounding_box()
    assert (tmp_path / "web.png").stat().st_size > 10_000
    assert tile is not None and one is not None and one["width"] < 1.5 * tile["width"], (one, tile)
    assert len(overflow) == want and max(overflow) <= 1, overflow


def test_compare_tab_shows_the_recorded_evaluation(tmp_path: Path) -> None:
    from app.search.service import SearchService
    from app.web.handlers import evaluation_markdown
    from model.evaluate import EvalReport
    from qdrant.edge import EdgeStore

    report = EvalReport(
        labels=["cat", "dog"],
        holdout=["dog"],
        chance={"flat_hit@1": 0.5, "zeroshot_hit@1": 0.5},
        models={"devise": {"flat_hit@1": 0.9, "zeroshot_hit@1": 0.25}, "clip": None},
    )
    with EdgeStore(tmp_path / "index") as store:
        service = SearchService(store)
        assert "No evaluation is recorded" in evaluation_markdown(service)
        store.set_meta(dict(store.get_meta(), evaluation=report.to_json()))
        text = evaluation_markdown(service)
    assert "0.900" in text and "0.250" in text and "absent" in text and "chance" in text
    back = EvalReport.from_json(report.to_json())
    assert back.models["clip"] is None and back.table() == report.table()


def readme_api_example() -> str:
    """The README's gradio_client block (the one marked for this test)."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    after = text.split("<!-- api-example:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_api_example_runs_against_the_live_app(
    live: WebApp, web_index: WebIndex, capsys: pytest.CaptureFixture[str]
) -> None:
    code = readme_api_example().replace("http://127.0.0.1:7860/", live.url)
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README's example
    out = capsys.readouterr().out.splitlines()
    printed = [line.split()[-1] for line in out if not line.startswith("Loaded as API")]
    want = web_index.service.search_text("dress", k=10).to_json()
    assert printed == [r["path"] for r in want["results"]] and len(printed) == 10


def test_live_api_names_parameters_and_answers_with_the_cli_json(
    live: WebApp, web_index: WebIndex
) -> None:
    from gradio_client import Client, handle_file

    client = Client(live.url, verbose=False)
    svc = web_index.service
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    params = {p["parameter_name"]: p for p in info["/search_text"]["parameters"]}
    assert list(params) == [
        "query", "model", "labels", "folder", "min_score", "k",
        "after", "before", "cameras", "near", "radius_km",
    ]  # fmt: skip
    assert [n for n, p in params.items() if not p["parameter_has_default"]] == ["query"]
    gallery, status = client.predict("cat", api_name="/search_text")  # the query alone
    assert gallery and "result(s)" in status
    got = json.loads(client.predict(query="truck", labels=["truck"], k=3, api_name="/search_json"))
    want = svc.search_text("truck", labels=["truck"], k=3).to_json()
    assert set(got) == set(want) and {"model", "took_ms", "results"} <= set(got)
    assert got["results"] == want["results"]
    probe = web_index.root / "pets" / "cat" / "pets_00.png"
    sim = json.loads(client.predict(handle_file(str(probe)), k=4, api_name="/similar_json"))
    assert sim["results"] == svc.similar(probe.read_bytes(), k=4).to_json()["results"]
    tags = json.loads(client.predict(image=handle_file(str(probe)), k=5, api_name="/tag_json"))
    assert tags["results"] == svc.tag(probe.read_bytes(), k=5).to_json()["results"]
    with pytest.raises(Exception, match="empty"):
        client.predict("", api_name="/search_json")
    # a file record naming a path outside Gradio's uploads is refused, never read
    # (gradio_client itself would upload the file; a hand-made request need not)
    from app.web.guard import uploaded_bytes

    with pytest.raises(ValueError, match="handle_file"):
        uploaded_bytes({"path": str(probe), "meta": {"_type": "gradio.FileData"}})


def test_tag_tab_needs_no_image_in_the_index(web_index: WebIndex, tmp_path: Path) -> None:
    """An empty index tags with the --checkpoint model; the vocabulary loads itself."""
    store = EdgeStore(tmp_path / "empty")
    try:
        service = SearchService(store, checkpoint=web_index.ckpt)
        out = WebHandlers(service).tag(png_bytes(), "devise", 5, 0)
        assert out.ok, out.status
        assert len(out.tags) == 5 and store.count("images") == 0
    finally:
        store.close()


def test_live_app_takes_an_image_plus_words(live: WebApp, web_index: WebIndex) -> None:
    from gradio_client import Client, handle_file

    client = Client(live.url, verbose=False)
    svc = web_index.service
    probe = web_index.root / "pets" / "cat" / "pets_00.png"
    gallery, status = client.predict(
        handle_file(str(probe)), "devise", [], "", 0, 5, "2:truck", api_name="/search_image"
    )  # fmt: skip
    want = svc.search_text("2:truck", image=probe.read_bytes(), k=5)
    assert _gallery_rows(gallery) == _want_rows(want.results)
    assert "for truck ×2 · the uploaded image by devise" in status
    # the text endpoint reads compound queries the same way
    gallery, status = client.predict(
        "2:truck -cat", "devise", [], "", 0, 6, api_name="/search_text"
    )  # fmt: skip
    assert _gallery_rows(gallery) == _want_rows(svc.search_text("2:truck -cat", k=6).results)
    assert "for truck ×2 · −cat by devise" in status
    _, status = client.predict("cat -cat", "devise", [], "", 0, 6, api_name="/search_text")
    assert status.startswith("⚠️") and "cancel out" in status


def test_tag_tab_defaults_to_conse_where_the_index_has_it() -> None:
    # tagging a photo wants ImageNet's classes; a devise checkpoint may know ten clothes
    assert WebHandlers.tag_model(["devise", "conse", "clip"]) == "conse"
    assert WebHandlers.tag_model(["devise"]) == "devise"
    assert WebHandlers.tag_model(["clip", "devise"]) == "clip"
    assert WebHandlers.tag_model([]) == "devise"
