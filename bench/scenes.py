"""Scenes made from the real photos the project reads, generated the same way every run (no
binaries committed): what a photo holds beyond its main subject.

- `small`: a subject photo scaled to a quarter of the background's width (about 6% of the
  frame) and pasted into one of its corners (the corner turns with the scene's number);
- `pair`: two subject photos side by side, each scaled to the same height;
- `corner`: a subject photo cropped to its lower-right 60% x 60%, so the subject, centred
  in the photo, sits cut in the new frame's upper-left corner.

Subjects are photos whose whole-photo conse tags name their subject (scikit-image's chelsea,
coffee, motorcycle; darknet's dog and eagle; Gradio's lion, cheetah and bus); backgrounds are
photos with no such subject of their own or another subject (scikit-image's grass, brick,
gravel, rocket; darknet's kite and horses; Gradio's tower). Each scene's `truth` is the
concept names a right answer holds; the split into a tuning half and a held-out half is by
the scene's number, even or odd, fixed before any rule was tuned.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

DARKNET = Path("/usr/share/darknet/data")
#: subject photo stem -> the concept words a scene holding it answers (as typed queries)
SUBJECTS = {
    "chelsea": ("cat",),
    "coffee": ("coffee",),
    "motorcycle": ("motorcycle",),
    "dog": ("dog",),
    "eagle": ("bird",),
    "lion": ("lion",),
    "cheetah": ("cheetah",),
    "bus": ("bus",),
}
BACKGROUNDS = ("grass", "brick", "gravel", "rocket", "kite", "horses", "tower")
#: Gradio's photos that bench_queries.py's natural queries name, beside the subjects
GRADIO = ("cheetah1", "cheetah2", "groot")
CORNERS = ((0.04, 0.04), (0.71, 0.04), (0.04, 0.66), (0.71, 0.66))


@dataclass(frozen=True)
class Scene:
    name: str  # file stem
    how: str  # how it was made, in words
    truth: tuple[str, ...]  # the query words it answers
    held_out: bool


def source_photos(dest: Path) -> dict[str, Path]:
    """The real photos (scikit-image's, darknet's, Gradio's) copied into `dest`, by stem."""
    from model.data.datasets import export_photos

    dest.mkdir(parents=True, exist_ok=True)
    export_photos(dest)
    for p in sorted(DARKNET.glob("*.jpg")):
        shutil.copy2(p, dest / p.name)
    try:
        import gradio

        root = Path(gradio.__file__).parent
        found = [*(root / "media_assets" / "images").glob("*"), root / "test_data" / "cheetah2.jpg"]
        for p in found:
            if p.is_file() and p.stem in {*SUBJECTS, *BACKGROUNDS, *GRADIO}:
                shutil.copy2(p, dest / p.name)
    except ImportError:
        pass
    return {p.stem: p for p in sorted(dest.iterdir()) if p.is_file()}


def _open(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def make_scenes(photos: dict[str, Path], out: Path) -> list[Scene]:
    """Every scene from `photos` (by stem) as JPEG files in `out`; those whose photos are
    absent are left out."""
    out.mkdir(parents=True, exist_ok=True)
    subjects = [s for s in SUBJECTS if s in photos]
    backgrounds = [b for b in BACKGROUNDS if b in photos]
    scenes: list[Scene] = []

    def save(im: Image.Image, name: str, how: str, truth: tuple[str, ...]) -> None:
        im.save(out / f"{name}.jpg", quality=90)
        scenes.append(Scene(name, how, truth, held_out=len(scenes) % 2 == 1))

    n = 0
    for s in subjects:
        for b in backgrounds:
            bg = _open(photos[b])
            sub = _open(photos[s])
            w = bg.width // 4
            sub = sub.resize((w, max(1, round(sub.height * w / sub.width))))
            fx, fy = CORNERS[n % len(CORNERS)]
            bg.paste(sub, (round(fx * bg.width), round(fy * bg.height)))
            save(bg, f"small-{s}-in-{b}", f"{s} at 1/4 width in a corner of {b}", SUBJECTS[s])
            n += 1
    for i, a in enumerate(subjects):
        b = subjects[(i + 3) % len(subjects)]
        left, right = _open(photos[a]), _open(photos[b])
        h = 384
        left = left.resize((round(left.width * h / left.height), h))
        right = right.resize((round(right.width * h / right.height), h))
        pair = Image.new("RGB", (left.width + right.width, h))
        pair.paste(left, (0, 0))
        pair.paste(right, (left.width, 0))
        save(pair, f"pair-{a}-{b}", f"{a} and {b} side by side", SUBJECTS[a] + SUBJECTS[b])
    for s in subjects:
        im = _open(photos[s])
        w, h = im.size
        cut = im.crop((round(0.4 * w), round(0.4 * h), w, h))
        save(cut, f"corner-{s}", f"{s} cropped to its lower-right 60%", SUBJECTS[s])
    return scenes
