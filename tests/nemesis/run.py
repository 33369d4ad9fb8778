"""One nemesis run: a 3-node metadata cluster and 3 chunkservers in network namespaces,
clients, faults chosen by the seed, then healing and the checks. Prints one JSON report.

    sudo .venv/bin/python -m tests.nemesis.run --seed 7 --time 60 [--keep DIR]

Exit status 0 when nothing was lost, no history broke linearizability, the nodes
agree and every acknowledged file reads back as written; 1 otherwise. See docs/nemesis.md.
"""

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time

from tests.nemesis import checks, data_workload, netlab
from tests.nemesis.cluster import Chunkservers, MetaloggerNode, NetCluster
from tests.nemesis.faults import KINDS, Nemesis, unavailable
from tests.nemesis.workload import Client, Record, clock, initial_ops, set_up

KEYS = 4
CLIENTS = 4
DATA_CLIENTS = 2
METADATA, CHUNKSERVERS = [2, 3, 4], [5, 6, 7]    # node numbers on the bridge (netlab.py)
METALOGGER = 8
DRIFT = 0.04    # clocks within 4% of real time, so any two within 8.4% of each other:
# inside the 10% that leases allow (docs/raft.md)


async def exercise(cluster: NetCluster, chunks: Chunkservers, metalogger: MetaloggerNode,
                   seed: int, seconds: float, kinds, phases: dict) -> tuple:
    masters = list(cluster.addresses.values())
    layout, directory = await asyncio.gather(
        set_up(masters, KEYS), data_workload.set_up(masters, len(chunks.ids)))
    phases["set_up"] = clock()
    record, data = Record(), data_workload.DataRecord()
    record.ops.extend(initial_ops(layout, clock()))
    stop = asyncio.Event()
    clients = [asyncio.create_task(Client(n, masters, layout, seed, record, clock).run(stop))
               for n in range(CLIENTS)]
    clients += [asyncio.create_task(data_workload.DataClient(
        n, masters, directory, seed, data, clock).run(stop)) for n in range(DATA_CLIENTS)]
    nemesis = Nemesis(cluster, chunks, cluster.lab, random.Random(seed), clock, metalogger)
    try:
        try:
            await nemesis.run(seconds, kinds)
        finally:
            await asyncio.to_thread(nemesis.heal_all)
        healed = phases["faults"] = clock()
        await asyncio.sleep(3.0)      # the clients go on: writes must come back
    finally:
        stop.set()                    # also when the nemesis failed: no client is left
        await asyncio.gather(*clients, return_exceptions=True)
    phases["clients"] = clock()
    return layout, record, directory, data, nemesis, healed


