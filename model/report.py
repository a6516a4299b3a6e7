"""The evaluation table: metric keys, and a report that prints and round-trips as JSON.

Kept apart from `model.evaluate` (which needs torch) so that the web app can show a
recorded table without importing a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METRICS = (
    "flat_hit@1",
    "flat_hit@5",
    "zeroshot_hit@1",
    "zeroshot_hit@5",
    "mean_cosine",
    "text2image_p@10",
    "text2image_map",
    "image2image_map@10",
    "ms_per_image",
)
# Generalised zero-shot (model/gzsl.py): seen and unseen images ranked among all labels,
# seen labels' scores less gamma (chosen on validation); printed as a second table.
GZSL_METRICS = ("gzsl_seen@1", "gzsl_unseen@1", "gzsl_H", "gamma", "ausuc")


@dataclass
class EvalReport:
    labels: list[str]
    holdout: list[str]
    chance: dict[str, float]
    models: dict[str, dict[str, float] | None]
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalReport:
        """The inverse of `to_json` (absent metrics come back as NaN, absent models as None)."""
        nan = float("nan")
        return (
            cls(
                labels=list(data.get("labels", [])),
                holdout=list(data.get("holdout", [])),
                chance={k: float(v) for k, v in (data.get("chance") or {}).items()},
                models={
                    m: ({k: float(x) for k, x in v.items()} if v is not None else None)
                    for m, v in (data.get("models") or {}).items()
                },
                counts=dict(data.get("counts") or {}),
                notes=list(data.get("notes") or []),
            )
            if data
            else cls([], [], {"flat_hit@1": nan}, {})
        )

    def to_json(self) -> dict[str, Any]:
        def clean(d: dict[str, float]) -> dict[str, float]:
            return {k: round(v, 6) for k, v in d.items() if v == v}  # drop NaN

        return {
            "labels": self.labels,
            "holdout": self.holdout,
            "chance": clean(self.chance),
            "models": {m: (clean(v) if v is not None else None) for m, v in self.models.items()},
            "counts": self.counts,
            "notes": self.notes,
        }

    def table(self) -> str:
        cols = [m for m in METRICS if any(m in (v or {}) for v in self.models.values())]
        head = f"{'model':<10}" + "".join(f"{c:>20}" for c in cols)
        lines = [head, "-" * len(head)]

        def fmt(v: float | None, metric: str) -> str:
            if v is None or v != v:
                return f"{'-':>20}"
            return f"{v:>20.2f}" if metric == "ms_per_image" else f"{v:>20.3f}"

        for name, vals in self.models.items():
            if vals is None:
                lines.append(f"{name:<10}{'absent':>20}")
                continue
            lines.append(f"{name:<10}" + "".join(fmt(vals.get(c), c) for c in cols))
        lines.append(f"{'chance':<10}" + "".join(fmt(self.chance.get(c), c) for c in cols))
        gz = {n: v for n, v in self.models.items() if v and "gzsl_H" in v}
        if gz:
            lines += ["", "generalised zero-shot: all labels ranked, seen labels less gamma"]
            head2 = f"{'model':<10}" + "".join(f"{c:>16}" for c in GZSL_METRICS)
            lines += [head2, "-" * len(head2)]
            rows = [*gz.items(), ("chance", self.chance)]
            for name, vals in rows:
                cells = "".join(
                    f"{'-':>16}" if vals.get(c) is None else f"{vals[c]:>16.3f}"
                    for c in GZSL_METRICS
                )
                lines.append(f"{name:<10}" + cells)
        return "\n".join(lines)
