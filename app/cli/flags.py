"""The flags several `devise` commands share, defined once, and the argparse types that
check a flag's value (a bad one is a usage error)."""

from __future__ import annotations

import argparse
import math

# the backbone numerics every command that runs a backbone offers
PRECISIONS = ["fp32", "bf16", "int8", "auto"]


def positive_int(text: str) -> int:
    """An argparse type: a whole number, at least 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def face_side(text: str) -> int:
    """--face-side: a whole number of pixels, 256 to 8192."""
    try:
        side = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--face-side takes pixels, not {text!r}") from None
    if not 256 <= side <= 8192:
        raise argparse.ArgumentTypeError(f"--face-side {side}: from 256 to 8192 pixels")
    return side


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= v < 1.0 or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def when(text: str) -> float:
    """--after / --before: read here, once, as `taken`'s epoch seconds (a bad date is a
    usage error); the request takes them as they are."""
    from app.search.filters import FilterError, parse_when

    try:
        return parse_when(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def near(text: str) -> tuple[float, float]:
    """--near: LAT,LON read once, as (lat, lon) in degrees."""
    from app.search.filters import FilterError, parse_near

    try:
        return parse_near(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def radius(text: str) -> float:
    """--radius-km: a radius in km, read once."""
    from app.search.filters import FilterError, parse_radius

    try:
        return parse_radius(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def comma_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated names, blanks left out."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def bias_flag(p: argparse.ArgumentParser, help_text: str) -> None:
    """--zero-shot-bias, with the help its command gives it."""
    p.add_argument(
        "--zero-shot-bias", type=bias, default="auto", metavar="auto|off|VALUE", help=help_text
    )


def bias(text: str) -> str | float:
    """--zero-shot-bias: auto, off, or a number in -1..2."""
    if text in ("auto", "off"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--zero-shot-bias takes auto, off or a number, not {text!r}"
        ) from None
    if not -1.0 <= value <= 2.0 or value != value:
        raise argparse.ArgumentTypeError(f"--zero-shot-bias {text} is outside -1..2")
    return value


def device_flag(sp: argparse.ArgumentParser) -> None:
    """--device: where the models run."""
    sp.add_argument(
        "--device",
        default=None,
        metavar="auto|cpu|cuda[:N]",
        help="where the models run: cuda (a GPU: mixed precision, larger batches, JPEGs "
        "decoded by nvJPEG), cpu (the OpenVINO fast path), or auto, the default: cuda when "
        "torch sees a GPU, else cpu ($DEVISE_DEVICE sets the default)",
    )


def precision_flag(sp: argparse.ArgumentParser, default: str | None, help_text: str) -> None:
    """--precision: the backbone's numerics; each command says its default and what for."""
    sp.add_argument("--precision", choices=PRECISIONS, default=default, help=help_text)


def index_flags(sp: argparse.ArgumentParser) -> None:
    """--index and --qdrant-url: which index a command opens."""
    sp.add_argument(
        "--index",
        default=None,
        help="embedded index folder (default $DEVISE_INDEX or ./data/index)",
    )
    sp.add_argument(
        "--qdrant-url",
        default=None,
        help="use a Qdrant server instead ($QDRANT_URL; key in $QDRANT_API_KEY)",
    )


def query_flags(sp: argparse.ArgumentParser, filters: bool = True) -> None:
    """The flags of a query: the model, the photo filters (not for tags), how many results
    and how good, JSON, the checkpoint and numerics for an unindexed image, the index."""
    sp.add_argument(
        "--model",
        choices=["devise", "conse", "clip"],
        default=None,
        help="which model's vectors answer (default: devise where the index holds them, "
        "else the first it holds: conse, then clip)",
    )
    if filters:
        photo_filter_flags(sp)
    sp.add_argument("-k", type=int, default=10, help="number of results (1-1000)")
    sp.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="drop results scoring below this cosine (0-1)",
    )
    sp.add_argument("--json", action="store_true", help="print JSON")
    # a usage error found after parsing (--radius-km alone) shows this command's usage
    sp.set_defaults(usage_error=sp.error)
    sp.add_argument(
        "--checkpoint",
        default=None,
        help="DeViSE checkpoint, if not the one that built the index",
    )
    precision_flag(
        sp,
        None,
        "backbone numerics for an image the index has not embedded (as for ingest; "
        "default auto); text queries and indexed images need no backbone",
    )
    device_flag(sp)
    index_flags(sp)


def photo_filter_flags(sp: argparse.ArgumentParser) -> None:
    """--label, --folder, --person, --after, --before, --camera, --near and --radius-km."""
    sp.add_argument(
        "--label",
        action="append",
        default=None,
        help="only images with this label (repeatable: any of)",
    )
    sp.add_argument("--folder", default=None, help="only images under this folder")
    sp.add_argument(
        "--person",
        action="append",
        default=None,
        metavar="NAME",
        help="only photos that show this person (a name given with `devise people name`, or "
        "an id); repeatable: all of them",
    )
    sp.add_argument(
        "--after",
        type=when,
        default=None,
        metavar="DATE",
        help="only photos taken on or after DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], "
        "the camera's clock, from EXIF)",
    )
    sp.add_argument(
        "--before",
        type=when,
        default=None,
        metavar="DATE",
        help="only photos taken before DATE (not on it: --after 2024-06-01 --before "
        "2024-07-01 is June)",
    )
    sp.add_argument(
        "--camera",
        action="append",
        default=None,
        metavar="NAME",
        help="only photos taken with a camera whose name (EXIF make and model) holds "
        "NAME, case-insensitively ('canon', 'pixel 7'); repeatable: any of",
    )
    sp.add_argument(
        "--near",
        type=near,
        default=None,
        metavar="LAT,LON",
        help="only photos whose EXIF GPS position is within --radius-km of this point "
        "(decimal degrees)",
    )
    sp.add_argument(
        "--radius-km",
        type=radius,
        default=None,
        metavar="KM",
        help="the radius around --near, in km (default 10)",
    )
