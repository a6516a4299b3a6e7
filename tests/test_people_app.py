"""People in the app (issue #37): a wrong face taken out of its person on the People tab,
the face stage's progress on the page (the Index box, and the app's own ingests as
`serve --watch` and `devise ingest` through the app run them), and `--face-side`. Real
faces: the face_recognition 1.3.0 test photos (see tests/test_people.py)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from ingest import people  # noqa: E402
from ingest.faces import photos_to_do  # noqa: E402
from qdrant.edge import EdgeStore  # noqa: E402
from tests.fakes import FakeEmbedder  # noqa: E402
from tests.test_people import (  # noqa: F401 - fixtures
    BIDEN,
    OBAMA,
    FaceFinder,
    finder,
    gallery,
    index,
    real_faces,
)

PROGRESS = re.compile(r"finding faces: (\d+) of (\d+) photo\(s\), (\d+) face\(s\) so far")


def test_the_people_tab_takes_a_wrong_face_out(
    gallery: Path,  # noqa: F811
    finder: FaceFinder,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Biden's face merged into Obama by mistake: the tab shows the person's six faces, each
    under its photo's name, and taking Biden's out makes him a person of his own again."""
    from app.search.service import SearchService
    from app.web.handlers import WebHandlers
    from app.web.people_tab import PeoplePage

    with EdgeStore(tmp_path / "remove-index") as store:
        index(store, gallery, finder)
        page = PeoplePage(WebHandlers(SearchService(store)))
        by_faces = {p.faces: p.id for p in people.list_people(store)}
        five, one = by_faces[5], by_faces[1]
        page.name(five, "Barack")
        page.merge(five, one)
        theirs = page.faces(five)
        names = sorted(caption for _, caption in theirs.items)
        assert names == sorted(OBAMA + BIDEN) and len(theirs.ids) == 6
        assert theirs.status.startswith(f"Person {five} (Barack): 6 face(s)")
        for person, face, said in [
            (five, "", "pick the wrong face first"),
            (five, "no-such-face", "no face 'no-such-face'"),
        ]:
            shown, still = page.take_out(person, face)
            assert shown.status.startswith("⚠️") and said in shown.status, shown.status
            assert len(still.ids) == 6
        assert page.faces("999").status.startswith("⚠️")
        assert page.faces("").items == []
        biden = theirs.ids[[c for _, c in theirs.items].index("biden.jpg")]
        shown, still = page.take_out(five, biden)
        now = {p.id: (p.name, p.faces) for p in people.list_people(store)}
        alone = next(pid for pid, (_, n) in now.items() if n == 1)
        assert shown.status == f"The face is out of person {five}: it is person {alone} now."
        assert len(shown.ids) == 2 and len(still.ids) == 5
        assert sorted(c for _, c in still.items) == sorted(OBAMA)
        assert now[five] == ("Barack", 5)


