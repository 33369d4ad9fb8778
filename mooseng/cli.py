"""The `mooseng` command line."""

import argparse
import json
import sys

from services.metadata.commandfile import CommandFileError
from services.metadata.projection import ProjectionError


def _demo(args) -> int:
    from mooseng.demo import run_demo
    run_demo(args.data)
    return 0


def _fold(args) -> int:
    """Fold a command file into a projection, resuming after its applied index."""
    from services.metadata.applier import Applier
    from services.metadata.commandfile import read_commands
    from services.metadata.projection import open_projection

    with open_projection(args.data) as proj:
        applier = Applier(proj)
        start = proj.applied_index
        group: list[tuple[int, bytes]] = []
        for index, data in enumerate(read_commands(args.commands), start=1):
            if index <= start:
                continue
            group.append((index, data))
            if len(group) >= args.group:
                applier.apply_many(group)
                group.clear()
        applier.apply_many(group)
        print(json.dumps({"resumed_after": start, "applied_index": proj.applied_index,
                          "content_digest": proj.content_digest()}))
    return 0


def _tree(args) -> int:
    from mooseng.tree import render
    from services.metadata.projection import open_projection

    with open_projection(args.data) as proj:
        for line in render(proj):
            print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mooseng", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="fold a scripted set of commands and print the tree")
    demo.add_argument("--data", help="keep the projection and command file here "
                                     "(default: a temporary directory)")
    demo.set_defaults(func=_demo)

    fold = sub.add_parser("fold", help="fold a command file into a projection")
    fold.add_argument("--commands", required=True, help="command file to read")
    fold.add_argument("--data", required=True, help="projection directory (created if new)")
    fold.add_argument("--group", type=int, default=64,
                      help="commands per atomic write (default 64)")
    fold.set_defaults(func=_fold)

    tree = sub.add_parser("tree", help="print the namespace held in a projection")
    tree.add_argument("--data", required=True, help="projection directory")
    tree.set_defaults(func=_tree)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CommandFileError, ProjectionError, OSError) as exc:
        print(f"mooseng: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
