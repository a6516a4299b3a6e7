"""Which files the web app may serve, and the guard in front of Gradio's file routes.

What the app serves from disk, and why nothing else:
- Results are copied by Gradio into its cache before the browser fetches them, and Gradio
  only copies files from `allowed_paths`: the indexed roots.
- `FileGuard` sits in front of every `file=` route and lets through image files only, whose
  real path (symlinks resolved) lies inside an indexed root or Gradio's own cache. So `../`,
  absolute paths, symlinks out of a root, a notes.txt next to the photos, and URLs are refused.
- `uploaded_bytes` reads an uploaded file for the program endpoints only from Gradio's own
  upload folder, never a path named freely.

This is security code: tests/test_guard.py covers it on its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.data.images import is_image_path

if TYPE_CHECKING:
    from app.search.service import SearchService


_FILE_ROUTES = ("/file=", "/file/")


class ServedRoots:
    """The folders whose image files the app may show. Thread-safe; grows when the app
    indexes a folder."""

    def __init__(self, roots: Sequence[str | Path] = (), extra: Sequence[str | Path] = ()) -> None:
        self._lock = threading.Lock()
        self._roots: list[Path] = []
        self._extra = [Path(os.path.realpath(p)) for p in extra]  # Gradio's cache folders
        self.add(roots)

    def add(self, roots: Sequence[str | Path]) -> list[str]:
        """Adds roots; returns the new ones (as given, absolute) for Gradio's allowed_paths."""
        added: list[str] = []
        with self._lock:
            for r in roots:
                real = Path(os.path.realpath(r))
                if real not in self._roots:
                    self._roots.append(real)
                    added.append(str(Path(os.path.abspath(r))))
        return added

    @property
    def roots(self) -> list[Path]:
        with self._lock:
            return list(self._roots)

    def allows(self, path: str | Path, *, cache_too: bool = False) -> bool:
        """True for an existing image file whose real path lies inside a root."""
        try:
            real = Path(os.path.realpath(path))
            if not is_image_path(real) or not real.is_file():
                return False
        except (OSError, ValueError):
            return False
        bases = self.roots + (self._extra if cache_too else [])
        return any(real == b or real.is_relative_to(b) for b in bases)


def roots_from_index(service: SearchService) -> list[str]:
    """The indexed roots: recorded by ingest in the index's meta; older indexes fall back to
    the folders of their points (one scroll over payloads)."""
    meta = service.meta()
    recorded = meta.get("roots")
    if isinstance(recorded, list) and recorded:
        return [str(r) for r in recorded]
    folders: set[str] = set()
    for rec in service.store.scroll_images(with_vectors=False):
        folder = rec.payload.get("folder")
        if folder:
            folders.add(str(folder))
    return _outermost(folders)


def _outermost(folders: set[str]) -> list[str]:
    out: list[str] = []
    for f in sorted(folders, key=lambda s: (s.count("/"), s)):
        if not any(f == o or f.startswith(o.rstrip("/") + "/") for o in out):
            out.append(f)
    return out


class FileGuard:
    """ASGI middleware: a `file=` request gets through only for a servable image file."""

    def __init__(self, app: Any, served: ServedRoots) -> None:
        self.app = app
        self.served = served

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            target = file_target(scope.get("path", ""))
            if target is not None and not self._ok(target):
                await _refuse(send)
                return
        await self.app(scope, receive, send)

    def _ok(self, target: str) -> bool:
        # judge exactly what Gradio will open: the path as decoded once by the server
        if "://" in target or not os.path.isabs(target):
            return False
        return self.served.allows(target, cache_too=True)


def file_target(path: str) -> str | None:
    """The file a Gradio file route would open, or None for other routes."""
    for marker in _FILE_ROUTES:
        i = path.find(marker)
        if i >= 0 and (marker == "/file=" or path[:i].endswith("/gradio_api") or i == 0):
            return path[i + len(marker) :]
    return None


async def _refuse(send: Any) -> None:
    body = b"File not allowed"
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"16")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def uploaded_bytes(image: Any) -> bytes:
    """The bytes of a file uploaded to Gradio. A program endpoint gets the file's record
    unchecked, so only a file inside Gradio's upload folder is read: never one named freely."""
    from gradio import utils as gr_utils

    path = image.get("path") if isinstance(image, dict) else getattr(image, "path", None)
    if not path:
        raise ValueError("send the image as a file: gradio_client.handle_file(PATH)")
    real = Path(os.path.realpath(path))
    upload = Path(os.path.realpath(gr_utils.get_upload_folder()))
    if not real.is_relative_to(upload) or not real.is_file():
        raise ValueError("send the image as a file: gradio_client.handle_file(PATH)")
    return real.read_bytes()
