"""What a run is judged by, once the faults have healed."""

from schemas import namespace_pb2 as pb
from services.metadata.namespace import reads
from services.metadata.projection import open_projection
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
