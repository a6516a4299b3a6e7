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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.vocab.rules import DETECTED
from model.vocab.words import WordVectors, unit

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
    """A label or hypernym. `key` tells concepts apart (a wnid; a user's own label without
    one: its lower-case name); `name` is what a tag shows, qualified where two synsets share
    it (`crane (bird)`, `crane (lifting device)`); `plain` is the name unqualified."""

    name: str
    kind: str  # LABEL or HYPERNYM
    aliases: tuple[str, ...] = ()  # other lemma names, lower-case ("drink" for beverage)
    key: str = ""
    plain: str = ""
    #: a tag a person uses; False for a hypernym that only restates one above it (`wheeled
    #: vehicle`), kept for label vectors (`hypernym_label_matrix`) but never shown
    shown: bool = True

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.name.lower())
        if not self.plain:
            object.__setattr__(self, "plain", self.name)

    @property
    def phrase(self) -> str:
        """The words its vector is the mean of: the name with its qualifier's brackets
        dropped (`crane (bird)` -> `crane bird`), so a sense's vector leans towards it."""
        return " ".join(self.name.replace("(", " ").replace(")", " ").split())


@dataclass
class ConceptSet:
    """Concepts over a fixed list of classes: `members[t, c]` is 1 when class c is under t."""

    classes: list[str]
    concepts: list[Concept]
    members: Float32Array  # (T, C)
    #: names several concepts share -> their keys, the commonest sense (WordNet's order) first
    senses: dict[str, list[str]] = field(default_factory=dict)
    _by_name: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _by_key: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {c.key: i for i, c in enumerate(self.concepts)}
        by_name: dict[str, list[int]] = {}

        def put(text: str, i: int) -> None:
            found = by_name.setdefault(_norm(text), [])
            if i not in found:
                found.append(i)

        for i, c in enumerate(self.concepts):
            put(c.name, i)  # "crane (bird)"
            put(c.phrase, i)  # "crane bird"
        for name, keys in self.senses.items():  # a shared name: every sense, commonest first
            for key in keys:
                if key in self._by_key:
                    put(name, self._by_key[key])
        for i, c in enumerate(self.concepts):
            put(c.plain, i)
        for i, c in enumerate(self.concepts):
            for a in c.aliases:
                put(a, i)
        self._by_name = by_name

    def __len__(self) -> int:
        return len(self.concepts)

    def find(self, text: str) -> int | None:
        """The concept a word or phrase names (its name, qualified or not, or any lemma;
        a shared name: its commonest sense), or None."""
        found = self._by_name.get(_norm(text))
        return found[0] if found else None

    def named(self, text: str) -> list[int]:
        """Every concept a word or phrase may name, the one `find` picks first: `crane`
        names the bird and the machine."""
        return list(self._by_name.get(_norm(text), []))

    def index(self, key: str) -> int | None:
        """The concept with this key (a wnid), or None."""
        return self._by_key.get(key)

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
        detected: dict[str, float] | None = None,
    ) -> list[tuple[Concept, float]]:
        """One image's (C,) probabilities -> its k best concepts with their probabilities.

        `detected` (concept key -> score, from a detector: a face is a `person`) raises a
        concept's mass to that score; such a concept is returned with kind DETECTED when the
        detector, not the classifier, put it there."""
        mass = self.mass(np.asarray(probs, np.float32)[None, :])[0]
        by_detector: set[int] = set()
        for key, score in (detected or {}).items():
            i = self._by_key.get(key)
            if i is not None and score > mass[i]:
                mass[i] = score
                by_detector.add(i)
        gain = 1.0 - np.log(np.maximum(self.sizes(), 1.0)) / np.log(max(len(self.classes), 2))
        reward = mass * (gain + lam)
        order = [
            int(i)
            for i in np.argsort(-reward, kind="stable")
            if mass[i] >= min_mass and self.concepts[int(i)].shown
        ]
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
        return [
            (
                replace(self.concepts[i], kind=DETECTED) if i in by_detector else self.concepts[i],
                float(mass[i]),
            )
            for i in chosen
        ]

    def _nested(self, a: int, b: int) -> bool:
        ma, mb = self.members[a] > 0, self.members[b] > 0
        return bool(not (ma & ~mb).any() or not (mb & ~ma).any())


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split())


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
    ancestry: Sequence[Sequence[Concept]],
    keys: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    senses: dict[str, list[str]] | None = None,
) -> ConceptSet:
    """Class names and, per class, its hypernyms -> a ConceptSet keyed by `keys` (wnids;
    by default the lower-case class names). `names` are the classes' shown names (qualified
    where shared). Hypernyms that are not shown (`Concept.shown`) are left out."""
    index: dict[str, int] = {}
    concepts: list[Concept] = []
    rows: list[set[int]] = []
    # a user's own labels have no wnid: a hypernym of the same name is that label (a t-shirt
    # is a `shirt`, and `shirt` is a label too)
    by_label = {name.lower(): name.lower() for name in classes} if keys is None else {}

    def add(c: Concept) -> int:
        if c.kind == HYPERNYM and c.plain.lower() in by_label:
            c = replace(c, key=by_label[c.plain.lower()])
        if c.key in index:
            i = index[c.key]
            old = concepts[i]
            merged = old.aliases + tuple(a for a in c.aliases if a not in old.aliases)
            concepts[i] = replace(old, kind=LABEL if c.kind == LABEL else old.kind, aliases=merged)
            return i
        index[c.key] = len(concepts)
        concepts.append(c)
        rows.append(set())
        return index[c.key]

    for c, plain in enumerate(classes):
        key = keys[c] if keys is not None else plain.lower()
        name = names[c] if names is not None else plain
        rows[add(Concept(name, LABEL, key=key, plain=plain))].add(c)
    for c, chain in enumerate(ancestry):
        for hyp in chain:
            if hyp.shown:
                rows[add(hyp)].add(c)
    members = np.zeros((len(concepts), len(classes)), np.float32)
    for t, cs in enumerate(rows):
        members[t, sorted(cs)] = 1.0
    return ConceptSet(list(classes), concepts, members, dict(senses or {}))


