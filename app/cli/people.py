"""`devise people`: the people the face stage found (list, show), and the writes that fix
them (name, merge, remove). Through the app while it holds the index."""

from __future__ import annotations

import argparse
import json

from app.cli.common import read_settings
from app.cli.flags import index_flags
from app.remote import app_holding


def cmd_people(args: argparse.Namespace) -> int:
    from app.search import people

    action = args.action or "list"
    given = (getattr(args, "first", None), getattr(args, "second", None))
    values = [str(v) for v in given if v is not None]
    settings = read_settings(args)
    remote = app_holding(settings)
    if remote is not None:
        out = remote.people(action, values)
    else:
        store = settings.open_store()
        try:
            out = people.run(store, action, values)
        finally:
            store.close()
    if args.json:
        print(json.dumps(out))
    else:
        print("\n".join(people.lines(action, out)))
    return 0


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--json", action="store_true", help="print the answer as JSON")
    index_flags(sp)
    sp.set_defaults(func=cmd_people)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "people",
        help="the people in the photos: list them, name one, merge two, take a face out",
        description="People are faces grouped by who they are (found by `devise ingest`; "
        "docs/people.md). Without an action: list them (id, name, faces, photos, a sample).",
    )
    _common(p)
    p.set_defaults(action="list")
    acts = p.add_subparsers(dest="action", metavar="ACTION")
    show = acts.add_parser("show", help="a person's faces (their ids, for `remove`)")
    show.add_argument("first", metavar="ID", help="a person's id or name")
    name = acts.add_parser("name", help="name a person: a search for the name finds them")
    name.add_argument("first", metavar="ID", help="the person's id")
    name.add_argument("second", metavar="NAME", help="the name (quote several words)")
    merge = acts.add_parser("merge", help="one person, two ids: OTHER's faces join ID")
    merge.add_argument("first", metavar="ID", help="the person who stays")
    merge.add_argument("second", metavar="OTHER", help="the person whose faces join ID")
    remove = acts.add_parser("remove", help="take a wrong face out of its person")
    remove.add_argument("first", metavar="FACE_ID", help="from `devise people show ID`")
    for sp in (show, name, merge, remove):
        _common(sp)
