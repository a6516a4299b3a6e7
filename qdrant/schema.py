"""Collections, point ids, payload shapes and payload indexes shared by every backend."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NotRequired, TypedDict
from uuid import NAMESPACE_URL, uuid5

IMAGES = "images"
WORDS = "words"
# one point per face found in a photo: its descriptor and where it is (model/detectors/
# dlib_faces.py, ingest/faces.py)
FACES = "faces"
FOLDER_IDS = "folder_ids"
# `camera` as a number (camera_id): what Edge's camera filter checks.
CAMERA_ID = "camera_id"
# The server backend keeps the meta document in this tiny collection (see server.py).
META = "devise_meta"
SCHEMA_VERSION = 1

# image payload: the person ids of the faces in the photo, and the version of the face pass
# that found them (written only once its faces are stored: a killed pass resumes from it)
PEOPLE = "people"
FACES_DONE = "faces_done"
# the detection side (`--face-side`) that pass ran at: a later pass with a larger side looks
# again for the smaller faces (absent: the default side)
FACES_SIDE = "faces_side"
# "lookup": an integer index for exact matches only, without the range part (which for
# `folder_ids` took 1.9 of a 1,000,000-point store's 5 s to load, and no filter asks a range)
IndexKind = Literal["keyword", "integer", "lookup", "float", "geo"]

# Payload indexes per collection. `folders` is a list field: a keyword index matches any
# element exactly, which is what the folder prefix filter relies on. `sha256` lets ingest
# find a moved file by content, `path` lets it find a file by name.
IMAGE_INDEXES: dict[str, IndexKind] = {
    "label": "keyword",
    "folders": "keyword",
    # `folders` again, each folder as a 63-bit number (folder_id): what Edge's folder filter
    # checks. Checking a point's folder strings cost about 200 ns a point, numbers about 50
    # (immutable segments, 2-core Xeon), and a filter that combines a folder with a label
    # checks the folder on every photo of the label: 50,000 of them at 1,000,000 photos
    FOLDER_IDS: "lookup",
    "sha256": "keyword",
    "path": "keyword",
    # the ConSE concepts (labels and hypernyms) an image falls under, for general-word search
    "concepts": "keyword",
    # from EXIF (ingest/exif.py): when (epoch seconds of the camera's wall clock, a float
    # range: Edge and qdrant-client's local mode both filter it alike), with what, where
    "taken": "float",
    "camera": "keyword",
    # `camera` again as a 63-bit number (camera_id), which the store adds to every payload
    # it writes with a camera (with_numbers): what Edge's camera filter checks. At 1,000,000
    # photos a maker's five models as numbers took 0.69x the time of names for a walk
    # filtered to them (a quarter of the photos) and 0.68x with a label (devise 50 d, query
    # by query, Xeon family 6 model 207)
    CAMERA_ID: "lookup",
    "location": "geo",
    # the people whose faces a photo shows (person ids, ingest/faces.py): the person filter
    PEOPLE: "keyword",
}
# The payload indexes whose big values get links of their own in every searched vector's
# graph (VectorIndexing.payload_m): folders and labels, the filters people narrow by. Every
# other index is built without (Qdrant's `enable_hnsw` false): dates, cameras and places are
# walked with ACORN, and links for each of their values would multiply the build.
LINKED_INDEXES: frozenset[str] = frozenset({FOLDER_IDS, "label"})
# Indexes read only to find one file (by name or by content): a value per point, so in RAM
# they would be the largest; memory-mapped from disk they cost nothing at open.
ON_DISK_INDEXES: frozenset[str] = frozenset({"path", "sha256"})
# On Edge, `folders` too: its folder filter checks `folder_ids` once every point has them,
# and an index made since has them from the start, so `folders` is read only by an index
# made before. In RAM it took 0.6 s of a 1,000,000-point reopen; mapped, nothing (reopen
# 3.0-4.8 -> 2.0-3.0 s, Xeon family 6 model 207). A server's folder filter reads it.
EDGE_ON_DISK_INDEXES: frozenset[str] = ON_DISK_INDEXES | {"folders"}
# The index whose values order a segment's points when optimize() builds it (Qdrant's
# `is_principal`: its segment builder sorts points by the field's values, summed): a folder's
# photos then lie together in every file, so a filter that checks a label's points for their
# folder and camera reads neighbouring entries instead of one every few kilobytes. At
# 1,000,000 points (clip 512 d) the label + folder + camera filter took 0.27x its time
# unordered, a date range 0.76x, a folder 0.91x (Xeon family 6 model 207, query by query;
# README, "A million photos").
PRINCIPAL_INDEX = FOLDER_IDS
WORD_INDEXES: dict[str, IndexKind] = {"rank": "integer", "word": "keyword", "kind": "keyword"}
# Kinds of `words` entries: frequent single words, whole class labels, and their hypernyms.
# A point without a kind (an index made before kinds existed) is a word.
WORD_KINDS = ("word", "label", "hypernym")
# Labels and hypernyms sit above every frequency rank, so a `max_rank` cap leaves them out.
CONCEPT_RANK = 10_000_000
# The faces collection: one vector, dlib's 128-d descriptor, compared by Euclidean distance
# (dlib's measure: one person's faces lie under about 0.6 apart), searched exactly (a library
# has far fewer faces than an exact scan handles in a few ms). `photo` finds a photo's faces
# (to delete or move them), `person` a person's.
FACE_VECTOR = "face"
FACE_INDEXES: dict[str, IndexKind] = {"photo": "keyword", "person": "keyword"}
# The words collection has one named vector.
WORD_VECTOR = "word"
# The near-duplicate vector of an image (pooled backbone features, projected and unit-norm):
# what `duplicates` compares.
DUP_VECTOR = "dup"


@dataclass(frozen=True)
class VectorIndexing:
    """How one image vector is indexed and searched once the index is large: the same
    settings go to both backends (Edge's config and the server's collection).

    Below `INDEX_FROM_POINTS` nothing is built and every query is exact. Past it, the store
    builds an HNSW graph over int8 copies of the vectors (a quarter of float32), all three
    (graph, int8 copies, float32 originals) in memory-mapped files that queries page in; a
    query walks the graph on the int8 copies, then rescores `oversampling` x k candidates
    with the originals, so quantisation costs no recall. A filter that leaves fewer than
    `full_scan_points` points is answered by the payload index and an exact score of those
    points instead of the graph.
    The figures were chosen by bench/bench_scale.py (README, "A million photos").
    """

    m: int = 16
    ef_construct: int = 100
    # extra links among the points of each big folder and label (LINKED_INDEXES), as Qdrant
    # builds them for a payload value with at least `full_scan_points` points and at most
    # about an eighth of a segment's (more are connected by the graph's own links): a walk
    # filtered to such a folder then needs no ACORN. At 1,000,000 points, clip filtered to a
    # folder of 99,941: 2.5 ms, recall@10 0.998, against 11.0 ms with ACORN on the same
    # graph and 9.4 ms scored from the payload index (Xeon family 6 model 207). `dup` gets
    # none: the duplicate scan walks it unfiltered, or within a folder scored from the
    # payload index (dup_full_scan_points)
    payload_m: int = 16
    # a filter that leaves fewer points than this is scored from the payload index (int8,
    # rescored) instead of walking the graph: at 1,000,000 points a walk filtered to 50,000
    # found 0.59-0.87 of the true top 10 even with a beam of 512 (ACORN's two-hop walk
    # finds them, at 20 ms); scored from the index, 1.0 at 4-8 ms (README, "A million
    # photos"). 20,000, then 120,000 before folders got their links
    full_scan_points: int = 60_000
    # `dup` keeps 120,000: its graph has no links, and a duplicate scan within a folder of
    # 99,941 of 1,000,000 photos, walked, found a photo's own point among its 11 neighbours
    # for 9 of 40 photos (24 with a beam of 768); below this threshold it is scored from the
    # payload index, as before the folders' links
    dup_full_scan_points: int = 120_000
    quantile: float = 0.99
    vectors_on_disk: bool = True
    # the int8 copies and the graph memory-mapped too, paged in as queries read them, rather
    # than read in whole at open: reopening 100,000 points took 1.8 s instead of 2.7-4.4 s
    graphs_mapped: bool = True
    # and not read through while the store opens (Edge's Cached does, Cold does not): at
    # 1,000,000 points that read was 12 of the 14.4 s a reopen took, since Edge drops the
    # files from the OS's cache when a shard closes. The store reads them in the background
    # instead (qdrant/edge.py, _start_warming); reopen 2.3 s
    populate_at_open: bool = False
    # 768, not 256: at 1,000,000 clustered points the unfiltered clip walk's recall@10 was
    # 0.913 with 256, 0.942 with 512 and 0.953 with 768 at 2.3 ms, and devise filtered to a
    # quarter (a camera maker) 0.948 with 512 and 0.998 with 768 at 7.8 ms (README, "A
    # million photos")
    hnsw_ef: int = 768
    oversampling: float = 2.0
    # ACORN (Patel et al., SIGMOD 2024): a filtered graph walk also looks two hops away, so a
    # filter that leaves a quarter of the points still finds its neighbours. Not where the
    # filter holds a folder or label with links of its own (linked_share): they connect
    # its points, and ACORN's second hop only costs (4.4x the time for the same recall)
    acorn: bool = True
    # on a graph with those links, ACORN only for a filter that leaves less than this share
    # of the points (Qdrant's default: 0.4): the links connect the rest. On the 1,000,000-
    # point bench index, cameras that leave a random tenth / 0.15 / a quarter of the photos,
    # walked without ACORN: recall@10 0.885-0.890 / 0.970-0.988 / 0.990-1.0 at 1.6-3.2 ms,
    # against 1.0 at 8.5-14.3 ms with it (clip and devise, 40 queries each; on a graph
    # without the links a quarter found 0.452)
    acorn_max_selectivity_linked: float = 0.2
    # the largest share of a segment's points whose payload value still gets links: Qdrant
    # skips a value with more than points / (average level-0 links) x 4 (its percolation
    # bound), and level 0 has at most 2 m = 32 links, so up to an eighth always has them
    linked_share: float = 1 / 8

    def payload_m_of(self, name: str) -> int:
        """The extra links per payload value that vector `name` gets: none for `dup`."""
        return 0 if name == DUP_VECTOR else self.payload_m

    def full_scan_kb(self, dim: int, name: str = "") -> int:
        """Vector `name`'s `full_scan_points` in the unit both backends read: KB of float32
        vectors."""
        points = self.dup_full_scan_points if name == DUP_VECTOR else self.full_scan_points
        return max(1, points * dim * 4 // 1024)


# The duplicate scan's beam on the `dup` vector: near-duplicates lie far closer than anything
# else, so a small beam finds them (recall 1.0 against exact search on 100,000 clustered
# points, bench/bench_duplicates.py), and the scan queries every point, so it counts.
DUP_HNSW_EF = 64
# Every image vector gets the same indexing; the words collection never gets a graph (the
# vocabulary is searched exactly: HNSW on GloVe measured recall 0.75-0.80, OFFLINE.md).
IMAGE_INDEXING = VectorIndexing()
# A segment of the images collection gets its graph once it holds this many points; below,
# an exact scan is about as fast as a graph walk and exactly right (README, "A million photos").
INDEX_FROM_POINTS = 20_000


def indexing_threshold_kb(sizes: dict[str, int]) -> int:
    """INDEX_FROM_POINTS as the optimizer reads it, in KB of the largest vector: a segment is
    indexed once any one vector's storage passes it."""
    return max(1, INDEX_FROM_POINTS * max(sizes.values(), default=128) * 4 // 1024)


class GeoPayload(TypedDict):
    """A position as Qdrant's geo index reads it, in degrees."""

    lat: float
    lon: float


class ImagePayload(TypedDict):
    """Payload of one image point. The EXIF fields are there only when the photo has them;
    `exif` (the version of ingest/exif.py that read them) is there once they were read."""

    path: str
    folder: str
    folders: list[str]
    folder_ids: NotRequired[list[int]]  # folder_id of each of `folders`; older points lack it
    label: str
    width: int
    height: int
    bytes: int
    mtime: float
    sha256: str
    taken: NotRequired[float]
    taken_iso: NotRequired[str]
    camera: NotRequired[str]
    camera_id: NotRequired[int]  # camera_id of `camera`, added by the store; older points lack it
    location: NotRequired[GeoPayload]
    exif: NotRequired[int]


class FacePayload(TypedDict):
    """Payload of one face point: its photo (point id and path), its box in the photo's
    upright pixels (left, top, right, bottom), the detector's score, its width in pixels and
    the person it belongs to (a person id, as a string)."""

    photo: str
    path: str
    box: list[int]
    score: float
    size: int
    person: str


def face_point_id(photo_id: str, sha256: str, index: int) -> str:
    """Point id of a photo's `index`-th face: uuid5 of the photo's point id and content, so a
    photo's faces found again overwrite themselves; a moved photo's faces keep their ids."""
    return str(uuid5(NAMESPACE_URL, f"devise-face:{photo_id}:{sha256}:{index}"))


class WordPayload(TypedDict):
    """Payload of one word point."""

    word: str
    rank: int
    source: str
    kind: str


def abs_posix(path: str | os.PathLike[str]) -> str:
    """Absolute posix form of `path` with symlinks resolved, without a trailing slash.

    Resolved so that a file is one point whatever path reached it (`photos/a.jpg` and
    `link/a.jpg` when `link` points at `photos`). Every side resolves alike: stored paths,
    point ids, a folder filter and a lookup by path, so a folder typed through a symlink
    still finds what lies under its target.
    """
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path)))).as_posix()