@functools.lru_cache(maxsize=1)
def _hierarchy_data() -> dict[str, Any]:
    return dict(json.loads(HIERARCHY_FILE.read_text()))


def _nodes() -> dict[str, dict[str, Any]]:
    return dict(_hierarchy_data()["nodes"])


def _hypernym(wnid: str) -> Concept:
    """A shipped hypernym node as a Concept (shown when it is a tag)."""
    node = _nodes()[wnid]
    plain = str(node["name"])
    lemmas = [str(x).lower() for x in node["lemmas"]]
    return Concept(
        str(node.get("display") or plain),
        HYPERNYM,
        tuple(x for x in lemmas if x != plain.lower()),
        key=wnid,
        plain=plain,
        shown=bool(node["tag"]),
    )


def imagenet_ancestry() -> list[list[Concept]]:
    """Per ImageNet-1k class (index order): its tag hypernyms, nearest first."""
    nodes = _nodes()
    return [
        [_hypernym(w) for w in cls["ancestors"] if nodes[w]["tag"]]
        for cls in _hierarchy_data()["classes"]
    ]


def imagenet_chain(wnid: str) -> list[str]:
    """Every hypernym name above an ImageNet class (tags or not), nearest first."""
    nodes = _nodes()
    for cls in _hierarchy_data()["classes"]:
        if cls["wnid"] == wnid:
            return [str(nodes[w]["name"]) for w in cls["ancestors"]]
    raise KeyError(f"{wnid} is not an ImageNet-1k class")


@functools.lru_cache(maxsize=1)
def imagenet_concepts() -> ConceptSet:
    """The 1000 ImageNet-1k labels and their tag hypernyms, keyed by wnid."""
    from model.vocab.words import imagenet_class_names

    data = _hierarchy_data()
    plain = imagenet_class_names()
    shown = [
        str(cls.get("display") or name) for cls, name in zip(data["classes"], plain, strict=True)
    ]
    return _concepts_from_ancestry(
        plain,
        imagenet_ancestry(),
        keys=[str(cls["wnid"]) for cls in data["classes"]],
        names=shown,
        senses={str(k): [str(w) for w in v] for k, v in data.get("senses", {}).items()},
    )


