"""The models to embed with, chosen from plain values (what `devise ingest`'s flags, the
app's CLI API and the folder watcher ask for), and what the index records of each."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.search.errors import ServiceError

if TYPE_CHECKING:
    from app.settings import Settings


class ModelChoiceError(ServiceError):
    """Models that cannot be chosen as asked (unknown, absent, or none at all)."""


@dataclass(frozen=True)
class ModelOptions:
    """Where the models' weights come from, when not the defaults."""

    weights: str | None = None
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "laion2b_s34b_b79k"
    clip_weights: Path | None = None
    cache_dir: Path | None = None
    #: conse reads each photo's regions too (model/regions.py)
    regions: bool = False

    def cache(self) -> Path:
        from model.paths import default_cache_dir

        return self.cache_dir if self.cache_dir is not None else default_cache_dir()


def build_embedders(
    names: Sequence[str] | None, settings: Settings, options: ModelOptions
) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """The embedders to ingest with, and what the index records of each. With no --models,
    every model that can run here; an absent one is said in one line."""
    from model.embedders.factory import INGEST_NAMES, available_models, duplicate_embedder

    explicit = names is not None
    wanted = list(names) if names else list(INGEST_NAMES)
    unknown = set(wanted) - set(INGEST_NAMES)
    if unknown:
        raise ModelChoiceError(
            f"--models: unknown model(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(INGEST_NAMES)}"
        )
    if "devise" in wanted and settings.checkpoint is None:
        if explicit:
            raise ModelChoiceError(
                "--models devise needs a checkpoint: pass --checkpoint CKPT "
                "(train one with `devise train DATA --out CKPT`)"
            )
        wanted.remove("devise")
        # said like an absent clip: the searches then answer with conse
        print(
            "devise absent: no checkpoint; pass --checkpoint CKPT or set DEVISE_CHECKPOINT "
            "(train one with `devise train DATA --out CKPT`; `devise demo` makes one)",
            file=sys.stderr,
        )
    avail = available_models(
        [n for n in wanted if n != "dup"],
        checkpoint=settings.checkpoint,
        weights=options.weights,
        clip_model=options.clip_model,
        clip_pretrained=options.clip_pretrained,
        clip_weights=options.clip_weights,
        precision=settings.precision,
        cache_dir=options.cache(),
    )
    embedders: list[Any] = []
    extra: dict[str, dict[str, Any]] = {}
    found: dict[str, Any] = dict(avail.models)
    if "dup" in wanted:
        found["dup"] = duplicate_embedder(
            checkpoint=settings.checkpoint, weights=options.weights, precision=settings.precision
        )
    emb: Any
    for name, emb in found.items():
        if emb is None:
            if explicit:
                raise ModelChoiceError(avail.messages[name])
            print(avail.messages[name], file=sys.stderr)
            continue
        embedders.append(emb)
        if name == "devise":
            extra[name] = {
                "words": emb.words_source,
                "backbone": emb.meta["backbone"],
                "checkpoint": str(Path(str(settings.checkpoint)).resolve()),
            }
        elif name == "conse":
            emb.regions = options.regions
            extra[name] = {
                "words": emb.words_source,
                "backbone": emb.backbone.name,
                "weights": emb.backbone.weights_id,
                "top_t": emb.top_t,
                "regions": options.regions,
            }
        elif name == "dup":
            extra[name] = {"backbone": emb.backbone.name, "weights": emb.backbone.weights_id}
        elif name == "clip":
            extra[name] = emb.record()
    if not embedders:
        raise ModelChoiceError("no model to ingest with: pass --checkpoint CKPT or --models conse")
    return embedders, extra
