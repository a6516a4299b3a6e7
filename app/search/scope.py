"""Which images a query may answer with: the store's filter from the labels, folder, score
floor and EXIF filters a face passes; and, when an answer comes back empty, which of those
filters no indexed image matches (said in one line, rather than an empty list unexplained)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from app.search.filters import MAX_RADIUS_KM, PhotoFilter, iso_of
from qdrant.filters import GeoCircle, SearchFilter
from qdrant.schema import IMAGES, PEOPLE, abs_posix
from qdrant.store import Store


def search_filter(
    store: Store,
    labels: Sequence[str] | None,
    folder: str | None,
    min_score: float | None,
    photo: PhotoFilter | None = None,
) -> SearchFilter:
    """The store's filter for a query's labels, folder, score floor and EXIF filters."""
    folder = folder.strip() if folder else None
    flt = SearchFilter(
        labels=tuple(x for x in (labels or ()) if x), folder=folder or None, min_score=min_score
    )
    if photo is None:
        return flt
    return replace(
        flt,
        taken_after=photo.after,
        taken_before=photo.before,
        cameras=match_cameras(store, photo.cameras),
        near=photo.near,
        # each person is a condition of its own: the photo shows all of them
        matches=tuple((PEOPLE, (pid,)) for pid in photo.people),
        excludes=((PEOPLE, photo.not_people),) if photo.not_people else (),
    )


def match_cameras(store: Store, wanted: Sequence[str]) -> tuple[str, ...]:
    """The indexed camera names a user's names stand for: every camera whose name holds
    one, case-insensitively (`canon`: all the Canons; `pixel 7`: "Google Pixel 7" too,
    as some phones write no make). A name that matches none stays as typed, so that it
    matches nothing."""
    if not wanted:
        return ()
    # the names only, so the index's counts do: an exact facet costs ~13 ms at 100,000
    # points on Edge, more than the filtered query itself
    known = store.facet_values("camera", exact=False)
    out: list[str] = []
    for name in wanted:
        low = name.lower()
        out += sorted(c for c in known if low in c.lower()) or [name]
    return tuple(dict.fromkeys(out))


def unmatched_filter(
    store: Store, labels: Sequence[str], folder: str | None, flt: SearchFilter | None = None
) -> str | None:
    """Which filter no indexed image matches, in one line; None when each matches some.
    `flt`'s EXIF filters (dates, cameras, place) are checked too."""
    wanted = [x for x in labels if x]
    known = store.facet_labels() if wanted else {}
    for label in wanted:
        if label not in known:
            names = sorted(known)
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            return f"no image has the label {label!r} (labels: {shown or 'none'})"
    folder = folder.strip() if folder else None
    if folder and not store.count(IMAGES, SearchFilter(folder=folder)):
        return f"no indexed image is under {abs_posix(folder)}"
    return unmatched_photo(store, flt) if flt is not None else None


def unmatched_photo(store: Store, flt: SearchFilter) -> str | None:
    """Which of `flt`'s EXIF filters no indexed image matches, in one line."""
    start, end = flt.taken_after, flt.taken_before
    if start is not None or end is not None:
        if not store.count(IMAGES, SearchFilter(taken_after=start, taken_before=end)):
            span = " and ".join(
                part
                for part in (
                    f"on or after {iso_of(start)}" if start is not None else "",
                    f"before {iso_of(end)}" if end is not None else "",
                )
                if part
            )
            dated = store.count(IMAGES, SearchFilter(taken_after=-1e12))
            return f"no image was taken {span} (by its EXIF date; {dated} image(s) have one)"
    if flt.cameras:
        known = store.facet_values("camera")
        if not any(c in known for c in flt.cameras):
            names = sorted(known)
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            wanted = ", ".join(repr(c) for c in flt.cameras)
            return f"no image was taken with the camera {wanted} (cameras: {shown or 'none'})"
    if flt.near is not None and not store.count(IMAGES, SearchFilter(near=flt.near)):
        c = flt.near
        placed = store.count(IMAGES, SearchFilter(near=GeoCircle(0.0, 0.0, MAX_RADIUS_KM)))
        return (
            f"no image was taken within {c.radius_km:g} km of {c.lat:g},{c.lon:g} "
            f"(by its EXIF GPS position; {placed} image(s) have one)"
        )
    return None
