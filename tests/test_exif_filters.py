"""Issue 14, date and camera: EXIF written with Pillow goes through ingest into the payload,
and every face filters by it, on both backends (the server path on qdrant-client's local
mode); an older index gets the fields by a payload update, without embedding."""

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
from app.search.filters import PhotoFilter
from app.search.service import BadQueryError, SearchService
from ingest.exif import EXIF_FIELDS, EXIF_VERSION
from ingest.pipeline import ingest
from qdrant import GeoCircle, SearchFilter, Store
from qdrant.edge import EdgeStore
from qdrant.schema import IMAGE_INDEXES, image_payload, image_point_id
from qdrant.server import ServerStore
from tests.conftest import draw_image
from tests.fakes import FakeEmbedder

# Pillow warns once when it reads the garbage EXIF block that one test photo holds on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")

MAKE, MODEL, DATETIME, ORIGINAL = 0x010F, 0x0110, 0x0132, 0x9003
PARIS = (48.8566, 2.3522)
LONDON = (51.5074, -0.1278)  # 344 km from Paris


def _dms(deg: float) -> tuple[float, float, float]:
    deg = abs(deg)
    d = math.floor(deg)
    m = math.floor((deg - d) * 60)
    return float(d), float(m), round((deg - d - m / 60) * 3600, 4)


