"""The page outlines a region (issue #38): a search hit found in a part of a photo is shown
with that part outlined, and the Tag tab shows the photo with each region tag's box outlined
and named. Real photos through the real CLI (darknet's beach with scikit-image's cat pasted
small in its upper-left corner, as tests/test_regions.py), the live app in headless Chromium.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.cli import main
from app.search.service import SearchService
from app.web import WebApp, launch_app
from app.web.handlers import WebHandlers
from model.data.thumbs import OUTLINE, Thumbnails, default_folder, draw_boxes, outline_width
from qdrant.edge import EdgeStore
from tests.browser import app_page, search_text
from tests.cli import free_port
from tests.test_regions import beach_with_cat

pytestmark = pytest.mark.slow
DARKNET = Path("/usr/share/darknet/data")


def outline_share(picture: Image.Image, box: list[float]) -> float:
    """The share of pixels on the box's upper edge, just inside it, in the outline's yellow."""
    rgb = picture.convert("RGB")
    w, h = rgb.size
    x0, y0, x1, _ = box
    line = outline_width(rgb.size)
    y = min(h - 1, round(y0 * (h - 1)) + 1 + line // 2)
    xs = range(round(x0 * (w - 1)) + line + 2, round(x1 * (w - 1)) - line - 2)
    near = 0
    for x in xs:
        r, g, b = rgb.getpixel((x, y))  # type: ignore[misc]
        near += abs(r - OUTLINE[0]) + abs(g - OUTLINE[1]) + abs(b - OUTLINE[2]) < 60
    return near / max(1, len(xs))


def test_draw_boxes_outlines_and_names_a_part() -> None:
    grey = Image.new("RGB", (400, 300), (128, 128, 128))
    drawn = draw_boxes(grey, [[0.5, 0.5, 1.0, 1.0]], ["lion"])
    assert outline_share(drawn, [0.5, 0.5, 1.0, 1.0]) > 0.9
    assert outline_share(drawn, [0.0, 0.0, 0.5, 0.5]) == 0.0  # nothing outside the box
    assert grey.getpixel((300, 150)) == (128, 128, 128)  # a copy: the original is untouched


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SearchService]]:
    root = tmp_path_factory.mktemp("parts")
    photos, _ = beach_with_cat(root)
    for name in ("eagle.jpg", "giraffe.jpg"):
        shutil.copy2(DARKNET / name, photos / name)
    idx = ["--index", str(root / "index")]
    assert main(["ingest", str(photos), "--models", "conse", "--regions", *idx]) == 0
    store = EdgeStore(root / "index")
    try:
        yield photos / "beach-with-cat.jpg", SearchService(store)
    finally:
        store.close()


def test_handlers_outline_a_part_in_the_gallery_and_the_tag_tab(
    scene: tuple[Path, SearchService], tmp_path: Path
) -> None:
    path, service = scene
    h = WebHandlers(service, thumbnails=Thumbnails(tmp_path / "thumbs"))
    out = h.search_text("cat", "conse", k=5)
    assert out.ok, out.status
    i = out.paths.index(str(path))
    shown, text = out.items[i]
    assert "in a part of the photo" in text
    # the gallery shows a copy with the part outlined, kept beside the thumbnails
    assert shown != str(path) and Path(shown).is_relative_to(tmp_path / "thumbs")
    box = service.search_text("cat", model="conse", k=5).results[i].boxes[0]
    assert outline_share(Image.open(shown), box) > 0.8
    # a photo found whole is shown as it is
    assert all(f == p for (f, _), p in zip(out.items, out.paths, strict=True) if p != str(path))
    tags = h.tag(path.read_bytes(), "conse", 10)
    assert tags.ok and tags.parts is not None, tags.status
    part = next(r for r in service.tag(path.read_bytes(), model="conse", k=10).results if r.box)
    assert outline_share(tags.parts, part.box or []) > 0.8
    # a photo whose tags are all whole-photo tags has nothing outlined
    assert h.tag((DARKNET / "giraffe.jpg").read_bytes(), "conse", 5).parts is None


def test_browser_shows_the_part_outlined(scene: tuple[Path, SearchService], tmp_path: Path) -> None:
    path, service = scene
    found = service.search_text("cat", model="conse", k=5).results
    i = [r.path for r in found].index(str(path))
    outlined = Thumbnails(default_folder()).outlined(str(path), found[i].boxes)
    want = hashlib.sha256(Path(outlined).read_bytes()).hexdigest()
    app: WebApp = launch_app(service, port=free_port())
    try:
        with app_page(app.url) as page:
            images = search_text(page, "cat", 5)
            images.nth(len(found) - 1).wait_for(timeout=60_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#text-results img')]"
                ".every(i => i.complete && i.naturalWidth > 0)",
                timeout=30_000,
            )
            page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
            # the tile of the photo found in a part is the outlined copy, byte for byte
            src = images.nth(i).get_attribute("src") or ""
            served = page.request.get(src).body()
            images.nth(i).screenshot(path=str(tmp_path / "tile.png"))
            page.get_by_role("tab", name="Tag an image").click()
            page.locator("#tag-query input[type=file]").set_input_files(str(path))
            page.get_by_role("button", name="Tag", exact=True).click()
            drawn = page.locator("#tag-parts img")
            drawn.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('#tag-parts img');"
                " return i && i.complete && i.naturalWidth > 0 }",
                timeout=30_000,
            )
            page.screenshot(path=str(tmp_path / "tag.png"), full_page=True)
            parts = Image.open(
                io.BytesIO(page.request.get(drawn.get_attribute("src") or "").body())
            )
    finally:
        app.close()
    assert hashlib.sha256(served).hexdigest() == want
    part = next(r for r in service.tag(path.read_bytes(), model="conse", k=12).results if r.box)
    assert outline_share(parts, part.box or []) > 0.8
    assert (tmp_path / "tag.png").stat().st_size > 10_000


def test_a_part_found_is_decoded_once_for_its_first_view(
    scene: tuple[Path, SearchService], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo too big to hand out whole, found in a part of it: the gallery's first view
    decodes it once, for the outlined copy at the thumbnail's size (it was decoded a second
    time for a plain thumbnail the gallery never showed)."""
    from model.data import thumbs

    path, service = scene
    decoded: list[str] = []
    real = thumbs.decode_image

    def counting(src: Any, **kw: Any) -> Image.Image:
        decoded.append(str(src))
        return real(src, **kw)

    monkeypatch.setattr(thumbs, "decode_image", counting)
    # every file "too big": each result is shown from a JPEG made for it
    h = WebHandlers(service, thumbnails=Thumbnails(tmp_path / "thumbs", big_file=1))
    out = h.search_text("cat", "conse", k=5)
    assert out.ok and str(path) in out.paths, out.status
    assert all(Path(f).is_relative_to(tmp_path / "thumbs") for f, _ in out.items)
    assert sorted(decoded) == sorted(out.paths)  # each result's photo decoded once
