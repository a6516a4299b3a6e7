"""What the app's galleries show for a result: the file itself where a browser can show it
and it is small, else a JPEG thumbnail made once and kept.

A browser shows JPEG, PNG, GIF, WebP, BMP and AVIF, but not TIFF, PNM or HEIC (an iPhone's
photos): those came out as broken images. And Gradio reads every file it hands out whole
(it hashes and copies it into its cache) on every answer: twelve 10 MB camera originals
made each search read and copy 120 MB. A thumbnail is decoded like any picture here
(`decode_image`: upright, draft mode for JPEG) into the cache folder's `thumbnails`
(`default_folder`), keyed by the file's real path, size and mtime, so a changed file gets
a new one. The paths a gallery hands back ("more like this") stay the originals.

HEIC has no reduced-scale decode: a 12-megapixel one takes about a second, so ingest,
which decodes every file anyway, keeps their thumbnails as it goes (`keep`): the first
gallery of an iPhone library is then as quick as any other.

A result found in a part of a photo (a region, docs/regions.md) is shown with that part
outlined (`outlined`): a copy at the thumbnail's size with the boxes drawn on it, made once
and kept like a thumbnail.

An upload a browser cannot draw (an iPhone photo dropped on the Tag tab) is swapped for a
JPEG of it at the size every query reads (`drawable`), so the page shows what it answers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from model.data.images import MAX_SIDE, ImageError, decode_image, within
from model.paths import default_cache_dir

log = logging.getLogger(__name__)

#: Suffixes of formats every current browser shows in an <img>.
BROWSER_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".gif", ".webp", ".bmp", ".avif"})
#: A file over this many bytes is shown by its thumbnail (a phone's photo is 2-5 MB).
BIG_FILE = 2_000_000
#: A thumbnail's longest side: a gallery tile is about 190 px, 380 on a 2x screen.
SIDE = 512
#: Thumbnails made at once for one gallery.
THREADS = max(1, min(4, os.cpu_count() or 1))
#: Formats decoded whole, slowly (HEVC): their thumbnails are kept at ingest.
SLOW_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
#: a part's outline: yellow, seen on most photos, inside a dark line that keeps it seen on
#: a yellow or white one
OUTLINE = (255, 214, 0)
OUTLINE_EDGE = (20, 20, 20)


def outline_width(size: tuple[int, int]) -> int:
    """An outline's width in pixels: a 64th of the longest side (8 px on a 512 px thumbnail,
    about 3 px on a gallery's 190 px tile; at a 100th it was a hairline there)."""
    return max(2, round(max(size) / 64))


def draw_boxes(
    picture: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str] = ()
) -> Image.Image:
    """A copy of `picture` with each box ([x0, y0, x1, y1] as fractions of its width and
    height) outlined, and its label, where given, written in its upper-left corner. The line
    is `outline_width` wide, so it is still seen on a gallery's small tile."""
    out = picture.convert("RGB")
    draw = ImageDraw.Draw(out)
    w, h = out.size
    line = outline_width(out.size)
    font = ImageFont.load_default(size=max(12, round(max(w, h) / 30)))
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in box)
        rect = (round(x0 * (w - 1)), round(y0 * (h - 1)), round(x1 * (w - 1)), round(y1 * (h - 1)))
        draw.rectangle(rect, outline=OUTLINE_EDGE, width=line + 2)
        inner = (rect[0] + 1, rect[1] + 1, rect[2] - 1, rect[3] - 1)
        draw.rectangle(inner, outline=OUTLINE, width=line)
        if i < len(labels) and labels[i]:
            at = (rect[0] + line + 2, rect[1] + line + 2)
            draw.rectangle(draw.textbbox(at, labels[i], font=font), fill=OUTLINE_EDGE)
            draw.text(at, labels[i], fill=OUTLINE, font=font)
    return out


def default_folder() -> Path:
    """Where ingest and the app keep thumbnails: the cache folder's `thumbnails` (about
    50 KB a photo; deleting it is safe, the app makes them again)."""
    return default_cache_dir() / "thumbnails"


