"""The face stage after an ingest, as every ingest runs it: `devise ingest`, the app's
Index box, the CLI through the app and `serve --watch` (ingest/faces.py does the work)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingest.faces import FaceSummary
    from qdrant.store import Store

log = logging.getLogger(__name__)
#: the index's meta key for how its faces are looked for ({"side": px})
FACES_META = "faces"


def face_stage(
    store: Store,
    paths: Sequence[Path],
    *,
    detector: str = "hog",
    side: int | None = None,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
    on_photo: Callable[[FaceSummary], None] | None = None,
) -> FaceSummary | None:
    """Find the faces of the photos under `paths` that lack them; None (said once through
    `say`, else logged) when dlib or its models are absent. `side`: the detection copy's
    longest side (`--face-side`; default DETECT_SIDE). `on_photo` hears of each photo
    done (the page's progress: `FaceSummary.progress()`)."""
    from model.detectors.dlib_faces import FaceFinder, available

    why = available()
    if why is not None:
        (say or log.warning)(f"faces not looked for: {why}")
        return None
    from ingest.faces import find_faces

    side = face_side(store, side, say)
    finder = FaceFinder("cnn" if detector == "cnn" else "hog", detect_side=side)
    folders = [p if p.is_dir() else p.parent for p in paths]
    return find_faces(store, finder, folders, progress=progress, stop=stop, on_photo=on_photo)


def face_side(store: Store, side: int | None, say: Callable[[str], None] | None = None) -> int:
    """The detection side of this face pass: `side` where given (`--face-side`), and then
    recorded in the index, so that its later ingests (`devise ingest`, the page's Index box,
    `serve --watch`) look as closely; else the side the index records (said through `say`
    where it is not the default), else DETECT_SIDE."""
    from model.detectors.dlib_faces import DETECT_SIDE

    meta = store.get_meta()
    recorded = int((meta.get(FACES_META) or {}).get("side") or 0)
    if side is None:
        if recorded and recorded != DETECT_SIDE and say is not None:
            say(
                f"this index looks for faces on a copy {recorded} px long (made with "
                "--face-side): so does this ingest"
            )
        return recorded or DETECT_SIDE
    if side != (recorded or DETECT_SIDE):
        meta[FACES_META] = {**(meta.get(FACES_META) or {}), "side": side}
        store.set_meta(meta)
    return side


def face_stage_shown(
    store: Store, paths: Sequence[Path], show: Callable[[str], None], **kw: Any
) -> FaceSummary | None:
    """`face_stage` with its progress shown as an app job's line (`indexing <paths>: ...`),
    which the page, `serve --watch` and `devise ingest` through the app read."""
    where = ", ".join(str(p) for p in paths)
    show(f"indexing {where}: finding faces")

    def photo_done(s: FaceSummary) -> None:
        show(f"indexing {where}: {s.progress()}")

    return face_stage(store, paths, on_photo=photo_done, **kw)
