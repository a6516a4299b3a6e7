"""Galleries show what a browser can: HEIC and TIFF results, and big originals, by
JPEG thumbnails made once (model/data/thumbs.py); the live app serves them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.data.images import decode_image
from model.data.thumbs import Thumbnails, default_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo as an iPhone's HEIC (sideways, EXIF orientation 6), a TIFF scan, a
    small PNG and a 2.4 MB JPEG."""
    pytest.importorskip("pillow_heif", reason="pillow-heif absent")
    skdata = pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    root = tmp_path_factory.mktemp("thumbs") / "photos"
    root.mkdir()
    cat, coffee = Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())
    exif = Image.Exif()
    exif[0x0112] = 6
    cat.save(root / "IMG_0001.HEIC", exif=exif.tobytes())
    coffee.save(root / "scan.tiff")
    cat.save(root / "small.png")
    # a camera-sized photo with a sensor's grain, which keeps its JPEG over 2 MB
    big = np.asarray(coffee.resize((2400, 1800)), np.float32)
    big += np.random.default_rng(0).normal(0, 10, big.shape)
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(root / "big.jpg", quality=95)
    return root


def test_what_a_browser_cannot_show_gets_a_jpeg_made_once(photos: Path, tmp_path: Path) -> None:
    thumbs = Thumbnails(tmp_path / "thumbs")
    assert (photos / "big.jpg").stat().st_size > thumbs.big_file
    small = str(photos / "small.png")
    assert thumbs.shown(small) == small  # a browser shows it as it is
    for name in ("IMG_0001.HEIC", "scan.tiff", "big.jpg"):
        src = str(photos / name)
        shown = thumbs.shown(src)
        assert shown != src and Path(shown).is_relative_to(tmp_path / "thumbs"), name
        assert Path(shown).name == Path(name).stem + ".jpg"
        with Image.open(shown) as im:
            assert im.format == "JPEG" and max(im.size) <= thumbs.side, name
            # the picture itself, upright (the HEIC is stored sideways)
            want = decode_image(src, max_side=thumbs.side)
            assert im.size == want.size, name
            diff = np.abs(np.asarray(im, np.float32) - np.asarray(want, np.float32)).mean()
            assert diff < 12, (name, diff)
        # made once: the second sight reuses it, untouched
        made = os.stat(shown).st_mtime_ns
        assert thumbs.shown(src) == shown and os.stat(shown).st_mtime_ns == made
    # a gallery's worth, made side by side: the same files, in the same order
    names = ["big.jpg", "small.png", "IMG_0001.HEIC", "scan.tiff"]
    fresh = Thumbnails(tmp_path / "fresh")
    many = fresh.shown_many([str(photos / n) for n in names])
    assert many == [thumbs.shown(str(photos / n)).replace("/thumbs/", "/fresh/") for n in names]
    assert many[1] == small and all(Path(p).is_file() for p in many)
    # a changed file gets a new thumbnail
    heic = photos / "IMG_0001.HEIC"
    before = thumbs.shown(str(heic))
    os.utime(heic, ns=(heic.stat().st_atime_ns, heic.stat().st_mtime_ns + 10**9))
    assert thumbs.shown(str(heic)) != before
    # a name with a newline, or a leading dot, makes a plain file name
    Image.new("RGB", (64, 48), "red").save(tmp_path / "new\nline.tiff")
    Image.new("RGB", (64, 48), "red").save(tmp_path / "..odd.tiff", format="TIFF")
    assert Path(thumbs.shown(str(tmp_path / "new\nline.tiff"))).name == "new_line.jpg"
    assert Path(thumbs.shown(str(tmp_path / "..odd.tiff"))).name == "odd.jpg"
    # nothing to show: the path as it is, and no half-written file left behind
    (tmp_path / "broken.tiff").write_bytes(b"II*\0not really a tiff")
    assert thumbs.shown(str(tmp_path / "broken.tiff")) == str(tmp_path / "broken.tiff")
    assert thumbs.shown(str(tmp_path / "gone.heic")) == str(tmp_path / "gone.heic")
    assert not list((tmp_path / "thumbs").rglob("*.tmp"))