_warned_no_wordnet = False


@functools.lru_cache(maxsize=1)
def _shipped_index() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Lower-case lemma -> wnid over every synset the shipped file holds, and each of those
    synsets' ancestors (nearest first): the ImageNet classes' and their hypernyms'."""
    from model.vocab.words import imagenet_class_names

    data = _hierarchy_data()
    nodes = _nodes()
    by_name: dict[str, str] = {}
    ancestors: dict[str, list[str]] = {}
    names = imagenet_class_names()
    for i, cls in enumerate(data["classes"]):
        by_name.setdefault(names[i].lower(), cls["wnid"])
        for lemma in cls.get("lemmas", []):
            by_name.setdefault(str(lemma).lower(), cls["wnid"])
        ancestors[cls["wnid"]] = list(cls["ancestors"])
    for extra in data.get("labels", []):
        by_name.setdefault(str(extra["label"]).lower(), extra["wnid"])
        ancestors[extra["wnid"]] = list(extra["ancestors"])
    for wnid, node in nodes.items():
        for lemma in node["lemmas"]:
            by_name.setdefault(str(lemma).lower(), wnid)
    for wnid in nodes:
        seen: dict[str, None] = {}
        frontier = [str(x) for x in nodes[wnid]["parents"]]
        while frontier:
            nxt: list[str] = []
            for w in frontier:
                if w not in seen and w in nodes:
                    seen[w] = None
                    nxt.extend(str(x) for x in nodes[w]["parents"])
            frontier = nxt
        ancestors[wnid] = list(seen)
    return by_name, ancestors


def _shipped_hypernyms(label: str) -> list[Concept] | None:
    """A label's hypernyms from the shipped file (those that pass the stop-list and
    frequency rules; `shown` says which are tags), when the file knows the label (or its
    head noun: `ankle boot` is a `boot`); None when it does not."""
    by_name, ancestors = _shipped_index()
    key = " ".join(label.lower().replace("_", " ").split())
    wnid = by_name.get(key) or by_name.get(key.replace("-", " "))
    if wnid is None and " " in key:
        wnid = by_name.get(key.rsplit(" ", 1)[1])
    if wnid is None:
        return None
    nodes = _nodes()
    return [
        _hypernym(a) for a in ancestors.get(wnid, []) if nodes[a].get("plain_tag", nodes[a]["tag"])
    ]


def label_hypernyms(labels: Sequence[str]) -> list[list[Concept]]:
    """Per label, its hypernyms that pass the stop-list (`shown`: a tag a person uses),
    nearest first: from the shipped ImageNet hierarchy when it knows the label, else from
    the full WordNet where installed, else none (said once)."""
    global _warned_no_wordnet
    from model.vocab.rules import ABSTRACT, restates_a_tag
    from model.vocab.wordnet import WordNet, wordnet_dir

    out: list[list[Concept]] = []
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
            chain = [
                a
                for a in wn.ancestors(senses[0])
                if wn.synset(a).name.lower() not in ABSTRACT and wn.depth(a) >= 3
            ]
            above = {lemma.lower() for a in chain for lemma in wn.synset(a).lemmas}
            for a in chain:
                syn = wn.synset(a)
                out[i].append(
                    Concept(
                        syn.name,
                        HYPERNYM,
                        tuple(x.lower() for x in syn.lemmas[1:]),
                        key=syn.wnid,
                        shown=not restates_a_tag(syn.name, above),
                    )
                )
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
        chain = [c.plain for c in chain_all if c.plain.lower() not in names]
        vecs = [words.label_vector(name) for name in chain[:depth]]
        known = [x for x in vecs if x is not None]
        used[label] = [name for name, x in zip(chain[:depth], vecs, strict=True) if x is not None]
        if known:
            v = unit(v + weight * unit(np.mean(known, axis=0).astype(np.float32)))
        rows.append(v)
    return np.stack(rows).astype(np.float32), used


def label_concepts(labels: Sequence[str]) -> ConceptSet:
    """A user's own labels (a checkpoint's) and their hypernyms (see `label_hypernyms`)."""
    return _concepts_from_ancestry(labels, label_hypernyms(labels))
