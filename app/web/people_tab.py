"""The People tab: one face per person, a name typed once, two people merged into one, and a
wrong face taken out of its person (docs/people.md).

`PeoplePage` holds the tab's behaviour as plain methods that tests call directly; `people_tab`
only wires them to Gradio. Naming, merging and taking a face out go through
app/search/people.py as `devise people name`, `merge` and `remove` do, in the app's write
slot when the app indexes (so never beside an ingest's face stage); an app started with
--auth asks for the login before any of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    from app.web.handlers import WebHandlers

log = logging.getLogger(__name__)

MAX_PEOPLE = 60  # people shown, the named first, then the most faces
MAX_FACES = 120  # faces of the person picked shown, by photo path
CROP_SIDE = 160  # a face crop's longest side, in pixels
MARGIN = 0.3  # around the face's box, as a fraction of its width


@dataclass
class PeopleOut:
    """What the tab shows: (face crop, caption) per person, their ids in the same order, and
    a status line."""

    items: list[tuple[Image.Image, str]]
    ids: list[str]
    status: str


def face_crop(path: str, box: list[int]) -> Image.Image | None:
    """The face at `box` (the photo's upright pixels) in a small picture; None when the
    photo cannot be read any more."""
    from model.data.images import ImageError, decode_image_info

    try:
        info = decode_image_info(path, max_side=1024, draft_size=512)
    except ImageError as e:
        log.info("no face crop from %s: %s", path, e)
        return None
    scale = info.image.size[0] / max(1, info.width)
    left, top, right, bottom = (v * scale for v in box)
    pad = (right - left) * MARGIN
    w, h = info.image.size
    crop = info.image.crop(
        (max(0, int(left - pad)), max(0, int(top - pad)),
         min(w, int(right + pad)), min(h, int(bottom + pad)))
    )  # fmt: skip
    crop.thumbnail((CROP_SIDE, CROP_SIDE))
    return crop


class PeoplePage:
    """The People tab's handlers."""

    def __init__(self, h: WebHandlers) -> None:
        self.h = h

    def people(self) -> PeopleOut:
        """Every person (up to MAX_PEOPLE) with the face of their sample photo."""
        from app.search import people

        store = self.h.service.store
        listed = people.run(store, "list")["people"][:MAX_PEOPLE]
        items: list[tuple[Image.Image, str]] = []
        ids: list[str] = []
        for p in listed:
            face = _best_face(store, p["id"])
            crop = (
                face_crop(str(face.get("path")), face.get("box") or [0, 0, 1, 1]) if face else None
            )
            if crop is None:
                continue
            name = p["name"] or "not named"
            items.append((crop, f"{p['id']} · {name} · {p['photos']} photo(s)"))
            ids.append(p["id"])
        if not listed:
            return PeopleOut([], [], "No people yet: indexing finds faces (docs/people.md).")
        return PeopleOut(items, ids, f"{len(listed)} people; pick a face, type a name.")

    def name(self, person: str, name: str) -> PeopleOut:
        """Names a person (as `devise people name`), then shows the people again; a wrong
        id or an empty name is the status line, never an exception."""
        person, name = (person or "").strip(), (name or "").strip()
        missing = "" if person else "pick a face first"
        out = self._write("naming a person", "name", [person, name], missing)
        if isinstance(out, dict):
            shown = self.people()
            shown.status = f"Person {out['person']['id']} is {out['person']['name']}."
            return shown
        return out

    def merge(self, person: str, other: str) -> PeopleOut:
        """Moves every face of person `other` to `person` (as `devise people merge`): one
        person found as two. `person` keeps its name, else takes `other`'s."""
        person, other = (person or "").strip(), (other or "").strip()
        missing = (
            "pick a face first" if not person
            else "type the id of the other person (the first number under a face)"
            if not other else ""
        )  # fmt: skip
        out = self._write("merging two people", "merge", [person, other], missing)
        if isinstance(out, dict):
            p = out["person"]
            shown = self.people()
            who = f"{p['id']} ({p['name']})" if p["name"] else p["id"]
            shown.status = f"Person {other}'s faces joined person {who}: {p['faces']} faces."
            return shown
        return out

    def faces(self, person: str) -> PeopleOut:
        """Every face of the person picked (up to MAX_FACES), captioned with its photo's
        name, and their face ids: the faces one may take out."""
        from app.search import people
        from ingest.people import PeopleError

        person = (person or "").strip()
        if not person:
            return PeopleOut([], [], "")
        try:
            shown = people.run(self.h.service.store, "show", [person])
        except PeopleError as e:
            return PeopleOut([], [], f"⚠️ {e}")
        items: list[tuple[Image.Image, str]] = []
        ids: list[str] = []
        for f in shown["faces"][:MAX_FACES]:
            crop = face_crop(str(f["path"]), f["box"] or [0, 0, 1, 1])
            if crop is not None:
                items.append((crop, Path(str(f["path"])).name))
                ids.append(str(f["face"]))
        who = f"{person} ({shown['name']})" if shown["name"] else person
        return PeopleOut(
            items,
            ids,
            f"Person {who}: {len(shown['faces'])} face(s); pick a wrong one to take out.",
        )

    def take_out(self, person: str, face: str) -> tuple[PeopleOut, PeopleOut]:
        """Takes face `face` out of its person (as `devise people remove`): it becomes a
        person of its own. The people again and the faces of `person` again; a missing pick
        is the status line."""
        person, face = (person or "").strip(), (face or "").strip()
        missing = "pick the wrong face first (among the person's faces)" if not face else ""
        out = self._write("taking a face out", "remove", [face], missing)
        if isinstance(out, dict):
            shown = self.people()
            shown.status = (
                f"The face is out of person {person or '?'}: it is person {out['person']} now."
            )
            return shown, self.faces(person)
        return out, self.faces(person)

    def _write(self, what: str, action: str, args: list[str], missing: str) -> Any:
        """A people write in the app's write slot (never beside an ingest's face stage):
        its answer, or the people again with the error (or `missing`, what the boxes lack)
        as the status line."""
        from app.search import people
        from ingest.people import PeopleError

        try:
            if missing:
                raise PeopleError(missing)
            if self.h.job is not None:
                with self.h.job.write_slot(what):
                    return people.run(self.h.service.store, action, args)
            return people.run(self.h.service.store, action, args)
        except PeopleError as e:
            out = self.people()
            out.status = f"⚠️ {e}"
            return out


def _best_face(store: Any, pid: str) -> dict[str, Any] | None:
    """The largest, surest face of person `pid`, payload only."""
    from ingest.people import faces_of

    faces = faces_of(store, [pid])
    if not faces:
        return None
    best = max(
        faces, key=lambda f: float(f.payload.get("size", 0)) * float(f.payload.get("score", 0))
    )
    return dict(best.payload)


def show(out: PeopleOut) -> tuple[Any, list[str], str]:
    """The people gallery's outputs: (items, their ids, status)."""
    return out.items or None, out.ids, out.status


def show_faces(out: PeopleOut) -> tuple[Any, list[str], list[str], str, str, str]:
    """The faces gallery's outputs: (items, face ids, their photos' names, the face picked's
    id and name, both cleared, status)."""
    names = [caption for _, caption in out.items]
    return out.items or None, out.ids, names, "", "", out.status


def on_select(shown: list[str], evt: Any) -> str:
    """The id of the person picked in the gallery."""
    index = int(evt.index) if isinstance(evt.index, int) else 0
    return shown[index] if 0 <= index < len(shown) else ""


def on_pick_face(ids: list[str], names: list[str], evt: Any) -> tuple[str, str]:
    """The face picked: its id (kept in the page's state) and its photo's name (shown)."""
    index = int(evt.index) if isinstance(evt.index, int) else -1
    if not 0 <= index < min(len(ids), len(names)):
        return "", ""
    return ids[index], names[index]


def people_tab(h: WebHandlers) -> None:
    """The People tab (inside `gr.Blocks`)."""
    import gradio as gr

    from app.web.tabs import GALLERY_CLASS

    page = PeoplePage(h)
    with gr.Tab("People") as tab:
        gr.Markdown(
            "The people in the photos, one face each. Pick a face, type the name once: "
            "searches for the name then find their photos (`Alice at the beach`). One person "
            "shown twice: pick one face, type the other's id (the first number under it), merge. "
            "A face in the wrong person: pick the person, then the wrong face among theirs "
            "below, and take it out (it becomes a person of its own)."
        )
        status = gr.Markdown(elem_id="people-status")
        with gr.Row():
            refresh = gr.Button("Show people", scale=1, elem_id="people-refresh")
            person = gr.Textbox(label="Person", scale=1, elem_id="people-id")
            name = gr.Textbox(label="Name", placeholder="Alice", scale=2, elem_id="people-name")
            save = gr.Button("Name", variant="primary", scale=1, elem_id="people-save")
        with gr.Row():
            other = gr.Textbox(
                label="Same person as", placeholder="another person's id (the first number)",
                scale=3, elem_id="people-other",
            )  # fmt: skip
            merge = gr.Button("Merge into the person picked", scale=1, elem_id="people-merge")
        # fit_columns=False as the search galleries (app/web/tabs.py): two people were two
        # faces of half the row's width each, their captions out of sight below the gallery
        gallery = gr.Gallery(
            label="people", columns=8, height=420, allow_preview=False, object_fit="contain",
            elem_id="people-gallery", elem_classes=[GALLERY_CLASS], fit_columns=False,
        )  # fmt: skip
        ids = gr.State([])
        with gr.Row():
            # the photo the face picked is in; its id (a UUID) is kept out of sight
            face = gr.Textbox(
                label="Face picked (its photo)", scale=3, elem_id="people-face", interactive=False
            )
            take = gr.Button("Take this face out", scale=1, elem_id="people-remove")
        faces = gr.Gallery(
            label="faces of the person picked", columns=8, height=300, allow_preview=False,
            object_fit="contain", elem_id="people-faces", elem_classes=[GALLERY_CLASS],
            fit_columns=False,
        )  # fmt: skip
        faces_status = gr.Markdown(elem_id="people-faces-status")
        face_ids = gr.State([])
        face_names = gr.State([])
        face_id = gr.State("")

    # Gradio finds the event's data by the parameter's class, and this module's annotations
    # are strings (`from __future__ import annotations`)
    on_select.__annotations__["evt"] = on_pick_face.__annotations__["evt"] = gr.SelectData
    # the faces show when the tab opens: an empty gallery under "Show people" looked like
    # an index without people
    tab.select(lambda: show(page.people()), [], [gallery, ids, status])
    refresh.click(lambda: show(page.people()), [], [gallery, ids, status])

    faces_out = [faces, face_ids, face_names, face_id, face, faces_status]

    def on_take(p: str, f: str) -> tuple[Any, ...]:
        shown, theirs = page.take_out(p, f)
        return (*show(shown), *show_faces(theirs))

    gallery.select(on_select, [ids], [person]).then(
        lambda p: show_faces(page.faces(p)), [person], faces_out
    )
    faces.select(on_pick_face, [face_ids, face_names], [face_id, face])
    take.click(on_take, [person, face_id], [gallery, ids, status, *faces_out])
    save.click(lambda p, n: show(page.name(p, n)), [person, name], [gallery, ids, status])
    merge.click(lambda p, o: show(page.merge(p, o)), [person, other], [gallery, ids, status])
