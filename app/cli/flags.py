"""The flags several `devise` commands share, defined once, and the argparse types that
check a flag's value (a bad one is a usage error)."""

from __future__ import annotations

import argparse
import math


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= v < 1.0 or math.isnan(v):
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def _when(text: str) -> str:
    """--after / --before: checked here (a bad date is a usage error), read by the service."""
    from app.search.filters import FilterError, parse_when

    try:
        parse_when(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _near(text: str) -> str:
    from app.search.filters import FilterError, parse_near

    try:
        parse_near(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _radius(text: str) -> float:
    from app.search.filters import FilterError, parse_radius

    try:
        return parse_radius(text)
    except FilterError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _bias_flag(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument(
        "--zero-shot-bias", type=_bias, default="auto", metavar="auto|off|VALUE", help=help_text
    )


def _bias(text: str) -> str | float:
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


def _device_flag(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--device",
        default=None,
        metavar="auto|cpu|cuda[:N]",
        help="where the models run: cuda (a GPU: mixed precision, larger batches, JPEGs "
        "decoded by nvJPEG), cpu (the OpenVINO fast path), or auto, the default: cuda when "
        "torch sees a GPU, else cpu ($DEVISE_DEVICE sets the default)",
    )
