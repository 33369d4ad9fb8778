"""The mount process: a metadata session, the FUSE loop, and a clean end.

It mounts only once it holds a session with the metadata cluster, so a mount that
appears works. SIGTERM, SIGINT or an unmount end it cleanly: pages the kernel
still holds dirty are written back through the loop, writes are committed, the
session is closed (the master releases its open files) and the mount is gone.
"""

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import pyfuse3
import pyfuse3.asyncio

from fuse_client import fuse_hooks, fuse_wakeups, mountinfo
from fuse_client.attrs import Timeouts
from fuse_client.chunk_io import ChunkIO
from fuse_client.invalidation import Invalidator
from fuse_client.metadata_client import MetadataClient
from fuse_client.mount_options import MountOptions
from fuse_client.operations import Operations

log = logging.getLogger(__name__)
SYNC_TIMEOUT_S = 60.0
FOLLOWER_TIMEOUTS = Timeouts(attr=1.0, entry=1.0, negative=1.0)
PID_DIR = os.path.join(tempfile.gettempdir(), "mooseng-mounts")
_libc = ctypes.CDLL(None, use_errno=True)    # ctypes lets go of the GIL in calls


class MountError(Exception):
    """The mount could not be made; the message says why."""


@dataclass(frozen=True)
class MountConfig:
    masters: list[str]
    mountpoint: str             # canonical (mountinfo.canonical)
    options: MountOptions


# Where a mount's session comes from when it is not the cluster at `masters`: given
# the config, an async context manager that yields (addresses, session name) while
# the source serves (a restored projection: mooseng/mount_command.py).
MetadataSource = Callable[[MountConfig],
                          contextlib.AbstractAsyncContextManager[tuple[list[str], str]]]


def pid_file(mountpoint: str) -> str:
    """Where the process serving `mountpoint` keeps its pid (for `mooseng umount`)."""
    name = urllib.parse.quote(mountinfo.canonical(mountpoint), safe="")
    return os.path.join(PID_DIR, f"{name}.pid")


def run(config: MountConfig, source: MetadataSource | None = None) -> int:
    """Serve the mount until it is unmounted or the process is told to stop; its
    session is with the cluster at config.masters, or with `source`."""
    pyfuse3.asyncio.enable()
    fuse_wakeups.install()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_serve(config, source))
    return 0


async def _serve(config: MountConfig, source: MetadataSource | None) -> None:
    if source is None:
        await _mount(config, MetadataClient(config.masters, name=f"mount "
                                            f"{socket.gethostname()}:{config.mountpoint}"))
        return
    async with source(config) as (addresses, name):
        await _mount(config, MetadataClient(addresses, name=name))


async def _mount(config: MountConfig, md: MetadataClient) -> None:
    ops = Operations(md, ChunkIO(md), config.options.timeouts,
                     config.options.writeback_cache,
                     delegations=config.options.delegations,
                     on_init=lambda: set_read_ahead(config.mountpoint,
                                                    config.options.read_ahead_kb))
    invalidator = Invalidator(ops.forget_inode, ops.kernel)
    md.on_invalidate = invalidator       # before open: the session asks for them

    def reset() -> None:
        invalidator.reset()
        ops.delegations.reset()
    md.on_reset = reset
    md.on_renewed = ops.session_renewed
    log.info("opening a session with the metadata cluster (%s)", ", ".join(config.masters))
    await md.open()
    if md.read_only and config.options.timeouts == Timeouts():
        # A region that follows another's log pushes no invalidations for what
        # arrives from there: the kernel may trust what it was told only briefly.
        ops.timeouts = FOLLOWER_TIMEOUTS
        log.info("a following region: the kernel trusts attributes and names for %g s",
                 FOLLOWER_TIMEOUTS.attr)
    log.info("session %d with %s; mounting %s (%s)", md.session, md.leader,
             config.mountpoint, type(asyncio.get_running_loop()).__module__)
    try:
        pyfuse3.init(ops, config.mountpoint, set(config.options.fuse))
    except RuntimeError as exc:
        await ops.shutdown()
        raise MountError(f"mounting {config.mountpoint} failed ({exc}); FUSE's own "
                         "message is above") from None
    fuse_hooks.install(ops)
    _write_pid(config.mountpoint)
    _on_signals(config.mountpoint)
    try:
        await pyfuse3.main()
    finally:
        invalidator.close()
        pyfuse3.close(unmount=True)
        _remove_pid(config.mountpoint)
        log.info("unmounted %s; committing what is left and closing the session",
                 config.mountpoint)
        await ops.shutdown()


def _on_signals(mountpoint: str) -> None:
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def stop(sig: signal.Signals) -> None:
        if not stopping:
            log.info("%s: unmounting", sig.name)
            stopping.append(loop.create_task(_stop(mountpoint)))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop, sig)


async def _stop(mountpoint: str) -> None:
    """Have the kernel write its dirty pages back while the loop still serves them
    (syncfs blocks, so in a thread), then end the FUSE loop."""
    try:
        await asyncio.wait_for(asyncio.to_thread(syncfs, mountpoint), SYNC_TIMEOUT_S)
    except (TimeoutError, OSError) as exc:
        log.warning("syncing %s before unmounting: %s", mountpoint, exc or "timed out")
    pyfuse3.terminate()


def syncfs(path: str) -> None:
    """syncfs(2) on the file system at `path`. Not pyfuse3.syncfs: that one keeps
    the GIL while the kernel waits for this very process to take the writes."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)


def set_read_ahead(mountpoint: str, kb: int) -> None:
    """Raise the mount's read-ahead (the kernel's FUSE default is 128 KiB): large
    sequential reads then travel as 1 MiB requests."""
    found = mountinfo.find(mountpoint)
    if found is None:
        log.warning("%s is not in mountinfo; read-ahead left as it is", mountpoint)
        return
    path = f"/sys/class/bdi/{found.device}/read_ahead_kb"
    try:
        with open(path, "w") as f:
            f.write(str(kb))
    except OSError as exc:
        log.warning("setting read-ahead (%s): %s", path, exc)


def _write_pid(mountpoint: str) -> None:
    try:
        os.makedirs(PID_DIR, exist_ok=True)
        with open(pid_file(mountpoint), "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("writing the pid file: %s (mooseng umount will not wait for this "
                    "process)", exc)


def _remove_pid(mountpoint: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pid_file(mountpoint))
