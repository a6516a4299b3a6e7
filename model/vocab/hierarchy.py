"""Class labels, their WordNet hypernyms, and hedged tag scores (Deng et al., CVPR 2012).

A *concept* is a tag a person would use for a photo: a class label ("German shepherd",
"espresso") or one of its hypernyms ("dog", "coffee", "beverage"). A concept's probability is
the classifier's probability mass of the classes under it, summed up the hierarchy, so a dog
photo gets both its breed and `dog`, each with an honest confidence.

Concepts are ordered by Deng et al.'s hedging reward: a concept's expected reward is its
probability times its information gain `1 - log|classes under it| / log|all classes|` plus a
constant `lam`. A small `lam` prefers specific concepts (a breed when the classifier is sure,
`dog` when it hesitates between breeds); a large one prefers general ones (`animal`).

The ImageNet-1k hierarchy ships as `imagenet_hierarchy.json` (derived once from WordNet 3.0 by
`model/vocab/derive.py`). For a user's own labels the full WordNet is read where installed.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.words import WordVectors, unit

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

HIERARCHY_FILE = Path(__file__).with_name("imagenet_hierarchy.json")
SPECIFIC = 0.5  # the hedging constant for "specific" tags
GENERAL = 100.0  # ... and for "general" ones: plain probability order
TOP_T = 10  # classes that count towards a concept's mass, as ConSE's T
MIN_MASS = 0.05  # concepts below this probability are noise, never tags
LABEL, HYPERNYM, WORD = "label", "hypernym", "word"


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str  # LABEL or HYPERNYM
    aliases: tuple[str, ...] = ()  # other lemma names, lower-case ("drink" for beverage)


@dataclass
class ConceptSet:
    """Concepts over a fixed list of classes: `members[t, c]` is 1 when class c is under t."""

    classes: list[str]
    concepts: list[Concept]
    members: Float32Array  # (T, C)
    _by_name: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        by_name: dict[str, int] = {}
        for i, c in enumerate(self.concepts):
            by_name.setdefault(c.name.lower(), i)
        for i, c in enumerate(self.concepts):
            for a in c.aliases:
                by_name.setdefault(a, i)
        self._by_name = by_name

    def __len__(self) -> int:
        return len(self.concepts)

    def find(self, text: str) -> int | None:
        """The concept a word or phrase names (its name or any lemma), or None."""
        return self._by_name.get(" ".join(text.lower().replace("_", " ").split()))

    def sizes(self) -> Float32Array:
        return self.members.sum(axis=1)

    def mass(self, probs: Float32Array, top_t: int | None = TOP_T) -> Float32Array:
        """(N, C) class probabilities -> (N, T) concept probabilities (hedged, summed up).

        Only each row's `top_t` most probable classes count (as in ConSE): the long tail of
        a thousand tiny probabilities otherwise adds up under a broad concept, and a photo
        of grass would be 50% `animal`. The sum is not renormalised, so a concept's mass
        stays a lower bound of its probability."""
        probs = np.asarray(probs, np.float32)
        if top_t is not None and top_t < probs.shape[1]:
            keep = np.argpartition(-probs, top_t - 1, axis=1)[:, :top_t]
            kept = np.zeros_like(probs)
            np.put_along_axis(kept, keep, np.take_along_axis(probs, keep, axis=1), axis=1)
            probs = kept
        return probs @ self.members.T

    def ranked(
        self,
        probs: Float32Array,
        k: int,
        lam: float = SPECIFIC,
        min_mass: float = MIN_MASS,
    ) -> list[tuple[Concept, float]]:
        """One image's (C,) probabilities -> its k best concepts with their probabilities."""
        mass = self.mass(np.asarray(probs, np.float32)[None, :])[0]
        gain = 1.0 - np.log(np.maximum(self.sizes(), 1.0)) / np.log(max(len(self.classes), 2))
        reward = mass * (gain + lam)
        order = [int(i) for i in np.argsort(-reward, kind="stable") if mass[i] >= min_mass]
        chosen: list[int] = []
        for i in order:
            if len(chosen) >= k:
                break
            # a hypernym that only restates a chosen one (same mass, one under the other:
            # feline after cat, when every feline in view is a cat) says nothing new
            if self.concepts[i].kind == HYPERNYM and any(
                self.concepts[j].kind == HYPERNYM
                and abs(mass[i] - mass[j]) < 0.01
                and self._nested(i, j)
                for j in chosen
            ):
                continue
            chosen.append(i)
        return [(self.concepts[i], float(mass[i])) for i in chosen]

    def _nested(self, a: int, b: int) -> bool:
        ma, mb = self.members[a] > 0, self.members[b] > 0
        return bool(not (ma & ~mb).any() or not (mb & ~ma).any())