def image_point_id(path: str | os.PathLike[str]) -> str:
    """Point id of an image file: uuid5 of its real absolute path, so re-ingesting is
    idempotent and a file reached through a symlink is the same point."""
    return str(uuid5(NAMESPACE_URL, abs_posix(path)))


def word_point_id(rank: int, word: str = "", kind: str = "word") -> int | str:
    """Point id of a vocabulary entry: a word's frequency rank, unique within one vocabulary;
    a label's or hypernym's uuid5 of its lower-cased name, so that two models naming the
    same concept share one point and a re-run overwrites it."""
    if kind == "word":
        return int(rank)
    return str(uuid5(NAMESPACE_URL, "devise-concept:" + " ".join(word.lower().split())))


def folders_of(path: str | os.PathLike[str]) -> list[str]:
    """Every ancestor directory of `path`, outermost first, root excluded.

    `/a/b/c/x.jpg` gives `["/a", "/a/b", "/a/b/c"]`.
    """
    parents = PurePosixPath(abs_posix(path)).parents
    # parents runs innermost first and ends with the root "/", which would match everything
    return [p.as_posix() for p in reversed(parents) if p.as_posix() != p.anchor]


def _number(text: str) -> int:
    """The first 63 bits of `text`'s BLAKE2b digest: a non-negative int64, as Qdrant's
    integer index holds it. Two of n texts share a number with odds of about n^2 / 2^64: a
    filter on one would then also match the other."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def folder_id(folder: str) -> int:
    """A folder's number in `folder_ids` (_number). `folder` is in abs_posix form, as
    `folders_of` and the folder filter spell it."""
    return _number(folder)


def camera_id(camera: str) -> int:
    """A camera's number in `camera_id` (_number), from the `camera` payload value."""
    return _number(camera)


