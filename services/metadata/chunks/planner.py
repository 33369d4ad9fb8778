"""What to do about one chunk: pure decisions, no I/O.

Given the chunk's version and storage class (from the log) and the copies and parts
that servers report (soft state), `plan` says how healthy the chunk is and which
jobs bring it to its goal. The chunk manager feeds it and sends the jobs.

The order of preference: never lose the last good copy; first make the chunk
readable (repair versions), then reach the goal (replicate, encode, rebuild), and
only once the goal is met remove what is extra (surplus copies, stale versions,
damaged copies, copies of an erasure-coded chunk).
"""

import hashlib
from dataclasses import dataclass

from schemas import chunkmaster_pb2 as cpb
from services.common.storage_class import StorageClass

HEALTHY, UNDER, MISSING, OVER = "healthy", "under_goal", "missing", "over_goal"


@dataclass(frozen=True)
class Holder:
    server: str
    address: str
    part: int          # 0: whole copy; p + 1: part p
    version: int
    length: int
    damaged: bool
    alive: bool        # connected now (a server lost recently is not, but may return)


@dataclass(frozen=True)
class Candidate:
    """A connected server with room for one more chunk."""
    server: str
    address: str
    free_bytes: int


@dataclass
class Plan:
    state: str
    jobs: list[tuple[str, cpb.Job]]   # (server id to send it to, job without an id)


def plan(chunk: int, version: int, sclass: StorageClass, holders: list[Holder],
         candidates: list[Candidate], backend: str = "",
         committed: int | None = None, parts_class: StorageClass | None = None) -> Plan:
    """`committed`: the version of the chunk's last commit (None: not known).
    `parts_class`: for a copies=N class, the ec=K+M shape of parts the chunk may still
    be held in (its file was erasure-coded before): they are decoded back into a copy.
    A chunk no commit ever reached and no server ever reported is healthy: its
    contents are zeros (a write began on it and was given up before any copy was made),
    and it reads as a hole (ChunkManager.never_written)."""
    if committed is None and not holders:
        return Plan(HEALTHY, [])
    good = [h for h in holders if h.alive and not h.damaged and h.version == version]
    copies = [h for h in good if h.part == 0]
    parts = _distinct_parts(h for h in good if h.part)
    if sclass.is_ec:
        return _plan_ec(chunk, version, sclass, holders, copies, parts, candidates, backend,
                        committed)
    if not copies and parts_class is not None and len(parts) >= parts_class.k:
        return _decode(chunk, version, parts_class, holders, parts, candidates)
    return _plan_copies(chunk, version, sclass.copies, holders, copies, candidates,
                        committed, parts_class)


def _decode(chunk, version, shape, holders, parts, candidates) -> Plan:
    """The chunk is readable from its parts only: make one whole copy from them; once
    it is there, `_plan_copies` replicates it and deletes the parts at the goal."""
    targets = spread(chunk, candidates, _copies(holders), 1)
    return Plan(UNDER, [(t.server, _decode_job(chunk, version, shape, parts.values()))
                        for t in targets])


def _decode_job(chunk, version, shape, parts) -> cpb.Job:
    return cpb.Job(chunk=chunk, version=version, decode=cpb.Decode(
        k=shape.k, m=shape.m, sources=_part_sources(parts)))


def _part_sources(parts) -> list[cpb.PartSource]:
    """Where parts can be read: holders here, or region A's locations."""
    return [cpb.PartSource(address=h.address, part=h.part, length=h.length) for h in parts]


def _copies(holders) -> list[Holder]:
    """Holders of whole copies: a server holding only a part may still take a copy
    (parts and copies have their own store ids)."""
    return [h for h in holders if h.part == 0]


def _plan_copies(chunk, version, goal, holders, copies, candidates, committed,
                 parts_class=None) -> Plan:
    if not copies:
        return _repair_versions(chunk, version, holders, committed, parts_class)
    returning = [h for h in holders if not h.alive and h.part == 0 and h.version == version]
    if len(copies) + len(returning) < goal:
        targets = spread(chunk, candidates, _copies(holders),
                         goal - len(copies) - len(returning))
        sources = [h.address for h in copies]
        length = max(h.length for h in copies)
        jobs = [(t.server, cpb.Job(chunk=chunk, version=version, replicate=cpb.Replicate(
            sources=sources, length=length))) for t in targets]
        return Plan(UNDER, jobs)
    if len(copies) < goal:
        return Plan(UNDER, [])    # waiting for a lost server to come back
    extra = sorted(copies, key=lambda h: _free_order(h, candidates))[:len(copies) - goal]
    kept = {h.server for h in copies} - {h.server for h in extra}
    junk = [h for h in holders if h.alive and (h.part or h.server not in kept)]
    jobs = [(h.server, _delete(chunk, h)) for h in junk]
    return Plan(OVER if extra else HEALTHY, jobs)


