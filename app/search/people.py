"""`devise people`'s actions, for every face (the CLI on its own, the CLI through the app):
list, show, name, merge, remove. Each takes the store and plain values and gives JSON-ready
values; the grouping itself is ingest/people.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ingest import people as book
from qdrant.store import Store

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
