"""The real test faces: the photos in the sdist of face_recognition 1.3.0 (tests/test_images/),
five of one person and one of another. `.ci/run` unpacks the sdist into the cache (or
$DEVISE_FACES_DIR); they are never copied into this repository. Shared by the tests of
people and bench/bench_people.py."""

from __future__ import annotations

import os
from pathlib import Path

OBAMA = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
]
BIDEN = ["biden.jpg"]
HOW = (
    ".ci/run unpacks the sdist of face_recognition 1.3.0 there (pip download --no-deps "
    "--no-binary :all: face_recognition==1.3.0)"
)


def faces_dir() -> Path:
    root = os.environ.get("DEVISE_FACES_DIR") or (
        Path.home() / ".cache" / "devise-search" / "face_recognition-1.3.0"
    )
    return Path(root) / "tests" / "test_images"


def missing(names: list[str] | None = None) -> str | None:
    """Why the tests of real faces cannot run here, or None when every named photo is there."""
    folder = faces_dir()
    if all((folder / n).is_file() for n in names or OBAMA + BIDEN):
        return None
    return f"the real test faces are absent from {folder}: {HOW}"