def label_fragments(names: Iterable[str]) -> set[str]:
    """The words of multi-word labels, lower-case (`ankle`, `boot` of `ankle boot`; `t`,
    `shirt` of `t-shirt`): alone they read as wrong tags, so no tag list shows them."""
    return {
        w
        for name in names
        if " " in name or "-" in name
        for w in re.split(r"[\s\-]+", name.lower())
        if w
    }


def _concepts_from_ancestry(
    classes: Sequence[str],
    ancestry: Sequence[Sequence[tuple[str, tuple[str, ...]]]],
) -> ConceptSet:
    """Class names and, per class, its tag hypernyms as (name, aliases) -> a ConceptSet."""
    index: dict[str, int] = {}
    concepts: list[Concept] = []
    rows: list[set[int]] = []

    def add(name: str, kind: str, aliases: tuple[str, ...]) -> int:
        key = name.lower()
        if key in index:
            i = index[key]
            old = concepts[i]
            merged = old.aliases + tuple(a for a in aliases if a not in old.aliases)
            concepts[i] = Concept(old.name, LABEL if kind == LABEL else old.kind, merged)
            return i
        index[key] = len(concepts)
        concepts.append(Concept(name, kind, aliases))
        rows.append(set())
        return index[key]

    for c, name in enumerate(classes):
        rows[add(name, LABEL, ())].add(c)
    for c, chain in enumerate(ancestry):
        for name, aliases in chain:
            rows[add(name, HYPERNYM, aliases)].add(c)
    members = np.zeros((len(concepts), len(classes)), np.float32)
    for t, cs in enumerate(rows):
        members[t, sorted(cs)] = 1.0
    return ConceptSet(list(classes), concepts, members)


@functools.lru_cache(maxsize=1)
def _hierarchy_data() -> dict[str, Any]:
    return dict(json.loads(HIERARCHY_FILE.read_text()))


def imagenet_ancestry() -> list[list[tuple[str, tuple[str, ...]]]]:
    """Per ImageNet-1k class (index order): its tag hypernyms as (name, aliases)."""
    data = _hierarchy_data()
    nodes: dict[str, dict[str, object]] = data["nodes"]  # type: ignore[assignment]
    out = []
    for cls in data["classes"]:  # type: ignore[attr-defined]
        chain = []
        for wnid in cls["ancestors"]:
            node = nodes[wnid]
            if node["tag"]:
                name = str(node["name"])
                lemmas = [str(x) for x in node["lemmas"]]  # type: ignore[attr-defined]
                aliases = tuple(x.lower() for x in lemmas if x.lower() != name.lower())
                chain.append((name, aliases))
        out.append(chain)
    return out


def imagenet_chain(wnid: str) -> list[str]:
    """Every hypernym name above an ImageNet class (tags or not), nearest first."""
    data = _hierarchy_data()
    nodes: dict[str, dict[str, object]] = data["nodes"]  # type: ignore[assignment]
    for cls in data["classes"]:  # type: ignore[attr-defined]
        if cls["wnid"] == wnid:
            return [str(nodes[w]["name"]) for w in cls["ancestors"]]
    raise KeyError(f"{wnid} is not an ImageNet-1k class")


@functools.lru_cache(maxsize=1)
def imagenet_concepts() -> ConceptSet:
    """The 1000 ImageNet-1k labels and their tag hypernyms."""
    from model.words import imagenet_class_names

    return _concepts_from_ancestry(imagenet_class_names(), imagenet_ancestry())


_warned_no_wordnet = False


@functools.lru_cache(maxsize=1)
def _shipped_index() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Lower-case lemma -> wnid over every synset the shipped file holds, and each of those
    synsets' ancestors (nearest first): the ImageNet classes' and their hypernyms'."""
    from model.words import imagenet_class_names

    data = _hierarchy_data()
    nodes: dict[str, dict[str, object]] = data["nodes"]  # type: ignore[assignment]
    by_name: dict[str, str] = {}
    ancestors: dict[str, list[str]] = {}
    names = imagenet_class_names()
    for i, cls in enumerate(data["classes"]):  # type: ignore[attr-defined]
        by_name.setdefault(names[i].lower(), cls["wnid"])
        for lemma in cls.get("lemmas", []):
            by_name.setdefault(str(lemma).lower(), cls["wnid"])
        ancestors[cls["wnid"]] = list(cls["ancestors"])
    for extra in data.get("labels", []):
        by_name.setdefault(str(extra["label"]).lower(), extra["wnid"])
        ancestors[extra["wnid"]] = list(extra["ancestors"])
    for wnid, node in nodes.items():
        for lemma in node["lemmas"]:  # type: ignore[attr-defined]
            by_name.setdefault(str(lemma).lower(), wnid)
    for wnid in nodes:
        seen: dict[str, None] = {}
        frontier = [str(x) for x in nodes[wnid]["parents"]]  # type: ignore[attr-defined]
        while frontier:
            nxt: list[str] = []
            for w in frontier:
                if w not in seen and w in nodes:
                    seen[w] = None
                    nxt.extend(str(x) for x in nodes[w]["parents"])  # type: ignore[attr-defined]
            frontier = nxt
        ancestors[wnid] = list(seen)
    return by_name, ancestors