class Thumbnails:
    """Thumbnails under `folder`, made on first sight and reused while the file is unchanged."""

    def __init__(
        self, folder: str | os.PathLike[str], *, side: int = SIDE, big_file: int = BIG_FILE
    ):
        self.folder = Path(folder)
        self.side = side
        self.big_file = big_file
        #: set when `keep` could not write: said once, not tried again for every file
        self.cannot_keep: str | None = None

    def needs_one(self, path: str) -> bool:
        """True for a file a browser cannot show, or one too big to hand out whole; never
        for a file made here (an outlined copy is shown as it is)."""
        if Path(path).is_relative_to(self.folder):
            return False
        try:
            size = os.stat(path).st_size
        except OSError:
            return False
        return Path(path).suffix.lower() not in BROWSER_SUFFIXES or size > self.big_file

    def shown(self, path: str) -> str:
        """The path a gallery shows for `path`: the file itself, or its thumbnail. A file
        that will not decode is shown as it is (the browser says what it can)."""
        if not self.needs_one(path):
            return path
        return self._jpeg(path, self.side, 85)

    def shown_many(self, paths: list[str]) -> list[str]:
        """`shown` for each path, the thumbnails still to make made side by side: the
        decoders release the GIL, and an iPhone's 12-megapixel HEIC takes about a second
        to decode (HEVC has no reduced-scale decode), so a first gallery of twelve took
        twelve seconds one at a time."""
        todo = [p for p in paths if self.needs_one(p)]
        if len(todo) < 2:
            return [self.shown(p) for p in paths]

        def thumbnail(path: str) -> str:
            return self._jpeg(path, self.side, 85)

        with ThreadPoolExecutor(min(len(todo), THREADS)) as pool:
            made = dict(zip(todo, pool.map(thumbnail, todo), strict=True))
        return [made.get(p, p) for p in paths]

    def drawable(self, path: str) -> str:
        """`path` if a browser draws its format, else a JPEG of it at `MAX_SIDE`, the size
        every query decodes a picture to (so a query by it reads the same picture)."""
        if Path(path).suffix.lower() in BROWSER_SUFFIXES:
            return path
        return self._jpeg(path, MAX_SIDE, 95)

    def outlined(self, path: str, boxes: Sequence[Sequence[float]]) -> str:
        """A JPEG of `path` at the thumbnail's size with `boxes` outlined (`draw_boxes`),
        made once for these boxes; `path` when it will not decode."""
        where = ";".join(",".join(f"{float(v):.4f}" for v in b) for b in boxes)
        dest = self._dest(path, self.side, where)
        if dest is None:
            return path
        if dest.is_file():
            return str(dest)
        try:
            picture = decode_image(path, max_side=self.side, draft_size=self.side // 2)
            self._save(draw_boxes(picture, boxes), dest, 85)
        except (ImageError, OSError) as e:
            log.warning("no outlined copy of %s: %s", path, e)
            return path
        return str(dest)

    def keep(self, path: str, picture: Image.Image) -> None:
        """At ingest: the thumbnail of a file slow to decode (HEIC), from the picture ingest
        decoded anyway (upright, longest side at most `MAX_SIDE`). Never raises: a
        thumbnail that cannot be written is made when a gallery first shows the file."""
        if self.cannot_keep is not None or Path(path).suffix.lower() not in SLOW_SUFFIXES:
            return
        dest = self._dest(path, self.side)
        if dest is None or dest.is_file():
            return
        try:
            self._save(within(picture, self.side), dest, 85)
        except OSError as e:
            self.cannot_keep = str(e)
            log.warning(
                "thumbnails cannot be kept in %s (%s): the app makes them when it first "
                "shows a photo", self.folder, e,
            )  # fmt: skip

    def _dest(self, path: str, side: int, where: str = "") -> Path | None:
        """Where the JPEG of `path` at `side` lives (with the boxes `where` outlined, where
        given); None when the file cannot be seen."""
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
        except OSError:
            return None
        key = hashlib.sha256(
            f"{real}\0{st.st_size}\0{st.st_mtime_ns}\0{side}{where and chr(0) + where}".encode(
                "utf-8", "surrogateescape"
            )
        ).hexdigest()[:32]
        # the original's name, so that a saved thumbnail is recognisable; no control
        # characters (a name with a newline) and no leading dot (a hidden file)
        stem = "".join(c if c.isprintable() else "_" for c in Path(real).stem[:100])
        return self.folder / key[:2] / key / f"{stem.lstrip('.') or 'image'}.jpg"

    @staticmethod
    def _save(picture: Image.Image, dest: Path, quality: int) -> None:
        # written aside and renamed: two searches at once never show a half-written file
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            picture.save(tmp, "JPEG", quality=quality)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def _jpeg(self, path: str, side: int, quality: int) -> str:
        """A JPEG of `path`, longest side at most `side`, made once; `path` when it will
        not decode."""
        dest = self._dest(path, side)
        if dest is None:
            return path
        if dest.is_file():
            return str(dest)
        try:
            self._save(decode_image(path, max_side=side, draft_size=side // 2), dest, quality)
        except (ImageError, OSError) as e:
            log.warning("no thumbnail for %s: %s", path, e)
            return path
        return str(dest)
