"""`mooseng restore --from ARCHIVE --at T --path /proj --into /proj.restored --masters ...`:
the subtree as it was at T, brought back into the live cluster (services/logship/undelete).
The past is rebuilt in a scratch directory that is removed afterwards."""

import asyncio
import json
import os
import sys
import tempfile


def check_arguments(args) -> None:
    """ValueError when --path/--into/--masters are not given together, or with --to."""
    given = {"--path": args.path, "--into": args.into, "--masters": args.masters}
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise ValueError(f"bringing a subtree back needs --path, --into and --masters "
                         f"(missing: {', '.join(missing)})")
    if args.to:
        raise ValueError("--to builds a whole metadata directory, --path/--into bring one "
                         "subtree back into the live cluster: give one or the other")


def undelete(args, target: dict) -> int:
    from fuse_client.metadata_client import ClusterUnavailableError
    from services.common.addresses import address_list
    from services.common.posix.errors import FsError
    from services.logship.archive import Archive
    from services.logship.restore import replay
    from services.logship.undelete import UndeleteError
    from services.metadata.projection import open_projection

    check_arguments(args)
    masters = address_list(args.masters)
    with tempfile.TemporaryDirectory(prefix="mooseng-undelete-") as scratch:
        past = os.path.join(scratch, "projection")
        with Archive(args.archive, readonly=True) as archive:
            rebuilt = replay(archive, past, **target)
        with open_projection(past) as view:
            try:
                summary = asyncio.run(_run(view, masters, args.path, args.into))
            except (UndeleteError, ClusterUnavailableError, FsError) as exc:
                print(f"mooseng: {exc}", file=sys.stderr)
                return 2
    summary["index"] = rebuilt["index"]
    print(json.dumps(summary))
    return 0


async def _run(view, masters: list[str], path: str, into: str) -> dict:
    from fuse_client.metadata_client import MetadataClient
    from services.logship.undelete import undelete as bring_back
    async with MetadataClient(masters, name=f"mooseng restore --path {path}",
                              deadline_s=120) as md:
        return await bring_back(view, md, path, into)