def test_the_index_box_shows_the_face_stage_s_progress(
    gallery: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The Index box's status line, polled as the page polls it, counts the photos the face
    stage has done out of those it has to do."""
    from app.jobs.index import IndexJob
    from app.search.service import SearchService
    from app.web.handlers import WebHandlers

    with EdgeStore(tmp_path / "progress-index") as store:
        service = SearchService(store)
        job = IndexJob(service, lambda: [FakeEmbedder()], allowed=[gallery])  # type: ignore[list-item]
        h = WebHandlers(service, job=job)
        lines = list(h.index_progress(str(gallery), poll_s=0.02))
    counts = [tuple(map(int, m.groups())) for m in map(PROGRESS.search, lines) if m]
    assert counts, lines
    assert all(total == 6 and 0 <= done <= 6 for done, total, _ in counts), counts
    assert counts == sorted(counts)  # it only moves forward
    assert "faces: 6 in 6 photo(s)" in lines[-1], lines[-1]


def test_the_app_s_own_ingests_show_the_face_stage_s_progress(
    gallery: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An ingest the app runs for `serve --watch` or for `devise ingest` (its request's
    message, which the watcher's line on the page and the CLI show) counts the face stage's
    photos too."""
    from app.jobs.index import IndexJob
    from app.search.service import SearchService
    from app.web.cliapi import CliApi
    from app.web.handlers import WebHandlers

    with EdgeStore(tmp_path / "watch-index") as store:
        service = SearchService(store)
        job = IndexJob(service, lambda: [FakeEmbedder()], allowed=[gallery])  # type: ignore[list-item]
        api = CliApi(WebHandlers(service, job=job), job, token="t", loopback=True)
        api.embedders = lambda opts: ([FakeEmbedder()], {})  # type: ignore[method-assign,assignment,return-value]
        req = job.submit([gallery], api._runner({"prune": True}), source="watch")
        seen: list[str] = []
        deadline = time.monotonic() + 300
        while req.state in ("queued", "running") and time.monotonic() < deadline:
            seen.append(req.message)
            time.sleep(0.02)
        assert req.state == "done", req.message
    counts = [tuple(map(int, m.groups())) for m in map(PROGRESS.search, seen) if m]
    assert counts and all(total == 6 for _, total, _ in counts), seen
    assert req.summary["faces"]["faces"] == 6


def test_a_larger_face_side_looks_again_and_the_flag_is_checked(
    gallery: Path,  # noqa: F811
    finder: FaceFinder,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.cli import main as devise

    with EdgeStore(tmp_path / "side-index") as store:
        index(store, gallery, finder)
        assert photos_to_do(store) == []
        assert len(photos_to_do(store, side=3072)) == 6
        index(store, gallery, FaceFinder(detect_side=3072))
        assert photos_to_do(store, side=3072) == [] and photos_to_do(store) == []
        assert sorted(p.faces for p in people.list_people(store)) == [1, 5]
    for bad, said in [("10", "from 256 to 8192"), ("big", "not 'big'")]:
        with pytest.raises(SystemExit):
            devise(["ingest", str(gallery), "--face-side", bad])
        err = capsys.readouterr().err
        assert "--face-side" in err and said in err, err


def test_the_face_side_given_once_is_kept_by_the_index_s_later_ingests(
    gallery: Path,  # noqa: F811
    real_faces: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`--face-side 2048` on one ingest: the index records it, and a later face pass that
    names no side (the page's Index box, `serve --watch`, a plain `devise ingest`) looks as
    closely at a new photo, and says so; naming the default again puts it back."""
    import shutil

    from app.jobs.faces import face_side, face_stage
    from ingest.pipeline import ingest
    from model.detectors.dlib_faces import DETECT_SIDE
    from qdrant.schema import FACES_SIDE

    def sides(store: EdgeStore) -> dict[str, int]:
        return {Path(r.payload["path"]).name: r.payload[FACES_SIDE] for r in store.scroll_images()}

    with EdgeStore(tmp_path / "kept-index") as store:
        ingest(store, [gallery], [FakeEmbedder()], progress=False, workers=1)  # type: ignore[list-item]
        assert face_stage(store, [gallery], side=2048) is not None
        assert set(sides(store).values()) == {2048}
        shutil.copy2(real_faces / OBAMA[0], gallery / "new.jpg")
        ingest(store, [gallery], [FakeEmbedder()], progress=False, workers=1)  # type: ignore[list-item]
        said: list[str] = []
        summary = face_stage(store, [gallery], say=said.append)
        assert summary is not None and summary.photos == 1 and summary.faces == 1
        assert sides(store)["new.jpg"] == 2048
        assert said == [
            "this index looks for faces on a copy 2048 px long (made with --face-side): so "
            "does this ingest"
        ]
        assert face_side(store, DETECT_SIDE) == DETECT_SIDE
        assert face_side(store, None, said.append) == DETECT_SIDE and len(said) == 1


def test_search_answers_while_the_face_stage_runs(
    gallery: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app's Index job holds its ingest slot through the face stage, not the store: a
    query made while the stage is halfway (held there after its first photo) is answered
    from the photos already embedded, and the stage then finishes with nothing lost."""
    import threading

    import app.jobs.faces as stage
    from app.jobs.index import IndexJob
    from app.search.request import QueryRequest
    from app.search.service import SearchService

    real, halfway, go = stage.face_stage, threading.Event(), threading.Event()

    def held(store: object, paths: object, **kw: object) -> object:
        told = kw.get("on_photo")

        def on_photo(s: object) -> None:
            if callable(told):
                told(s)
            if not halfway.is_set():
                halfway.set()
                go.wait(120)

        return real(store, paths, **{**kw, "on_photo": on_photo})  # type: ignore[arg-type]

    monkeypatch.setattr(stage, "face_stage", held)
    with EdgeStore(tmp_path / "busy-index") as store:
        service = SearchService(store)
        job = IndexJob(service, lambda: [FakeEmbedder()], allowed=[gallery])  # type: ignore[list-item]
        job.start(str(gallery))
        try:
            assert halfway.wait(120), job.message
            assert PROGRESS.search(job.message) and job.state == "running", job.message
            answer = service.run(QueryRequest("similar", image=str(gallery / "obama.jpg"), k=6))
            assert job.state == "running"  # still held in the face stage
        finally:
            go.set()
        job.wait(120)
        assert job.state == "done", job.message
        # the five other photos, every one embedded before the face stage began
        got = sorted(Path(r.path).name for r in answer.results)
        assert got == sorted(set(OBAMA + BIDEN) - {"obama.jpg"})
        assert photos_to_do(store, [gallery]) == [] and "faces: 6 in 6 photo(s)" in job.message
