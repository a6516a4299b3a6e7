"""Where a photo's parts are, drawn for the page: a search result found in a region of a photo
(docs/regions.md) is shown with that region outlined, and the Tag tab shows the uploaded photo
with each region tag's box outlined and named. A caption's "(x 0.50-1.00, y 0.50-1.00)" says
the same in numbers; the outline says it where a person looks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.search.answers import ImageResult, TagResult

if TYPE_CHECKING:
    from PIL import Image

    from model.data.thumbs import Thumbnails

#: the longest side of the Tag tab's outlined photo (the image box shows it at about 500 px)
TAG_SIDE = 768


def outlined_items(
    thumbnails: Thumbnails | None,
    results: Sequence[ImageResult],
    items: list[tuple[str, str]],
) -> list[tuple[str, str]]:
    """A gallery's (file, caption) items, one per result, with the file of each result found
    in a region swapped for a copy with its regions outlined (`Thumbnails.outlined`, a JPEG
    at the thumbnail's size, which needs no thumbnail of its own)."""
    if thumbnails is None:
        return items
    return [
        (thumbnails.outlined(r.path, r.boxes) if r.boxes else shown, text)
        for r, (shown, text) in zip(results, items, strict=True)
    ]


def tag_parts(image: bytes, tags: Sequence[TagResult]) -> Image.Image | None:
    """The tagged picture (upright, as the query read it) with each region tag's box outlined
    and named; None when no tag comes from a region."""
    from model.data.images import decode_image
    from model.data.thumbs import draw_boxes

    parts = [t for t in tags if t.box is not None]
    if not parts:
        return None
    picture = decode_image(image, max_side=TAG_SIDE, draft_size=TAG_SIDE // 2)
    return draw_boxes(picture, [t.box or [] for t in parts], [t.word for t in parts])
