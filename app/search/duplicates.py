"""Near-duplicate and identical images: the scan behind `SearchService.duplicates`.

One pass over the index: scroll the points (ids, file facts and one named vector) a page at a
time, and ask the store for each page's neighbours above the threshold in one batch query
(Qdrant does the scoring; on the `dup` vector through its HNSW graph). Every pair found, and
every two files with the same sha256, join one group (union-find). A group whose files all
share one sha256 is `exact`; any other is `near`.

Nothing here deletes or moves a file: the groups are for a person to choose from.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from qdrant.filters import SearchFilter
from qdrant.store import Record, Store, Vector

#: the vector that separates near-duplicates best (see bench/bench_duplicates.py)
DUP_MODEL = "dup"
#: cosine at or above which two images are near-duplicates, by default, per vector: the
#: highest threshold with the best F1 on planted copies of real photos
#: (bench/bench_duplicates.py). For `dup`, precision and recall are both 1.0 from 0.6 to 0.7
#: there. The word-space vectors put distinct photos of a class as close as copies, so
#: theirs are only the least bad measured; clip's was not measured (no weights offline).
DEFAULT_THRESHOLDS = {"dup": 0.7, "devise": 0.98, "conse": 0.9, "clip": 0.95}
#: neighbours asked of each image. A larger group still forms: its members link in a chain.
NEIGHBOURS = 16
#: the most two copies' aspect ratios may differ by, as a factor (see _same_shape)
MAX_ASPECT = 1.2
#: points scrolled, and queried in one batch, at a time
PAGE = 256
#: images whose shorter side is below this are grouped by content (sha256) only. Measured
#: on planted copies of 25 px faces and 28 px Fashion-MNIST garments (bench_duplicates.py):
#: no vector tells a copy from a look-alike there (dup at 0.7: precision 0.002), so on the
#: demo's gallery every garment chained into one group of 986 "near-duplicates".
MIN_NEAR_SIDE = 64


class DuplicatesError(ValueError):
    """A scan that cannot run: the message says why and what to do."""


@dataclass(frozen=True)
class DuplicateImage:
    """One file of a group: its path, its cosine to the group's first file (None where it
    has no vector), and the facts a person keeps one by."""

    path: str
    score: float | None
    width: int
    height: int
    bytes: int
    mtime: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "score": None if self.score is None else round(self.score, 6),
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "mtime": self.mtime,
        }


@dataclass(frozen=True)
class DuplicateGroup:
    """Files that are copies of each other: `exact` (same content) or `near`. The largest
    picture comes first."""

    kind: str
    images: list[DuplicateImage]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "images": [im.to_json() for im in self.images]}


@dataclass
class DuplicateReport:
    model: str
    threshold: float
    took_ms: float
    groups: list[DuplicateGroup] = field(default_factory=list)
    #: how many images the scan looked at
    scanned: int = 0
    #: why nothing could be found, when a filter matches no image (not in JSON)
    note: str | None = None
    #: images too small to compare by vector (under MIN_NEAR_SIDE px): by content only
    small: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "threshold": self.threshold,
            "took_ms": round(self.took_ms, 2),
            "scanned": self.scanned,
            "content_only": self.small,
            "groups": [g.to_json() for g in self.groups],
        }


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = parent.setdefault(x, x)
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def human_size(n: int) -> str:
    """Bytes for people, in at most four digits: 812 B, 4.8 KB, 482 KB, 3.1 MB."""
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def human_date(mtime: float) -> str:
    """A file's modification time, local, to the minute."""
    return datetime.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")


def describe(image: DuplicateImage) -> str:
    """Dimensions and size, short enough for a gallery caption: `1200x800 · 2.3 MB`."""
    return f"{image.width}x{image.height} · {human_size(image.bytes)}"


def small_note(n: int) -> str:
    """What a person is told of the images compared by content only."""
    return (
        f"{n} image(s) under {MIN_NEAR_SIDE} px were compared by content (sha256) only: that "
        "small, a copy and a look-alike have the same features."
    )


def check_threshold(threshold: float) -> float:
    """The threshold as a float in (0, 1], or DuplicatesError."""
    value = float(threshold)
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise DuplicatesError(f"threshold must be above 0 and at most 1, got {threshold}")
    return value


class _Facts(NamedTuple):
    """What the scan keeps of each point's payload."""

    path: str
    width: int
    height: int
    bytes: int
    mtime: float
    sha256: str


def _facts(payload: dict[str, Any]) -> _Facts:
    return _Facts(
        str(payload.get("path", "")),
        int(payload.get("width") or 0),
        int(payload.get("height") or 0),
        int(payload.get("bytes") or 0),
        float(payload.get("mtime") or 0.0),
        str(payload.get("sha256") or ""),
    )


