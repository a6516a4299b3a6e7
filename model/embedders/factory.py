"""Which embedders can run here: `devise` (a checkpoint), `conse` (offline, no training),
`clip` (only with its weights), and `dup` (the near-duplicate vector, offline, from
`duplicate_embedder`). An absent one is `None`, with one line saying why and how to get it;
nothing ever falls back to a random or partial model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from model.backbones import DEFAULT_BACKBONE, RANDOM_INIT, BackboneError
from model.checkpoint import CheckpointError
from model.embedders.clip import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_PRETRAINED,
    ClipEmbedder,
    ClipUnavailable,
)
from model.embedders.conse import DEFAULT_TOP_T, ConseEmbedder
from model.embedders.embedder import DeviseEmbedder, DuplicateEmbedder, Embedder
from model.vocab.words import DEFAULT_WORDS, WordsError, WordVectors

#: the models that search and evaluation compare
EMBEDDER_NAMES = ("devise", "conse", "clip")
#: what ingest can store: those, and the near-duplicate vector
INGEST_NAMES = (*EMBEDDER_NAMES, "dup")


class Availability(NamedTuple):
    models: dict[str, Embedder | None]  # in the order asked for; None = absent
    messages: dict[str, str]  # one line per absent model


def _parse_names(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in EMBEDDER_NAMES]
    if unknown:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(EMBEDDER_NAMES)}"
        )
    return list(dict.fromkeys(names))


def _imagenet_backbone(
    devise: DeviseEmbedder | None, conse_backbone: str | None, weights: str | None
) -> tuple[str, str | None]:
    """(backbone name, weights) for conse and dup: the checkpoint's backbone when it has
    ImageNet weights, so that one forward pass serves every model; else the default."""
    if devise is None or devise.meta.get("weights") == RANDOM_INIT:
        return conse_backbone or DEFAULT_BACKBONE, "default"
    backbone = conse_backbone or devise.meta["backbone"]
    return backbone, weights if backbone == devise.meta["backbone"] and weights else "default"


def duplicate_embedder(
    *,
    checkpoint: Path | None = None,
    weights: str | None = None,
    conse_backbone: str | None = None,
    precision: str = "fp32",
) -> DuplicateEmbedder:
    """The near-duplicate vector's embedder (built lazily), on conse's backbone."""
    devise = None
    if checkpoint is not None:
        try:
            devise = DeviseEmbedder(checkpoint, weights=weights, precision=precision)
        except CheckpointError:
            devise = None
    backbone, bb_weights = _imagenet_backbone(devise, conse_backbone, weights)
    return DuplicateEmbedder(backbone, bb_weights, precision)


def available_models(
    names: Sequence[str] = EMBEDDER_NAMES,
    *,
    checkpoint: Path | None = None,
    weights: str | None = None,
    words: WordVectors | str | None = None,
    conse_backbone: str | None = None,
    top_t: int = DEFAULT_TOP_T,
    clip_model: str = DEFAULT_CLIP_MODEL,
    clip_pretrained: str = DEFAULT_CLIP_PRETRAINED,
    clip_weights: Path | None = None,
    allow_download: bool = True,
    precision: str = "fp32",
    cache_dir: Path | None = None,
) -> Availability:
    """Build (lazily) each requested embedder that can run here.

    - devise: needs `checkpoint`; a missing or broken one raises (the user named it).
    - conse: the checkpoint's backbone and word space when it has ImageNet weights, so both
      share features and words; else `efficientnet_lite0` and the packaged GloVe.
    - clip: absent unless its weights are a file, in a local cache, or downloadable.
    """
    models: dict[str, Embedder | None] = {}
    messages: dict[str, str] = {}
    devise: DeviseEmbedder | None = None
    for name in _parse_names(names):
        if name == "devise":
            if checkpoint is None:
                models[name] = None
                messages[name] = (
                    "devise absent: no checkpoint; train one with `devise train DATA --out "
                    "CKPT` and pass --checkpoint CKPT"
                )
                continue
            devise = DeviseEmbedder(
                checkpoint,
                weights=weights,
                precision=precision,
                words=words if isinstance(words, WordVectors) else None,
            )
            models[name] = devise
        elif name == "conse":
            source: WordVectors | str = words if words is not None else DEFAULT_WORDS
            if devise is None and checkpoint is not None:
                try:
                    devise = DeviseEmbedder(checkpoint, weights=weights, precision=precision)
                except CheckpointError:
                    devise = None
            backbone, bb_weights = _imagenet_backbone(devise, conse_backbone, weights)
            if devise is not None and devise.meta.get("weights") != RANDOM_INIT and words is None:
                source = devise.words_source
            try:
                models[name] = ConseEmbedder(backbone, source, top_t, bb_weights, precision)
            except (BackboneError, WordsError) as e:
                models[name] = None
                messages[name] = f"conse absent: {e}"
        elif name == "clip":
            try:
                models[name] = ClipEmbedder(
                    clip_model,
                    clip_pretrained,
                    clip_weights,
                    precision,
                    allow_download=allow_download,
                    cache_dir=cache_dir,
                )
            except ClipUnavailable as e:
                models[name] = None
                messages[name] = str(e)
    return Availability(models, messages)
