"""`mooseng log stats`: what the archive holds: operations by type, per session, per
hour (UTC), errors aside (results need a replay; stats reads only the log)."""

from collections import Counter

from google.protobuf.message import DecodeError

from schemas import namespace_pb2 as pb
from services.logship.archive import Archive
from services.logship.tools.describe import KIND_NAMES, iso_time
from services.metadata.raft.messages import NORMAL


def stats(archive: Archive, lo: int | None = None, hi: int | None = None) -> dict:
    by_op, by_session, by_hour, kinds = Counter(), Counter(), Counter(), Counter()
    first_t = last_t = None
    count = 0
    for batch in archive.batches(lo, hi):
        for e in batch:
            count += 1
            kinds[KIND_NAMES.get(e.kind, str(e.kind))] += 1
            if e.time_ns:   # entries before the first command carry no time
                first_t = e.time_ns if first_t is None else min(first_t, e.time_ns)
                last_t = e.time_ns if last_t is None else max(last_t, e.time_ns)
            if e.kind != NORMAL:
                continue
            try:
                cmd = pb.Command.FromString(e.data)
            except DecodeError:
                by_op["unparsable"] += 1
                continue
            by_op[cmd.WhichOneof("op") or "none"] += 1
            by_session[str(cmd.session)] += 1
            by_hour[iso_time(e.time_ns)[:13] + ":00Z"] += 1
    return {
        "entries": count, "first_index": archive.first_index, "last_index": archive.last_index,
        "first_time": iso_time(first_t) if first_t is not None else None,
        "last_time": iso_time(last_t) if last_t is not None else None,
        "kinds": dict(kinds.most_common()), "operations": dict(by_op.most_common()),
        "sessions": dict(by_session.most_common()), "hours": dict(sorted(by_hour.items())),
        "snapshots": [s.index for s in archive.snapshots()], "bytes": archive.size_bytes,
    }


def render(report: dict) -> list[str]:
    out = [f"entries {report['first_index']}..{report['last_index']} ({report['entries']}), "
           f"{report['bytes']} bytes, from {report['first_time']} to {report['last_time']}",
           f"snapshots at {report['snapshots']}", f"kinds: {report['kinds']}",
           "operations:"]
    out += [f"  {op:<14} {n:>10}" for op, n in report["operations"].items()]
    out.append("per session (0: not a client request):")
    out += [f"  {s:<14} {n:>10}" for s, n in report["sessions"].items()]
    out.append("per hour (UTC):")
    out += [f"  {h:<20} {n:>10}" for h, n in report["hours"].items()]
    return out