def _shipped_hypernyms(label: str) -> list[tuple[str, tuple[str, ...]]] | None:
    """A label's tag hypernyms from the shipped file, when the file knows the label (or its
    head noun: `ankle boot` is a `boot`); None when it does not."""
    by_name, ancestors = _shipped_index()
    key = " ".join(label.lower().replace("_", " ").split())
    wnid = by_name.get(key) or by_name.get(key.replace("-", " "))
    if wnid is None and " " in key:
        wnid = by_name.get(key.rsplit(" ", 1)[1])
    if wnid is None:
        return None
    nodes: dict[str, dict[str, object]] = _hierarchy_data()["nodes"]  # type: ignore[assignment]
    out = []
    for a in ancestors.get(wnid, []):
        node = nodes[a]
        if node["tag"]:
            name = str(node["name"])
            lemmas = [str(x).lower() for x in node["lemmas"]]  # type: ignore[attr-defined]
            out.append((name, tuple(x for x in lemmas if x != name.lower())))
    return out


def label_hypernyms(labels: Sequence[str]) -> list[list[tuple[str, tuple[str, ...]]]]:
    """Per label, its tag hypernyms (name, aliases), nearest first: from the shipped ImageNet
    hierarchy when it knows the label, else from the full WordNet where installed, else
    none (said once)."""
    global _warned_no_wordnet
    from model.vocab.derive import ABSTRACT
    from model.vocab.wordnet import WordNet, wordnet_dir

    out: list[list[tuple[str, tuple[str, ...]]]] = []
    missing: list[int] = []
    for i, label in enumerate(labels):
        found = _shipped_hypernyms(label)
        out.append(found or [])
        if found is None:
            missing.append(i)
    if not missing:
        return out
    root = wordnet_dir()
    if root is None:
        if not _warned_no_wordnet:
            log.info(
                "WordNet is not installed: %d label(s) get no hypernyms (%s); install "
                "wordnet-base for them",
                len(missing),
                ", ".join(labels[i] for i in missing[:5]),
            )
            _warned_no_wordnet = True
        return out
    wn = WordNet(root)
    try:
        for i in missing:
            senses = wn.senses(labels[i])
            if not senses:
                continue
            for a in wn.ancestors(senses[0]):
                syn = wn.synset(a)
                if syn.name.lower() in ABSTRACT or wn.depth(a) < 3:
                    continue
                out[i].append((syn.name, tuple(x.lower() for x in syn.lemmas[1:])))
    finally:
        wn.close()
    return out


def hypernym_label_matrix(
    words: WordVectors, labels: Sequence[str], weight: float, depth: int = 3
) -> tuple[Float32Array, dict[str, list[str]]]:
    """Label vectors moved towards their nearest hypernyms: unit(v + weight * unit(mean of
    the `depth` nearest hypernyms' vectors)). `sandal` and `sneaker` then share `shoe` and
    `footwear`, so an unseen label lands where its seen relatives are; at weight 0.5 (the best
    on validation) it lifts the demo split's AUSUC from 0.65 to 0.70 (bench/bench_gzsl.py).
    weight 0: plain vectors."""
    base = words.label_matrix(labels)
    used: dict[str, list[str]] = {}
    if weight <= 0:
        return base, used
    rows = []
    # a hypernym that is itself one of the labels (t-shirt is a shirt) would pull two
    # classes together: only the others count
    names = {lab.lower() for lab in labels}
    for label, v, chain_all in zip(labels, base, label_hypernyms(labels), strict=True):
        chain = [c for c in chain_all if c[0].lower() not in names]
        vecs = [words.label_vector(name) for name, _ in chain[:depth]]
        known = [x for x in vecs if x is not None]
        used[label] = [
            name for (name, _), x in zip(chain[:depth], vecs, strict=True) if x is not None
        ]
        if known:
            v = unit(v + weight * unit(np.mean(known, axis=0).astype(np.float32)))
        rows.append(v)
    return np.stack(rows).astype(np.float32), used


def label_concepts(labels: Sequence[str]) -> ConceptSet:
    """A user's own labels (a checkpoint's) and their hypernyms (see `label_hypernyms`)."""
    return _concepts_from_ancestry(labels, label_hypernyms(labels))
