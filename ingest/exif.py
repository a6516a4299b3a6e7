"""Read the EXIF fields that photo filters need: when, with what camera, where.

Every field is read on its own: a garbage date, a year 0 or an oversized tag
drops that one field, never the image (issue 14).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from model.data.images import open_header

log = logging.getLogger(__name__)

#: Stored as the payload's `exif` once a file's EXIF was read (even when it had none), so the
#: next ingest knows which points still lack the fields. Raise it when this module reads
#: more, and the next ingest reads every file's EXIF again (payload only, no embedding).
EXIF_VERSION = 1
#: The payload fields this module writes, besides `exif`.
EXIF_FIELDS = ("taken", "taken_iso", "camera", "location")

# EXIF tag numbers (TIFF/EXIF 2.3).
_MAKE, _MODEL, _DATETIME = 0x010F, 0x0110, 0x0132
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL = 0x9003
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4
# A camera name longer than this is a corrupt or hostile tag, not a name.
_MAX_TEXT = 128


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value if 0 < len(value) <= _MAX_TEXT else None


def _date(value: Any) -> dt.datetime | None:
    text = _text(value)
    if text is None:
        return None
    try:
        taken = dt.datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    # strptime accepts year 1; cameras with an unset clock write 0000 or 1970-ish junk.
    return taken if 1900 <= taken.year <= 2100 else None


def _degrees(value: Any, ref: Any) -> float | None:
    if not isinstance(value, tuple | list) or len(value) != 3:
        return None
    try:
        d, m, s = (float(x) for x in value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    deg = d + m / 60.0 + s / 3600.0
    if deg != deg:  # a rational with a zero denominator reads as NaN
        return None
    if _text(ref) in ("S", "W"):
        deg = -deg
    return deg


def read_exif(path: Path) -> dict[str, Any]:
    """Payload fields from a photo's EXIF: taken (epoch s, naive local time read as UTC),
    taken_iso, camera, location ({"lat", "lon"}). Missing or bad fields are left out."""
    out: dict[str, Any] = {}
    try:
        with open_header(path) as im:
            exif = im.getexif()
            sub = dict(exif.get_ifd(_EXIF_IFD))
            gps = dict(exif.get_ifd(_GPS_IFD))
            base = dict(exif)
    except Exception:  # an unreadable EXIF block is no EXIF, the image is still indexed
        return out
    taken = _date(sub.get(_DATETIME_ORIGINAL)) or _date(base.get(_DATETIME))
    if taken is not None:
        out["taken"] = taken.replace(tzinfo=dt.UTC).timestamp()
        out["taken_iso"] = taken.isoformat()
    make, model = _text(base.get(_MAKE)), _text(base.get(_MODEL))
    if make or model:
        # Many models already start with the make ("Canon Canon EOS 5D" otherwise).
        if make and model and model.lower().startswith(make.lower()):
            make = None
        out["camera"] = " ".join(p for p in (make, model) if p)
    lat = _degrees(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF))
    lon = _degrees(gps.get(_GPS_LON), gps.get(_GPS_LON_REF))
    if lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180:
        out["location"] = {"lat": lat, "lon": lon}
    return out


def exif_payload(path: str | Path) -> dict[str, Any]:
    """What ingest merges into an image's payload: `read_exif`'s fields and the `exif`
    version. Never raises: a file whose EXIF cannot be read at all gets the version alone,
    and is indexed all the same."""
    try:
        fields = read_exif(Path(path))
    except Exception as e:  # noqa: BLE001 - EXIF is a courtesy; the image is what matters
        log.warning("ignoring the EXIF of %s: %s", path, e)
        fields = {}
    return {**fields, "exif": EXIF_VERSION}
