"""`mooseng metalogger`: follow the committed log into an archive."""

import re
import sys

from services.common.addresses import AddressError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)")
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(text: str) -> float:
    """"90" or "90s", "30m", "12h", "7d", "2w" -> seconds."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m or float(m[1]) <= 0:
        raise AddressError(f"{text!r} is not a duration: give a positive number with s, m, "
                           "h, d or w (for example 7d or 12h)")
    return float(m[1]) * _SECONDS[m[2]]


def parse_size(text: str) -> int:
    """"500M", "10G", "1.5T", "4096" -> bytes (K, M, G, T are powers of 1024)."""
    m = _SIZE.fullmatch(text.strip().lower())
    if not m or float(m[1]) <= 0 or (m[3] and not m[2] and m[3] != "b"):
        raise AddressError(f"{text!r} is not a size: give a positive number with K, M, G or "
                           "T (powers of 1024; for example 500M or 20G)")
    return int(float(m[1]) * 1024 ** _POWERS[m[2]])


def add_commands(sub) -> None:
    """Register the subcommand on the top-level parser's subparsers."""
    p = sub.add_parser(
        "metalogger", help="follow the metadata log into an archive (point-in-time "
                           "restores, disaster recovery)",
        description="Follow the committed metadata log of any of --masters into the "
                    "archive in --data, with the cluster's snapshots. Resumes where the "
                    "archive ends; SIGTERM stops it cleanly.")
    p.add_argument("--masters", required=True, metavar="HOST:PORT,...",
                   help="the metadata nodes; any of them will do, the most up to date is "
                        "followed")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the archive (created if missing)")
    p.add_argument("--retain-age", metavar="DURATION",
                   help="drop archived history older than this (for example 7d); the "
                        "newest snapshot and what follows it are always kept")
    p.add_argument("--retain-size", metavar="SIZE",
                   help="drop the oldest history while the archive is larger (e.g. 20G)")
    p.add_argument("--retention-interval", metavar="DURATION", default="60s",
                   help="how often retention is applied (default 60s)")
    p.add_argument("--no-effects", dest="effects", action="store_false",
                   help="do not run the effects builder (a background process at the "
                        "lowest priority that folds the archive once, so that restores "
                        "write what commands did instead of folding them again)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics")
    p.set_defaults(func=_metalogger)


def _metalogger(args) -> int:
    import asyncio
    import logging

    from services.common.addresses import address_list, host_port
    from services.logship.archive import Archive, ArchiveError
    from services.logship.follower import FollowOptions

    options = FollowOptions(
        masters=address_list(args.masters),
        retain_age_s=parse_duration(args.retain_age) if args.retain_age else None,
        retain_bytes=parse_size(args.retain_size) if args.retain_size else None,
        retention_every_s=parse_duration(args.retention_interval))
    metrics_at = host_port(args.metrics_listen) if args.metrics_listen else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s metalogger %(message)s")
    try:
        archive = Archive(args.data, create=True)
    except ArchiveError as exc:
        print(f"mooseng metalogger: {exc}", file=sys.stderr)
        return 2
    for note in archive.recovery_notes:
        logging.warning("archive recovery: %s", note)
    try:
        return asyncio.run(_run(archive, options, metrics_at, args.effects))
    except ArchiveError as exc:
        print(f"mooseng metalogger: {exc}", file=sys.stderr)
        return 1


async def _run(archive, options, metrics_at: str | None, effects: bool) -> int:
    import asyncio
    import contextlib
    import logging
    import signal

    from services.logship.effects_builder import supervise
    from services.logship.follower import Follower, FollowStats

    stats = FollowStats(archived_index=archive.last_index)
    if metrics_at:
        from services.common.metrics import serve_metrics
        from services.logship.follower_metrics import publish
        serve_metrics("mooseng-metalogger", metrics_at)
        publish(stats)
    logging.info("archive %s ends at index %d; following %s", archive.directory,
                 archive.last_index, ",".join(options.masters))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    builder = asyncio.create_task(supervise(archive.directory), name="effects") \
        if effects else None
    failure = None
    while not stop.is_set():
        follower = Follower(archive, options)
        follower.stats = stats                  # one set of figures across reopenings
        stats.archived_index = archive.last_index
        failure = await _follow(follower, stop)
        await follower.close()
        if not _disk_full(failure):
            break
        archive.close()
        logging.error("the archive's disk is full (%s): nothing more is archived until "
                      "space is freed in %s; then the archive is opened again and "
                      "following goes on where it ends (from a snapshot if the cluster "
                      "compacted its log meanwhile)", failure, archive.directory)
        if not await _space_back(archive.directory, stop):
            return 0
        archive = _reopen(archive.directory)
        failure = None
    if builder is not None:
        builder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await builder
    logging.info("stopped; the archive ends at index %d", stats.archived_index)
    if failure is not None:
        raise failure
    return 0


async def _follow(follower, stop) -> Exception | None:
    """Follow until asked to stop (None) or until archiving fails (the error)."""
    import asyncio
    import contextlib
    import logging

    task = asyncio.create_task(follower.run(), name="metalogger")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await task
        except Exception as exc:   # the archive could not be written
            if not _disk_full(exc):
                logging.exception("the metalogger stopped after an error")
            return exc
    return None


def _disk_full(exc: Exception | None) -> bool:
    import errno
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


async def _space_back(directory: str, stop, room: int = 16 << 20) -> bool:
    """Wait until `room` bytes are free in `directory`; False if asked to stop first."""
    import asyncio
    import contextlib
    import logging
    import os

    while not stop.is_set():
        st = os.statvfs(directory)
        if st.f_bavail * st.f_frsize >= room:
            logging.warning("%d MiB free again in %s: archiving again",
                            st.f_bavail * st.f_frsize >> 20, directory)
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return False


def _reopen(directory: str):
    import logging

    from services.logship.archive import Archive

    archive = Archive(directory, create=True)
    for note in archive.recovery_notes:
        logging.warning("archive recovery: %s", note)
    return archive
