"""`mooseng region follow|status|seed|promote`: a second region that follows the first
one's log, reports how far behind it is, is seeded again from the first one's
snapshot, and becomes a primary when told.

Errors a user can cause are one line on stderr; `follow` exits 3 when region B was
promoted (fenced), 4 when region A no longer holds what B needs (re-seed B) and 5
when B has a namespace of its own.
"""

import json
import sys

from services.common.addresses import address_list

FENCED, RESEED, NOT_EMPTY = 3, 4, 5


def add_commands(sub) -> None:
    """Register the subcommands on the top-level parser's subparsers."""
    region = sub.add_parser("region", help="a second region: follow, status, seed, promote",
                            description="Region B is a metadata cluster started with "
                                        "--region-follower; `region follow` ships region "
                                        "A's committed log into it.")
    tools = region.add_subparsers(dest="region_tool", metavar="TOOL", required=True)

    follow = tools.add_parser("follow", help="ship region A's committed log into region B")
    follow.add_argument("--from", dest="source", required=True, metavar="HOST:PORT,...",
                        help="region A's metadata nodes")
    follow.add_argument("--to", dest="target", required=True, metavar="HOST:PORT,...",
                        help="region B's metadata nodes (run with --region-follower)")
    follow.add_argument("--in-flight", type=int, default=4, metavar="N",
                        help="batches proposed to B and not yet answered (default 4)")
    follow.set_defaults(func=_follow)

    status = tools.add_parser("status", help="how far region B is behind region A")
    status.add_argument("--masters", required=True, metavar="HOST:PORT,...",
                        help="region B's metadata nodes")
    status.add_argument("--source", metavar="HOST:PORT,...",
                        help="region A's metadata nodes: ask A's commit index now "
                             "(otherwise: as the shipper last heard it)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    seed = tools.add_parser("seed", help="start region B again from region A's latest "
                                         "snapshot (when A compacted past B's position)")
    seed.add_argument("--from", dest="source", required=True, metavar="HOST:PORT,...",
                      help="region A's metadata nodes")
    seed.add_argument("--into", required=True, metavar="DIR,...",
                      help="new (or empty) data directories for region B's nodes, in the "
                           "order of their ids; B stopped, its old directories moved aside")
    seed.add_argument("--voters", metavar="ID,...",
                      help="region B's voting node ids (default: 1..the number of --into "
                           "directories)")
    seed.add_argument("--staging", metavar="DIR",
                      help="where A's snapshot is fetched to (default: next to the first "
                           "--into directory); a fetch that failed resumes from it")
    seed.set_defaults(func=_seed)

    promote = tools.add_parser("promote", help="make region B a writable primary; it "
                                               "refuses region A's entries from then on")
    promote.add_argument("--masters", required=True, metavar="HOST:PORT,...",
                         help="region B's metadata nodes")
    promote.add_argument("--reason", default="", help="kept in B's log, for humans")
    promote.set_defaults(func=_promote)


def _follow(args) -> int:
    import asyncio
    import logging
    import signal

    from services.logship.shipper import (
        FencedError,
        NotEmptyError,
        ReseedNeededError,
        ShipOptions,
        Shipper,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s shipper %(message)s")
    options = ShipOptions(source=address_list(args.source), target=address_list(args.target),
                          in_flight=max(1, args.in_flight))

    async def main() -> int:
        shipper = Shipper(options)
        task = asyncio.create_task(shipper.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            logging.info("stopped; region B holds region A's log up to index %d",
                         shipper.stats.shipped_index)
            return 0
        except FencedError as exc:
            print(f"mooseng region follow: {exc}", file=sys.stderr)
            return FENCED
        except ReseedNeededError as exc:
            print(f"mooseng region follow: {exc}", file=sys.stderr)
            return RESEED
        except NotEmptyError as exc:
            print(f"mooseng region follow: {exc}", file=sys.stderr)
            return NOT_EMPTY
        finally:
            await shipper.close()
        return 0
    return asyncio.run(main())


def _seed(args) -> int:
    import asyncio
    import os
    import shutil

    from services.logship.region_seed import SeedError, fetch, install
    from services.logship.snapshot_fetch import SnapshotFetchError

    directories = [os.path.abspath(d) for d in args.into.split(",") if d.strip()]
    try:
        voters = ([int(v) for v in args.voters.split(",")] if args.voters
                  else list(range(1, len(directories) + 1)))
    except ValueError:
        print(f"mooseng region seed: --voters {args.voters!r} is not a list of node ids "
              "(for example 1,2,3)", file=sys.stderr)
        return 2
    staging = args.staging or directories[0].rstrip("/") + ".seed-staging"
    try:
        fetched = asyncio.run(fetch(address_list(args.source), staging))
        seeded = install(fetched, directories, voters)
    except (SeedError, SnapshotFetchError) as exc:
        print(f"mooseng region seed: {exc}", file=sys.stderr)
        return 1
    shutil.rmtree(staging, ignore_errors=True)
    print(f"region B seeded from region A's snapshot at index {seeded.index} (term "
          f"{seeded.term}) in {', '.join(seeded.directories)}: start B's nodes on them "
          "with --region-follower, then `mooseng region follow`")
    return 0


def _status(args) -> int:
    import asyncio

    from services.common.region_lag import describe, lag
    from services.logship.region_status import RegionUnavailableError, region_info

    async def source_commit() -> int | None:
        if not args.source:
            return None
        from mooseng.status import gather
        nodes = await gather(address_list(args.source), timeout=1.0)
        commits = [n["commit_index"] for n in nodes if n.get("commit_index") is not None]
        return max(commits) if commits else None

    async def main():
        return await region_info(address_list(args.masters)), await source_commit()
    try:
        info, commit = asyncio.run(main())
    except RegionUnavailableError as exc:
        print(f"mooseng region status: {exc}", file=sys.stderr)
        return 2
    behind = lag(info, commit)
    if args.json:
        print(json.dumps({"following": info.following, "promoted": info.promoted,
                          "shipped_index": info.shipped_index,
                          "shipped_term": info.shipped_term,
                          "shipped_time_ns": info.shipped_time_ns,
                          "source_commit": max(info.source_commit, commit or 0),
                          "behind_entries": behind.entries,
                          "behind_seconds": behind.seconds}))
    else:
        print(describe(info, commit))
    return 0


def _promote(args) -> int:
    import asyncio
    import errno
    import time

    from schemas import namespace_pb2 as pb
    from services.metadata.raft.proposer import NoLeaderError, OutcomeUnknownError, Proposer

    command = pb.Command(time_ns=time.time_ns(), caller=pb.Caller(),
                         promote_region=pb.PromoteRegion(reason=args.reason))

    async def main() -> tuple[int, pb.Result]:
        proposer = Proposer(address_list(args.masters))
        try:
            index, [raw] = await proposer.propose([command.SerializeToString()])
        finally:
            await proposer.close()
        return index, pb.Result.FromString(raw)
    try:
        index, result = asyncio.run(main())
    except (NoLeaderError, OutcomeUnknownError) as exc:
        print(f"mooseng region promote: {exc}; run it again (promoting twice is "
              "harmless)", file=sys.stderr)
        return 2
    if result.errno == errno.EALREADY:
        print(f"mooseng region promote: {result.message}")
        return 0
    if result.errno:
        print(f"mooseng region promote: {result.message}", file=sys.stderr)
        return 1
    print(f"region promoted at index {index}: it takes client writes, and refuses entries "
          "shipped from the old primary; stop `mooseng region follow`")
    return 0
