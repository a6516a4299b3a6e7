"""One query, as every face asks it: the CLI builds it from its flags, the remote CLI sends it
to the app as JSON and the app reads it back, the web page builds it from its boxes. The
filters are read once, where the request is made (`read_photo_filter`); the service takes it
unchanged (`SearchService.run`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from app.search.errors import BadQueryError
from app.search.filters import PhotoFilter, read_photo_filter
from qdrant.filters import GeoCircle

Kind = Literal["search", "similar", "tag"]
KINDS: tuple[Kind, ...] = ("search", "similar", "tag")
DEFAULT_K = 10

# a path, raw bytes, or a PIL image
ImageInput = str | Path | bytes | Any


@dataclass(frozen=True)
class QueryRequest:
    """text → images (`search`, with `image` too for a mixed query), image → images
    (`similar`), image → tags (`tag`). `model` None lets the service choose; `labels`,
    `folder` and `photo` narrow the images (not the tags); `min_score` drops weak results."""

    kind: Kind
    text: str = ""
    image: ImageInput | None = None
    model: str | None = None
    k: int = DEFAULT_K
    min_score: float | None = None
    labels: tuple[str, ...] = ()
    folder: str | None = None
    photo: PhotoFilter = field(default_factory=PhotoFilter)
    zero_shot_bias: str | float = "auto"
    generality: str = "specific"
    #: people the photos must show, by name or id as typed (--person), beside any name the
    #: text holds; resolved against the index by the service (app/search/people.py)
    people: tuple[str, ...] = ()
    #: the names a query's text asked against (`-Bob`), once the service has read them; for
    #: the answer's reading only (the filter is in `photo`)
    read_against: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BadQueryError(f"unknown query kind {self.kind!r}; one of {', '.join(KINDS)}")

    @classmethod
    def typed(
        cls,
        kind: Kind,
        *,
        after: str | None = None,
        before: str | None = None,
        cameras: Sequence[str] = (),
        near: str | None = None,
        radius_km: str | float | None = None,
        labels: Sequence[str] = (),
        **fields: Any,
    ) -> QueryRequest:
        """A request from the filters as a person typed them (dates, cameras, a place),
        read and checked here; BadQueryError names the one that is wrong."""
        photo = read_photo_filter(
            after=after, before=before, cameras=cameras, near=near, radius_km=radius_km
        )
        return cls(kind, labels=tuple(labels), photo=photo, **fields)

    def with_image(self, image: ImageInput | None) -> QueryRequest:
        return replace(self, image=image)

    def to_json(self) -> dict[str, Any]:
        """Everything but the image (which travels as bytes beside it), filters as read."""
        near = self.photo.near
        return {
            "kind": self.kind,
            "text": self.text,
            "model": self.model,
            "k": self.k,
            "min_score": self.min_score,
            "labels": list(self.labels),
            "folder": self.folder,
            "after": self.photo.after,
            "before": self.photo.before,
            "cameras": list(self.photo.cameras),
            "near": [near.lat, near.lon, near.radius_km] if near else None,
            "zero_shot_bias": self.zero_shot_bias,
            "generality": self.generality,
            "people": list(self.people),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], image: ImageInput | None = None) -> QueryRequest:
        """`to_json`'s dict back as a request; a malformed one is a BadQueryError."""
        try:
            near = data.get("near")
            photo = PhotoFilter(
                after=_number(data.get("after")),
                before=_number(data.get("before")),
                cameras=tuple(str(c) for c in data.get("cameras") or ()),
                near=GeoCircle(*(float(x) for x in near)) if near else None,
            )
            min_score = data.get("min_score")
            return cls(
                data.get("kind") or "search",
                text=str(data.get("text") or ""),
                image=image,
                model=data.get("model") or None,
                k=int(data.get("k", DEFAULT_K)),
                min_score=None if min_score is None else float(min_score),
                labels=tuple(str(x) for x in data.get("labels") or ()),
                folder=data.get("folder"),
                photo=photo,
                zero_shot_bias=data.get("zero_shot_bias", "auto"),
                generality=data.get("generality") or "specific",
                people=tuple(str(x) for x in data.get("people") or ()),
            )
        except (TypeError, ValueError) as e:
            raise BadQueryError(f"a malformed query: {e}") from None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
