"""The namespace projection as the Raft log's state machine: apply committed
entries, take snapshots (RocksDB checkpoints) and install a leader's snapshot."""

import json
import os
import shutil

from schemas import namespace_pb2 as nspb
from services.common.durable_files import fsync_dir
from services.metadata.applier import Applier
from services.metadata.projection import Projection, open_projection
from services.metadata.raft.messages import NORMAL, Entry

COUNTED = nspb.Result()  # the counter machine's answer to every command


class NamespaceMachine:
    """Owns DIR/projection. Snapshots live in DIR/snapshots/snap-INDEX."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, "projection")
        self.snapshots = os.path.join(data_dir, "snapshots")
        os.makedirs(self.snapshots, exist_ok=True)
        self._finish_interrupted_install()
        self.projection: Projection = open_projection(self.path)
        self.applier = Applier(self.projection)

    @property
    def applied_index(self) -> int:
        return self.projection.applied_index

    def apply(self, entries: list[Entry]) -> list:
        """Fold committed entries; one result per entry (None for no-op and
        membership entries)."""
        return self.applier.apply_many(
            [(e.index, e.data if e.kind == NORMAL else None) for e in entries])

    def flush(self) -> None:
        """Write what is in memory to disk (the slow part of a checkpoint, which may
        run in another thread while entries are applied)."""
        self.projection.flush()

    def checkpoint(self) -> str:
        """A snapshot at the applied index; returns its directory. Older ones go."""
        index = self.applied_index
        path = os.path.join(self.snapshots, f"snap-{index:020d}")
        if not os.path.exists(path):
            tmp = path + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self.projection.checkpoint(tmp)
            os.rename(tmp, path)
            fsync_dir(self.snapshots)
        for name in os.listdir(self.snapshots):
            if name.startswith("snap-") and os.path.join(self.snapshots, name) != path:
                shutil.rmtree(os.path.join(self.snapshots, name), ignore_errors=True)
        return path

    def latest_snapshot(self) -> str | None:
        names = sorted(n for n in os.listdir(self.snapshots)
                       if n.startswith("snap-") and not n.endswith(".tmp"))
        return os.path.join(self.snapshots, names[-1]) if names else None

    def install(self, staged: str) -> None:
        """Replace the projection with a received snapshot (a complete checkpoint).
        Crash-safe: the swap finishes on the next start if interrupted."""
        self.projection.close()
        new, old = self.path + ".new", self.path + ".old"
        shutil.rmtree(new, ignore_errors=True)
        os.rename(staged, new)
        os.rename(self.path, old)
        os.rename(new, self.path)
        fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        shutil.rmtree(old, ignore_errors=True)
        self.projection = open_projection(self.path)
        self.applier = Applier(self.projection)

    def _finish_interrupted_install(self) -> None:
        new, old = self.path + ".new", self.path + ".old"
        if not os.path.exists(self.path) and os.path.exists(new):
            os.rename(new, self.path)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(new, ignore_errors=True)

    def close(self) -> None:
        self.projection.close()


class CounterMachine:
    """Counts applied commands and does nothing else: for measuring the consensus
    layer alone (`mooseng metadata --state-machine counter`), the way Raft
    benchmarks use a trivial state machine. Its state lives in snapshots only; after
    a restart it re-applies the log from the last one."""

    def __init__(self, data_dir: str):
        self.snapshots = os.path.join(data_dir, "snapshots")
        os.makedirs(self.snapshots, exist_ok=True)
        self.applied_index = self.count = 0
        if latest := self.latest_snapshot():
            self._load(latest)

    def _load(self, path: str) -> None:
        with open(os.path.join(path, "state.json")) as f:
            state = json.load(f)
        self.applied_index, self.count = state["applied_index"], state["count"]

    def apply(self, entries: list[Entry]) -> list:
        results = []
        for e in entries:
            if e.index <= self.applied_index:
                continue
            self.applied_index = e.index
            if e.kind == NORMAL:
                self.count += 1
                results.append(COUNTED)
            else:
                results.append(None)
        return results

    def flush(self) -> None:
        """Nothing is kept in memory but the count."""

    def checkpoint(self) -> str:
        path = os.path.join(self.snapshots, f"snap-{self.applied_index:020d}")
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "state.json"), "w") as f:
            json.dump({"applied_index": self.applied_index, "count": self.count}, f)
        for name in os.listdir(self.snapshots):
            if name.startswith("snap-") and os.path.join(self.snapshots, name) != path:
                shutil.rmtree(os.path.join(self.snapshots, name), ignore_errors=True)
        return path

    def latest_snapshot(self) -> str | None:
        names = sorted(n for n in os.listdir(self.snapshots) if n.startswith("snap-"))
        return os.path.join(self.snapshots, names[-1]) if names else None

    def install(self, staged: str) -> None:
        self._load(staged)
        shutil.rmtree(staged, ignore_errors=True)

    def close(self) -> None:
        pass


MACHINES = {"namespace": NamespaceMachine, "counter": CounterMachine}