def run(seed: int, seconds: float, root: str, kinds=KINDS, drift: float = DRIFT) -> dict:
    """`drift`: each metadata node's clock runs at a rate drawn from [1-drift, 1+drift]."""
    netlab.sweep()
    lab = netlab.NetLab(METADATA + CHUNKSERVERS + [METALOGGER]).open()
    rng = random.Random(f"clocks-{seed}")
    rates = {i: round(rng.uniform(1 - drift, 1 + drift), 3) for i in METADATA}
    cluster = NetCluster(lab, root, METADATA, rates=rates)
    masters = list(cluster.addresses.values())
    chunks = Chunkservers(lab, root, CHUNKSERVERS, masters)
    metalogger = MetaloggerNode(lab, root, METALOGGER, masters)
    started = time.monotonic()
    phases: dict[str, float] = {}    # when each step ended
    try:
        cluster.make_disks()
        cluster.start_all()
        chunks.make_disks()
        chunks.start_all()
        metalogger.make_disk()
        metalogger.start_all()
        layout, record, directory, data, nemesis, healed = asyncio.run(
            exercise(cluster, chunks, metalogger, seed, seconds, kinds, phases))
        commit = max(n["commit_index"] or 0 for n in cluster.wait_converged(timeout=300))
        phases["converge"] = clock()
        files = asyncio.run(data_workload.verify(masters, directory, data, len(chunks.ids)))
        phases["read_back"] = clock()
        archived = checks.wait_archived(metalogger.archive_dir, commit)
        phases["archive"] = clock()
        crashed = cluster.crashed() | chunks.crashed() | metalogger.crashed()
        metalogger.stop_all(signal.SIGTERM)
        chunks.stop_all(signal.SIGTERM)
        cluster.stop_all(signal.SIGTERM)
        views = checks.node_views({i: cluster.data(i) for i in cluster.ids}, layout.ns)
        shipped = checks.archive(metalogger.archive_dir,
                                 {i: cluster.data(i) for i in cluster.ids})
    finally:
        metalogger.stop_all()
        metalogger.remove_disk()
        chunks.stop_all()
        chunks.remove_disks()
        cluster.stop_all()
        cluster.remove_disks()
        lab.close()
    history = checks.linearizability(record.ops, timeout_s=120)
    names = checks.namespace(views, record.acked, record.unknown)
    phases["check"] = clock()
    return {
        "seed": seed, "seconds": round(time.monotonic() - started, 1),
        "phases_s": phase_lengths(started, phases),
        "faults": nemesis.counts(),
        "clock_rates": rates,
        "operations": len(record.ops) + len(record.acked) + len(record.unknown),
        "unknown_outcomes": sum(op.ret is None for op in record.ops) + len(record.unknown),
        "errors": record.errors,   # unknown outcomes and refusals, by cause
        "acknowledged_lost": names["acknowledged_lost"],
        "phantom_entries": names["phantom_entries"],
        "diverged_nodes": names["diverged_nodes"],
        "crashed_nodes": crashed,
        "linearizability_violations": int(not history["ok"] and not history["inconclusive"]),
        "linearizability_inconclusive": history["inconclusive"],
        "violation": history["explanation"],
        "data_files": files["files"],
        "data_errors": files["errors"],   # unknown outcomes of files, by cause
        "data_mismatches": files["mismatches"],
        "data_mismatched": files["mismatched"],
        "data_phantom_files": files["phantom_files"],
        "data_chunks_missing": files["chunks_missing"],
        "data_chunks_under_goal": files["chunks_under_goal"],
        "data_unknown_files": files["unknown_files"],   # present: size, copies per chunk
        "chunk_health": files["chunk_health"],
        "archive": {**shipped, "reached_commit": archived, "commit_index": commit,
                    "gap_reported": "GAP" in metalogger.log_of(METALOGGER)},
        "max_unavailable_s": unavailable(nemesis.windows, record.write_acks),
        "unavailable_after_heal_s": round(min((a for a in record.write_acks if a > healed),
                                              default=float("inf")) - healed, 3),
    }


def phase_lengths(started: float, ends: dict[str, float]) -> dict[str, float]:
    """How long each step took, from when each ended."""
    out, previous = {}, started
    for name, end in ends.items():
        out[name], previous = round(end - previous, 1), end
    return out


def passed(report: dict) -> bool:
    return (report["acknowledged_lost"] == 0 and report["phantom_entries"] == 0
            and report["diverged_nodes"] == 0 and not report["crashed_nodes"]
            and report["linearizability_violations"] == 0
            and not report["linearizability_inconclusive"]
            and report["data_mismatches"] == 0 and report["data_chunks_missing"] == 0
            and report["data_phantom_files"] == 0
            and report["archive"]["reached_commit"] and report["archive"]["gaps"] == 0
            and report["archive"]["mismatches"] == 0
            and not report["archive"]["gap_reported"])


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time", type=float, default=60.0, help="seconds of faults")
    parser.add_argument("--faults", default=",".join(KINDS),
                        help="comma-separated fault kinds (default: all)")
    parser.add_argument("--keep", help="keep the nodes' data and logs in this directory")
    parser.add_argument("--drift", type=float, default=DRIFT,
                        help="clock rates drawn from [1-D, 1+D] (default %(default)s)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)   # `timeout`, a killed make: clean up
    if (why := netlab.available()) is not None:
        print(f"nemesis: {why}", file=sys.stderr)
        return 2
    kinds = tuple(args.faults.split(","))
    if args.keep:
        report = run(args.seed, args.time, args.keep, kinds, args.drift)
    else:
        with tempfile.TemporaryDirectory(prefix="mooseng-nemesis-") as root:
            report = run(args.seed, args.time, root, kinds, args.drift)
    print(json.dumps(report, indent=1))
    return 0 if passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
