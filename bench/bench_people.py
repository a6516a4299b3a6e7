"""People (issue #37): how well dlib finds faces and groups them, and what the face stage costs.

- detection: faces found against faces present, on real photos (the face_recognition 1.3.0
  test photos, scikit-image's and darknet's), for dlib's HOG (model/detectors/dlib_faces.py)
  beside the LBP cascade that tags `person` (model/detectors/faces.py); and on a
  12-megapixel group photo of six small faces (about 150 px wide, made from the test faces)
  at each detection size.
- identity: the face stage over the test photos (five of one person, one of another):
  pairwise precision and recall of the people it makes.
- speed: the face stage on 12-megapixel JPEGs (4000x3000, a face each, made from the test
  faces) in photos/s and faces/s, with 1 and 2 worker processes, beside the backbone ingest
  of the same photos (conse, EfficientNet-Lite0).
- LFW (sklearn's fetch_lfw_people) only where it is already downloaded: never fetched.

Asserts nothing. From the repository root:

    python bench/bench_people.py [--n 40] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import report
from PIL import Image
from report import add_json_flag

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DARKNET = Path("/usr/share/darknet/data")
OBAMA = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
]
BIDEN = ["biden.jpg"]
# frontal faces in each photo, counted by eye; darknet's person.jpg shows a person from the
# side, behind a dog: no frontal face
PRESENT = {**{n: 1 for n in OBAMA + BIDEN}, "astronaut.png": 1, "person.jpg": 0, "dog.jpg": 0,
           "horses.jpg": 0, "eagle.jpg": 0, "giraffe.jpg": 0, "scream.jpg": 0, "kite.jpg": 0,
           "chelsea.png": 0, "coffee.png": 0, "rocket.png": 0}  # fmt: skip


def faces_dir() -> Path:
    root = os.environ.get("DEVISE_FACES_DIR") or (
        Path.home() / ".cache" / "devise-search" / "face_recognition-1.3.0"
    )
    return Path(root) / "tests" / "test_images"


def real_photos(tmp: Path) -> list[Path]:
    from model.data.datasets import export_photos

    export_photos(tmp, names=["astronaut", "chelsea", "coffee", "rocket"])
    out = [faces_dir() / n for n in OBAMA + BIDEN]
    out += sorted(tmp.glob("*.png")) + [DARKNET / n for n in PRESENT if (DARKNET / n).is_file()]
    return [p for p in out if p.is_file()]


def detection(tmp: Path) -> dict[str, Any]:
    from model.data.images import decode_image
    from model.detectors.dlib_faces import FaceFinder
    from model.detectors.faces import FaceDetector

    finder, lbp = FaceFinder(), FaceDetector()
    rows = []
    for p in real_photos(tmp):
        dlib_n = len(finder.find_in_file(p).faces)
        lbp_n = len(lbp.faces(decode_image(p)))
        rows.append({"photo": p.name, "present": PRESENT[p.name], "dlib": dlib_n, "lbp": lbp_n})
    print("\n| photo | frontal faces | dlib HOG | LBP cascade |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['photo']} | {r['present']} | {r['dlib']} | {r['lbp']} |")
    return {"photos": rows}


def group_photo(path: Path, face_px: int = 450) -> int:
    """A 4000x3000 JPEG with the six test faces side by side, each photo `face_px` tall
    (faces about a third of that wide); returns how many faces it holds."""
    canvas = Image.new("RGB", (4000, 3000), (90, 100, 120))
    for i, name in enumerate(OBAMA + BIDEN):
        im = Image.open(faces_dir() / name).convert("RGB")
        im = im.resize((round(im.width * face_px / im.height), face_px))
        canvas.paste(im, (200 + i * 620, 1200))
    canvas.save(path, quality=90)
    return 6


def small_faces(tmp: Path) -> list[dict[str, Any]]:
    from model.detectors.dlib_faces import FaceFinder

    path = tmp / "group.jpg"
    present = group_photo(path)
    out = []
    for side in (1024, 1600, 2048):
        finder = FaceFinder(detect_side=side)
        finder.find_in_file(path)  # load the models first
        t = time.perf_counter()
        found = finder.find_in_file(path).faces
        ms = (time.perf_counter() - t) * 1000
        out.append({"detect_side": side, "present": present, "found": len(found), "ms": ms})
    print("\n12-megapixel group photo, six faces about 150 px wide:")
    print("| detection side | found | ms |\n|---|---|---|")
    for r in out:
        print(f"| {r['detect_side']} | {r['found']} of {r['present']} | {r['ms']:.0f} |")
    return out


def identity(tmp: Path) -> dict[str, Any]:
    from ingest.faces import find_faces
    from ingest.pipeline import ingest
    from model.detectors.dlib_faces import FaceFinder
    from qdrant.edge import EdgeStore
    from tests.fakes import FakeEmbedder

    root = tmp / "identity"
    root.mkdir()
    for n in OBAMA + BIDEN:
        shutil.copy2(faces_dir() / n, root / n)
    truth = {n: "obama" if n in OBAMA else "biden" for n in OBAMA + BIDEN}
    with EdgeStore(tmp / "identity-index") as store:
        ingest(store, [root], [FakeEmbedder()], progress=False)  # type: ignore[list-item]
        find_faces(store, FaceFinder(), [root], progress=False)
        made = {Path(f.payload["path"]).name: f.payload["person"] for f in store.scroll_faces()}
    pairs = list(itertools.combinations(sorted(made), 2))
    tp = sum(1 for a, b in pairs if made[a] == made[b] and truth[a] == truth[b])
    fp = sum(1 for a, b in pairs if made[a] == made[b] and truth[a] != truth[b])
    fn = sum(1 for a, b in pairs if made[a] != made[b] and truth[a] == truth[b])
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    print(
        f"\nidentity: {len(made)} faces, {len(set(made.values()))} people; pairwise precision "
        f"{precision:.2f}, recall {recall:.2f}"
    )
    return {"faces": len(made), "people": len(set(made.values())), "precision": precision,
            "recall": recall}  # fmt: skip


def twelve_megapixel(root: Path, n: int) -> None:
    root.mkdir()
    names = OBAMA + BIDEN
    for i in range(n):
        im = Image.open(faces_dir() / names[i % len(names)]).convert("RGB")
        canvas = Image.new("RGB", (4000, 3000), (120 + i % 50, 140, 100))
        im = im.resize((round(im.width * 2400 / im.height), 2400))
        canvas.paste(im, (400 + (i * 37) % 800, 300))
        canvas.save(root / f"p{i:03d}.jpg", quality=90)


def speed(tmp: Path, n: int) -> dict[str, Any]:
    from app.cli import main as devise
    from ingest.faces import find_faces, forget_faces
    from model.detectors.dlib_faces import FaceFinder
    from qdrant.edge import EdgeStore

    root = tmp / "twelve"
    twelve_megapixel(root, n)
    index = tmp / "speed-index"
    out_file = tmp / "ingest.json"
    stdout = sys.stdout
    with open(out_file, "w") as f:
        sys.stdout = f
        try:
            devise(["ingest", str(root), "--models", "conse", "--no-faces", "--json",
                    "--index", str(index)])  # fmt: skip
        finally:
            sys.stdout = stdout
    summary = json.loads(out_file.read_text().strip().splitlines()[-1])
    backbone = summary["indexed"] / summary["seconds"]
    out: dict[str, Any] = {"photos": n, "megapixels": 12, "backbone_ingest_photos_s": backbone}
    with EdgeStore(index) as store:
        for workers in (1, 2):
            forget_faces(store)
            t = time.perf_counter()
            s = find_faces(store, FaceFinder(), [root], progress=False, workers=workers)
            dt = time.perf_counter() - t
            out[f"workers_{workers}"] = {"photos_s": s.photos / dt, "faces_s": s.faces / dt,
                                         "faces": s.faces, "seconds": dt}  # fmt: skip
    print(f"\nspeed on {n} 12-megapixel JPEGs (one face each):")
    print("| stage | photos/s | faces/s |\n|---|---|---|")
    print(f"| backbone ingest (conse, no faces) | {backbone:.1f} | |")
    for w in (1, 2):
        r = out[f"workers_{w}"]
        print(f"| face stage, {w} worker(s) | {r['photos_s']:.1f} | {r['faces_s']:.1f} |")
    return out


def lfw() -> dict[str, Any]:
    try:
        from sklearn.datasets import fetch_lfw_people

        fetch_lfw_people(download_if_missing=False)
    except Exception as e:  # noqa: BLE001 - absent offline: said, never fetched
        reason = f"skipped: LFW is not downloaded and this machine is offline ({type(e).__name__})"
        print(f"\nLFW: {reason}")
        return {"skipped": reason}
    return {"skipped": "LFW is present but this bench does not score it yet"}


def main() -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=40, help="12-megapixel photos for the speed run")
    add_json_flag(p)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_tags import cpu_name

    if not (faces_dir() / "obama.jpg").is_file():
        raise SystemExit(f"the test faces are absent from {faces_dir()}: see .ci/run")
    cpu = cpu_name()
    print(f"CPU: {cpu}")
    with tempfile.TemporaryDirectory(prefix="bench-people-") as tmp_name:
        tmp = Path(tmp_name)
        figures: dict[str, object] = {
            "cpu": cpu,
            "detection": detection(tmp),
            "small_faces": small_faces(tmp),
            "identity": identity(tmp),
            "speed": speed(tmp, args.n),
            "lfw": lfw(),
        }
    return figures


if __name__ == "__main__":
    report.run(__file__, main)
