"""The photo filters every face takes as text: when (`--after`, `--before`), with which camera
(`--camera`), and where (`--near LAT,LON --radius-km R`). Parsed here once, so the CLI, the
web app and its HTTP API accept and refuse the same things with the same words."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.search.errors import BadQueryError
from qdrant.filters import GeoCircle

#: the radius `--near` gets when no `--radius-km` is given
DEFAULT_RADIUS_KM = 10.0
# half the Earth's circumference: every point on it is within this of any other
MAX_RADIUS_KM = 20_040.0
DATE_FORMS = "YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]"


class FilterError(ValueError):
    """A filter value that cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class PhotoFilter:
    """The EXIF filters, read: `taken` at or after `after` and before `before` (epoch seconds,
    see `parse_when`), with any of `cameras` (as typed), within `near`."""

    after: float | None = None
    before: float | None = None
    cameras: tuple[str, ...] = ()
    near: GeoCircle | None = None
    #: person ids: each must be in the photo (a query's names and --person, resolved by
    #: app/search/people.py); and persons none of whom may be
    people: tuple[str, ...] = ()
    not_people: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.after is not None or self.before is not None or self.cameras or self.near
            or self.people or self.not_people
        )  # fmt: skip


def read_people(names: Sequence[str]) -> tuple[str, ...]:
    """--person values as typed: each name's words joined by one space, empty ones and
    repeats left out."""
    return tuple(dict.fromkeys(" ".join(n.split()) for n in names if n and n.strip()))


def parse_when(text: str) -> float:
    """An ISO date or date-time as `taken`'s epoch seconds (a camera's wall clock, read as
    UTC: EXIF dates carry no time zone, so neither may the filter). A date alone is its
    midnight."""
    raw = (text or "").strip()
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise FilterError(f"{raw!r} is not a date: use {DATE_FORMS}") from None
    if when.tzinfo is not None:
        raise FilterError(
            f"{raw!r} has a time zone, but photos' EXIF dates have none: give the local "
            f"date or time, {DATE_FORMS}"
        )
    return when.replace(tzinfo=dt.UTC).timestamp()


def iso_of(seconds: float) -> str:
    """`taken`'s epoch seconds as the wall-clock date-time it stands for."""
    when = dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)
    return when.date().isoformat() if when.time() == dt.time() else when.isoformat()


def parse_near(text: str) -> tuple[float, float]:
    """`LAT,LON` in decimal degrees, as (lat, lon)."""
    raw = (text or "").strip()
    parts = [p.strip() for p in raw.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError:
        raise FilterError(
            f"{raw!r} is not LAT,LON: give two numbers in degrees, such as 48.8566,2.3522"
        ) from None
    if not -90.0 <= lat <= 90.0:
        raise FilterError(f"latitude {parts[0]} is outside -90..90 (LAT,LON: latitude first)")
    if not -180.0 <= lon <= 180.0:
        raise FilterError(f"longitude {parts[1]} is outside -180..180")
    return lat, lon


def parse_radius(value: str | float) -> float:
    """A radius in km: positive, finite, at most half the Earth's circumference."""
    try:
        km = float(value)
    except (TypeError, ValueError):
        raise FilterError(f"{value!r} is not a number of km") from None
    if not (0.0 < km <= MAX_RADIUS_KM) or math.isnan(km):
        raise FilterError(f"the radius must be above 0 and at most {MAX_RADIUS_KM:g} km, got {km}")
    return km


def circle(near: str, radius_km: str | float | None) -> GeoCircle:
    """`--near` and `--radius-km` (default DEFAULT_RADIUS_KM) as one circle."""
    lat, lon = parse_near(near)
    if radius_km is None or radius_km == "":
        return GeoCircle(lat, lon, DEFAULT_RADIUS_KM)
    return GeoCircle(lat, lon, parse_radius(radius_km))


def read_photo_filter(
    *,
    after: str | None = None,
    before: str | None = None,
    cameras: Sequence[str] = (),
    near: str | None = None,
    radius_km: str | float | None = None,
) -> PhotoFilter:
    """The EXIF filters as typed by a user, read and checked; BadQueryError names the
    filter that is wrong. Empty strings count as not given (a web form's blank box)."""
    try:
        start = parse_when(after) if after and after.strip() else None
    except FilterError as e:
        raise BadQueryError(f"after: {e}") from None
    try:
        end = parse_when(before) if before and before.strip() else None
    except FilterError as e:
        raise BadQueryError(f"before: {e}") from None
    _check_range(start, end)
    place: GeoCircle | None = None
    has_radius = radius_km is not None and str(radius_km).strip() != ""
    if near and near.strip():
        try:
            place = circle(near, radius_km if has_radius else None)
        except FilterError as e:
            raise BadQueryError(f"near: {e}") from None
    elif has_radius:
        raise BadQueryError("a radius needs a place: give near LAT,LON too")
    return PhotoFilter(start, end, _names(cameras), place)


def checked_photo_filter(
    *,
    after: float | None = None,
    before: float | None = None,
    cameras: Sequence[str] = (),
    near: tuple[float, float] | None = None,
    radius_km: float | None = None,
) -> PhotoFilter:
    """The EXIF filters from values already read one by one (`parse_when`, `parse_near`,
    `parse_radius`: the CLI's flag types), checked together as `read_photo_filter` checks
    them, in the same words; BadQueryError names what is wrong."""
    _check_range(after, before)
    if near is None and radius_km is not None:
        raise BadQueryError("a radius needs a place: give near LAT,LON too")
    place = None
    if near is not None:
        place = GeoCircle(near[0], near[1], DEFAULT_RADIUS_KM if radius_km is None else radius_km)
    return PhotoFilter(after, before, _names(cameras), place)


def _check_range(after: float | None, before: float | None) -> None:
    if after is not None and before is not None and after >= before:
        raise BadQueryError(
            f"the date range is empty: after {iso_of(after)} is not earlier than before "
            f"{iso_of(before)} (after includes its date, before does not)"
        )


def _names(cameras: Sequence[str]) -> tuple[str, ...]:
    """Camera names as typed, blanks dropped (a web form's empty box)."""
    return tuple(c.strip() for c in cameras if c and c.strip())
