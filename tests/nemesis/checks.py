"""What a run is judged by, once the faults have healed."""

import os
import time

from schemas import namespace_pb2 as pb
from services.logship.archive import Archive
from services.metadata.namespace import reads
from services.metadata.projection import open_projection
from services.metadata.raft.log_store import LogStore
from tests.property.linearizability import check_partitioned, kv_model

ROOT_CALLER = pb.Caller(uid=0, gid=0)


def linearizability(ops, timeout_s: float) -> dict:
    """Check every register's history (one key at a time)."""
    result = check_partitioned(ops, kv_model(), key_of=lambda op: op.input[1],
                               timeout_s=timeout_s)
    return {"ok": result.ok, "inconclusive": result.timed_out,
            "explanation": "" if result.ok else result.explanation[:4000]}


def node_views(data_dirs: dict[int, str], ns: int) -> dict[int, dict]:
    """Each stopped node's applied index, content digest and names in ns/."""
    views = {}
    for i, path in data_dirs.items():
        with open_projection(f"{path}/projection") as proj:
            names, cookie = set(), 0
            while page := reads.readdir(proj, ROOT_CALLER, ns, cookie):
                names.update(e.name for e in page)
                cookie = page[-1].cookie
            views[i] = {"applied": proj.applied_index, "digest": proj.content_digest(),
                        "names": names}
    return views


def namespace(views: dict[int, dict], acked: set[bytes], unknown: set[bytes]) -> dict:
    """acknowledged ⊆ present ⊆ acknowledged ∪ unknown on every node, and nodes that
    applied the same index hold the same namespace."""
    lost = max((len(acked - v["names"]) for v in views.values()), default=0)
    phantom = max((len(v["names"] - acked - unknown) for v in views.values()), default=0)
    by_index: dict[int, set[str]] = {}
    for v in views.values():
        by_index.setdefault(v["applied"], set()).add(v["digest"])
    diverged = sum(len(digests) - 1 for digests in by_index.values())
    return {"acknowledged_lost": lost, "phantom_entries": phantom,
            "diverged_nodes": diverged,
            "applied": {i: v["applied"] for i, v in views.items()}}


def archive(archive_dir: str, node_dirs: dict[int, str]) -> dict:
    """The metalogger's archive (it stopped): continuous from its first entry, terms
    never going back, and entry for entry what every node's log still holds."""
    store = Archive(archive_dir, readonly=True)
    try:
        entries = list(store.entries())
    finally:
        store.close()
    indexes = [e.index for e in entries]
    gaps = sum(1 for a, b in zip(indexes, indexes[1:], strict=False) if b != a + 1)
    terms_back = sum(1 for a, b in zip(entries, entries[1:], strict=False) if b.term < a.term)
    by_index = {e.index: e for e in entries}
    mismatches = compared = 0
    for path in node_dirs.values():
        log = LogStore(f"{path}/raft-log")
        try:
            held = log.entries(log.first_index, log.last_index + 1)
        finally:
            log.close()
        for e in held:
            if (a := by_index.get(e.index)) is not None:
                compared += 1
                mismatches += (a.term, a.kind, a.data) != (e.term, e.kind, e.data)
    return {"archived_to": indexes[-1] if indexes else 0, "gaps": gaps + terms_back,
            "mismatches": mismatches, "compared": compared}


def wait_archived(archive_dir: str, index: int, timeout: float = 60.0) -> bool:
    """Whether the running metalogger's archive reached `index` within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.isdir(os.path.join(archive_dir, "segments")):
            store = Archive(archive_dir, readonly=True)
            try:
                if store.last_index >= index:
                    return True
            finally:
                store.close()
        time.sleep(0.2)
    return False
