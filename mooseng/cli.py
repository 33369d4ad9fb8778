"""The `mooseng` command line."""

import argparse
import json
import sys

from mooseng import log_commands, metalogger_command, region_commands
from services.common.addresses import AddressError
from services.metadata.commandfile import CommandFileError
from services.metadata.projection import ProjectionError

PROGRESS_EVERY = 1000


def _demo(args) -> int:
    from mooseng.demo import run_demo
    run_demo(args.data)
    return 0


def _fold(args) -> int:
    """Fold a command file into a projection, resuming after its applied index."""
    from services.metadata.applier import Applier
    from services.metadata.commandfile import read_commands
    from services.metadata.projection import open_projection

    with open_projection(args.data) as proj:
        applier = Applier(proj)
        start = reported = proj.applied_index
        group: list[tuple[int, bytes]] = []
        for index, data in enumerate(read_commands(args.commands), start=1):
            if index <= start:
                continue
            group.append((index, data))
            if len(group) >= args.group:
                applier.apply_many(group)
                group.clear()
                if args.progress and proj.applied_index - reported >= PROGRESS_EVERY:
                    reported = proj.applied_index
                    print(json.dumps({"applied_index": reported}), flush=True)
        applier.apply_many(group)
        print(json.dumps({"resumed_after": start, "applied_index": proj.applied_index,
                          "content_digest": proj.content_digest()}))
    return 0


def _tree(args) -> int:
    from mooseng.tree import render
    from services.metadata.projection import open_projection

    with open_projection(args.data) as proj:
        for line in render(proj):
            print(line)
    return 0


def _metadata(args) -> int:
    import asyncio
    import logging

    from services.common.addresses import host_port, peer_map
    from services.metadata.server import serve

    peers = peer_map(args.peers)
    listen = host_port(args.listen)
    if args.id not in peers and not args.join:
        raise AddressError(f"--id {args.id} is not among --peers ({args.peers}); to add a "
                           "node to a running cluster, start it with --join and then run "
                           "`mooseng members add-learner`")
    if args.id in peers and args.join:
        raise AddressError(f"--join: node {args.id} must not be in --peers (the cluster's "
                           "current members)")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s node{args.id} %(message)s")
    from services.common import tracing
    tracing.configure(f"mooseng-metadata-{args.id}", args.trace_exporter)
    if args.metrics_listen:
        from services.common.metrics import serve_metrics
        serve_metrics(f"mooseng-metadata-{args.id}", host_port(args.metrics_listen))
    _use_uvloop()
    from services.common import gc_pauses
    gc_pauses.watch(f"node {args.id}")
    gc_pauses.tune()
    from services.metadata.raft.core import RaftOptions
    from services.metadata.raft.node import NodeOptions
    if args.clock_rate <= 0:
        raise AddressError("--clock-rate: a clock must run forward (above 0)")
    options = NodeOptions(tick_s=args.tick_ms / 1000, snapshot_every=args.snapshot_every,
                          state_machine=args.state_machine,
                          raft=RaftOptions(lease_reads=args.lease_reads),
                          disk_reserve=args.disk_reserve_mb << 20,
                          clock_rate=args.clock_rate)
    from services.common.storage_class import StorageClassError, parse
    from services.metadata.chunks.manager import ManagerOptions
    try:
        parse(args.default_class)
    except StorageClassError as exc:
        raise AddressError(f"--default-class: {exc}") from None
    from services.common.addresses import address_list
    chunks = ManagerOptions(default_class=args.default_class,
                            lost_after_s=args.replicate_after, quiet_s=args.chunk_quiet,
                            retention_s=args.chunk_retention,
                            region_source=tuple(address_list(args.region_follower)
                                                if args.region_follower else ()))
    asyncio.run(serve(args.id, listen, peers, args.data, options, args.session_timeout,
                      chunks, args.region_follower is not None))
    return 0


def _chunkserver(args) -> int:
    import asyncio
    import logging

    from services.chunk.control import MAX_HEARTBEAT_S
    from services.chunk.errors import ChunkError
    from services.chunk.server import ChunkServerError, Options, serve
    from services.common.addresses import address_list, host_port

    directories = [d.strip() for d in args.data.split(",") if d.strip()]
    if not directories:
        raise AddressError("--data names no directory: give DIR[,DIR...], one per data disk")
    for flag, value in (("--heartbeat-s", args.heartbeat_s), ("--scrub-mibps", args.scrub_mibps)):
        if not value > 0:
            raise AddressError(f"{flag} {value}: must be above 0")
    if args.scrub_interval_s < 0:
        raise AddressError(f"--scrub-interval-s {args.scrub_interval_s}: must not be negative")
    if args.heartbeat_s > MAX_HEARTBEAT_S:
        raise AddressError(f"--heartbeat-s {args.heartbeat_s}: at most {MAX_HEARTBEAT_S:g} "
                           "(the master takes a server silent for 10 s as gone)")
    options = Options(directories, address_list(args.masters), host_port(args.listen),
                      args.heartbeat_s, args.scrub_mibps, args.scrub_interval_s)
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s chunkserver {options.listen} %(message)s")
    if args.metrics_listen:
        from services.common.metrics import serve_metrics
        serve_metrics(f"mooseng-chunkserver-{options.listen}", host_port(args.metrics_listen))
    _use_uvloop()
    try:
        asyncio.run(serve(options, metrics=bool(args.metrics_listen)))
    except (ChunkError, ChunkServerError) as exc:
        print(f"mooseng: {exc}", file=sys.stderr)
        return 2
    return 0