def _plan_ec(chunk, version, sclass, holders, copies, parts, candidates, backend,
             committed) -> Plan:
    total = sclass.k + sclass.m
    wanted = set(range(total))
    if set(parts) >= wanted:     # at the goal: everything else goes
        keep = {parts[p] for p in wanted}
        junk = [h for h in holders if h.alive and h not in keep]
        return Plan(HEALTHY, [(h.server, _delete(chunk, h)) for h in junk])
    if len(parts) >= sclass.k:   # readable: rebuild the lost parts elsewhere
        missing = sorted(wanted - set(parts))
        targets = spread(chunk, candidates, [h for h in holders if h.part], len(missing))
        sources = _part_sources(parts.values())
        jobs = [(t.server, cpb.Job(chunk=chunk, version=version, rebuild=cpb.Rebuild(
            k=sclass.k, m=sclass.m, part=p + 1, sources=sources)))
            for t, p in zip(targets, missing, strict=False)]
        return Plan(UNDER, jobs)
    if not copies:
        return _repair_versions(chunk, version, holders, committed, sclass)
    if parts:                    # a conversion that stopped half way: start again
        return Plan(UNDER, [(h.server, _delete(chunk, h)) for h in parts.values()])
    targets = spread(chunk, candidates, [], total)
    if len(targets) < total:
        return Plan(UNDER, [])   # too few servers for the parts: keep the copies
    source = min(copies, key=lambda h: h.server)
    return Plan(UNDER, [(source.server, cpb.Job(chunk=chunk, version=version, encode=cpb.Encode(
        k=sclass.k, m=sclass.m, backend=backend, targets=[t.address for t in targets])))])


def readable(version: int, sclass: StorageClass, holders: list[Holder]) -> bool:
    """A good copy at `version`, or enough of its erasure-coded parts."""
    good = [h for h in holders if h.alive and not h.damaged and h.version == version]
    if any(h.part == 0 for h in good):
        return True
    return sclass.is_ec and len(_distinct_parts(h for h in good if h.part)) >= sclass.k


def fetch(chunk: int, version: int, holders: list[Holder], candidates: list[Candidate],
          sources: list[tuple[str, int]], parts=(),
          shape: StorageClass | None = None) -> Plan:
    """A second region holds no good copy at `version`: copy one from region A's
    chunkservers (`sources`: address, length), or, when A holds the chunk only as
    erasure-coded `parts` (locations) of `shape`, decode one from them. A server of
    ours with a stale or damaged copy takes it first (the job replaces that copy):
    stale data is never moved to a newer version here, since region A wrote something
    else since. Once one copy is here, `plan` brings the chunk to its goal from it."""
    distinct = {loc.part for loc in parts}
    if not sources and (shape is None or not shape.is_ec or len(distinct) < shape.k):
        return Plan(MISSING, [])
    room = {c.server for c in candidates}
    replaced = [h.server for h in sorted(holders, key=lambda h: h.server)
                if h.alive and h.part == 0 and h.server in room]
    targets = replaced[:1] or [c.server for c in spread(chunk, candidates, _copies(holders), 1)]
    if sources:
        job = cpb.Job(chunk=chunk, version=version, replicate=cpb.Replicate(
            sources=[address for address, _ in sources],
            length=max(length for _, length in sources)))
    else:
        job = _decode_job(chunk, version, shape, parts)
    return Plan(MISSING, [(target, job) for target in targets])


def _repair_versions(chunk, version, holders, committed: int | None = None,
                     shape: StorageClass | None = None) -> Plan:
    """No good copy at the current version: a write began and never reached the
    copies (its client died). The newest older copies hold the last data written:
    move them to the current version rather than lose the chunk. But only when they
    are at the version of the last commit (when it is known): copies older than that
    miss committed data, and moving them on would serve old contents as current.
    A chunk held only as parts of `shape` (ec=K+M) is repaired the same way, once K
    distinct parts are at that version: the writer that died had not touched them."""
    stale = [h for h in holders if h.alive and not h.damaged and h.version < version]
    pool = _copies(stale)
    if not pool and shape is not None and shape.is_ec:
        pool = [h for h in stale if h.part]
    if not pool:
        return Plan(MISSING, [])
    newest = max(h.version for h in pool)
    if committed is not None and newest != committed:
        return Plan(MISSING, [])
    movers = [h for h in pool if h.version == newest]
    if movers[0].part and len({h.part for h in movers}) < shape.k:
        return Plan(MISSING, [])
    servers = sorted({h.server for h in movers})   # a job moves all it holds of the chunk
    return Plan(MISSING, [(server, cpb.Job(chunk=chunk, version=version, set_version=
                                           cpb.SetVersion(old_version=newest)))
                          for server in servers])


def _delete(chunk: int, holder: Holder) -> cpb.Job:
    return cpb.Job(chunk=chunk, version=holder.version, delete=cpb.Delete(part=holder.part))


def _distinct_parts(holders) -> dict[int, Holder]:
    parts: dict[int, Holder] = {}
    for h in sorted(holders, key=lambda h: h.server):
        parts.setdefault(h.part - 1, h)
    return parts


def spread(chunk: int, candidates: list[Candidate], holders, count: int) -> list[Candidate]:
    """`count` servers that hold nothing of the chunk yet, the emptiest first; among
    servers with about the same room, a hash of the chunk id picks, so chunks spread."""
    taken = {h.server for h in holders}
    free = [c for c in candidates if c.server not in taken]
    free.sort(key=lambda c: (-(c.free_bytes >> 30), mix(chunk, c.server)))
    return free[:count]


def _free_order(holder: Holder, candidates: list[Candidate]) -> int:
    """Surplus copies go from the fullest servers first."""
    room = {c.server: c.free_bytes for c in candidates}
    return room.get(holder.server, 0)


def mix(chunk: int, server: str) -> bytes:
    return hashlib.blake2b(f"{chunk}/{server}".encode(), digest_size=8).digest()
