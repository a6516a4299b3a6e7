"""`devise people`'s actions, for every face (the CLI on its own, the CLI through the app):
list, show, name, merge, remove. Each takes the store and plain values and gives JSON-ready
values; the grouping itself is ingest/people.py."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.search.answers import Answer, ImageResult, TagResult
from app.search.request import QueryRequest
from ingest import people as book
from qdrant.schema import FACES, PEOPLE, abs_posix
from qdrant.store import Hit, Store

#: the actions that write to the index (through the app they need its token)
WRITES = frozenset({"name", "merge", "remove"})
ACTIONS = ("list", "show", "name", "merge", "remove")


def _need(args: Sequence[str], n: int, usage: str) -> list[str]:
    if len(args) != n:
        raise book.PeopleError(f"usage: devise people {usage}")
    return [str(a) for a in args]


def _person_id(store: Store, word: str) -> str:
    """A person's id, given its id or its name (one person only)."""
    if word.isdigit():
        return word
    ids = book.person_ids_named(store, word)
    if not ids:
        raise book.PeopleError(f"no person named {word!r}: `devise people` lists them")
    if len(ids) > 1:
        raise book.PeopleError(
            f"{len(ids)} people are named {word!r} (ids {', '.join(ids)}): give an id, or "
            "merge them"
        )
    return ids[0]


def run(store: Store, action: str, args: Sequence[str] = ()) -> dict[str, Any]:
    """Run one action; PeopleError (a ValueError) names what is wrong."""
    if action == "list":
        return {"people": [p.to_json() for p in book.list_people(store)]}
    if action == "show":
        (who,) = _need(args, 1, "show ID")
        pid = _person_id(store, who)
        faces = book.faces_of(store, [pid])
        if not faces:
            raise book.PeopleError(f"no person {who!r}: `devise people` lists them")
        rows = sorted(
            (
                {
                    "face": f.id,
                    "path": f.payload.get("path"),
                    "box": f.payload.get("box"),
                    "score": f.payload.get("score"),
                    "size": f.payload.get("size"),
                }
                for f in faces
            ),
            key=lambda r: str(r["path"]),
        )
        return {"person": pid, "name": book.names(store).get(pid), "faces": rows}
    if action == "name":
        pid, name = _need(args, 2, "name ID NAME")
        return {"person": book.name_person(store, _person_id(store, pid), name).to_json()}
    if action == "merge":
        keep, other = _need(args, 2, "merge ID OTHER_ID")
        merged = book.merge_people(store, _person_id(store, keep), _person_id(store, other))
        return {"person": merged.to_json()}
    if action == "remove":
        (face,) = _need(args, 1, "remove FACE_ID")
        return {"face": face, "person": book.remove_face(store, face)}
    raise book.PeopleError(f"unknown people action {action!r}: one of {', '.join(ACTIONS)}")


def lines(action: str, out: dict[str, Any]) -> list[str]:
    """What the CLI prints for an action's answer, without --json."""
    if action == "list":
        if not out["people"]:
            return ["no people yet: `devise ingest` finds faces (docs/people.md)"]
        rows = [f"{'id':>5}  {'name':<20} {'faces':>5} {'photos':>6}  sample"]
        for p in out["people"]:
            rows.append(
                f"{p['id']:>5}  {p['name'] or '(unnamed)':<20} {p['faces']:>5} "
                f"{p['photos']:>6}  {p['sample']}"
            )
        return rows
    if action == "show":
        head = f"person {out['person']}" + (f" ({out['name']})" if out["name"] else "")
        return [head] + [f"  {f['face']}  {f['path']}  box {f['box']}" for f in out["faces"]]
    if action == "remove":
        return [f"face {out['face']} is now person {out['person']} on its own"]
    p = out["person"]
    name = p["name"] or "(unnamed)"
    return [f"person {p['id']}: {name}, {p['faces']} face(s) in {p['photos']} photo(s)"]


# ---------------------------------------------------------------------------- in queries


def _ids_of(store: Store, word: str, known: dict[str, str]) -> list[str]:
    """The person ids a typed name (or id) stands for: BadQueryError when none."""
    from app.search.errors import BadQueryError

    if word.isdigit() and word in {p for p in known} | _all_ids(store):
        return [word]
    ids = [pid for pid, n in known.items() if n.lower() == word.lower()]
    if not ids:
        raise BadQueryError(
            f"no person named {word!r}: `devise people` lists them, `devise people name ID "
            "NAME` names one"
        )
    return ids


def _all_ids(store: Store) -> set[str]:
    return {p.id for p in book.list_people(store)}