def _status(args) -> int:
    import asyncio

    from mooseng.status import gather, render
    from services.common.addresses import address_list

    nodes = asyncio.run(gather(address_list(args.masters), args.timeout))
    print(render(nodes, args.json))
    return 0 if any(n["role"] == "leader" for n in nodes) else 1


def _class(args) -> int:
    import asyncio

    from fuse_client.metadata_client import MetadataClient
    from mooseng import classes
    from services.common.addresses import address_list
    from services.common.posix.errors import FsError

    async def run() -> str:
        async with MetadataClient(address_list(args.masters), name="mooseng class") as client:
            if args.action == "get":
                return await classes.get_class(client, args.path)
            changed, kept = await classes.set_class(client, args.path,
                                                    args.storage_class or "", args.recursive)
            for path in kept:
                print(f"mooseng class: {path}: kept its class: its data is held as "
                      "erasure-coded parts, which take no other ec= shape", file=sys.stderr)
            return f"{args.path}: storage class set on {changed} node(s)" + (
                f", {len(kept)} file(s) kept theirs" if kept else "")
    if args.action == "set" and args.storage_class is None:
        raise AddressError("set needs a CLASS (copies=N or ec=K+M; '' for the default)")
    try:
        print(asyncio.run(run()))
    except FsError as exc:
        print(f"mooseng class: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _chunks(args) -> int:
    import asyncio

    from google.protobuf.json_format import MessageToJson

    from fuse_client.metadata_client import MetadataClient
    from mooseng import classes
    from services.common.addresses import address_list

    async def run():
        async with MetadataClient(address_list(args.masters), name="mooseng chunks") as client:
            return await classes.health(client)
    health = asyncio.run(run())
    print(MessageToJson(health, always_print_fields_with_no_presence=True) if args.json
          else classes.render_health(health))
    return 0 if health.missing == 0 else 1


def _up(args) -> int:
    from mooseng.local_cluster import ClusterError, LocalCluster

    cluster = LocalCluster(args.dir)
    try:
        layout = cluster.up(args.mount)
    except ClusterError as exc:
        print(f"mooseng up: {exc}", file=sys.stderr)
        return 1
    print(cluster.describe(layout))
    return 0


def _down(args) -> int:
    from mooseng.local_cluster import ClusterError, LocalCluster

    try:
        LocalCluster(args.dir).down()
    except ClusterError as exc:
        print(f"mooseng down: {exc}", file=sys.stderr)
        return 1
    print(f"mooseng cluster in {args.dir} stopped; its data is kept for the next `up`")
    return 0


def _members(args) -> int:
    import asyncio

    from mooseng.members import change, listing
    from services.common.addresses import address_list, host_port

    masters = address_list(args.masters)
    if args.action == "list":
        print(asyncio.run(listing(masters)))
        return 0
    if args.id is None:
        raise AddressError(f"{args.action} needs a node ID")
    address = host_port(args.address) if args.address else ""
    ok, text = asyncio.run(change(masters, args.action, args.id, address))
    print(text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _mount(args) -> int:
    from mooseng.mount_command import mount
    return mount(args)


def _umount(args) -> int:
    from mooseng.mount_command import umount
    return umount(args)


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def _add_up(sub) -> None:
    up = sub.add_parser("up", help="start a local cluster (3 metadata nodes, 3 "
                                   "chunkservers) and mount it")
    up.add_argument("--dir", default="mooseng-data",
                    help="where the cluster keeps its data, logs and pids "
                         "(default ./mooseng-data)")
    up.add_argument("--mount", default=None, metavar="MOUNTPOINT",
                    help="where to mount it (default ./mnt, or where the last `up` did)")
    up.set_defaults(func=_up)


def _add_down(sub) -> None:
    down = sub.add_parser("down", help="unmount and stop a local cluster, keeping its data")
    down.add_argument("--dir", default="mooseng-data", help="the cluster's directory "
                                                            "(default ./mooseng-data)")
    down.set_defaults(func=_down)


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="fold a scripted set of commands and print the tree")
    demo.add_argument("--data", help="keep the projection and command file here "
                                     "(default: a temporary directory)")
    demo.set_defaults(func=_demo)


def _add_fold(sub) -> None:
    fold = sub.add_parser("fold", help="fold a command file into a projection")
    fold.add_argument("--commands", required=True, help="command file to read")
    fold.add_argument("--data", required=True, help="projection directory (created if new)")
    fold.add_argument("--group", type=int, default=64,
                      help="commands per atomic write (default 64)")
    fold.add_argument("--progress", action="store_true",
                      help=f"print the applied index every {PROGRESS_EVERY} commands, "
                           "as JSON lines")
    fold.set_defaults(func=_fold)


def _add_tree(sub) -> None:
    tree = sub.add_parser("tree", help="print the namespace held in a projection")
    tree.add_argument("--data", required=True, help="projection directory")
    tree.set_defaults(func=_tree)


def _add_metadata(sub) -> None:
    meta = sub.add_parser("metadata", help="run a metadata node")
    meta.add_argument("--id", type=int, required=True, help="this node's id (in --peers)")
    meta.add_argument("--data", required=True, help="data directory (log, projection)")
    meta.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    meta.add_argument("--peers", required=True,
                      help="every voter, this node included: ID=HOST:PORT,...")
    meta.add_argument("--join", action="store_true",
                      help="this node joins a running cluster: --peers lists its members, "
                           "and a member adds it with `mooseng members add-learner`")
    meta.add_argument("--snapshot-every", type=int, default=100_000, metavar="N",
                      help="take a snapshot and compact the log every N entries "
                           "(default 100000)")
    meta.add_argument("--tick-ms", type=float, default=50.0,
                      help="Raft tick; elections time out after 10-20 ticks (default 50)")
    meta.add_argument("--lease-reads", action="store_true",
                      help="serve linearizable reads on the leader's lease instead of a "
                           "heartbeat round (assumes clocks tick at nearly the same rate)")
    meta.add_argument("--disk-reserve-mb", type=int, default=128, metavar="MIB",
                      help="keep this much free on the data directory's disk: below it "
                           "the node takes no writes until space is freed (default 128; "
                           "0: no reserve)")
    meta.add_argument("--clock-rate", type=float, default=1.0, metavar="R",
                      help=argparse.SUPPRESS)   # fault tests: a clock R times real time
    meta.add_argument("--session-timeout", type=float, default=30.0, metavar="SECONDS",
                      help="close a client session not heard from this long (default 30)")
    meta.add_argument("--default-class", default="copies=2", metavar="CLASS",
                      help="storage class of files that have none: copies=N or ec=K+M "
                           "(default copies=2)")
    meta.add_argument("--replicate-after", type=float, default=30.0, metavar="SECONDS",
                      help="re-replicate a lost chunkserver's chunks after it has been "
                           "gone this long (default 30)")
    meta.add_argument("--chunk-quiet", type=float, default=10.0, metavar="SECONDS",
                      help="leave a chunk alone this long after a write to it began: no "
                           "repair, conversion to EC or cleanup (default 10)")
    meta.add_argument("--chunk-retention", type=float, default=86400.0, metavar="SECONDS",
                      help="keep the data of deleted or truncated chunks this long before "
                           "deleting it from chunkservers (default 86400)")
    meta.add_argument("--metrics-listen", metavar="HOST:PORT",
                      help="serve Prometheus metrics at http://HOST:PORT/metrics")
    meta.add_argument("--trace-exporter", choices=("none", "console", "otlp"), default="none",
                      help="where OpenTelemetry spans go (otlp: OTEL_EXPORTER_OTLP_ENDPOINT)")
    meta.add_argument("--state-machine", choices=("namespace", "counter"),
                      default="namespace",
                      help="what committed commands are applied to: the namespace "
                           "(default), or a counter for benchmarking consensus alone")
    meta.add_argument("--region-follower", nargs="?", const="", default=None,
                      metavar="A_MASTERS",
                      help="a second region: refuse client writes (reads are served) and "
                           "take region A's log from `mooseng region follow`, until "
                           "`mooseng region promote`; with region A's metadata nodes "
                           "(HOST:PORT,...), this region's chunkservers also fetch the "
                           "file contents from region A's")
    meta.set_defaults(func=_metadata)


def _add_chunkserver(sub) -> None:
    chunk = sub.add_parser("chunkserver", help="run a chunkserver")
    chunk.add_argument("--data", required=True, metavar="DIR[,DIR...]",
                       help="chunk directories, one per data disk (the first also keeps "
                            "this server's id)")
    chunk.add_argument("--masters", required=True, metavar="HOST:PORT,...",
                       help="the metadata nodes; the chunkserver finds the leader among them")
    chunk.add_argument("--listen", required=True, metavar="HOST:PORT",
                       help="data port, and the address clients and peers are told")
    chunk.add_argument("--heartbeat-s", type=float, default=1.0, metavar="SECONDS",
                       help="report space and changes to the master this often (default 1, "
                            "at most 3)")
    chunk.add_argument("--scrub-mibps", type=float, default=64.0, metavar="MIB_PER_S",
                       help="read chunks back for damage at most this fast (default 64)")
    chunk.add_argument("--scrub-interval-s", type=float, default=3600.0, metavar="SECONDS",
                       help="rest between full scrub passes (default 3600)")
    chunk.add_argument("--metrics-listen", metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics")
    chunk.set_defaults(func=_chunkserver)


def _add_class(sub) -> None:
    cls = sub.add_parser("class", help="show or set the storage class of a path")
    cls.add_argument("--masters", required=True, help="HOST:PORT,... of the metadata nodes")
    cls.add_argument("action", choices=("get", "set"))
    cls.add_argument("path", help="absolute path in the file system, like /projects/a")
    cls.add_argument("storage_class", nargs="?", metavar="CLASS",
                     help="copies=N or ec=K+M ('' returns to the cluster default)")
    cls.add_argument("-r", "--recursive", action="store_true",
                     help="set it on everything under the path too")
    cls.set_defaults(func=_class)


def _add_chunks(sub) -> None:
    chunks = sub.add_parser("chunks", help="chunkservers and the health of every chunk "
                                           "(exit status 1 if any chunk is missing)")
    chunks.add_argument("--masters", required=True, help="HOST:PORT,... of the metadata nodes")
    chunks.add_argument("--json", action="store_true", help="print JSON")
    chunks.set_defaults(func=_chunks)


def _add_members(sub) -> None:
    members = sub.add_parser("members", help="list or change the metadata cluster's members")
    members.add_argument("--masters", required=True, help="HOST:PORT,... of the nodes")
    members.add_argument("action", choices=("list", "add-learner", "add-voter", "promote",
                                            "demote", "remove"))
    members.add_argument("id", type=int, nargs="?", help="the node to change")
    members.add_argument("address", nargs="?", help="HOST:PORT of a node being added")
    members.set_defaults(func=_members)


def _add_status(sub) -> None:
    status = sub.add_parser("status", help="show each metadata node's role and progress")
    status.add_argument("--masters", required=True, help="HOST:PORT,... of the nodes")
    status.add_argument("--json", action="store_true", help="a JSON list, one object a node")
    status.add_argument("--timeout", type=float, default=2.0, help="seconds per node")
    status.set_defaults(func=_status)


def _add_mount(sub) -> None:
    mount = sub.add_parser("mount", help="mount the file system (FUSE)")
    mount.add_argument("--masters", required=True, help="HOST:PORT,... of the metadata nodes")
    mount.add_argument("--restored", metavar="DIR",
                       help="mount, read-only, the tree as it was in a restored directory "
                            "(`mooseng restore ... --to DIR`); --masters is the live "
                            "cluster, which still holds the chunks for the retention window")
    mount.add_argument("mountpoint", help="an existing directory")
    mount.add_argument("-o", dest="option", action="append", metavar="OPT[,OPT...]",
                       help="attr_timeout=S, entry_timeout=S, negative_timeout=S (default "
                            "60 s each), writeback_cache (default off), no_delegations "
                            "(default: delegated directories on), read_ahead_kb=N "
                            "(default 1024); anything else (ro, noexec, ...) goes to "
                            "FUSE. See docs/mount.md")
    mount.add_argument("--foreground", action="store_true",
                       help="serve the mount in this process, logging to stderr, until "
                            "it is unmounted or interrupted (for debugging)")
    mount.add_argument("--log", metavar="FILE",
                       help="the mount process's log (default: "
                            "/tmp/mooseng-mounts/<mount point, quoted>.log)")
    mount.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                       help="how long to wait for the mount to be live (default 120)")
    mount.set_defaults(func=_mount)


def _add_umount(sub) -> None:
    umount = sub.add_parser("umount", help="unmount a MooseNG mount and wait for its "
                                           "process to commit and end")
    umount.add_argument("mountpoint")
    umount.add_argument("-l", "--lazy", action="store_true",
                        help="detach now even if files are open; it ends when they close")
    umount.set_defaults(func=_umount)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mooseng", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_up, _add_down, _add_demo, _add_fold, _add_tree, _add_metadata,
                _add_chunkserver, _add_class, _add_chunks, _add_members, _add_status,
                _add_mount, _add_umount, metalogger_command.add_commands,
                log_commands.add_commands, region_commands.add_commands):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CommandFileError, ProjectionError, AddressError, OSError) as exc:
        print(f"mooseng: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
