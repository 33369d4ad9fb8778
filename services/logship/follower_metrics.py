"""What a metalogger reports to Prometheus (served by services.common.metrics)."""

from opentelemetry.metrics import CallbackOptions, Observation

from services.common.metrics import meter
from services.logship.follower import FollowStats


def publish(stats: FollowStats) -> None:
    m = meter()

    def gauge(name: str, description: str, read) -> None:
        def observe(_: CallbackOptions):
            return [Observation(read())]
        m.create_observable_gauge(name, callbacks=[observe], description=description)

    def counter(name: str, description: str, read) -> None:
        def observe(_: CallbackOptions):
            return [Observation(read())]
        m.create_observable_counter(name, callbacks=[observe], description=description)

    gauge("mooseng_metalogger_archived_index", "last log index archived and synced",
          lambda: stats.archived_index)
    gauge("mooseng_metalogger_commit_index", "highest commit index a metadata node reported",
          lambda: stats.commit_index)
    gauge("mooseng_metalogger_lag_entries", "committed entries not archived yet",
          lambda: stats.lag)
    gauge("mooseng_metalogger_connected", "1 while following a metadata node",
          lambda: int(bool(stats.source)))
    counter("mooseng_metalogger_gaps", "batches refused because they did not continue the "
            "archive (each one is logged as GAP)", lambda: stats.gaps)
    counter("mooseng_metalogger_reconnects", "follow streams opened", lambda: stats.reconnects)
    counter("mooseng_metalogger_snapshots_archived", "snapshots fetched and archived",
            lambda: stats.snapshots_archived)
    counter("mooseng_metalogger_snapshot_jumps", "times the archive had to continue from a "
            "snapshot because the entries before it were compacted everywhere",
            lambda: stats.snapshot_jumps)
