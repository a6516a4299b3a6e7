"""CLIP from weights where open_clip itself keeps them, through the CLI and the web app.

Random weights are written in the exact on-disk layouts open_clip 3.3 and huggingface_hub
leave behind (`tests/standins.py`): ViT-B-32 `laion2b_s34b_b79k` and RN50 `openai` (a
quick-GELU tag) in the Hugging Face hub cache, RN50 `openai` as OpenAI's TorchScript archive
in open_clip's URL cache, and a plain file for `--clip-weights`. Every command runs as a
user would run it, in a subprocess with `HF_HUB_OFFLINE=1`: the real resolution and loading
code, nothing injected. The values are random, so only behaviour is asserted, never which
photo wins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.cli import run
from tests.conftest import make_image_folder
from tests.standins import forget_random_clip, write_clip_file, write_clip_hf, write_clip_url

pytestmark = pytest.mark.slow

VIT = ("ViT-B-32", "laion2b_s34b_b79k")
PHOTOS = {"cat": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg"}


@dataclass
class ClipWorld:
    root: Path
    env: dict[str, str]
    hub: Path
    vit_file: Path
    photos: Path
    index: Path

    def devise(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(*args, env=env or self.env, timeout=600, cwd=self.root)

    def ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        r = self.devise(*args, env=env)
        assert r.returncode == 0, (
            f"devise {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}"
        )
        return r.stdout


def _photo_folder(root: Path) -> Path:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    for label, name in PHOTOS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(data / name, root / label / name)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipWorld]:
    root = tmp_path_factory.mktemp("clip-world")
    hf_home = root / "hf"
    vit_file = write_clip_hf(hf_home / "hub", *VIT)
    env = {
        **os.environ,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "HOME": str(root / "home"),
        "DEVISE_CLIP_TAG_WORDS": "50",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    env.pop("HF_HUB_CACHE", None)
    try:
        yield ClipWorld(
            root, env, hf_home / "hub", vit_file, _photo_folder(root / "photos"), root / "index"
        )
    finally:
        forget_random_clip()  # the stand-in kept for RN50's two layouts


def _json(text: str) -> dict[str, object]:
    return json.loads(text.strip().splitlines()[-1])


def test_hub_cache_layout_is_what_huggingface_hub_reads(world: ClipWorld) -> None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "open_clip_model.safetensors",
        cache_dir=str(world.hub),
    )
    assert found is not None and Path(found).resolve() == world.vit_file.resolve()
    assert (
        world.vit_file.is_symlink()
        and (
            world.hub / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K" / "refs" / "main"
        ).is_file()
    )


def test_every_clip_command_from_the_hub_cache(world: ClipWorld) -> None:
    idx = str(world.index)
    ingest = _json(
        world.ok("ingest", str(world.photos), "--models", "clip", "--index", idx, "--json")
    )
    assert ingest["indexed"] == len(PHOTOS) and ingest["failed"] == {}

    status = _json(world.ok("status", "--index", idx, "--json"))
    clip = status["models"]["clip"]  # type: ignore[index]
    assert clip["id"].startswith("clip:ViT-B-32:sha256:") and clip["points"] == len(PHOTOS)
    meta = json.loads((world.index / "meta.json").read_text())
    assert meta["words"]["clip"]["id"] == clip["id"] and meta["words"]["clip"]["entries"] > 1000
    assert meta["models"]["clip"]["facts"]["quick_gelu"] is False

    found = _json(
        world.ok("search", "a cat", "--model", "clip", "--index", idx, "--json", "-k", "3")
    )
    assert found["model"] == "clip" and len(found["results"]) == 3  # type: ignore[arg-type]
    assert {Path(r["path"]).parent.name for r in found["results"]} <= set(PHOTOS)  # type: ignore[attr-defined]

    probe = world.photos / "cat" / "chelsea.png"
    like = _json(world.ok("similar", str(probe), "--model", "clip", "--index", idx, "--json"))
    assert [Path(r["path"]).name for r in like["results"]] and all(  # type: ignore[attr-defined]
        Path(r["path"]) != probe
        for r in like["results"]  # type: ignore[attr-defined]
    )

    # an image the index lacks goes through the image tower; one it has reuses its vector
    fresh = world.root / "fresh.png"
    shutil.copy(world.photos / "coffee" / "coffee.png", fresh)
    for image in (fresh, probe):
        tags = _json(
            world.ok("tag", str(image), "--model", "clip", "--index", idx, "--json", "-k", "7")
        )
        kinds = [r.get("kind") for r in tags["results"]]  # type: ignore[attr-defined]
        assert len(kinds) == 7 and kinds[:3] == ["label"] * 3 and "hypernym" in kinds

    text = world.ok("tag", str(fresh), "--model", "clip", "--index", idx)
    assert "label" in text and "error" not in text

    dups = _json(world.ok("duplicates", "--model", "clip", "--index", idx, "--json"))
    assert dups["model"] == "clip" and dups["scanned"] == len(PHOTOS)


def test_same_weights_found_another_way_share_the_index(world: ClipWorld) -> None:
    idx = str(world.index)
    if not (world.index / "meta.json").is_file():
        world.ok("ingest", str(world.photos), "--models", "clip", "--index", idx)
    before = _json(world.ok("status", "--index", idx, "--json"))["models"]["clip"]["id"]  # type: ignore[index]

    # the same bytes as an explicit file: the same model, so ingest adds to the index
    copy = world.root / "mine" / "vit.safetensors"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(world.vit_file, copy)
    more = make_image_folder(world.root / "more", {"disc": "disc"}, 2)
    world.ok("ingest", str(more), "--models", "clip", "--clip-weights", str(copy), "--index", idx)
    after = _json(world.ok("status", "--index", idx, "--json"))["models"]["clip"]  # type: ignore[index]
    assert after["id"] == before and after["points"] == len(PHOTOS) + 2

    # the file that index last read is gone: queries find the same weights in the hub cache
    copy.unlink()
    world.ok("search", "a cat", "--model", "clip", "--index", idx, "--json")

    # other weights are refused, naming the way out
    other = write_clip_file(world.root / "other.safetensors", "ViT-B-32", seed=1)
    r = world.devise(
        "ingest", str(more), "--models", "clip", "--clip-weights", str(other), "--index", idx
    )
    assert r.returncode == 1 and "--reembed" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_second_index_of_the_same_model_reads_the_tag_words_from_the_cache(
    world: ClipWorld,
) -> None:
    """CLIP's tag vocabulary is embedded once per model on a machine, not once per index:
    the second index of the same weights reads the vectors the first one cached, says so,
    and tags a photo exactly as the first does."""
    env = {**world.env, "DEVISE_CACHE": str(world.root / "own-cache")}
    photo = str(world.photos / "cat" / "chelsea.png")
    said, tags = [], []
    for name in ("first", "second"):
        idx = str(world.root / f"{name}-index")
        r = world.devise(
            "ingest", str(world.photos / "cat"), "--models", "clip", "--index", idx, env=env
        )
        assert r.returncode == 0, r.stderr[-2000:]
        said.append(r.stderr)
        out = _json(world.ok("tag", photo, "--model", "clip", "--index", idx, "--json", env=env))
        tags.append(out["results"])
    assert "embedding the tag vocabulary" in said[0] and "machine's cache" not in said[0]
    assert "embedding the tag vocabulary" not in said[1]
    assert "tag words from this machine's cache" in said[1], said[1]
    assert tags[0] == tags[1] and tags[0]
    assert len(list((world.root / "own-cache" / "clip-words").glob("*.npy"))) == 1


def test_an_identity_named_by_tag_is_migrated(world: ClipWorld) -> None:
    """Indexes made before identities were hashes named CLIP by its tag."""
    idx = str(world.index)
    if not (world.index / "meta.json").is_file():
        world.ok("ingest", str(world.photos), "--models", "clip", "--index", idx)
    meta_path = world.index / "meta.json"
    meta = json.loads(meta_path.read_text())
    current = meta["models"]["clip"]["id"]
    meta["models"]["clip"]["id"] = "clip:ViT-B-32:laion2b_s34b_b79k"
    meta["models"]["clip"].pop("facts", None)
    meta_path.write_text(json.dumps(meta))
    world.ok("search", "a cat", "--model", "clip", "--index", idx, "--json")
    assert json.loads(meta_path.read_text())["models"]["clip"]["id"] == current


def test_web_app_compare_and_tag_with_clip(world: ClipWorld) -> None:
    """`devise serve` as a user starts it, with the weights in the hub cache: the Compare
    tab, /search_json and /tag_json answer with clip; the CLI reaches it meanwhile."""
    from gradio_client import Client, handle_file

    from tests.cli import free_port, stop, wait_for_server

    idx = str(world.index)
    if not (world.index / "meta.json").is_file():
        world.ok("ingest", str(world.photos), "--models", "clip", "--index", idx)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--index", idx, "--port", str(free_port())],
        env=world.env, cwd=world.root, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        record = wait_for_server(proc, world.index)
        client = Client(record.url, verbose=False)
        out = client.predict(
            "text", "a cat", None, [], "", 0, 3, "", "", [], "", None, api_name="/compare"
        )
        # slots: devise, conse, clip (gallery, tags each), then the status line
        gallery = out[4]["value"] if isinstance(out[4], dict) else out[4]
        assert len(gallery) == 3, out[-1]
        got = json.loads(client.predict(query="a cat", model="clip", k=3, api_name="/search_json"))
        assert got["model"] == "clip" and len(got["results"]) == 3
        probe = world.photos / "rocket" / "rocket.jpg"
        tags = json.loads(
            client.predict(image=handle_file(str(probe)), model="clip", k=5, api_name="/tag_json")
        )
        assert len(tags["results"]) == 5 and tags["results"][0]["kind"] == "label"
        # the CLI, with the app holding the index, is answered by the app
        cli = _json(world.ok("search", "a cat", "--model", "clip", "--index", idx, "--json"))
        assert [r["path"] for r in cli["results"]][:3] == [r["path"] for r in got["results"]]  # type: ignore[index]
    finally:
        stop(proc)


def test_rn50_openai_gets_quick_gelu_from_the_hub_cache(world: ClipWorld) -> None:
    import open_clip
    import torch

    from model.embedders.clip import ClipEmbedder

    path = write_clip_hf(world.hub, "RN50", "openai")
    assert "models--timm--resnet50_clip.openai" in str(path)
    emb = ClipEmbedder("RN50", "openai", weights_cache=world.hub, allow_download=False)
    assert emb.weights_path is not None and emb.weights_path.resolve() == path.resolve()
    assert emb.facts["quick_gelu"] is True
    # QuickGELU is in RN50's text transformer (its image tower uses ReLU): the text vectors
    # are those of open_clip's model with quick-GELU, and not those without it
    texts = ["cat", "a dog on the grass"]
    ours = emb.embed_texts(texts)
    tokens = open_clip.get_tokenizer("RN50")([f"a photo of a {t}." for t in texts])
    with torch.inference_mode():
        for gelu, agree in ((True, True), (False, False)):
            ref = open_clip.create_model("RN50", pretrained=str(path), force_quick_gelu=gelu)
            v = ref.eval().encode_text(tokens).numpy()
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            assert bool(np.all(np.sum(v * ours, axis=1) > 0.99999)) is agree

    # and through the CLI, offline, on the eager path
    idx = str(world.root / "rn50-index")
    args = ("--models", "clip", "--clip-model", "RN50", "--clip-pretrained", "openai")
    world.ok("--runtime", "torch", "ingest", str(world.photos / "cat"), *args, "--index", idx)
    status = _json(world.ok("status", "--index", idx, "--json"))
    assert status["models"]["clip"]["id"].startswith("clip:RN50:sha256:")  # type: ignore[index]
    world.ok("--runtime", "torch", "search", "a cat", "--model", "clip", "--index", idx)


def test_openai_torchscript_archive_from_the_url_cache(world: ClipWorld) -> None:
    """`~/.cache/clip/RN50.pt`, as OpenAI's own package and older open_clip download it: a
    TorchScript archive, read with torch.jit.load (never unpickled)."""
    home = world.root / "url-home"
    target = write_clip_url(home / ".cache" / "clip", "RN50", "openai")
    env = {**world.env, "HOME": str(home), "HF_HOME": str(world.root / "empty-hf")}
    idx = str(world.root / "url-index")
    args = ("--models", "clip", "--clip-model", "RN50", "--clip-pretrained", "openai")
    world.ok(
        "--runtime", "torch", "ingest", str(world.photos / "coffee"), *args, "--index", idx, env=env
    )
    meta = json.loads((Path(idx) / "meta.json").read_text())
    assert Path(meta["models"]["clip"]["weights_file"]).resolve() == target.resolve()
    world.ok(
        "--runtime",
        "torch",
        "tag",
        str(world.photos / "cat" / "chelsea.png"),
        "--model",
        "clip",
        "--index",
        idx,
        env=env,
    )


def test_eval_has_a_clip_row(world: ClipWorld) -> None:
    data = make_image_folder(
        world.root / "eval", {"cat": "disc", "truck": "stripes", "dog": "disc"}, 3
    )
    out = world.root / "eval.json"
    world.ok("eval", str(data), "--models", "clip", "--holdout", "dog", "--json", str(out))
    report = json.loads(out.read_text())
    row = report["models"]["clip"]
    assert row is not None and {"flat_hit@1", "zeroshot_hit@1", "text2image_map"} <= set(row)
    assert 0.0 <= row["flat_hit@1"] <= 1.0 and report["chance"]["flat_hit@1"] == pytest.approx(
        1 / 3
    )


def test_compiled_text_tower_matches_the_padded_model(world: ClipWorld) -> None:
    """The text tower runs on tokens cut after the longest prompt (and compiled by
    OpenVINO): the same vectors as open_clip's own encode_text on the 77-token context."""
    import open_clip
    import torch

    from model.embedders.clip import ClipEmbedder

    prompts = ["a photo of a cat.", "a photo of a great white shark swimming in the sea.", "x"]
    emb = ClipEmbedder(*VIT, weights_file=world.vit_file)
    ours = emb.embed_texts(prompts)
    model = open_clip.create_model(VIT[0], pretrained=str(world.vit_file)).eval()
    with torch.inference_mode():
        ref = model.encode_text(
            open_clip.get_tokenizer(VIT[0])([f"a photo of a {p}." for p in prompts])
        )
    ref = ref.numpy() / np.linalg.norm(ref.numpy(), axis=1, keepdims=True)
    assert np.all(np.sum(ref * ours, axis=1) > 0.9999)


def test_bpe_gives_open_clips_ids() -> None:
    import open_clip

    from model.embedders.clip import _load_tokenizer
    from model.vocab.words import imagenet_class_names

    texts = [f"a photo of a {n}." for n in imagenet_class_names()] + [
        "Café naïve façade", "&amp;lt;b&gt; it's THEY'RE 42 ü", "日本語 😀", "x" * 400,
        "", "  a  b  ",
    ]  # fmt: skip
    ours = _load_tokenizer("ViT-B-32")(texts)
    assert np.array_equal(ours, open_clip.get_tokenizer("ViT-B-32")(texts).numpy())
