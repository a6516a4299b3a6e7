"""EXIF fields written with Pillow, read back field by field (issue 14)."""

from pathlib import Path

from PIL import Image

from ingest.exif import read_exif


def _photo(
    path: Path,
    tags: dict[int, object],
    sub: dict[int, object] | None = None,
    gps: dict[int, object] | None = None,
) -> Path:
    exif = Image.Exif()
    for k, v in tags.items():
        exif[k] = v
    if sub:
        exif.get_ifd(0x8769).update(sub)
    if gps:
        exif.get_ifd(0x8825).update(gps)
    Image.new("RGB", (8, 8), "red").save(path, exif=exif)
    return path


def test_date_camera_and_position(tmp_path: Path) -> None:
    p = _photo(
        tmp_path / "a.jpg",
        {0x010F: "Canon", 0x0110: "Canon EOS 5D", 0x0132: "2020:01:01 00:00:00"},
        sub={0x9003: "2019:06:15 12:30:00"},
        gps={1: "S", 2: (33.0, 52.0, 0.0), 3: "E", 4: (151.0, 12.0, 36.0)},
    )
    got = read_exif(p)
    assert got["taken_iso"] == "2019-06-15T12:30:00"  # DateTimeOriginal wins over DateTime
    assert got["camera"] == "Canon EOS 5D"
    where = got["location"]
    assert abs(where["lat"] + 33.8667) < 1e-3 and abs(where["lon"] - 151.21) < 1e-3


def test_bad_fields_dropped_one_by_one(tmp_path: Path) -> None:
    p = _photo(
        tmp_path / "b.jpg",
        {0x010F: "X" * 5000, 0x0110: "Pixel 7", 0x0132: "0000:00:00 00:00:00"},
        sub={0x9003: "garbage"},
    )
    got = read_exif(p)
    assert "taken" not in got and got["camera"] == "Pixel 7"


def test_no_exif(tmp_path: Path) -> None:
    p = tmp_path / "c.png"
    Image.new("RGB", (4, 4)).save(p)
    assert read_exif(p) == {}
