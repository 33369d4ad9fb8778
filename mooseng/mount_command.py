"""`mooseng mount` and `mooseng umount`, from parsed arguments to an exit status."""

import contextlib
import logging
import os
import socket
import sys
import tempfile
import urllib.parse

from fuse_client import background, mountinfo
from fuse_client.mount_options import MountOptionError, parse
from services.common.addresses import AddressError, address_list

LOG_DIR = os.path.join(tempfile.gettempdir(), "mooseng-mounts")


def default_log(mountpoint: str) -> str:
    name = urllib.parse.quote(mountinfo.canonical(mountpoint), safe="")
    return os.path.join(LOG_DIR, f"{name}.log")


def mount(args) -> int:
    restored = getattr(args, "restored", None) or ""
    try:
        # A restored view is read-only: the kernel then refuses changes (EROFS) itself.
        options = parse([*(args.option or []), *(["ro"] if restored else [])],
                        as_root=os.geteuid() == 0)
        masters = address_list(args.masters)
    except (MountOptionError, AddressError) as exc:
        return _fail(str(exc), 2)
    mountpoint = mountinfo.canonical(args.mountpoint)
    if not os.path.isdir(mountpoint):
        return _fail(f"{mountpoint} is not a directory: create it first", 2)
    found = mountinfo.find(mountpoint)
    if found is not None:
        return _fail(f"{mountpoint} is already mounted ({found.fstype}); if its process "
                     "died, `mooseng umount -l` clears it", 1)
    if restored:
        from services.logship.restored_server import RestoredError, projection_dir
        try:
            projection_dir(restored)
        except RestoredError as exc:
            return _fail(str(exc), 2)
        restored = os.path.abspath(restored)
    if args.foreground:
        return _foreground(masters, mountpoint, options, args.log, restored)
    child = ["mount", "--foreground", "--masters", ",".join(masters),
             *(["--restored", restored] if restored else []),
             *[arg for o in args.option or [] for arg in ("-o", o)], mountpoint]
    return background.start(child, mountpoint, args.log or default_log(mountpoint),
                            args.timeout)


def _foreground(masters, mountpoint, options, log_path, restored="") -> int:
    from fuse_client.metadata_client import ClusterUnavailableError
    from fuse_client.mount import MountConfig, MountError, run

    handler = logging.FileHandler(log_path) if log_path else logging.StreamHandler()
    logging.basicConfig(level=logging.INFO, handlers=[handler],
                        format=f"%(asctime)s mount {mountpoint} %(levelname)s "
                               "%(name)s: %(message)s")
    try:
        config = MountConfig(masters, mountpoint, options)
        return run(config, restored_source(restored) if restored else None)
    except (MountError, ClusterUnavailableError) as exc:
        logging.getLogger("fuse_client.mount").error("%s", exc)
        return _fail(str(exc), 1)


def restored_source(restored: str):
    """A restored projection, served by the mount process on loopback and mounted
    from there; chunks are located (by id) and read on the live cluster's masters."""
    @contextlib.asynccontextmanager
    async def source(config):
        from fuse_client.metadata_client import MetadataClient
        from fuse_client.mount import MountError
        from services.logship.restored_server import RestoredError, RestoredServer
        from services.metadata.projection import ProjectionError
        live = MetadataClient(config.masters, name=f"restored view {socket.gethostname()}:"
                                                   f"{config.mountpoint}")
        server = RestoredServer(restored, live)
        await live.open()
        try:
            try:
                address = await server.start()
            except (RestoredError, ProjectionError) as exc:
                raise MountError(str(exc)) from None
            yield [address], "restored view"
        finally:
            await server.stop()
            await live.close()
    return source


def umount(args) -> int:
    from fuse_client.umount import umount as run_umount
    return run_umount(args.mountpoint, lazy=args.lazy)


def _fail(message: str, code: int) -> int:
    print(f"mooseng mount: {message}", file=sys.stderr)
    return code
