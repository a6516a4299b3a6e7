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
A compound that only narrows a tag above it (`wheeled vehicle` under `vehicle`, `working
dog` under `dog`) is not a tag either (`model/vocab/rules.py` holds these rules).

Names that several synsets share (`crane` the bird and the machine, `monitor` the lizard and
the screen) are qualified by a hypernym that tells them apart: `crane (bird)`, `crane
(lifting device)`. The run time keys concepts by wnid, so the two never merge.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from model.data.datasets import FASHION_MNIST_CLASSES
from model.vocab.lexicon import LEXICON_FILE, derive_lexicon
from model.vocab.rules import ABSTRACT, MAX_TAG_RANK, restates_a_tag
from model.vocab.wordnet import WordNet, wordnet_dir
from model.vocab.words import imagenet_class_names, imagenet_wnids

OUT = Path(__file__).with_name("imagenet_hierarchy.json")
# Labels beyond ImageNet's whose chains ship too: the built-in dataset's (Fashion-MNIST), so
# the demo's labels have hypernyms on a machine without WordNet
EXTRA_LABELS = tuple(FASHION_MNIST_CLASSES)


def derive(
    wordnet: WordNet, ranks: dict[str, int], class_names: list[str] | None = None
) -> dict[str, object]:
    """The shipped data: per class its wnid, lemmas and ancestors; per ancestor its lemmas,
    parents, tag name and whether it is a tag; and for every name two synsets share (`crane`:
    the bird and the machine) each one's qualified `display` name and the senses in WordNet's
    order (the commonest first)."""
    names = class_names or imagenet_class_names()

    def rank_of(name: str) -> int:
        words = name.lower().replace("-", " ").split()
        return max((ranks.get(w, 10**9) for w in words), default=10**9)

    tree = _Ancestry(wordnet, rank_of)
    wnids = imagenet_wnids()
    classes = [tree.add_class(wnid) for wnid in wnids]
    # the built-in dataset's labels (the demo's), by their first noun sense
    labels = [found for label in EXTRA_LABELS if (found := tree.add_label(label)) is not None]
    tree.mark_tags()
    senses = _qualify_shared_names(tree, wnids, names, classes)
    return {
        "source": "WordNet 3.0, Copyright 2006 by Princeton University (see WORDNET_LICENSE)",
        "max_tag_rank": MAX_TAG_RANK,
        "classes": classes,
        "labels": labels,
        "nodes": tree.nodes,
        "senses": senses,
    }


class _Ancestry:
    """The hypernym chains of the classes and labels, as `derive` writes them: a node per
    synset met on the way up, each one's ancestors, and whether it is a tag."""

    def __init__(self, wordnet: WordNet, rank_of: Callable[[str], int]) -> None:
        self.wordnet = wordnet
        self.rank_of = rank_of
        self.nodes: dict[str, dict[str, object]] = {}
        self.ancestors_of: dict[str, list[str]] = {}
        self.plain_tag: dict[str, bool] = {}  # the stop-list and frequency rules alone

    def add_class(self, wnid: str) -> dict[str, object]:
        """An ImageNet class's entry; its ancestors become nodes."""
        offset = int(wnid[1:])
        ancestors = self.wordnet.ancestors(offset)
        self.ancestors_of[wnid] = [f"n{a:08d}" for a in ancestors]
        entry: dict[str, object] = {
            "wnid": wnid,
            "lemmas": list(self.wordnet.synset(offset).lemmas),
            "ancestors": self.ancestors_of[wnid],
        }
        self._add_nodes(ancestors)
        return entry

    def add_label(self, label: str) -> dict[str, object] | None:
        """A label's entry by its first noun sense (None: not in WordNet); its ancestors
        become nodes."""
        found = self.wordnet.senses(label)
        if not found:
            return None
        ancestors = self.wordnet.ancestors(found[0])
        entry: dict[str, object] = {
            "label": label,
            "wnid": f"n{found[0]:08d}",
            "ancestors": [f"n{a:08d}" for a in ancestors],
        }
        self._add_nodes(ancestors)
        return entry

    def _add_nodes(self, ancestors: list[int]) -> None:
        for a in ancestors:
            key = f"n{a:08d}"
            if key in self.nodes:
                continue
            syn = self.wordnet.synset(a)
            # WordNet's first lemma names the tag, unless it is rare and a plain word is not
            name = syn.name
            if self.rank_of(name) > MAX_TAG_RANK:
                plain = [x for x in syn.lemmas if " " not in x and self.rank_of(x) <= MAX_TAG_RANK]
                name = plain[0] if plain else name
            self.plain_tag[key] = (
                syn.name.lower() not in ABSTRACT
                and name.lower() not in ABSTRACT
                and self.rank_of(name) <= MAX_TAG_RANK
            )
            self.ancestors_of[key] = [f"n{h:08d}" for h in self.wordnet.ancestors(a)]
            self.nodes[key] = {
                "name": name,
                "lemmas": list(syn.lemmas),
                "parents": [f"n{h:08d}" for h in syn.hypernyms],
            }

    def mark_tags(self) -> None:
        """Each node's `tag` (a plain tag that does not restate one above it) and
        `plain_tag`; once every node is in."""
        nodes, plain_tag = self.nodes, self.plain_tag
        for key, node in nodes.items():
            above = {
                lemma.lower()
                for a in self.ancestors_of[key]
                if plain_tag[a]
                for lemma in [str(nodes[a]["name"]), *nodes[a]["lemmas"]]  # type: ignore[misc]
            }
            node["tag"] = plain_tag[key] and not restates_a_tag(str(node["name"]), above)
            # label vectors (hypernym_label_matrix) lean on the nearest of these, restating or not
            node["plain_tag"] = plain_tag[key]


