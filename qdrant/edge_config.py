"""What the Edge backend asks Qdrant Edge to build and search with: shard configs, payload
index params and search params, from indexing settings passed in (qdrant/edge.py passes
schema.IMAGE_INDEXING as it reads it at the call)."""

from __future__ import annotations

import qdrant_edge as qe

from qdrant.schema import (
    DUP_HNSW_EF,
    DUP_VECTOR,
    EDGE_ON_DISK_INDEXES,
    IMAGES,
    LINKED_INDEXES,
    PRINCIPAL_INDEX,
    WORDS,
    IndexKind,
    VectorIndexing,
    indexing_threshold_kb,
)

_MEMORY = {"cold": qe.Memory.Cold, "cached": qe.Memory.Cached, "pinned": qe.Memory.Pinned}


def placement(ix: VectorIndexing, persisted: str | None = None) -> qe.Memory:
    """Where the int8 copies and the graphs live. A new shard: mapped and not read at open
    (Edge's Cold), then read into the page cache by a background thread (edge_files.warm,
    started by EdgeStore._start_warming).
    Edge's Cached reads them whole while it opens: 14.4 s to reopen 1,000,000 points
    against 2.3 s for Cold, the same files (README, "A million photos"). Pinned: read into
    RAM. A shard keeps the placement it was built with (`persisted`, from its config): a
    change makes Edge rebuild every graph at the next optimize()."""
    if persisted in _MEMORY:
        return _MEMORY[persisted]
    if not ix.graphs_mapped:
        return qe.Memory.Pinned
    return qe.Memory.Cached if ix.populate_at_open else qe.Memory.Cold


def _hnsw(ix: VectorIndexing, dim: int, memory: qe.Memory, name: str = "") -> qe.HnswIndexConfig:
    return qe.HnswIndexConfig(
        m=ix.m,
        ef_construct=ix.ef_construct,
        full_scan_threshold=ix.full_scan_kb(dim, name),
        payload_m=ix.payload_m_of(name),
        memory=memory,  # the graph too: see placement
    )


def _quantization(ix: VectorIndexing, memory: qe.Memory) -> qe.ScalarQuantizationConfig:
    return qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=ix.quantile, memory=memory)


def _image_vector_params(
    ix: VectorIndexing, size: int, memory: qe.Memory, name: str
) -> qe.EdgeVectorParams:
    """Image vector `name`'s params, its int8 copies and graph placed at `memory`."""
    return qe.EdgeVectorParams(
        size=size,
        distance=qe.Distance.Cosine,
        on_disk=ix.vectors_on_disk,
        quantization_config=_quantization(ix, memory),
        hnsw_config=_hnsw(ix, size, memory, name),
    )


def optimizers(collection: str, sizes: dict[str, int]) -> qe.EdgeOptimizersConfig:
    # words: indexing_threshold=0 keeps optimize() from building anything, so optimize()
    # only merges segments and drops deleted points. images: a segment past
    # schema.INDEX_FROM_POINTS gets its graphs and int8 copies
    if collection == IMAGES:
        return qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb(sizes))
    return qe.EdgeOptimizersConfig(indexing_threshold=0)


def images_config(
    ix: VectorIndexing, sizes: dict[str, int], persisted: str | None = None
) -> qe.EdgeConfig:
    """The images shard's config: indexing settings `ix` for every vector, placed as the
    shard was (`persisted`) or, for a new one, as placement() says."""
    memory = placement(ix, persisted)
    return qe.EdgeConfig(
        vectors={k: _image_vector_params(ix, d, memory, k) for k, d in sizes.items()},
        hnsw_config=_hnsw(ix, max(sizes.values(), default=128), memory),
        optimizers=optimizers(IMAGES, sizes),
    )


_COSINE = qe.Distance.Cosine


def words_config(sizes: dict[str, int]) -> qe.EdgeConfig:
    """The words shard's config: exact search only (see optimizers)."""
    return qe.EdgeConfig(
        vectors={
            k: qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine) for k, d in sizes.items()
        },
        optimizers=optimizers(WORDS, sizes),
    )


def faces_config(sizes: dict[str, int]) -> qe.EdgeConfig:
    """The faces shard's config: dlib's descriptors by Euclidean distance, exact search only
    (see optimizers)."""
    return qe.EdgeConfig(
        vectors={
            k: qe.EdgeVectorParams(size=d, distance=qe.Distance.Euclid) for k, d in sizes.items()
        },
        optimizers=optimizers(WORDS, sizes),
    )


def search_params(
    ix: VectorIndexing,
    exact: bool,
    k: int,
    name: str = "",
    *,
    acorn: bool = True,
    linked: bool = False,
) -> qe.SearchParams:
    """Exact, or a graph walk by indexing settings `ix` with rescoring: with ACORN unless `acorn`
    is false (a filter whose folder or label has links of its own: EdgeStore._acorn), and on
    a graph built with those links (`linked`) only for a filter narrower than
    `acorn_max_selectivity_linked`. A segment without a graph (a small index, or one whose
    graph is not built yet) is scanned exactly either way."""
    if exact:
        return qe.SearchParams(exact=True)
    widest = ix.acorn_max_selectivity_linked if linked else None
    return qe.SearchParams(
        hnsw_ef=max(DUP_HNSW_EF if name == DUP_VECTOR else ix.hnsw_ef, k),
        quantization=qe.QuantizationSearchParams(rescore=True, oversampling=ix.oversampling),
        acorn=qe.AcornSearchParams(enable=ix.acorn and acorn, max_selectivity=widest),
    )


IndexParams = (
    qe.KeywordIndexParams | qe.IntegerIndexParams | qe.FloatIndexParams | qe.GeoIndexParams
)


def index_schema(field: str, kind: IndexKind) -> IndexParams:
    """A payload index's params: mapped or in RAM, and whether its big values get links of
    their own in the graphs (schema.LINKED_INDEXES)."""
    links = field in LINKED_INDEXES
    if kind == "keyword":
        on_disk = True if field in EDGE_ON_DISK_INDEXES else None
        return qe.KeywordIndexParams(on_disk=on_disk, enable_hnsw=links)
    if kind == "lookup":
        principal = field == PRINCIPAL_INDEX or None
        return qe.IntegerIndexParams(
            lookup=True, range=False, is_principal=principal, enable_hnsw=links
        )
    if kind == "integer":
        return qe.IntegerIndexParams(enable_hnsw=links)
    if kind == "float":
        return qe.FloatIndexParams(enable_hnsw=links)
    return qe.GeoIndexParams(enable_hnsw=links)


def links_or_order(params: object) -> tuple[bool, bool]:
    """Whether an index's values get links of their own in the graphs (Qdrant's default:
    yes) and order the points (no). An index made before both were set builds links for
    every value past the full-scan threshold, dates and places included, at the next
    graph build; made again, only folders and labels do."""
    links = getattr(params, "enable_hnsw", None)
    return (links is None or bool(links), bool(getattr(params, "is_principal", None)))
