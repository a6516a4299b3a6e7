"""People: faces grouped by who they are, named once.

A person is an id (a small number, as a string) that faces carry in their `person` payload;
a photo's `people` payload lists the persons of its faces (the person filter reads it).
Names and the next free id live in the index's meta document (`meta["people"]`), so ids and
names survive restarts and re-ingests.

Grouping is incremental: a new face joins the person that most of its close faces belong to
(the `NEIGHBOURS` nearest faces of other photos within `THRESHOLD`, Euclidean), else starts a
person of its own. Faces already grouped never move by themselves, so a person's id, and the
name given to it, stay as new photos arrive. Why a threshold and not Chinese whispers:
docs/people.md.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qdrant.filters import SearchFilter
from qdrant.schema import PEOPLE
from qdrant.store import Record, Store

#: dlib's own threshold for "the same person" on its ResNet descriptor (99.38 % on LFW); the
#: test photos' one person lies 0.24-0.44 apart, two people 0.82-0.87 (docs/people.md)
THRESHOLD = 0.6
NEIGHBOURS = 10  # the nearest faces that vote on a new face's person


class PeopleError(ValueError):
    """A person or face that does not exist, or a name that cannot be used."""


@dataclass(frozen=True)
class Person:
    """One person: id, name ("" until named), faces, photos, and one photo to show."""

    id: str
    name: str
    faces: int
    photos: int
    sample: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name or None,
            "faces": self.faces,
            "photos": self.photos,
            "sample": self.sample,
        }


def _book(store: Store) -> dict[str, Any]:
    people = store.get_meta().get("people")
    return dict(people) if isinstance(people, dict) else {"next": 1, "names": {}}


def _save_book(store: Store, book: dict[str, Any]) -> None:
    meta = store.get_meta()
    meta["people"] = book
    store.set_meta(meta)


def names(store: Store) -> dict[str, str]:
    """Every named person's name, by id."""
    return {str(k): str(v) for k, v in (_book(store).get("names") or {}).items()}


def new_person(store: Store) -> str:
    """A fresh person id, recorded at once so that no restart hands it out twice."""
    book = _book(store)
    pid = int(book.get("next", 1))
    book["next"] = pid + 1
    _save_book(store, book)
    return str(pid)


def choose_person(
    store: Store, descriptor: npt.NDArray[np.float32], photo_id: str
) -> tuple[str | None, float]:
    """The person a new face belongs to and its nearest such face's distance, or (None,
    nearest distance) when no face of another photo lies within THRESHOLD."""
    hits = [
        h for h in store.search_faces(descriptor, NEIGHBOURS) if h.payload.get("photo") != photo_id
    ]
    close = [h for h in hits if h.score < THRESHOLD and h.payload.get("person")]
    if not close:
        return None, min((h.score for h in hits), default=float("inf"))
    votes = Counter(str(h.payload["person"]) for h in close)
    nearest: dict[str, float] = {}
    for h in close:
        nearest.setdefault(str(h.payload["person"]), h.score)
    best = max(votes, key=lambda p: (votes[p], -nearest[p]))
    return best, nearest[best]


def refresh_photos(store: Store, photo_ids: Iterable[str]) -> None:
    """Set each photo's `people` to the persons of its faces now."""
    ids = sorted(set(photo_ids))
    if not ids:
        return
    people: dict[str, set[str]] = {i: set() for i in ids}
    for face in store.faces_of_photos(ids):
        photo = str(face.payload.get("photo"))
        if photo in people and face.payload.get("person"):
            people[photo].add(str(face.payload["person"]))
    existing = {r.id for r in store.retrieve_images(ids, with_payload=False)}
    store.set_image_payloads([(i, {PEOPLE: sorted(people[i])}) for i in ids if i in existing])


def faces_of(store: Store, person_ids: Sequence[str]) -> list[Record]:
    """The faces of these persons."""
    return list(store.scroll_faces(SearchFilter(matches=(("person", tuple(person_ids)),))))


def list_people(store: Store) -> list[Person]:
    """Every person with at least one face: the named first (by name), then by faces."""
    known = names(store)
    faces: Counter[str] = Counter()
    photos: dict[str, set[str]] = {}
    best: dict[str, tuple[float, str]] = {}
    for face in store.scroll_faces():
        pid = str(face.payload.get("person") or "")
        if not pid:
            continue
        faces[pid] += 1
        photos.setdefault(pid, set()).add(str(face.payload.get("photo")))
        size = float(face.payload.get("size", 0)) * float(face.payload.get("score", 0))
        if pid not in best or size > best[pid][0]:
            best[pid] = (size, str(face.payload.get("path", "")))
    out = [
        Person(pid, known.get(pid, ""), n, len(photos[pid]), best[pid][1])
        for pid, n in faces.items()
    ]
    return sorted(out, key=lambda p: (not p.name, p.name.lower(), -p.faces, _order(p.id)))


def _order(pid: str) -> tuple[int, str]:
    return (int(pid), "") if pid.isdigit() else (1 << 62, pid)


def _require_person(store: Store, pid: str) -> list[Record]:
    faces = faces_of(store, [pid])
    if not faces:
        raise PeopleError(f"no person {pid!r}: `devise people` lists them")
    return faces


def check_name(name: str) -> str:
    """A name as stored: its words joined by one space; refused when empty or a number (it
    would read as a person id)."""
    clean = " ".join(name.split())
    if not clean:
        raise PeopleError("a person's name cannot be empty")
    if clean.isdigit():
        raise PeopleError(f"{clean!r} reads as a person id, not a name")
    return clean


def name_person(store: Store, pid: str, name: str) -> Person:
    """Give person `pid` a name (another person of that name keeps it too: merge them to
    make one)."""
    clean = check_name(name)
    _require_person(store, pid)
    book = _book(store)
    book["names"] = {**(book.get("names") or {}), pid: clean}
    _save_book(store, book)
    return next(p for p in list_people(store) if p.id == pid)


def merge_people(store: Store, keep: str, other: str) -> Person:
    """Move every face of `other` to `keep`; `keep` keeps its name, else takes `other`'s."""
    if keep == other:
        raise PeopleError(f"cannot merge person {keep!r} with itself")
    _require_person(store, keep)
    faces = _require_person(store, other)
    store.set_face_payloads([(f.id, {"person": keep}) for f in faces])
    refresh_photos(store, (str(f.payload.get("photo")) for f in faces))
    book = _book(store)
    known = dict(book.get("names") or {})
    gone = known.pop(other, None)
    if gone and not known.get(keep):
        known[keep] = gone
    book["names"] = known
    _save_book(store, book)
    return next(p for p in list_people(store) if p.id == keep)


def remove_face(store: Store, face_id: str) -> str:
    """Take face `face_id` out of its person: it becomes a person of its own (returned)."""
    try:
        uuid.UUID(face_id)
    except ValueError:
        raise PeopleError(
            f"no face {face_id!r}: a face id is a UUID, as `devise people show ID` lists them"
        ) from None
    found = store.retrieve_faces([face_id])
    if not found:
        raise PeopleError(f"no face {face_id!r}: `devise people show ID` lists a person's faces")
    pid = new_person(store)
    store.set_face_payloads([(face_id, {"person": pid})])
    refresh_photos(store, [str(found[0].payload.get("photo"))])
    return pid


def person_ids_named(store: Store, name: str) -> list[str]:
    """The ids of the persons called `name` (any case), or whose id it is."""
    wanted = " ".join(name.split()).lower()
    ids = [pid for pid, n in names(store).items() if n.lower() == wanted]
    return ids