def scan(store: Store, model: str, threshold: float, folder: str | None = None) -> DuplicateReport:
    """Every group of near-duplicate or identical images by named vector `model`, under
    `folder` when given. The caller checks that the index holds `model`."""
    t0 = time.perf_counter()
    threshold = check_threshold(threshold)
    where = SearchFilter(folder=folder) if folder else None
    near = SearchFilter(folder=folder, min_score=threshold)
    facts: dict[str, _Facts] = {}
    links = _UnionFind()
    ids: list[str] = []
    rows: list[Vector] = []

    pairs: list[tuple[str, str]] = []

    def query_page() -> None:
        hits = store.search_images_batch(
            model, np.stack(rows), NEIGHBOURS + 1, near, exact=False, with_payload=False
        )
        for point, found in zip(ids, hits, strict=True):
            pairs.extend((point, hit.id) for hit in found if hit.id != point)
        ids.clear()
        rows.clear()

    for rec in store.scroll_images(with_vectors=[model], flt=where, batch=PAGE):
        fact = facts[rec.id] = _facts(rec.payload)
        vec = rec.vectors.get(model)
        if vec is not None and not _small(fact):
            ids.append(rec.id)
            rows.append(vec)
            if len(ids) == PAGE:
                query_page()
    if ids:
        query_page()
    # a link to a small image (a neighbour is found before its payload is read) is dropped
    for a, b in pairs:
        if b in facts and not _small(facts[b]) and _same_shape(facts[a], facts[b]):
            links.union(a, b)
    by_content: dict[str, str] = {}
    for point, fact in facts.items():
        if fact.sha256:
            links.union(point, by_content.setdefault(fact.sha256, point))
    members: dict[str, list[str]] = {}
    for point in facts:  # a point ingested during the scan, not scrolled, is left out
        members.setdefault(links.find(point), []).append(point)
    grouped = [ids_ for ids_ in members.values() if len(ids_) > 1]
    groups = _groups(store, model, grouped, facts)
    return DuplicateReport(
        model,
        threshold,
        (time.perf_counter() - t0) * 1000,
        groups,
        scanned=len(facts),
        small=sum(1 for f in facts.values() if _small(f)),
    )


def _same_shape(a: _Facts, b: _Facts) -> bool:
    """Whether two pictures could be copies by their shape: a resized, recompressed or
    slightly cropped copy keeps its aspect ratio within MAX_ASPECT (a 6% cut from two edges
    keeps it exactly). Three different portraits of one man, alike in pose and light (aspect
    ratios 0.52, 0.61, 0.80), scored 0.62-0.73 and were grouped. An unknown size passes."""
    if not (a.width and a.height and b.width and b.height):
        return True
    ratio = (a.width / a.height) / (b.width / b.height)
    return 1 / MAX_ASPECT <= ratio <= MAX_ASPECT


def _small(fact: _Facts) -> bool:
    """Too small for any vector to tell a copy from a look-alike (an unknown size is not)."""
    return 0 < min(fact.width, fact.height) < MIN_NEAR_SIDE


def _groups(
    store: Store,
    model: str,
    grouped: Sequence[list[str]],
    facts: dict[str, _Facts],
) -> list[DuplicateGroup]:
    vectors = _vectors(store, model, (p for g in grouped for p in g))
    out: list[DuplicateGroup] = []
    for group in grouped:
        # the largest picture first (then the largest file, then the oldest): the one a
        # person most likely keeps, and what every other file's score is measured against
        group = sorted(
            group,
            key=lambda p: (
                -facts[p].width * facts[p].height,
                -facts[p].bytes,
                facts[p].mtime,
                facts[p].path,
            ),
        )
        first = vectors.get(group[0])
        head_sha = facts[group[0]].sha256
        same_content = bool(head_sha) and all(facts[p].sha256 == head_sha for p in group)
        images = []
        for p in group:
            path, width, height, size, mtime, sha = facts[p]
            vec = vectors.get(p)
            if p == group[0] or (sha and sha == head_sha):
                score: float | None = 1.0
            elif vec is None or first is None:
                score = None
            else:
                score = float(np.dot(vec, first))
            images.append(DuplicateImage(path, score, width, height, size, mtime))
        head, rest = images[0], sorted(images[1:], key=lambda im: (-(im.score or 0.0), im.path))
        out.append(DuplicateGroup("exact" if same_content else "near", [head, *rest]))
    out.sort(key=lambda g: (g.kind != "exact", -len(g.images), g.images[0].path))
    return out


def _vectors(store: Store, model: str, points: Iterable[str]) -> dict[str, Vector]:
    """Unit vectors of `points` by `model`, fetched PAGE at a time."""
    wanted = list(points)
    out: dict[str, Vector] = {}
    for start in range(0, len(wanted), PAGE):
        records: list[Record] = store.retrieve_images(
            wanted[start : start + PAGE], with_vectors=[model]
        )
        for rec in records:
            vec = rec.vectors.get(model)
            if vec is not None:
                norm = float(np.linalg.norm(vec))
                out[rec.id] = vec / norm if norm > 0 else vec
    return out