def split_names(text: str, known: dict[str, str]) -> tuple[str, list[str], list[str]]:
    """`text` without the persons' names it holds (whole words, any case, longest first),
    and the names it asked for and, after a minus, against."""
    wanted: list[str] = []
    unwanted: list[str] = []
    for name in sorted(set(known.values()), key=len, reverse=True):
        words = r"\s+".join(re.escape(w) for w in name.split())
        pattern = re.compile(rf"(?<![\w-])(-?){words}(?![\w])", re.IGNORECASE)
        for m in pattern.finditer(text):
            (unwanted if m.group(1) else wanted).append(name)
        text = pattern.sub(" ", text)
    return " ".join(text.split()), wanted, unwanted


def with_people(store: Store, request: QueryRequest) -> tuple[QueryRequest, Answer | None]:
    """`request` with the persons it names (in its text, or --person) as photo filters and
    the names taken out of its text; and, when nothing but names is left to search by, the
    answer itself: those persons' photos. Unchanged when it names nobody."""
    known = book.names(store) if store.count(FACES) else {}
    if not request.people and not known:
        return request, None
    text, wanted, unwanted = (
        split_names(request.text, known) if request.kind == "search" else (request.text, [], [])
    )
    wanted += request.people
    if not wanted and not unwanted:
        return request, None
    ids = [_one(store, w, known) for w in wanted]
    against = [i for w in unwanted for i in _ids_of(store, w, known)]
    photo = replace(
        request.photo,
        people=tuple(dict.fromkeys(request.photo.people + tuple(ids))),
        not_people=tuple(dict.fromkeys(request.photo.not_people + tuple(against))),
    )
    # the names stay with the request (as --person's), so the answer can say how it read them
    asked = replace(request, text=text, photo=photo, people=tuple(dict.fromkeys(wanted)))
    asked = replace(asked, read_against=tuple(dict.fromkeys(unwanted)))
    if request.kind != "search" or text or request.image is not None:
        return asked, None
    return asked, _photos_of(store, asked, wanted, unwanted)


def with_people_read(request: QueryRequest, answer: Answer) -> Answer:
    """A search's answer, its reading led by the persons the request named ("Alice ·
    −Bob · beach")."""
    names = list(request.people) + [f"−{n}" for n in request.read_against]
    if names and answer.query is not None:
        answer.query = " · ".join([*names, answer.query])
    return answer


def _one(store: Store, word: str, known: dict[str, str]) -> str:
    from app.search.errors import BadQueryError

    ids = _ids_of(store, word, known)
    if len(ids) > 1:
        raise BadQueryError(
            f"{len(ids)} people are named {word!r} (ids {', '.join(ids)}): `devise people "
            "merge` makes them one"
        )
    return ids[0]


def _photos_of(
    store: Store, request: QueryRequest, wanted: list[str], unwanted: list[str]
) -> Answer:
    """The photos that show the persons asked for (and none of those against), by path:
    a query of names alone."""
    from app.search.scope import search_filter

    t0 = time.perf_counter()
    flt = search_filter(store, request.labels, request.folder, None, request.photo)
    recs = sorted(store.scroll_images(flt=flt), key=lambda r: str(r.payload.get("path")))
    results = [ImageResult.of(Hit(r.id, 1.0, r.payload)) for r in recs[: request.k]]
    answer = Answer("people", (time.perf_counter() - t0) * 1000, results)
    answer.query = " · ".join(wanted + [f"−{n}" for n in unwanted])
    answer.note = f"the photos that show {' and '.join(wanted) or 'anyone'}" + (
        f", without {' or '.join(unwanted)}" if unwanted else ""
    )
    return answer


def name_people_in_tags(store: Store, image: Any, answer: Answer) -> Answer:
    """An indexed photo's named people first among its tags (kind `person`), and in the
    note how many of its faces are of people not named yet."""
    return _people_of_photo(store, image, answer, tags=True)


def name_people_in_note(store: Store, image: Any, answer: Answer) -> Answer:
    """`similar`'s answer, its note naming the people of the photo asked about."""
    return _people_of_photo(store, image, answer, tags=False)


def _people_of_photo(store: Store, image: Any, answer: Answer, *, tags: bool) -> Answer:
    """A photo with no face, or not indexed, or before the face stage, is left as it was."""
    if not isinstance(image, (str, Path)) or not store.count(FACES):
        return answer
    rec = store.find_by_path([abs_posix(image)]).get(abs_posix(image))
    if rec is None:
        return answer
    ids = [str(p) for p in rec.payload.get(PEOPLE) or []]
    known = book.names(store)
    named = sorted(known[p] for p in ids if p in known)
    unnamed = len(ids) - len(named)
    if tags:
        answer.results = [TagResult(n, 1.0, "person") for n in named] + answer.results
    parts = [] if tags else [f"the photo shows {', '.join(named)}"] if named else []
    if unnamed:
        parts.append(f"{unnamed} person(s) in the photo not named yet (`devise people`)")
    if parts:
        answer.note = "; ".join(([answer.note] if answer.note else []) + parts)
    return answer