def test_the_live_app_shows_heic_and_tiff_results_as_jpegs(
    photos: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """Through the app as a browser meets it: the gallery's files come back as JPEG or
    PNG, which every browser draws; before, the HEIC and the TIFF came back as they are."""
    from gradio_client import Client, handle_file

    from app.search.service import SearchService
    from app.web import launch_app
    from ingest.pipeline import ingest
    from model.embedders.embedder import DeviseEmbedder
    from qdrant.edge import EdgeStore
    from tests.cli import free_port

    emb = DeviseEmbedder(tiny_checkpoint)
    store = EdgeStore(tmp_path / "index")
    ingest(store, [photos], [emb], progress=False)
    app = launch_app(SearchService(store, embedders={"devise": emb}), port=free_port())
    try:
        client = Client(app.url, verbose=False)
        gallery, status = client.predict(
            handle_file(str(photos / "small.png")), "devise", [], "", 0, 10,
            api_name="/search_image",
        )  # fmt: skip
        # the same HEIC, named as a browser maps it to image/heic (Playwright types files by
        # their suffix, and takes ".HEIC" for no image, which Gradio's page refuses)
        upload = tmp_path / "upload" / "IMG_0001.heic"
        upload.parent.mkdir()
        upload.write_bytes((photos / "IMG_0001.HEIC").read_bytes())
        preview = _browser_upload_preview(app.url, upload)
    finally:
        app.close()
        store.close()
    assert "4 result(s)" in status
    formats = {}
    for item in gallery:
        data = Path(item["image"]).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            formats[Path(item["image"]).stem] = im.format
    assert formats == {"IMG_0001": "JPEG", "scan": "JPEG", "small": "PNG", "big": "JPEG"}
    # kept in the cache folder, where ingest keeps those of HEIC files, not the working folder
    made = default_folder()
    assert {"IMG_0001.jpg", "scan.jpg", "big.jpg"} <= {p.name for p in made.rglob("*.jpg")}
    assert not Path(".gradio", "cached_examples", "devise-thumbnails").exists()
    if preview is not None:
        # the HEIC dropped on the Tag tab is drawn (as a JPEG of it, upright), and tagged
        width, height, tagged = preview
        assert (width, height) == (300, 451) and tagged


def _browser_upload_preview(url: str, photo: Path) -> tuple[int, int, bool] | None:
    """Drop `photo` on the Tag tab in Chromium: the input's drawn size, and whether the tag
    answer came. None without playwright or Chromium."""
    from tests.browser import app_page, chromium_missing

    if chromium_missing() is not None:
        return None
    with app_page(url) as page:
        page.get_by_role("tab", name="Tag an image").click()
        page.locator("#tag-query input[type=file]").set_input_files(str(photo))
        page.wait_for_function(
            "() => { const i = document.querySelector('#tag-query img');"
            " return i && i.complete && i.naturalWidth > 0 }",
            timeout=30_000,
        )
        size = page.evaluate(
            "() => { const i = document.querySelector('#tag-query img');"
            " return [i.naturalWidth, i.naturalHeight] }"
        )
        page.get_by_role("button", name="Tag", exact=True).click()
        page.get_by_text("tag(s) by").wait_for(timeout=60_000)
        return int(size[0]), int(size[1]), True


def test_the_app_can_open_heic_before_any_picture_is_decoded(photos: Path, tmp_path: Path) -> None:
    """Gradio opens an upload with PIL before a handler sees it: in a fresh `devise serve`,
    a HEIC dropped on the Tag tab as the first thing failed ("Could not preprocess input")
    until something else had decoded a picture. Building the page registers the plugin."""
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from app.search.service import SearchService\n"
        "from app.web import build_demo\n"
        "from qdrant.edge import EdgeStore\n"
        "build_demo(SearchService(EdgeStore(sys.argv[1])))\n"
        "print(Image.open(sys.argv[2]).format)\n"
    )
    heic = str(photos / "IMG_0001.HEIC")
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "index"), heic],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "HEIF"


def test_ingest_keeps_the_thumbnails_of_heic_files(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A HEIC takes about a second to decode, so a first gallery of an iPhone library
    waited on its thumbnails; ingest decodes every file anyway and keeps them (HEIC only:
    a JPEG's thumbnail costs 20 ms when first shown)."""
    import model.data.thumbs as thumbs_module
    from ingest.pipeline import ingest
    from qdrant.edge import EdgeStore
    from tests.fakes import FakeEmbedder

    thumbs = Thumbnails(tmp_path / "thumbs")
    store = EdgeStore(tmp_path / "index")
    try:
        ingest(store, [photos], [FakeEmbedder()], progress=False, thumbnails=thumbs)
    finally:
        store.close()
    kept = sorted(p.name for p in (tmp_path / "thumbs").rglob("*.jpg"))
    assert kept == ["IMG_0001.jpg"]

    # the gallery finds it without decoding the HEIC again
    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(thumbs_module, "decode_image", no_decode)
    shown = thumbs.shown(str(photos / "IMG_0001.HEIC"))
    assert Path(shown).name == "IMG_0001.jpg"
    with Image.open(shown) as im:  # upright, like the one the gallery would make
        assert im.size == (300, 451)


def test_ingest_goes_on_when_thumbnails_cannot_be_kept(
    photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache folder that cannot be written loses no photo and says so once, not once per
    HEIC file (an iPhone library has thousands)."""
    from ingest.pipeline import ingest
    from qdrant.edge import EdgeStore
    from tests.fakes import FakeEmbedder

    for i in range(3):  # more HEIC files, each its own photo
        data = (photos / "IMG_0001.HEIC").read_bytes() + bytes([i])
        (tmp_path / "more").mkdir(exist_ok=True)
        (tmp_path / "more" / f"IMG_01{i}.HEIC").write_bytes(data)
    (tmp_path / "thumbs").write_text("a file where the folder should be")
    store = EdgeStore(tmp_path / "index")
    try:
        summary = ingest(
            store, [photos, tmp_path / "more"], [FakeEmbedder()], progress=False,
            thumbnails=Thumbnails(tmp_path / "thumbs"), workers=1,
        )  # fmt: skip
    finally:
        store.close()
    assert summary.indexed == 7 and not summary.failed
    said = [r.getMessage() for r in caplog.records if "thumbnails cannot be kept" in r.getMessage()]
    assert len(said) == 1 and str(tmp_path / "thumbs") in said[0]
