"""What the server backend asks a Qdrant server to build and search with: vector params,
payload index params and search params, from schema.IMAGE_INDEXING (as
qdrant/edge_config.py gives them to Edge)."""

from __future__ import annotations

from qdrant_client import models as m

from qdrant.schema import (
    DUP_HNSW_EF,
    DUP_VECTOR,
    IMAGE_INDEXING,
    LINKED_INDEXES,
    ON_DISK_INDEXES,
    PRINCIPAL_INDEX,
    IndexKind,
)

IndexParams = m.KeywordIndexParams | m.IntegerIndexParams | m.FloatIndexParams | m.GeoIndexParams


def index_schema(field: str, kind: IndexKind) -> IndexParams:
    """A payload index's params, as edge_config.index_schema gives them (on a server `folders`
    stays in RAM: its folder filter reads names)."""
    links = field in LINKED_INDEXES
    if kind == "keyword":
        on_disk = True if field in ON_DISK_INDEXES else None
        return m.KeywordIndexParams(
            type=m.KeywordIndexType.KEYWORD, on_disk=on_disk, enable_hnsw=links
        )
    if kind == "lookup":
        return m.IntegerIndexParams(
            type=m.IntegerIndexType.INTEGER,
            lookup=True,
            range=False,
            is_principal=field == PRINCIPAL_INDEX or None,
            enable_hnsw=links,
        )
    if kind == "integer":
        return m.IntegerIndexParams(type=m.IntegerIndexType.INTEGER, enable_hnsw=links)
    if kind == "float":
        return m.FloatIndexParams(type=m.FloatIndexType.FLOAT, enable_hnsw=links)
    return m.GeoIndexParams(type=m.GeoIndexType.GEO, enable_hnsw=links)


def image_vector_params(dim: int, name: str = "") -> m.VectorParams:
    """An image vector as the server creates it: schema.IMAGE_INDEXING, the settings the
    embedded store gives it too (graph, int8 copies in RAM, originals on disk)."""
    diff = image_vector_diff(dim, name)
    return m.VectorParams(
        size=dim,
        distance=m.Distance.COSINE,
        hnsw_config=diff.hnsw_config,
        quantization_config=_int8(),
        on_disk=diff.on_disk,
    )


def _int8() -> m.ScalarQuantization:
    return m.ScalarQuantization(
        scalar=m.ScalarQuantizationConfig(
            type=m.ScalarType.INT8,
            quantile=IMAGE_INDEXING.quantile,
            always_ram=not IMAGE_INDEXING.graphs_mapped,
        )
    )


def image_vector_diff(dim: int, name: str = "") -> m.VectorParamsDiff:
    """schema.IMAGE_INDEXING as a change to an existing vector (a collection made before)."""
    ix = IMAGE_INDEXING
    return m.VectorParamsDiff(
        hnsw_config=m.HnswConfigDiff(
            m=ix.m,
            ef_construct=ix.ef_construct,
            full_scan_threshold=ix.full_scan_kb(dim, name),
            payload_m=ix.payload_m_of(name),
            on_disk=ix.graphs_mapped,
        ),
        quantization_config=_int8(),
        on_disk=ix.vectors_on_disk,
    )


def search_params(exact: bool, k: int, name: str = "") -> m.SearchParams:
    """Exact, or schema.IMAGE_INDEXING's graph walk with rescoring (as
    edge_config.search_params)."""
    if exact:
        return m.SearchParams(exact=True)
    ix = IMAGE_INDEXING
    return m.SearchParams(
        hnsw_ef=max(DUP_HNSW_EF if name == DUP_VECTOR else ix.hnsw_ef, k),
        quantization=m.QuantizationSearchParams(rescore=True, oversampling=ix.oversampling),
        acorn=m.AcornSearchParams(enable=ix.acorn),
    )
