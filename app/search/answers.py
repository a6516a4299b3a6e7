"""What a query answers, in the shape every face shows and scripts read as JSON: the images
(`ImageResult`) or tags (`TagResult`) of an `Answer`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.search.errors import BadQueryError
from qdrant.store import Hit

MAX_K = 1000
#: after the last result with evidence of the query, at most this many weaker matches: they
#: say the results go on past the evidence without filling the page with strangers (nine
#: photos at 0.100 after the eagle for "a bird on a tree"). Why 3: docs/regions.md
WEAK_SHOWN = 3


@dataclass
class ImageResult:
    path: str
    score: float
    label: str
    folder: str
    #: from the photo's EXIF, when it has them: the date-time it was taken (ISO, the
    #: camera's clock) and the camera
    taken: str | None = None
    camera: str | None = None
    #: no evidence of the query in the picture: a weaker match, shown after every match
    #: with evidence (where results end when evidence ends), marked `"weak": true` in JSON
    weak: bool = False
    #: the regions of the picture where the query was found ([x0, y0, x1, y1] as fractions
    #: of its width and height), when a region and not the whole photo answered
    boxes: list[list[float]] = field(default_factory=list)

    @classmethod
    def of(cls, hit: Hit, score: float | None = None) -> ImageResult:
        """The result for a store hit, scored by its cosine unless `score` says otherwise."""
        p = hit.payload
        taken, camera = p.get("taken_iso"), p.get("camera")
        return cls(
            str(p.get("path", "")),
            float(hit.score if score is None else score),
            str(p.get("label", "")),
            str(p.get("folder", "")),
            str(taken) if taken else None,
            str(camera) if camera else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "score": round(self.score, 6),
            "label": self.label,
            "folder": self.folder,
        }
        # only where the photo has them: the four keys above are the shape scripts rely on
        if self.taken:
            out["taken"] = self.taken
        if self.camera:
            out["camera"] = self.camera
        if self.weak:
            out["weak"] = True
        if self.boxes:
            out["boxes"] = [[round(float(x), 4) for x in b] for b in self.boxes]
        return out

    @classmethod
    def from_json(cls, r: dict[str, Any]) -> ImageResult:
        return cls(
            r["path"], r["score"], r["label"], r["folder"], r.get("taken"), r.get("camera"),
            bool(r.get("weak", False)), list(r.get("boxes") or []),
        )  # fmt: skip


@dataclass
class TagResult:
    word: str
    score: float
    #: "word" (a frequent word), "label" (a class a model knows), "hypernym" (its WordNet
    #: generalisation, such as "dog" for a German shepherd) or "detected" (found by a
    #: detector, not the classifier: a face is a "person")
    kind: str = "word"
    #: a part of the picture, not the whole, shows it: the region's box [x0, y0, x1, y1]
    #: as fractions of the picture's width and height ("box" in JSON, only then)
    box: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"word": self.word, "score": round(self.score, 6), "kind": self.kind}
        if self.box is not None:
            out["box"] = [round(float(x), 4) for x in self.box]
        return out

    @classmethod
    def from_json(cls, r: dict[str, Any]) -> TagResult:
        return cls(r["word"], r["score"], r.get("kind", "word"), r.get("box"))


@dataclass
class Answer:
    model: str
    took_ms: float
    results: list[Any] = field(default_factory=list)
    #: what the reader should know of the answer, in JSON when set: why it came back
    #: empty (a filter that can never match), or how a concept query was answered ("no
    #: photo shows 'horse'; 2 with something near it (ungulate) first, weaker matches after")
    note: str | None = None
    #: how a text query's terms were read ("dog ×2 · beach · −people", and "(ignored: a,
    #: on)" when it dropped function words); in JSON when set
    query: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "model": self.model,
            "took_ms": round(self.took_ms, 2),
            "results": [r.to_json() for r in self.results],
        }
        if self.query is not None:
            out["query"] = self.query
        if self.note is not None:
            out["note"] = self.note
        return out


def validate(k: int, min_score: float | None) -> None:
    if not 1 <= k <= MAX_K:
        raise BadQueryError(f"k must be between 1 and {MAX_K}, got {k}")
    if min_score is not None and not 0.0 <= min_score <= 1.0:
        raise BadQueryError(f"min score must be between 0 and 1, got {min_score}")


def end_weak(results: list[ImageResult], notes: list[str]) -> list[ImageResult]:
    """`results` (weaker matches last) with at most WEAK_SHOWN weaker matches; a note in
    `notes` says how many more there were."""
    weak = [r for r in results if r.weak]
    if len(weak) <= WEAK_SHOWN:
        return results
    more = len(weak) - WEAK_SHOWN
    notes.append(f"{more} more weaker match{'es' if more > 1 else ''} left out")
    return [r for r in results if not r.weak] + weak[:WEAK_SHOWN]
