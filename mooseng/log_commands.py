"""`mooseng log ...` and `mooseng restore`: tools over a metalogger archive.

Every error a user can cause (a wrong path, a damaged archive, a bad time) is one line
on stderr and exit status 2; `log verify` and `log diff` exit 1 when they find a problem.
"""

import json
import os
import sys
from collections.abc import Callable


def add_commands(sub) -> None:
    """Register the subcommands on the top-level parser's subparsers."""
    log = sub.add_parser("log", help="read, check and replay a metalogger archive",
                         description="Tools over a metalogger archive (the --data "
                                     "directory of `mooseng metalogger`). They take no "
                                     "lock: a running metalogger's archive can be read.")
    tools = log.add_subparsers(dest="log_tool", metavar="TOOL", required=True)

    dump = tools.add_parser("dump", help="one line per archived command")
    dump.add_argument("archive")
    dump.add_argument("--from", dest="lo", type=int, metavar="N", help="first index shown")
    dump.add_argument("--to", dest="hi", type=int, metavar="M", help="last index shown")
    dump.add_argument("--json", action="store_true", help="one JSON object per line")
    dump.add_argument("--results", action="store_true",
                      help="also each command's result (replays the archive up to it)")
    dump.set_defaults(func=_guarded(_dump))

    verify = tools.add_parser("verify", help="check every checksum, index continuity and "
                                             "snapshot; exit 1 at the first problem")
    verify.add_argument("archive")
    verify.set_defaults(func=_guarded(_verify))

    replay = tools.add_parser("replay", help="fold the archive into a projection")
    replay.add_argument("archive")
    replay.add_argument("--to", required=True, metavar="DIR", help="a new directory")
    _target_arguments(replay)
    _effects_argument(replay)
    replay.set_defaults(func=_guarded(_replay))

    diff = tools.add_parser("diff", help="compare two projections key by key; exit 1 if "
                                         "they differ")
    diff.add_argument("dir1", help="a projection, or a metadata node's data directory")
    diff.add_argument("dir2")
    diff.add_argument("--limit", type=int, default=20, help="differences shown (default 20)")
    diff.set_defaults(func=_guarded(_diff))

    stats = tools.add_parser("stats", help="operations by type, per session, per hour")
    stats.add_argument("archive")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(func=_guarded(_stats))

    restore = sub.add_parser(
        "restore", help="rebuild a metadata node's data directory from an archive, as "
                        "it was at a time or index",
        description="Build DIR as the metadata was at --at TIME or --index N (default: "
                    "the archive's end): the nearest snapshot, then the archived commands "
                    "after it. Start a new cluster from it: copy DIR to every voter, or start "
                    "`mooseng metadata --id 1 --data DIR` with one empty node and the "
                    "other empty nodes once that one caught up (by snapshot).")
    restore.add_argument("--from", dest="archive", required=True, metavar="ARCHIVE")
    restore.add_argument("--to", metavar="DIR", help="a new directory")
    _target_arguments(restore)
    restore.add_argument("--voters", metavar="ID,ID,...",
                         help="the new cluster's voters (default: the membership the "
                              "archive recorded)")
    _effects_argument(restore)
    undelete = restore.add_argument_group(
        "bringing one subtree back into the live cluster (instead of --to)",
        "the subtree at --path as it was at the target is made again at --into, a new "
        "path, by commands to the live cluster; file contents are the chunks the "
        "cluster retains after a delete (--chunk-retention, a day by default)")
    undelete.add_argument("--path", metavar="/PATH", help="the subtree as it was")
    undelete.add_argument("--into", metavar="/PATH", help="where it comes back (must not "
                                                        "exist)")
    undelete.add_argument("--masters", metavar="HOST:PORT,...", help="the live cluster")
    restore.set_defaults(func=_guarded(_restore))


def _target_arguments(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--at", metavar="TIME",
                       help="ISO-8601, e.g. 2026-11-26T10:15:00Z (UTC if no zone given)")
    group.add_argument("--index", type=int, metavar="N", help="a log index")


def _effects_argument(parser) -> None:
    parser.add_argument("--no-effects", dest="effects", action="store_false",
                        help="fold every archived command, even where the metalogger "
                             "recorded what it did (slower; to check those records)")


def _guarded(run: Callable) -> Callable:
    """Errors a user can cause: one clear line, exit 2, no traceback."""
    def call(args) -> int:
        from services.logship.archive import ArchiveError
        try:
            return run(args)
        except (ArchiveError, ValueError, OSError) as exc:
            print(f"mooseng: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:   # `mooseng log dump ... | head`
            return 0
    return call


def _target(args) -> dict:
    from services.logship.tools.describe import parse_time
    if args.at is not None:
        return {"at_ns": parse_time(args.at)}
    return {"index": args.index}


def _open(path: str):
    from services.logship.archive import Archive
    return Archive(path, readonly=True)


def _print(text: str) -> None:
    print(text)


def _dump(args) -> int:
    from services.logship.tools.dump import dump
    with _open(args.archive) as archive:
        try:
            dump(archive, _print, args.lo, args.hi, args.json, args.results)
        except BrokenPipeError:
            sys.stderr.close()   # the reader went away: not an error
    return 0


def _verify(args) -> int:
    from services.logship.tools.verify import verify
    return 1 if verify(args.archive, _print) else 0


def _replay(args) -> int:
    from services.logship.tools.replay import replay
    target = _target(args)
    created = not os.path.exists(args.to)
    with _open(args.archive) as archive:
        try:
            print(json.dumps(replay(archive, args.to, use_effects=args.effects, **target)))
        except BaseException:
            _remove_if(created, args.to)
            raise
    return 0


def _diff(args) -> int:
    from services.logship.tools.diff import diff
    return 1 if diff(args.dir1, args.dir2, _print, args.limit) else 0


def _stats(args) -> int:
    from services.logship.tools.stats import render, stats
    with _open(args.archive) as archive:
        report = stats(archive)
    if args.json:
        print(json.dumps(report))
    else:
        for line in render(report):
            print(line)
    return 0


def _restore(args) -> int:
    from services.logship.restore import restore
    if args.path or args.into or args.masters:
        from mooseng.undelete_command import undelete
        return undelete(args, _target(args))
    if not args.to:
        raise ValueError("give --to DIR (or --path, --into and --masters to bring one "
                         "subtree back into the live cluster)")
    voters = None
    if args.voters:
        try:
            voters = [int(v) for v in args.voters.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--voters {args.voters!r}: give node ids such as 1,2,3") from None
    target = _target(args)
    created = not os.path.exists(args.to)
    with _open(args.archive) as archive:
        try:
            summary = restore(archive, args.to, voters=voters, use_effects=args.effects,
                              **target)
        except BaseException:
            _remove_if(created, args.to)
            raise
    print(json.dumps(summary))
    print(f"restored to index {summary['index']}. Either copy {args.to} to every voter's "
          f"data directory, or start this node (mooseng metadata --id "
          f"{summary['voters'][0]} --data {args.to} ...) with ONE empty node, and the other "
          f"empty nodes only once that one has caught up: two empty voters could elect a "
          f"leader with an empty log", file=sys.stderr)
    return 0


def _remove_if(created: bool, path: str) -> None:
    """A failed run removes only the directory it created itself."""
    if created:
        import shutil
        shutil.rmtree(path, ignore_errors=True)
