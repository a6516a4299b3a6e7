"""Derive `imagenet_hierarchy.json` from WordNet 3.0, once, on a machine that has WordNet.

    python -m model.vocab.derive [--wordnet /usr/share/wordnet] [--out model/vocab/...json]

For each of the 1000 ImageNet-1k classes (and the built-in Fashion-MNIST labels) it writes
the union of the class's hypernym paths (`@` and `@i` pointers) as WordNet synset ids, and
for every synset met on the way its lemma names, the name a tag shows, and whether it is a
tag a person would use. The product then
reads only the small JSON file: WordNet itself (Debian's `wordnet-base`) is not needed at run
time. The file carries WordNet's licence notice (WORDNET_LICENSE beside it).

Which hypernyms are tags: not the abstract top of the tree (a stop-list: entity, object,
whole, artifact, organism, ...), and only names whose every word is among the 40,000 most
frequent words of GloVe 6B, so that `dog`, `bird`, `vehicle` and `drink` are kept while
`chordate`, `diapsid` and `placental` stay in the chain but are never shown. A synset's tag
name is its first lemma, or its first plain frequent lemma when that is rare (`canid` ->
`canine`); every lemma is kept, so a search for `drink` finds the synset named `beverage`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.datasets import FASHION_MNIST_CLASSES
from model.vocab.wordnet import WordNet, wordnet_dir
from model.words import imagenet_wnids

OUT = Path(__file__).with_name("imagenet_hierarchy.json")
# Labels beyond ImageNet's whose chains ship too: the built-in dataset's (Fashion-MNIST), so
# the demo's labels have hypernyms on a machine without WordNet
EXTRA_LABELS = tuple(FASHION_MNIST_CLASSES)
MAX_TAG_RANK = 40_000

# Abstract or vague nodes: true, but no person tags a photo with them.
ABSTRACT = frozenset(
    (
        "entity",
        "physical entity",
        "object",
        "whole",
        "artifact",
        "organism",
        "living thing",
        "instrumentality",
        "matter",
        "substance",
        "solid",
        "part",
        "relation",
        "abstraction",
        "causal agent",
        "agent",
        "piece",
        "article",
        "commodity",
        "consumer goods",
        "durables",
        "natural object",
        "structure",
        "covering",
        "protective covering",
        "device",
        "equipment",
        "implement",
        "instrument",
        "conveyance",
        "system",
        "support",
        "ware",
        "course",
        "fluid",
        "liquid",
        "nutriment",
        "foodstuff",
        "produce",
        "reproductive structure",
        "plant organ",
        "plant part",
        "establishment",
        "place of business",
        "mercantile establishment",
        "restraint",
        "obstruction",
        "barrier",
        "mechanism",
        "mechanical device",
        "fastener",
        "piece of cloth",
        "housing",
        "source of illumination",
        "chordate",
        "vertebrate",
        "placental",
        "invertebrate",
        "craft",
        "vessel",
        "game",
        "geological formation",
        "natural elevation",
        "passerine",
        "oscine",
        "unit",
        "material",
        "group",
        "attribute",
        "psychological feature",
        "measure",
        "state",
        "event",
        "act",
        "location",
        "point",
        "area",
        "region",
        "line",
        "surface",
        "shape",
        "form",
        "thing",
        "creation",
        "product",
        "merchandise",
        "good",
        "item",
        "component",
        "constituent",
        "element",
        "adult",
        "worker",
        "associate",
        "peer",
        "work",
        "connection",
        "control",
        "communication",
        "design",
        "medium",
        "participant",
        "institution",
        "landing",
        "mixture",
        "top",
        "upright",
        "round shape",
        "string",
        "staff",
        "spring",
        "sign",
        "signal",
        "turner",
        "runner",
        "racer",
        "kit",
        "rig",
        "attachment",
        "accessory",
        "apparatus",
        "decoration",
        "emblem",
        "display",
        "ingredient",
        "fare",
        "feed",
        "fodder",
        "kernel",
        "tissue",
        "weight",
        "wood",
        "web",
        "waterproof",
        "geographic point",
        "horizontal surface",
        "framework",
        "reinforcement",
        "structural member",
        "supporting structure",
        "movable barrier",
        "rotating mechanism",
        "ligament",
        "sheath",
        "shade",
        "round",
        "press",
        "punch",
        "case",
        "plate",
        "rack",
        "container",
        "domestic animal",
        "sports implement",
        "game equipment",
        "floor cover",
        "measuring instrument",
        "bar",
        "post",
        "pointer",
        "screen",
        "filter",
        "padding",
        "rod",
        "stick",
    )
)


def derive(wordnet: WordNet, ranks: dict[str, int]) -> dict[str, object]:

    def rank_of(name: str) -> int:
        words = name.lower().replace("-", " ").split()
        return max((ranks.get(w, 10**9) for w in words), default=10**9)

    classes = []
    nodes: dict[str, dict[str, object]] = {}

    def add_nodes(ancestors: list[int]) -> None:
        for a in ancestors:
            key = f"n{a:08d}"
            if key in nodes:
                continue
            syn = wordnet.synset(a)
            # WordNet's first lemma names the tag, unless it is rare and a plain word is not
            name = syn.name
            if rank_of(name) > MAX_TAG_RANK:
                plain = [x for x in syn.lemmas if " " not in x and rank_of(x) <= MAX_TAG_RANK]
                name = plain[0] if plain else name
            tag = (
                syn.name.lower() not in ABSTRACT
                and name.lower() not in ABSTRACT
                and rank_of(name) <= MAX_TAG_RANK
            )
            nodes[key] = {
                "name": name,
                "lemmas": list(syn.lemmas),
                "parents": [f"n{h:08d}" for h in syn.hypernyms],
                "tag": bool(tag),
            }

    for wnid in imagenet_wnids():
        offset = int(wnid[1:])
        ancestors = wordnet.ancestors(offset)
        classes.append(
            {
                "wnid": wnid,
                "lemmas": list(wordnet.synset(offset).lemmas),
                "ancestors": [f"n{a:08d}" for a in ancestors],
            }
        )
        add_nodes(ancestors)
    # the built-in dataset's labels (the demo's), by their first noun sense
    labels = []
    for label in EXTRA_LABELS:
        senses = wordnet.senses(label)
        if senses:
            ancestors = wordnet.ancestors(senses[0])
            labels.append(
                {
                    "label": label,
                    "wnid": f"n{senses[0]:08d}",
                    "ancestors": [f"n{a:08d}" for a in ancestors],
                }
            )
            add_nodes(ancestors)
    return {
        "source": "WordNet 3.0, Copyright 2006 by Princeton University (see WORDNET_LICENSE)",
        "max_tag_rank": MAX_TAG_RANK,
        "classes": classes,
        "labels": labels,
        "nodes": nodes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", type=Path, default=None, help="WordNet 3.0 dict folder")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    root = args.wordnet or wordnet_dir()
    if root is None:
        raise SystemExit("WordNet 3.0 is not installed: apt-get install wordnet-base")
    from model.words import load_words

    kv = load_words("glove-6b-50d").kv
    data = derive(WordNet(root), dict(kv.key_to_index))
    args.out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    nodes: dict[str, dict[str, object]] = data["nodes"]  # type: ignore[assignment]
    tags = sum(1 for n in nodes.values() if n["tag"])
    print(f"wrote {args.out}: 1000 classes, {len(nodes)} hypernyms, {tags} of them tags")


if __name__ == "__main__":
    main()