def _qualify_shared_names(
    tree: _Ancestry, wnids: list[str], names: list[str], classes: list[dict[str, object]]
) -> dict[str, list[str]]:
    """The names that several synsets share, a label's (ImageNet's class names) or a tag's,
    each with its synsets in WordNet's sense order; each of those synsets (node and class)
    is given its qualified `display` name."""
    nodes, ancestors_of = tree.nodes, tree.ancestors_of
    by_name: dict[str, list[str]] = defaultdict(list)
    own_name: dict[str, str] = {}
    for wnid, name in zip(wnids, names, strict=True):
        by_name[name.lower()].append(wnid)
        own_name[wnid] = name
    for key, node in nodes.items():
        if node["tag"] and key not in own_name:
            by_name[str(node["name"]).lower()].append(key)
            own_name[key] = str(node["name"])
    under: dict[str, list[str]] = defaultdict(list)  # a synset -> the classes under it
    for wnid, name in zip(wnids, names, strict=True):
        for a in ancestors_of[wnid]:
            under[a].append(name)
    senses: dict[str, list[str]] = {}
    for name, group in sorted(by_name.items()):
        if len(group) < 2:
            continue
        order = [f"n{o:08d}" for o in tree.wordnet.senses(name)]
        group.sort(key=lambda w: order.index(w) if w in order else len(order))
        senses[name] = group
        for wnid, qual in _qualifiers(group, ancestors_of, nodes, tree.rank_of, under).items():
            display = f"{own_name[wnid]} ({qual})"
            if wnid in nodes:
                nodes[wnid]["display"] = display
            for cls in classes:
                if cls["wnid"] == wnid:
                    cls["display"] = display
    return senses


def _qualifiers(
    group: list[str],
    ancestors_of: dict[str, list[str]],
    nodes: dict[str, dict[str, object]],
    rank_of: Callable[[str], int],
    under: dict[str, list[str]],
) -> dict[str, str]:
    """Per synset of a group sharing one name (in WordNet's sense order), a word that tells
    it from the others: its nearest hypernym that is no hypernym of the others, a tag when one
    is (`crane (bird)`, `monitor (lizard)`), else one with a frequent name (`crane (lifting
    device)`); the nearest frequent one when none tells (a synset above another of the
    group). Where two still read alike, the later sense is told by a class under it
    (`table (furniture)`, `table (dining table)`)."""
    shared = {str(nodes[w]["name"]).lower() for w in group if w in nodes}

    def usable(a: str) -> bool:
        name = str(nodes[a]["name"])
        return rank_of(name) <= MAX_TAG_RANK and name.lower() not in shared

    out: dict[str, str] = {}
    for wnid in group:
        others: set[str] = set()
        for o in group:
            if o != wnid:
                others |= {o, *ancestors_of[o]}
        frequent = [a for a in ancestors_of[wnid] if usable(a)]
        telling = [a for a in frequent if a not in others]
        tags = [a for a in telling if nodes[a]["tag"]]
        best = (tags or telling or frequent)[:1]
        out[wnid] = str(nodes[best[0]]["name"]) if best else wnid
    taken: set[str] = set()
    for wnid in group:
        if out[wnid] in taken:
            names = [n for n in under.get(wnid, []) if n.lower() not in shared]
            out[wnid] = names[0] if names else wnid
        taken.add(out[wnid])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", type=Path, default=None, help="WordNet 3.0 dict folder")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--lexicon", type=Path, default=LEXICON_FILE, help="stop words and lemmas")
    args = ap.parse_args()
    root = args.wordnet or wordnet_dir()
    if root is None:
        raise SystemExit("WordNet 3.0 is not installed: apt-get install wordnet-base")
    from model.vocab.words import load_words

    kv = load_words("glove-6b-50d").kv
    data = derive(WordNet(root), dict(kv.key_to_index))
    args.out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    nodes: dict[str, dict[str, object]] = data["nodes"]  # type: ignore[assignment]
    tags = sum(1 for n in nodes.values() if n["tag"])
    shared = len(data["senses"])  # type: ignore[arg-type]
    print(
        f"wrote {args.out}: 1000 classes, {len(nodes)} hypernyms, {tags} of them tags, "
        f"{shared} names shared by several synsets"
    )
    from gensim.parsing.preprocessing import STOPWORDS

    from model.vocab.hierarchy import imagenet_concepts

    shown = {c.key: {c.plain.lower(), *c.aliases} for c in imagenet_concepts().concepts if c.shown}
    lexicon = derive_lexicon(root, dict(kv.key_to_index), frozenset(STOPWORDS), shown)
    args.lexicon.write_text(json.dumps(lexicon, indent=0, sort_keys=True) + "\n")
    print(
        f"wrote {args.lexicon}: {len(lexicon['stopwords'])} stop words, "
        f"{len(lexicon['inflections'])} inflected forms, {len(lexicon['kind_of'])} nouns read as "
        "a kind of a concept"
    )


if __name__ == "__main__":
    main()