def photo(
    path: Path,
    seed: int,
    *,
    original: str | None = None,
    datetime: str | None = None,
    make: str | None = None,
    model: str | None = None,
    where: tuple[float, float] | None = None,
) -> Path:
    """A small picture with the EXIF fields given, written by Pillow."""
    exif = Image.Exif()
    for tag, value in ((MAKE, make), (MODEL, model), (DATETIME, datetime)):
        if value is not None:
            exif[tag] = value
    if original is not None:
        exif.get_ifd(0x8769)[ORIGINAL] = original
    if where is not None:
        lat, lon = where
        exif.get_ifd(0x8825).update(
            {1: "N" if lat >= 0 else "S", 2: _dms(lat), 3: "E" if lon >= 0 else "W", 4: _dms(lon)}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_image("disc" if seed % 2 else "stripes", seed).save(path, exif=exif)
    return path


def make_photos(root: Path) -> dict[str, Path]:
    """Five photos with EXIF, one without, one with bad EXIF and one whose block is garbage."""
    trip = root / "trip"
    out = {
        "paris": photo(
            trip / "paris.jpg",
            1,
            original="2019:06:15 12:30:00",
            datetime="2020:01:01 00:00:00",  # edited later: DateTimeOriginal wins
            make="Canon",
            model="Canon EOS 5D",
            where=PARIS,
        ),
        "london": photo(
            trip / "london.jpg",
            2,
            original="2019:07:01 09:00:00",
            make="Google",
            model="Pixel 7",
            where=LONDON,
        ),
        # no DateTimeOriginal: DateTime is the date taken
        "garden": photo(
            trip / "garden.jpg",
            3,
            datetime="2021:01:01 08:00:00",
            make="Canon",
            model="PowerShot G7 X",
        ),
        "plain": trip / "plain.png",
        # a year 0, a garbage original date, a huge make, a position that is no position:
        # each field dropped on its own, the model kept
        "bad": photo(
            trip / "bad.jpg",
            5,
            original="garbage",
            datetime="0000:00:00 00:00:00",
            make="X" * 5000,
            model="Pixel 7",
            where=(95.0, 10.0),  # a latitude past the pole
        ),
        "corrupt": trip / "corrupt.jpg",
    }
    draw_image("disc", 4).save(out["plain"])
    # an APP1 block that says Exif and then holds nothing a TIFF reader can use
    draw_image("stripes", 6).save(out["corrupt"], exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" * 3)
    (trip / "empty.jpg").write_bytes(b"")  # an empty file: skipped, the run goes on
    return out


def open_store(kind: str, tmp_path: Path) -> Store:
    if kind == "edge":
        return EdgeStore(tmp_path / "index")
    return ServerStore(QdrantClient(":memory:"), "memory://test")


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(request.param, tmp_path)
    yield s
    s.close()


def run(store: Store, root: Path, emb: FakeEmbedder) -> object:
    return ingest(store, [root], [emb], progress=False, batch_size=4, workers=2)  # type: ignore[list-item]


def payloads(store: Store) -> dict[str, dict[str, object]]:
    return {Path(r.payload["path"]).stem: r.payload for r in store.scroll_images(batch=100)}


# ------------------------------------------------------------------ ingest


def test_ingest_stores_exif_and_ignores_bad_fields_one_by_one(store: Store, tmp_path: Path) -> None:
    files = make_photos(tmp_path / "photos")
    summary = run(store, tmp_path / "photos", FakeEmbedder())
    # every picture is indexed, the bad and the garbage EXIF too; only the empty file fails
    assert summary.indexed == 6 and dict(summary.failed) == {"empty": 1}  # type: ignore[attr-defined]
    got = payloads(store)
    paris = got["paris"]
    assert paris["taken_iso"] == "2019-06-15T12:30:00" and paris["camera"] == "Canon EOS 5D"
    assert paris["exif"] == EXIF_VERSION
    loc = paris["location"]
    assert isinstance(loc, dict)
    assert abs(loc["lat"] - PARIS[0]) < 1e-4 and abs(loc["lon"] - PARIS[1]) < 1e-4
    # the file's mtime is kept apart from the date taken
    assert paris["mtime"] == pytest.approx(files["paris"].stat().st_mtime, abs=1e-3)
    assert got["garden"]["taken_iso"] == "2021-01-01T08:00:00"  # from DateTime
    assert got["garden"]["camera"] == "Canon PowerShot G7 X"
    assert "location" not in got["garden"]
    bad = got["bad"]
    assert bad["camera"] == "Pixel 7" and "taken" not in bad and "location" not in bad
    for name in ("plain", "corrupt"):
        assert got[name]["exif"] == EXIF_VERSION
        assert not any(f in got[name] for f in EXIF_FIELDS)


def test_every_exif_filter_on_both_backends(store: Store, tmp_path: Path) -> None:
    files = make_photos(tmp_path / "photos")
    run(store, tmp_path / "photos", FakeEmbedder())
    service = SearchService(store, embedder_factory=lambda m, r: FakeEmbedder())

    def found(**kw: object) -> set[str]:
        photo = service.photo_filter(**kw)  # type: ignore[arg-type]
        answer = service.similar(files["plain"], k=20, photo=photo)
        return {Path(r.path).stem for r in answer.results}

    assert found() == {"paris", "london", "garden", "bad", "corrupt"}
    # --after includes its date (from midnight), --before does not
    assert found(after="2019-07-01") == {"london", "garden"}
    assert found(before="2019-07-01") == {"paris"}
    assert found(after="2019-06-15", before="2019-06-16") == {"paris"}
    assert found(after="2019-06-15T12:30:01") == {"london", "garden"}
    assert found(before="2019-07-01T09:00") == {"paris"}
    # cameras: every camera whose name holds the one typed, case-insensitively
    assert found(cameras=["canon"]) == {"paris", "garden"}
    assert found(cameras=["PIXEL 7"]) == {"london", "bad"}  # "Google Pixel 7" and "Pixel 7"
    assert found(cameras=["google pixel 7"]) == {"london"}
    assert found(cameras=["canon eos 5d", "pixel"]) == {"paris", "london", "bad"}
    # places: Paris alone within 10 km (the default radius), both cities within 400 km
    assert found(near="48.85,2.35") == {"paris"}
    assert found(near=f"{LONDON[0]},{LONDON[1]}", radius_km=5) == {"london"}
    assert found(near="48.85,2.35", radius_km="400") == {"paris", "london"}
    # everything at once, and a label and folder beside them
    assert found(after="2019-01-01", cameras=["pixel"], near="51.5,-0.13", radius_km=20) == {
        "london"
    }
    answer = service.similar(
        files["plain"],
        labels=["trip"],
        folder=str(tmp_path / "photos"),
        k=20,
        photo=service.photo_filter(cameras=["canon"], before="2020-01-01"),
    )
    assert [Path(r.path).stem for r in answer.results] == ["paris"]
    # the date taken and the camera come with each result, in JSON too
    r = answer.results[0]
    assert (r.taken, r.camera) == ("2019-06-15T12:30:00", "Canon EOS 5D")
    assert answer.to_json()["results"][0]["camera"] == "Canon EOS 5D"
    # a photo without EXIF answers in the four keys it always had
    rows = service.similar(files["plain"], k=20).to_json()["results"]
    corrupt = [row for row in rows if Path(row["path"]).stem == "corrupt"]
    assert len(corrupt) == 1 and set(corrupt[0]) == {"path", "score", "label", "folder"}


def test_empty_answers_name_the_exif_filter_that_never_matches(
    store: Store, tmp_path: Path
) -> None:
    files = make_photos(tmp_path / "photos")
    run(store, tmp_path / "photos", FakeEmbedder())
    service = SearchService(store, embedder_factory=lambda m, r: FakeEmbedder())

    def note(**kw: object) -> str | None:
        answer = service.similar(files["plain"], k=5, photo=service.photo_filter(**kw))  # type: ignore[arg-type]
        assert answer.results == []
        return answer.note

    assert note(after="2030-01-01") == (
        "no image was taken on or after 2030-01-01 (by its EXIF date; 3 image(s) have one)"
    )
    text = note(cameras=["nikon"])
    assert text is not None and text.startswith("no image was taken with the camera 'nikon'")
    assert "Canon EOS 5D" in text and "Pixel 7" in text
    text = note(near="0,0", radius_km=100)
    assert text == (
        "no image was taken within 100 km of 0,0 (by its EXIF GPS position; 2 image(s) have one)"
    )
    # each filter matches some image, only not together: no note blames one of them
    answer = service.similar(
        files["plain"], k=5, photo=service.photo_filter(cameras=["canon"], near="51.5,-0.13")
    )
    assert answer.results == [] and answer.note is None


def test_reingest_adds_exif_to_an_older_index_without_embedding(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index made before EXIF: its points lack the fields (and, on Edge, the payload
    indexes). The next ingest of the unchanged files sets their payload only."""
    root = tmp_path / "photos"
    make_photos(root)
    older = {k: v for k, v in IMAGE_INDEXES.items() if k not in ("taken", "camera", "location")}
    monkeypatch.setattr("qdrant.edge.EDGE_IMAGE_INDEXES", older)
    monkeypatch.setattr("ingest.pipeline.exif_payload", lambda path: {})
    first = FakeEmbedder()
    run(store, root, first)
    assert first.calls == 6
    monkeypatch.undo()
    before = {r.id: r for r in store.scroll_images(with_vectors=True, batch=100)}
    assert not any("exif" in r.payload or "camera" in r.payload for r in before.values())

    again = FakeEmbedder()
    summary = run(store, root, again)
    assert again.calls == 0  # nothing decoded or embedded
    assert summary.unchanged == 6 and summary.indexed == 0  # type: ignore[attr-defined]
    assert summary.exif_added == 6  # type: ignore[attr-defined]
    after = {r.id: r for r in store.scroll_images(with_vectors=True, batch=100)}
    assert after.keys() == before.keys()
    for pid, rec in after.items():
        np.testing.assert_array_equal(rec.vectors["devise"], before[pid].vectors["devise"])
        # every field the point had is still there
        assert rec.payload.items() >= before[pid].payload.items()
        assert rec.payload["exif"] == EXIF_VERSION
    got = payloads(store)
    assert got["paris"]["camera"] == "Canon EOS 5D" and "location" in got["paris"]
    # the filters work on the updated points (through the indexes Edge created just now)
    hits = store.search_images(
        "devise",
        after[image_point_id(root / "trip/plain.png")].vectors["devise"],
        10,
        SearchFilter(cameras=("Canon EOS 5D",), taken_before=1.6e9),
    )
    assert [Path(h.payload["path"]).stem for h in hits] == ["paris"]
    if isinstance(store, EdgeStore):
        schema = store._shards["images"].info().payload_schema
        assert {"taken", "camera", "location"} <= set(schema)
    # and the third run has nothing left to do
    third = FakeEmbedder()
    summary = run(store, root, third)
    assert third.calls == 0 and summary.exif_added == 0  # type: ignore[attr-defined]


# ------------------------------------------------------------------ store level


def _haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def test_backends_agree_on_exif_filters_and_match_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    n, dim = 400, 8
    cameras = ["Canon EOS 5D", "Pixel 7", "iPhone 15"]
    ids, pls = [], []
    for i in range(n):
        path = f"/data/{'ab'[i % 2]}/x/img{i:04d}.jpg"
        p = dict(
            image_payload(
                path, label="x", width=1, height=1, size_bytes=i, mtime=0.0, sha256=f"{i:064x}"
            )
        )
        if i % 5:  # one in five has no date
            p["taken"] = float(rng.uniform(1.2e9, 1.7e9))
        if i % 3:
            p["camera"] = cameras[(i // 3) % 3]
        if i % 4:  # around Paris, up to ~100 km out
            p["location"] = {
                "lat": float(PARIS[0] + rng.uniform(-1, 1)),
                "lon": float(PARIS[1] + rng.uniform(-1.4, 1.4)),
            }
        ids.append(image_point_id(path))
        pls.append(p)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    circle = GeoCircle(PARIS[0], PARIS[1], 40.0)
    filters = [
        SearchFilter(taken_after=1.4e9),
        SearchFilter(taken_before=1.3e9),
        SearchFilter(taken_after=1.3e9, taken_before=1.5e9, cameras=("Pixel 7",)),
        SearchFilter(cameras=("Canon EOS 5D", "iPhone 15")),
        SearchFilter(near=circle),
        SearchFilter(near=circle, taken_after=1.45e9, folder="/data/a"),
    ]

    def expected(f: SearchFilter) -> set[str]:
        out = set()
        for pid, p in zip(ids, pls, strict=True):
            t = p.get("taken")
            if f.taken_after is not None and (t is None or t < f.taken_after):
                continue
            if f.taken_before is not None and (t is None or t >= f.taken_before):
                continue
            if f.cameras and p.get("camera") not in f.cameras:
                continue
            if f.near is not None:
                loc = p.get("location")
                if loc is None:
                    continue
                km = _haversine_km((f.near.lat, f.near.lon), (loc["lat"], loc["lon"]))  # type: ignore[index]
                if km > f.near.radius_km:
                    continue
            if f.folder and not str(p["path"]).startswith(f.folder + "/"):
                continue
            out.add(pid)
        return out

    results = []
    for kind in ("edge", "server"):
        with open_store(kind, tmp_path) as s:
            s.ensure_collections({"devise": dim})
            s.upsert_images(ids, pls, {"devise": vecs})  # type: ignore[arg-type]
            out = []
            for f in filters:
                every = s.search_images("devise", vecs[0], n, f)
                assert {h.id for h in every} == expected(f), (kind, f)
                assert s.count("images", f) == len(expected(f))
                out.append([(h.id, h.score) for h in s.search_images("devise", vecs[1], 10, f)])
            assert s.facet_values("camera") == {
                c: sum(p.get("camera") == c for p in pls) for c in cameras
            }
            results.append(out)
    for a, b in zip(*results, strict=True):
        assert [i for i, _ in a] == [i for i, _ in b]
        np.testing.assert_allclose([x for _, x in a], [x for _, x in b], atol=1e-5)
    # the filters are not vacuous
    assert all(0 < len(expected(f)) < n for f in filters)


# ------------------------------------------------------------------ reading the filters


def test_bad_filter_values_are_one_line_errors_naming_the_filter(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "index") as store:
        service = SearchService(store)
        cases = [
            ({"after": "2019-13-01"}, "after: '2019-13-01' is not a date: use YYYY-MM-DD"),
            ({"before": "yesterday"}, "before: 'yesterday' is not a date"),
            ({"after": "0000-01-01"}, "after: '0000-01-01' is not a date"),
            ({"after": "2019-06-15T12:00+02:00"}, "has a time zone"),
            ({"after": "2020-01-01", "before": "2019-01-01"}, "the date range is empty"),
            ({"after": "2020-01-01", "before": "2020-01-01"}, "the date range is empty"),
            ({"near": "paris"}, "near: 'paris' is not LAT,LON"),
            ({"near": "1,2,3"}, "is not LAT,LON"),
            ({"near": "91,0"}, "latitude 91 is outside -90..90"),
            ({"near": "0,200"}, "longitude 200 is outside -180..180"),
            ({"near": "0,0", "radius_km": 0}, "near: the radius must be above 0"),
            ({"near": "0,0", "radius_km": "nan"}, "the radius must be above 0"),
            ({"near": "0,0", "radius_km": "far"}, "'far' is not a number of km"),
            ({"radius_km": 5}, "a radius needs a place"),
        ]
        for kw, message in cases:
            with pytest.raises(BadQueryError) as e:
                service.photo_filter(**kw)  # type: ignore[arg-type]
            assert message in str(e.value), (kw, str(e.value))
            assert "\n" not in str(e.value)
        # a web form's blank boxes are no filter at all
        assert not service.photo_filter(after="", before=" ", cameras=["", " "], near="")
        assert service.photo_filter(after="2019-06-15") == PhotoFilter(after=1560556800.0)


def test_cli_filters_and_their_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_photos(tmp_path / "photos")
    index = tmp_path / "index"
    with EdgeStore(index) as store:
        run(store, tmp_path / "photos", FakeEmbedder())
    idx = ["--index", str(index)]
    capsys.readouterr()
    argv = ["similar", str(files["plain"]), "--json", "-k", "20", *idx]
    assert main([*argv, "--camera", "canon", "--before", "2020-01-01"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).stem for r in out["results"]] == ["paris"]
    assert out["results"][0]["taken"] == "2019-06-15T12:30:00"
    assert main([*argv, "--near", "48.85,2.35", "--radius-km", "400", "--after", "2019-06-01"]) == 0
    got = {Path(r["path"]).stem for r in json.loads(capsys.readouterr().out)["results"]}
    assert got == {"paris", "london"}
    # the plain listing shows the date and camera beside the path
    assert main(["similar", str(files["plain"]), "--camera", "pixel 7", *idx]) == 0
    assert "(2019-07-01 09:00:00, Google Pixel 7)" in capsys.readouterr().out
    # bad values are usage errors (exit 2) naming the flag, in one line
    for bad, words in [
        (["--after", "2019-13-01"], "argument --after: '2019-13-01' is not a date"),
        (["--before", "soon"], "argument --before: 'soon' is not a date"),
        (["--near", "48.85"], "argument --near: '48.85' is not LAT,LON"),
        (["--near", "0,0", "--radius-km", "-3"], "argument --radius-km: the radius must be"),
        (["--radius-km", "3"], "--radius-km needs --near LAT,LON"),
    ]:
        with pytest.raises(SystemExit) as e:
            main([*argv, *bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    # a range that is empty is an error of the query (exit 1), said in one line
    assert main([*argv, "--after", "2020-01-01", "--before", "2019-01-01"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the date range is empty") and err.count("\n") == 1


# ------------------------------------------------------------------ the web app


def _words(store: Store) -> None:
    """A one-word vocabulary in the fake embedder's space: text search needs words."""
    vec = FakeEmbedder().embed_images([draw_image("disc", 1)])
    store.ensure_collections({}, vec.shape[1])
    store.upsert_words([1], ["ball"], vec, "toy")
    meta = store.get_meta()
    meta["words"] = {"source": "toy", "dim": vec.shape[1], "count": 1}
    store.set_meta(meta)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[SearchService, dict[str, Path]]]:
    files = make_photos(tmp_path / "photos")
    store = EdgeStore(tmp_path / "index")
    emb = FakeEmbedder()
    ingest(
        store, [tmp_path / "photos"], [emb], progress=False, model_meta={"devise": {"words": "toy"}}
    )  # type: ignore[list-item]
    _words(store)
    try:
        yield SearchService(store, embedder_factory=lambda m, r: emb), files
    finally:
        store.close()


def test_web_handlers_filter_by_exif_and_say_what_is_wrong(
    web: tuple[SearchService, dict[str, Path]],
) -> None:
    from app.web.handlers import PhotoArgs, WebHandlers

    service, files = web
    h = WebHandlers(service)
    assert h.camera_choices() == [
        "Canon EOS 5D",
        "Canon PowerShot G7 X",
        "Google Pixel 7",
        "Pixel 7",
    ]
    out = h.search_text("ball", "devise", [], "", 0.0, 20, PhotoArgs(cameras=["canon"]))
    assert out.ok and {Path(p).stem for p in out.paths} == {"paris", "garden"}
    captions = dict(zip(out.paths, (c for _, c in out.items), strict=True))
    assert captions[str(files["paris"])].endswith(" · 2019-06-15 · Canon EOS 5D")
    # blank boxes are no filter
    blank = PhotoArgs(after="", before="", cameras=[], near="", radius_km=None)
    assert len(h.search_text("ball", "devise", [], "", 0.0, 20, blank).paths) == 6
    near = PhotoArgs(after="2019-01-01", near="51.5,-0.13", radius_km=20)
    image = h.search_image(files["plain"].read_bytes(), "devise", [], "", 0.0, 20, "", near)
    assert [Path(p).stem for p in image.paths] == ["london"]
    more = h.more_like_this([str(files["plain"])], 0, "devise", [], "", 0.0, 20, near)
    assert [Path(p).stem for p in more.paths] == ["london"]
    cmp = h.compare("text", "ball", None, [], "", 0.0, 20, PhotoArgs(before="2019-07-01"))
    slot = h.compare_slot(cmp, "devise")
    assert slot is not None and [Path(p).stem for p in slot[0].paths] == ["paris"]
    # a bad box is a warning naming it, never a traceback; an empty answer says why
    bad = h.search_text("ball", "devise", [], "", 0.0, 20, PhotoArgs(after="2019-02-30"))
    assert not bad.ok and bad.status.startswith("⚠️ after: '2019-02-30' is not a date")
    far = h.search_text("ball", "devise", [], "", 0.0, 20, PhotoArgs(near="0,0"))
    assert far.ok and far.paths == [] and "no image was taken within 10 km of 0,0" in far.status
    got = h.similar_json(files["plain"].read_bytes(), k=20, photo=PhotoArgs(cameras=["pixel"]))
    assert {Path(r["path"]).stem for r in got["results"]} == {"london", "bad"}


@pytest.mark.slow
def test_live_app_takes_the_exif_filters(web: tuple[SearchService, dict[str, Path]]) -> None:
    import socket

    from gradio_client import Client, handle_file

    from app.web import launch_app

    service, files = web
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = launch_app(service, port=port)
    try:
        client = Client(app.url, verbose=False)
        info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        for endpoint in ("/search_json", "/similar_json", "/search_text", "/search_image"):
            names = [p["parameter_name"] for p in info[endpoint]["parameters"]]
            assert names[-5:] == ["after", "before", "cameras", "near", "radius_km"], endpoint
        got = json.loads(
            client.predict("ball", cameras=["canon"], before="2020-01-01", api_name="/search_json")
        )
        assert [Path(r["path"]).stem for r in got["results"]] == ["paris"]
        assert got["results"][0]["taken"] == "2019-06-15T12:30:00"
        sim = json.loads(
            client.predict(
                handle_file(str(files["plain"])),
                near="48.85,2.35",
                radius_km=400,
                api_name="/similar_json",
            )  # fmt: skip
        )
        assert {Path(r["path"]).stem for r in sim["results"]} == {"paris", "london"}
        gallery, status = client.predict("ball", after="2021-01-01", api_name="/search_text")
        assert len(gallery) == 1 and "1 result(s)" in status
        with pytest.raises(Exception, match="before: 'someday' is not a date"):
            client.predict("ball", before="someday", api_name="/search_json")
    finally:
        app.close()


def test_camera_facet_forgets_deleted_photos(store: Store) -> None:
    ids = [image_point_id(f"/p/{i}.jpg") for i in range(3)]
    pls = [
        {**image_payload(f"/p/{i}.jpg", label="x", width=1, height=1, size_bytes=1, mtime=0.0,
                         sha256=str(i)), "camera": cam}
        for i, cam in enumerate(["A", "A", "B"])
    ]  # fmt: skip
    store.ensure_collections({"devise": 2})
    store.upsert_images(ids, pls, {"devise": np.eye(3, 2, dtype=np.float32) + 0.1})  # type: ignore[arg-type]
    store.delete_images([ids[2]])
    assert store.facet_values("camera") == {"A": 2}
    assert set(store.facet_values("camera", exact=False)) == {"A"}
    service = SearchService(store)
    assert service.cameras() == ["A"]
