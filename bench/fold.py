"""How fast the namespace fold applies commands to a real RocksDB projection.

Prints one JSON object. `commands_per_s` folds a create/mkdir/rename/unlink mix in
groups of 64 commands per WriteBatch (as the applier does behind a Raft commit);
`commands_per_s_group1` commits every command on its own. The reference,
measured in the same run on the same disk, writes raw RocksDB batches of the same
number of keys and bytes without any fold logic: `ratio_to_raw_rocksdb` says how
much of the storage engine's speed the fold keeps. Target: 20,000 commands/s.

Usage: python bench/fold.py [--commands N] [--dir DIR]
"""

import argparse
import json
import os
import shutil
import tempfile
import time

from rocksdict import Options, Rdict, WriteBatch

from mooseng.workload import command_mix
from services.metadata.applier import Applier
from services.metadata.projection import open_projection


def fold_rate(commands: list[bytes], path: str, group: int) -> tuple[float, int, int]:
    """Commands per second, and the keys and bytes the fold wrote."""
    with open_projection(path) as proj:
        applier = Applier(proj)
        keys = value_bytes = 0
        start = time.perf_counter()
        for first in range(0, len(commands), group):
            chunk = commands[first:first + group]
            results = applier.apply_many(
                [(first + i + 1, data) for i, data in enumerate(chunk)])
            bad = [r for r in results if r.errno]
            assert not bad, f"benchmark command failed: {bad[0].message}"
        elapsed = time.perf_counter() - start
        for cf in ("inodes", "dentries"):
            for k, v in proj.scan(cf, b""):
                keys += 1
                value_bytes += len(k) + len(v)
    return len(commands) / elapsed, keys, value_bytes


def raw_rate(count: int, keys_per_command: int, bytes_per_key: int, path: str,
             group: int) -> float:
    """Raw RocksDB: `count` batches' worth of puts of the same shape, no fold."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    db = Rdict(path, opts)
    value = b"v" * bytes_per_key
    start = time.perf_counter()
    for first in range(0, count, group):
        batch = WriteBatch(raw_mode=True)
        for i in range(first, min(first + group, count)):
            for k in range(keys_per_command):
                batch.put(i.to_bytes(8, "big") + bytes([k]), value)
        db.write(batch)
    elapsed = time.perf_counter() - start
    db.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--dir", default=None, help="where to put the databases "
                                                    "(default: a temporary directory)")
    args = parser.parse_args()
    commands = command_mix(args.commands)
    work = tempfile.mkdtemp(prefix="mooseng-bench-", dir=args.dir)
    try:
        grouped, keys, nbytes = fold_rate(commands, os.path.join(work, "g64"), 64)
        single, _, _ = fold_rate(commands[:20_000], os.path.join(work, "g1"), 1)
        # A create writes about 7 keys (inode, dentry, parent, counters, position).
        raw = raw_rate(len(commands), 7, max(1, nbytes // max(1, keys)),
                       os.path.join(work, "raw"), 64)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "commands": len(commands),
        "commands_per_s": round(grouped),
        "commands_per_s_group1": round(single),
        "raw_rocksdb_batches_per_s": round(raw),
        "ratio_to_raw_rocksdb": round(grouped / raw, 3),
        "target_commands_per_s": 20_000,
    }))


if __name__ == "__main__":
    main()
