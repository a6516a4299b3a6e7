"""The web app's file guard on its own: which paths may be served, and the ASGI gate in front
of Gradio's file routes. No Gradio server and no index: plain files and a fake ASGI app."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.web.guard import FileGuard, ServedRoots, _outermost, file_target, uploaded_bytes


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "photos"
    (root / "cats").mkdir(parents=True)
    outside = tmp_path / "private"
    outside.mkdir()
    cache = tmp_path / "cache"
    cache.mkdir()
    paths = {
        "root": root,
        "cache": cache,
        "img": root / "cats" / "a.png",
        "notes": root / "cats" / "notes.txt",
        "secret": outside / "secret.png",
        "cached": cache / "copy.png",
        "link_out": root / "cats" / "link.png",
        "link_in": outside / "link_in.png",
    }
    for key in ("img", "secret", "cached"):
        Image.new("RGB", (8, 8), "red").save(paths[key])
    paths["notes"].write_text("not an image")
    os.symlink(paths["secret"], paths["link_out"])  # inside the root, pointing out
    os.symlink(paths["img"], paths["link_in"])  # outside the root, pointing in
    return paths


def test_served_roots_allow_image_files_inside_a_root_only(tree: dict[str, Path]) -> None:
    served = ServedRoots([tree["root"]], extra=[tree["cache"]])
    assert served.allows(tree["img"])
    assert not served.allows(tree["notes"]), "a non-image file next to the photos"
    assert not served.allows(tree["secret"]), "a file outside every root"
    assert not served.allows(tree["link_out"]), "a symlink inside the root pointing out"
    assert served.allows(tree["link_in"]), "judged by the real path, which is inside"
    assert not served.allows(tree["root"] / "cats" / ".." / ".." / "private" / "secret.png")
    assert not served.allows(tree["root"] / "cats" / "missing.png")
    assert not served.allows("\x00bad")
    # Gradio's cache is allowed only when asked for (the guard's view, not the index's)
    assert not served.allows(tree["cached"])
    assert served.allows(tree["cached"], cache_too=True)


def test_served_roots_grow_once_per_folder(tree: dict[str, Path]) -> None:
    served = ServedRoots()
    assert not served.allows(tree["img"])
    assert served.add([tree["root"]]) == [str(tree["root"])]
    assert served.add([tree["root"], tree["root"] / "cats" / ".."]) == []
    assert served.allows(tree["img"])


def test_outermost_keeps_only_the_top_folders() -> None:
    folders = {"/a/b", "/a", "/ab", "/a/b/c", "/x/y"}
    assert _outermost(folders) == ["/a", "/ab", "/x/y"]


def test_file_target_reads_every_file_route() -> None:
    assert file_target("/gradio_api/file=/etc/passwd") == "/etc/passwd"
    assert file_target("/file=/etc/passwd") == "/etc/passwd"
    assert file_target("/gradio_api/file/etc/passwd") == "etc/passwd"
    assert file_target("/file/x.png") == "x.png"
    assert file_target("/gradio_api/queue/join") is None
    assert file_target("/my/file/x.png") is None, "'/file/' inside another route is not one"


def _call(guard: FileGuard, path: str) -> tuple[int | None, bool]:
    """Runs one HTTP request through the guard: (status it sent, whether it passed on)."""
    sent: list[dict[str, Any]] = []
    passed: list[bool] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        passed.append(True)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    guard.app = inner
    asyncio.run(guard({"type": "http", "path": path}, receive, send))
    status = sent[0]["status"] if sent else None
    return status, bool(passed)


def test_file_guard_refuses_everything_but_served_images(tree: dict[str, Path]) -> None:
    guard = FileGuard(None, ServedRoots([tree["root"]], extra=[tree["cache"]]))
    assert _call(guard, f"/gradio_api/file={tree['img']}") == (None, True)
    assert _call(guard, f"/gradio_api/file={tree['cached']}") == (None, True)
    assert _call(guard, f"/gradio_api/file={tree['secret']}") == (403, False)
    assert _call(guard, f"/gradio_api/file={tree['notes']}") == (403, False)
    assert _call(guard, f"/gradio_api/file={tree['link_out']}") == (403, False)
    assert _call(guard, "/gradio_api/file=cats/a.png") == (403, False), "relative"
    assert _call(guard, "/gradio_api/file=http://example.invalid/a.png") == (403, False)
    # other routes are not the guard's business
    assert _call(guard, "/gradio_api/queue/join") == (None, True)


def test_uploaded_bytes_reads_only_gradios_uploads(
    tree: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    uploads.mkdir()
    inside = uploads / "up.png"
    inside.write_bytes(tree["img"].read_bytes())
    assert uploaded_bytes({"path": str(inside)}) == tree["img"].read_bytes()
    for bad in ({"path": str(tree["img"])}, {"path": ""}, {}, None, {"path": str(uploads)}):
        with pytest.raises(ValueError, match="handle_file"):
            uploaded_bytes(bad)
