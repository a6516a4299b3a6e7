"""The `devise` command line. Flags and environment are read here, once, and passed down.

Heavy imports (torch, gensim, qdrant) happen inside each command, so `devise --help` and
text searches stay quick.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from app.cli.common import CliError, _say
from app.cli.flags import (
    _bias,
    _bias_flag,
    _csv,
    _device_flag,
    _fraction,
    _near,
    _positive_int,
    _radius,
    _when,
)
from app.cli.index import cmd_ingest, cmd_status, cmd_words
from app.cli.model import cmd_datasets, cmd_eval, cmd_train
from app.cli.query import (
    _print_answer,
    cmd_duplicates,
    cmd_search,
    cmd_similar,
    cmd_tag,
)
from app.cli.serve import cmd_demo, cmd_serve

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "CliError", "_bias", "_print_answer", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="devise",
        description="DeViSE image search and tagging: images and words in one vector space.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    p.add_argument(
        "--cache",
        default=None,
        help="cache folder for features, compiled models and downloads "
        "(default $DEVISE_CACHE, else ~/.cache/devise-search)",
    )
    p.add_argument(
        "--runtime",
        choices=["auto", "openvino", "torch"],
        default=None,
        help="what runs the backbones: openvino (the fast path: the model compiled for this "
        "CPU, same results), torch (plain PyTorch), or auto, the default: openvino when "
        "installed ($DEVISE_RUNTIME sets the default)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("datasets", help="write a labelled dataset as class folders of images")
    d.add_argument("name", choices=["fashion-mnist", "imagenette"])
    d.add_argument("out", help="output folder")
    d.add_argument("--split", choices=["train", "test"], default="train")
    d.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="at most N images, taken evenly across classes",
    )
    d.set_defaults(func=cmd_datasets)

    t = sub.add_parser("train", help="train a DeViSE projection on an ImageFolder tree")
    t.add_argument("data", help="folder with one sub-folder of images per label")
    t.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    t.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        choices=["efficientnet_lite0", "resnet50", "resnet18"],
        help="ImageNet backbone (efficientnet_lite0 works offline)",
    )
    t.add_argument(
        "--weights",
        default=None,
        help="backbone weights file (.pth/.safetensors); default: ImageNet weights",
    )
    t.add_argument(
        "--words",
        default="glove-6b-50d",
        help="word vectors: glove-6b-50d (packaged), a .txt/.bin path, or a gensim "
        "downloader name such as glove-wiki-gigaword-300",
    )
    t.add_argument(
        "--holdout",
        type=_csv,
        default=(),
        help="comma-separated labels to keep out of training (zero-shot test)",
    )
    t.add_argument(
        "--loss",
        choices=["hinge", "cosine", "hinge+cosine", "hinge-dist"],
        default="hinge",
        help="hinge rank loss (the paper), cosine regression (the blog article), both summed, "
        "or hinge with a margin growing with the labels' word distance",
    )
    t.add_argument(
        "--head",
        choices=["linear", "mlp"],
        default="linear",
        help="linear projection (the paper) or Dense-BN-Dropout-Dense",
    )
    t.add_argument("--margin", type=float, default=0.1, help="hinge margin (default 0.1)")
    t.add_argument(
        "--hypernym-weight",
        type=float,
        default=0.5,
        help="move each label's vector towards its 3 nearest WordNet hypernyms by this "
        "weight (sandal and sneaker share shoe, footwear): unseen labels then land near their "
        "seen relatives; 0 turns it off (default 0.5, the best on validation)",
    )
    t.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="after the projection, also train the backbone's last stage for this "
        "many epochs (slow on a CPU: images are decoded every epoch)",
    )
    t.add_argument("--epochs", type=_positive_int, default=40)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=_positive_int, default=256)
    _device_flag(t)
    t.add_argument("--val-fraction", type=_fraction, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=_positive_int, default=None, help="decode threads")
    t.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8", "auto"],
        default="fp32",
        help="backbone numerics for feature extraction (default fp32)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="compare models: hit@k, zero-shot hit@k, retrieval mAP, speed")
    e.add_argument("data", help="ImageFolder tree of test images")
    e.add_argument("--checkpoint", default=None, help="DeViSE checkpoint (needed for devise)")
    e.add_argument(
        "--models",
        type=_csv,
        default=(),
        help="comma-separated: devise,conse,clip (default: every one that can run here)",
    )
    e.add_argument(
        "--holdout",
        type=_csv,
        default=(),
        help="labels to score as zero-shot (default: the checkpoint's hold-out)",
    )
    e.add_argument("--weights", default=None, help="backbone weights file, if not the default")
    e.add_argument(
        "--batch-size", type=_positive_int, default=None, help="default 64 (256 on a GPU)"
    )
    _device_flag(e)
    e.add_argument("--workers", type=_positive_int, default=None)
    e.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture")
    e.add_argument(
        "--clip-pretrained", default="laion2b_s34b_b79k", help="open_clip pretrained tag"
    )
    e.add_argument(
        "--clip-weights", default=None, metavar="FILE", help="open_clip weights file for clip"
    )
    e.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8", "auto"],
        default="fp32",
        help="backbone numerics (default fp32)",
    )
    e.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
    e.add_argument(
        "--report",
        default=None,
        metavar="FILE",
        help="write each model's top tags on scikit-image's photos (markdown)",
    )
    e.add_argument(
        "--record",
        action="store_true",
        help="also keep the table in the index, for the web app's Compare tab",
    )
    e.add_argument("--index", default=None, help="index for --record (default ./data/index)")
    e.add_argument("--qdrant-url", default=None, help="Qdrant server for --record")
    e.set_defaults(func=cmd_eval)

    def index_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--index",
            default=None,
            help="embedded index folder (default $DEVISE_INDEX or ./data/index)",
        )
        sp.add_argument(
            "--qdrant-url",
            default=None,
            help="use a Qdrant server instead ($QDRANT_URL; key in $QDRANT_API_KEY)",
        )

    i = sub.add_parser("ingest", help="index folders of images (incremental, idempotent)")
    i.add_argument(
        "dirs", nargs="+", metavar="DIR",
        help="folders (or image files) to index: JPEG, PNG, GIF, WebP, BMP, TIFF, PNM, AVIF "
        "and HEIC (iPhones' photos); hidden files and folders are left out",
    )  # fmt: skip
    i.add_argument(
        "--checkpoint",
        default=None,
        help="DeViSE checkpoint ($DEVISE_CHECKPOINT); needed for --models devise",
    )
    i.add_argument(
        "--models",
        type=_csv,
        default=None,
        help="comma-separated models: devise,conse,clip,dup (default: every model that can "
        "run; dup is the near-duplicate vector that `devise duplicates` compares)",
    )
    i.add_argument(
        "--clip-model",
        default="ViT-B-32",
        help="open_clip architecture for clip (default ViT-B-32)",
    )
    i.add_argument(
        "--clip-pretrained",
        default="laion2b_s34b_b79k",
        help="open_clip pretrained tag for clip: its weights are looked for in open_clip's "
        "caches (the Hugging Face hub cache, ~/.cache/clip), else downloaded; its "
        "preprocessing and activation (quick-GELU for OpenAI's) are used with --clip-weights "
        "too (default laion2b_s34b_b79k)",
    )
    i.add_argument(
        "--clip-weights",
        default=None,
        metavar="FILE",
        help="open_clip weights file for clip (else the tag's weights in the local caches, or "
        "a download); the index is tied to the weights' content, not to where they were found",
    )
    i.add_argument("--weights", default=None, help="backbone weights file, if not the default")
    i.add_argument("--prune", action="store_true", help="delete points whose files are gone")
    i.add_argument(
        "--reembed",
        action="store_true",
        help="replace vectors made by a different model instead of refusing",
    )
    i.add_argument(
        "--batch-size", type=_positive_int, default=None, help="default 32 (256 on a GPU)"
    )
    _device_flag(i)
    i.add_argument("--workers", type=_positive_int, default=None, help="decode threads")
    i.add_argument(
        "--precision",
        choices=["fp32", "bf16", "int8", "auto"],
        default=None,
        help="backbone numerics: auto (the default: bf16 where the CPU has it natively, for "
        "the backbones measured to keep their results, see the README; else fp32), fp32, "
        "bf16, or int8 (OpenVINO post-training quantisation; CPU only; fastest, and moves "
        "some eval metrics by a little more than auto allows: see the README)",
    )
    i.add_argument("--json", action="store_true", help="print the summary as JSON")
    i.add_argument(
        "--progress",
        action="store_true",
        help="show the progress bar even when stderr is not a terminal",
    )
    index_flags(i)
    i.set_defaults(func=cmd_ingest)

    w = sub.add_parser("words", help="load the vocabulary's word vectors into the index")
    w.add_argument(
        "--words",
        default=None,
        help="word source (default: the one the DeViSE checkpoint was trained with)",
    )
    w.add_argument(
        "--top",
        type=_positive_int,
        default=100_000,
        help="the N most frequent alphabetic words (default 100000)",
    )
    w.add_argument("--all", action="store_true", help="the whole vocabulary")
    index_flags(w)
    w.set_defaults(func=cmd_words)

    st = sub.add_parser("status", help="what the index holds")
    st.add_argument("--json", action="store_true")
    index_flags(st)
    st.set_defaults(func=cmd_status)

    def query_flags(sp: argparse.ArgumentParser, filters: bool = True) -> None:
        sp.add_argument(
            "--model",
            choices=["devise", "conse", "clip"],
            default=None,
            help="which model's vectors answer (default: devise where the index holds them, "
            "else the first it holds: conse, then clip)",
        )
        if filters:
            sp.add_argument(
                "--label",
                action="append",
                default=None,
                help="only images with this label (repeatable: any of)",
            )
            sp.add_argument("--folder", default=None, help="only images under this folder")
            sp.add_argument(
                "--after",
                type=_when,
                default=None,
                metavar="DATE",
                help="only photos taken on or after DATE (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], "
                "the camera's clock, from EXIF)",
            )
            sp.add_argument(
                "--before",
                type=_when,
                default=None,
                metavar="DATE",
                help="only photos taken before DATE (not on it: --after 2024-06-01 --before "
                "2024-07-01 is June)",
            )
            sp.add_argument(
                "--camera",
                action="append",
                default=None,
                metavar="NAME",
                help="only photos taken with a camera whose name (EXIF make and model) holds "
                "NAME, case-insensitively ('canon', 'pixel 7'); repeatable: any of",
            )
            sp.add_argument(
                "--near",
                type=_near,
                default=None,
                metavar="LAT,LON",
                help="only photos whose EXIF GPS position is within --radius-km of this point "
                "(decimal degrees)",
            )
            sp.add_argument(
                "--radius-km",
                type=_radius,
                default=None,
                metavar="KM",
                help="the radius around --near, in km (default 10)",
            )
        sp.add_argument("-k", type=int, default=10, help="number of results (1-1000)")
        sp.add_argument(
            "--min-score",
            type=float,
            default=None,
            help="drop results scoring below this cosine (0-1)",
        )
        sp.add_argument("--json", action="store_true", help="print JSON")
        # a usage error found after parsing (--radius-km alone) shows this command's usage
        sp.set_defaults(usage_error=sp.error)
        sp.add_argument(
            "--checkpoint",
            default=None,
            help="DeViSE checkpoint, if not the one that built the index",
        )
        sp.add_argument(
            "--precision",
            choices=["fp32", "bf16", "int8", "auto"],
            default=None,
            help="backbone numerics for an image the index has not embedded (as for ingest; "
            "default auto); text queries and indexed images need no backbone",
        )
        _device_flag(sp)
        index_flags(sp)

    s1 = sub.add_parser(
        "search",
        help="text -> images: find images of a compound query, such as 'beach 2:dog -people'",
        description="Terms: words, quoted phrases and image paths; 2:dog weighs a term, "
        "-people (or -2:people) subtracts one. Quote the whole query; one that starts with "
        "- goes after --.",
    )
    s1.add_argument("text", nargs="?", default="", help="the query (may be empty with --image)")
    s1.add_argument("--image", default=None, help="an example image, added to the query's terms")
    _bias_flag(
        s1,
        "devise: a query that is one of the checkpoint's labels ranks images by how "
        "far that label beats every other label, seen labels less this (calibrated "
        "stacking); auto: the checkpoint's value (default)",
    )
    query_flags(s1)
    s1.set_defaults(func=cmd_search)
    s2 = sub.add_parser("similar", help="image -> images: find images like this one")
    s2.add_argument("image")
    query_flags(s2)
    s2.set_defaults(func=cmd_similar)
    s3 = sub.add_parser(
        "tag",
        help="image -> tags: labels, their hypernyms and words for an image",
        description="Tags of an image, each with its kind: a label (a class a model knows, "
        "as a whole phrase), a hypernym (its WordNet generalisation: 'dog' for a German "
        "shepherd) or a frequent word. For conse the score is the probability of the classes "
        "under the tag; tags are ordered by how much they say (Deng et al.'s hedging), so a "
        "sure breed comes before 'dog', and 'dog' before 'animal'.",
    )
    s3.add_argument("image")
    s3.add_argument(
        "--generality",
        choices=["specific", "general"],
        default="specific",
        help="conse: prefer specific tags (a breed, 'espresso') or general ones ('dog', "
        "'drink'); default specific",
    )
    _bias_flag(
        s3,
        "devise: subtract this from the score of every label the checkpoint was "
        "trained on, so that unseen labels and plain words can win (calibrated "
        "stacking); auto: the value the checkpoint chose on validation (default)",
    )
    query_flags(s3, filters=False)
    s3.set_defaults(func=cmd_tag)

    dp = sub.add_parser(
        "duplicates",
        help="groups of near-duplicate images and of identical files (deletes nothing)",
        description="Groups of images whose vectors are within the threshold of each other "
        "(resized, recompressed or slightly cropped copies: 'near'), and of files with the "
        "same content (same sha256: 'exact'), the largest picture first, each with its "
        "dimensions, size and date, so you can choose what to keep. Nothing is deleted.",
    )
    dp.add_argument(
        "--model",
        default="dup",
        help="the vector compared: dup (default: the near-duplicate vector, which ingest "
        "stores), or devise, conse, clip (word-space vectors: poor at telling copies from "
        "look-alikes)",
    )
    dp.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine at or above which two images are near-duplicates, in (0, 1] "
        "(default 0.7 for dup, measured on planted copies: see the README)",
    )
    dp.add_argument("--folder", default=None, help="only images under this folder")
    dp.add_argument("--json", action="store_true", help="print JSON")
    index_flags(dp)
    dp.set_defaults(func=cmd_duplicates)

    sv = sub.add_parser("serve", help="start the web app")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=7860)
    sv.add_argument("--auth", default=None, help="user:pass for the web app ($DEVISE_AUTH)")
    sv.add_argument("--checkpoint", default=None)
    sv.add_argument(
        "--ingest-root",
        action="append",
        default=None,
        metavar="DIR",
        help="folders the app's Index box may index (repeatable; default: your home folder "
        "when bound to loopback, none otherwise)",
    )
    sv.add_argument(
        "--watch",
        nargs="+",
        action="extend",
        default=None,
        metavar="DIR",
        help="index new, changed, moved and deleted photos under these folders while the app "
        "runs (file events, in batches)",
    )
    sv.add_argument(
        "--rescan",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --watch: also re-walk the folders this often, for mounts that send no file "
        "events (default 300; 0: never)",
    )
    index_flags(sv)
    _device_flag(sv)
    sv.set_defaults(func=cmd_serve)

    m = sub.add_parser("demo", help="build the offline Fashion-MNIST demo and launch the web app")
    m.add_argument("--dir", default="data/demo", help="where the demo's data lives")
    m.add_argument("--no-launch", action="store_true", help="stop after building")
    m.add_argument(
        "--train",
        type=_positive_int,
        default=None,
        metavar="N",
        help="Fashion-MNIST images to train on (default 3000; CI builds a smaller demo)",
    )
    m.add_argument(
        "--gallery",
        type=_positive_int,
        default=None,
        metavar="N",
        help="Fashion-MNIST test images to index and search (default 1000)",
    )
    m.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    m.add_argument("--port", type=int, default=7860)
    index_flags(m)
    _device_flag(m)
    m.set_defaults(func=cmd_demo)
    return p


def _known_errors() -> tuple[type[BaseException], ...]:
    from app.search.errors import known_errors

    errors: list[type[BaseException]] = [CliError, *known_errors()]
    remote = sys.modules.get("app.remote")
    if remote is not None:
        errors.append(remote.RemoteError)
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "radius_km", None) is not None and not args.near:
        args.usage_error("--radius-km needs --near LAT,LON")
    from model.fastpath import set_default_runtime

    saved_cache = os.environ.get("DEVISE_CACHE")
    if args.cache:
        os.environ["DEVISE_CACHE"] = str(Path(args.cache).expanduser())
    saved_runtime = set_default_runtime(args.runtime) if args.runtime else None
    from model.device import set_default_device

    saved_device = set_default_device(None)
    try:
        return _run(args)
    finally:  # main() is also called in-process (tests, the demo): leave no trace
        set_default_device(saved_device)
        if saved_cache is None:
            os.environ.pop("DEVISE_CACHE", None)
        else:
            os.environ["DEVISE_CACHE"] = saved_cache
        if args.runtime:
            set_default_runtime(saved_runtime)


def _choose_device(args: argparse.Namespace) -> None:
    """Resolve --device (or $DEVISE_DEVICE) once, for the commands that run models, and make
    it this process's device; other commands never ask torch about CUDA."""
    if not hasattr(args, "device"):
        return
    from model.device import announce, prepare, resolve_device, set_default_device

    device = resolve_device(args.device)
    set_default_device(device)
    prepare(device)
    announce(device)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _choose_device(args)
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`devise search ... --json | head`): stop quietly, and point
        # stdout at devnull so that the interpreter's last flush raises nothing either
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - known errors print one line; others re-raise
        if isinstance(e, _known_errors()):
            _say(f"error: {e}")
            return EXIT_ERROR
        if args.verbose or os.environ.get("DEVISE_DEBUG"):
            raise
        _say(f"error: {type(e).__name__}: {e} (run with -v for the traceback)")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