#: the image vectors a point carries, by name: the embedded store writes it beside every
#: image point's vectors and counts each vector's points from its index's facet (`devise
#: status`: 0.1 ms, where counting the points that have a vector visits every point: 0.8 s
#: for four vectors at 1,000,000). A server counts with its own cores and does without it.
VECTOR_NAMES = "vectors"
EDGE_IMAGE_INDEXES: dict[str, IndexKind] = {**IMAGE_INDEXES, VECTOR_NAMES: "keyword"}


def with_numbers(payload: Mapping[str, Any]) -> dict[str, Any]:
    """`payload` with the numbers the store derives from it: `camera_id` where it has a
    camera (the folder numbers come with the path, from image_payload)."""
    out = dict(payload)
    camera = out.get("camera")
    if isinstance(camera, str):
        out[CAMERA_ID] = camera_id(camera)
    return out


def image_payload(
    path: str | os.PathLike[str],
    *,
    label: str,
    width: int,
    height: int,
    size_bytes: int,
    mtime: float,
    sha256: str,
) -> ImagePayload:
    """Build the payload of an image point with `path`, `folder`, `folders` and
    `folder_ids` derived."""
    full = abs_posix(path)
    folders = folders_of(full)
    return ImagePayload(
        path=full,
        folder=PurePosixPath(full).parent.as_posix(),
        folders=folders,
        folder_ids=[folder_id(f) for f in folders],
        label=label,
        width=int(width),
        height=int(height),
        bytes=int(size_bytes),
        mtime=float(mtime),
        sha256=sha256,
    )


def check_schema(meta: dict[str, object], where: str) -> None:
    """Refuse an index written by another version of the schema, with what to do."""
    from qdrant.errors import StoreError

    found = meta.get("schema")
    if found is not None and found != SCHEMA_VERSION:
        raise StoreError(
            f"the index {where} was made by another version of devise-search (schema "
            f"{found}; this version reads {SCHEMA_VERSION}). Index into a new --index, or "
            "use the version that made it."
        )
