"""Regions (issue #38): what a photo holds beyond its main subject, on real photos through the
real CLI. A scene: darknet's kite.jpg (a beach) with scikit-image's chelsea pasted at a
quarter of its width into its upper-left corner, as bench/scenes.py makes `small` scenes;
the whole photo, read centre-cropped at 224 px, holds no cat at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.cli import main
from app.search.regions import REGION_WEIGHT, region_evidence
from model.regions import REGION_MIN, grid_boxes

DARKNET = Path("/usr/share/darknet/data")


def test_the_grid_is_nine_half_size_boxes_covering_the_picture() -> None:
    boxes = grid_boxes()
    assert len(boxes) == 9
    assert all(
        abs((x1 - x0) - 0.5) < 1e-9 and abs((y1 - y0) - 0.5) < 1e-9 for x0, y0, x1, y1 in boxes
    )
    assert min(b[0] for b in boxes) == 0.0 and max(b[2] for b in boxes) == 1.0


def test_a_region_counts_from_its_minimum_mass_and_weighs_less_than_the_whole() -> None:
    members = np.zeros(1000, np.float32)
    members[[281, 282]] = 1.0  # two cats
    weak = {"regions": [{"box": [0, 0, 0.5, 0.5], "top": [[281, REGION_MIN / 2]]}]}
    assert region_evidence(weak, members) == (0.0, [])  # noise: one region, little mass
    strong = {
        "regions": [
            {"box": [0, 0, 0.5, 0.5], "top": [[281, 0.1]]},
            {"box": [0.5, 0.5, 1, 1], "top": [[281, 0.4], [282, 0.4]]},
        ]
    }
    score, boxes = region_evidence(strong, members)
    assert score == pytest.approx(REGION_WEIGHT * 0.8) and boxes == [[0.5, 0.5, 1.0, 1.0]]
    assert region_evidence({}, members) == (0.0, [])  # a point made before regions


def beach_with_cat(root: Path) -> tuple[Path, Image.Image]:
    """root/photos/beach-with-cat.jpg: darknet's kite photo (a beach) with scikit-image's
    cat pasted small in its upper-left corner, a subject only a region sees; the folder and
    the cat. Skips where darknet's or scikit-image's photos are absent."""
    pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    if not (DARKNET / "kite.jpg").is_file():
        pytest.skip("Debian darknet's photos are absent: apt-get install darknet")
    from model.data.datasets import export_photos

    export_photos(root / "src", ["chelsea"])
    photos = root / "photos"
    photos.mkdir()
    beach = Image.open(DARKNET / "kite.jpg").convert("RGB")
    cat = Image.open(root / "src" / "chelsea.png").convert("RGB")
    w = beach.width // 4
    small = cat.resize((w, round(cat.height * w / cat.width)))
    beach.paste(small, (round(0.04 * beach.width), round(0.04 * beach.height)))
    beach.save(photos / "beach-with-cat.jpg", quality=90)
    return photos, small


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regions")
    photos, cat = beach_with_cat(root)
    # a pair: the cat and darknet's eagle side by side, each 256 px high
    eagle = Image.open(DARKNET / "eagle.jpg").convert("RGB")
    left, right = (im.resize((round(im.width * 256 / im.height), 256)) for im in (cat, eagle))
    pair = Image.new("RGB", (left.width + right.width, 256))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    pair.save(photos / "cat-and-bird.jpg", quality=90)
    for name in ("dog.jpg", "eagle.jpg", "giraffe.jpg"):
        shutil.copy2(DARKNET / name, photos / name)
    return root


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:  # type: ignore[type-arg]
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_regions_find_a_small_subject_and_an_old_index_gets_them(
    library: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    idx = ["--index", str(library / "index")]
    scene = str(library / "photos" / "beach-with-cat.jpg")
    assert main(["ingest", str(library / "photos"), "--models", "conse", *idx]) == 0
    # without regions: the whole photo shows a beach; `cat` finds no photo of a cat
    found = _json(capsys, ["search", "cat", *idx])["results"]
    assert not [r for r in found if r["path"] == scene and not r.get("weak")], found
    tags = _json(capsys, ["tag", scene, *idx])["results"]
    assert not any("box" in t for t in tags)  # the indexed point has no regions yet
    # the next ingest with --regions adds them to the points made before, embedding again
    assert main(["ingest", str(library / "photos"), "--models", "conse", "--regions", *idx]) == 0
    found = _json(capsys, ["search", "cat", *idx])["results"]
    stems = [Path(r["path"]).stem for r in found]
    # the whole cat (the pair's left half) first: a region weighs less than a whole photo
    assert stems[:2] == ["cat-and-bird", "beach-with-cat"], stems
    beach = found[1]
    assert not beach.get("weak") and "boxes" not in found[0]
    x0, y0, x1, y1 = beach["boxes"][0]
    assert x0 == 0.0 and y0 == 0.0  # the cat is in the upper-left corner
    tags = _json(capsys, ["tag", scene, *idx])["results"]
    parts = [t for t in tags if "box" in t]
    assert parts and tags.index(parts[0]) > 0  # after the whole photo's own tags
    assert any(t["word"] in ("cat", "tabby", "tiger cat", "Egyptian cat") for t in parts), tags
    assert parts[0]["box"][:2] == [0.0, 0.0]
    # the CLI marks it as a part, with its box
    capsys.readouterr()
    assert main(["tag", scene, *idx]) == 0
    assert "(part: x 0.00-0.50, y 0.00-0.50)" in capsys.readouterr().out
    # a later ingest without the flag goes on reading regions: the index was made with them
    shutil.copy2(DARKNET / "horses.jpg", library / "photos" / "horses-later.jpg")
    assert main(["ingest", str(library / "photos"), "--models", "conse", *idx]) == 0
    from qdrant.edge import EdgeStore

    store = EdgeStore(library / "index")
    try:
        later = str(library / "photos" / "horses-later.jpg")
        assert len(store.find_by_path([later])[later].payload["regions"]) == 9
    finally:
        store.close()
    # similar stays whole-photo: the dog's nearest photos are not read by their regions
    near = _json(capsys, ["similar", str(library / "photos" / "dog.jpg"), *idx])["results"]
    assert all("boxes" not in r for r in near)


def test_the_page_says_a_weaker_match_and_a_part() -> None:
    from app.search.answers import ImageResult, TagResult
    from app.web.handlers import caption, tag_row

    plain = ImageResult("/p/a.jpg", 0.5, "photos", "/p")
    assert "weaker" not in caption(plain) and "part" not in caption(plain)
    assert caption(ImageResult("/p/a.jpg", 0.5, "photos", "/p", weak=True)).startswith("weaker")
    part = ImageResult("/p/a.jpg", 0.5, "photos", "/p", boxes=[[0.0, 0.0, 0.5, 0.5]])
    assert "in a part of the photo" in caption(part)
    row = tag_row(TagResult("lion", 0.9, "label", [0.5, 0.5, 1.0, 1.0]))
    assert row[0] == "**lion** (part: x 0.50-1.00, y 0.50-1.00)"
    # the JSON a script reads, and what the CLI reads back from an app holding the index
    assert TagResult.from_json(TagResult("lion", 0.9, "label", [0.5, 0.5, 1, 1]).to_json()).box
    assert ImageResult.from_json({**part.to_json(), "weak": True}).weak


def test_a_phrases_terms_are_found_in_different_regions(
    library: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs after the test above made the index with regions (the module's order)."""
    idx = ["--index", str(library / "index")]
    if not (library / "index").is_dir():
        assert (
            main(["ingest", str(library / "photos"), "--models", "conse", "--regions", *idx]) == 0
        )
    found = _json(capsys, ["search", "a cat and a bird", *idx])["results"]
    assert Path(found[0]["path"]).stem == "cat-and-bird", found
    assert found[0].get("boxes"), found[0]  # at least one term held by a region, not the whole
