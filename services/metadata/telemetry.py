"""What a metadata node reports to Prometheus: operations by type and result, their
latency, and the state of its Raft log."""

import os
import time

from opentelemetry.metrics import CallbackOptions, Observation

from schemas import metadata_pb2 as mpb
from services.common.metrics import meter
from services.metadata.raft.core import LEADER
from services.metadata.raft.node import RaftNode

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


def _dir_bytes(path: str | None) -> int:
    if not path:
        return 0
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


class MetadataTelemetry:
    def __init__(self, node: RaftNode):
        m = meter()
        self.node = node
        self.operations = m.create_counter(
            "mooseng_metadata_operations", description="client operations by type and result")
        self.latency = m.create_histogram(
            "mooseng_metadata_operation_duration", unit="s",
            description="time from a request's arrival to its reply",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)

        def gauge(name: str, description: str, read) -> None:
            def observe(_: CallbackOptions):
                return [Observation(read())]
            m.create_observable_gauge(name, callbacks=[observe], description=description)

        core = lambda: node.core  # noqa: E731  (the core object is replaced on restore)
        gauge("mooseng_raft_term", "current Raft term", lambda: core().term)
        gauge("mooseng_raft_commit_index", "highest committed log index", lambda: core().commit)
        gauge("mooseng_raft_applied_index", "highest applied log index",
              lambda: node.machine.applied_index)
        gauge("mooseng_raft_is_leader", "1 on the leader", lambda: int(core().role == LEADER))
        gauge("mooseng_raft_log_bytes", "bytes of Raft log on disk", lambda: node.log.size_bytes)
        gauge("mooseng_raft_snapshot_bytes", "bytes of the latest snapshot",
              lambda: _dir_bytes(node.machine.latest_snapshot()))

        def leader_changes(_: CallbackOptions):
            return [Observation(node.leader_changes)]
        m.create_observable_counter("mooseng_raft_leader_changes", callbacks=[leader_changes],
                                    description="times this node saw the leader change")

    def record(self, kind: str, reply: mpb.Reply, started: float) -> None:
        if reply.status != mpb.Reply.OK:
            result = mpb.Reply.Status.Name(reply.status).lower()
        else:
            result = "ok" if not reply.errno else os.strerror(reply.errno)
        attributes = {"op": kind, "result": result}
        self.operations.add(1, attributes)
        self.latency.record(time.perf_counter() - started, {"op": kind})
