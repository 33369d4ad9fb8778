"""FUSE requests pyfuse3 3.5 does not pass on whole, answered by Operations.

- **fallocate**: pyfuse3 has no hook, so libfuse answers ENOSYS, the kernel stops
  asking and fallocate(2) fails with EOPNOTSUPP. glibc's posix_fallocate then falls
  back to writing a byte into every block, which cannot work on a write-only file
  descriptor (it reads first): EBADF where a local file system succeeds.
- **setxattr flags**: pyfuse3 checks XATTR_CREATE / XATTR_REPLACE itself with a
  getxattr and passes no flags on: not atomic against another client, and a user
  who may write an attribute but not read it gets EACCES from the check. The fold
  takes the flags and decides in one command.

- **zero-message opendir**: every opendir and closedir is a FUSE request, two of
  the few each directory costs `find`, `tar c`, `grep -r` and `rm -rf`, though the
  mount keeps nothing per open directory (dir_pages.py). Since Linux 5.1 the kernel
  opens directories itself once the file system answers an OPENDIR with ENOSYS, and
  then keeps listings in the directory's page cache (`cache_readdir` and
  `keep_cache`), dropping them when the directory changes through this mount, when
  its mtime moves, or when the master's push for another client's change
  invalidates the directory. The readdirplus and fsyncdir entries are wrapped to
  put the directory's inode in the handle, where pyfuse3 looks for it. On an older
  kernel the opendir entry only sets those two flags before pyfuse3's handler runs.

So after pyfuse3.init() we set these entries of the session's copy of libfuse's
`struct fuse_lowlevel_ops`. pyfuse3 keeps its own copy and the session pointer in
module statics; their addresses come from the module's ELF symbol table. The
session's copy is found by content (the bytes of pyfuse3's copy), so nothing
depends on libfuse's private session layout; if anything does not line up, the
mount goes on with pyfuse3's behaviour, as before, and says so in the log.
"""

import asyncio
import ctypes
import errno
import logging
import os
import re
import struct
from types import SimpleNamespace

import pyfuse3

log = logging.getLogger(__name__)

# struct fuse_lowlevel_ops of libfuse 3.x (fuse_lowlevel.h): 44 function pointers.
# Checked against the header (offsetof) when this was written.
OPS_SIZE = 44 * 8
OPENDIR_OFFSET = 20 * 8
FSYNCDIR_OFFSET = 23 * 8
SETXATTR_OFFSET = 25 * 8
FALLOCATE_OFFSET = 40 * 8
READDIRPLUS_OFFSET = 41 * 8
ZERO_MESSAGE_OPENDIR = (5, 1)  # the first Linux that opens directories itself
FH_OFFSET = 16                 # struct fuse_file_info: flags, bit fields, padding, fh
BITS_OFFSET = 4                # its bit fields (fuse_common.h of libfuse 3.14), from bit 0:
KEEP_CACHE, CACHE_READDIR = 1 << 2, 1 << 6  # writepage, direct_io, keep_cache, flush,
# nonseekable, flock_release, cache_readdir
SESSION_SCAN = 256             # the ops sit near the start of struct fuse_session

OPS_SYMBOL = b"__pyx_v_7pyfuse3_fuse_ops"
SESSION_SYMBOL = b"__pyx_v_7pyfuse3_session"
INIT_SYMBOL = b"PyInit_pyfuse3"    # exported: gives the module's load address

# void fallocate(fuse_req_t, fuse_ino_t, int mode, off_t, off_t, struct fuse_file_info *)
_FALLOCATE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                              ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
# void opendir(fuse_req_t, fuse_ino_t, struct fuse_file_info *): ours, and pyfuse3's,
# called with the GIL held (a CFUNCTYPE call would let go of it, and pyfuse3's handler
# needs it)
_OPENDIR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p)
_PYFUSE3_OPENDIR = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p)
# void readdirplus(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *)
_READDIRPLUS_ARGS = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_int64,
                     ctypes.c_void_p)
_READDIRPLUS = ctypes.CFUNCTYPE(None, *_READDIRPLUS_ARGS)
_PYFUSE3_READDIRPLUS = ctypes.PYFUNCTYPE(None, *_READDIRPLUS_ARGS)
# void fsyncdir(fuse_req_t, fuse_ino_t, int datasync, struct fuse_file_info *)
_FSYNCDIR_ARGS = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p)
_FSYNCDIR = ctypes.CFUNCTYPE(None, *_FSYNCDIR_ARGS)
_PYFUSE3_FSYNCDIR = ctypes.PYFUNCTYPE(None, *_FSYNCDIR_ARGS)
# void setxattr(fuse_req_t, fuse_ino_t, const char *name, const char *value, size_t, int)
_SETXATTR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p,
                             ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


class _FuseCtx(ctypes.Structure):
    """struct fuse_ctx: who sent the request."""
    _fields_ = [("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
                ("pid", ctypes.c_int32), ("umask", ctypes.c_uint32)]


_installed: dict = {}          # keeps the C callbacks and the pending answers alive


class NotInstalled(Exception):
    """The handlers could not be added; the message says why."""


def install(operations) -> bool:
    """Answer FUSE fallocate with `await operations.fallocate(fh, mode, offset,
    length)` and setxattr with `await operations.setxattr(inode, name, value, ctx,
    flags)`; have the kernel open directories itself (or at least cache their
    listings), with the inode as the handle of readdir and fsyncdir. Call between
    pyfuse3.init() and pyfuse3.main(), in the loop that serves the mount. Returns
    whether it worked."""
    try:
        ops = _session_ops()
    except (NotInstalled, OSError, ValueError, struct.error) as exc:
        log.warning("fallocate(2) will answer EOPNOTSUPP, XATTR_CREATE/REPLACE are "
                    "checked apart from the change, and directory listings are not "
                    "cached by the kernel on this mount: %s", exc)
        return False
    libfuse = ctypes.CDLL("libfuse3.so.3")
    libfuse.fuse_reply_err.argtypes = (ctypes.c_void_p, ctypes.c_int)
    libfuse.fuse_req_ctx.argtypes = (ctypes.c_void_p,)
    libfuse.fuse_req_ctx.restype = ctypes.POINTER(_FuseCtx)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task] = set()

    async def answer(req: int, call) -> None:
        try:
            await call
            code = 0
        except pyfuse3.FUSEError as exc:
            code = exc.errno
        except Exception:   # noqa: BLE001 (the kernel must get an answer)
            log.exception("a FUSE request failed unexpectedly; answering EIO")
            code = errno.EIO
        libfuse.fuse_reply_err(req, code)

    def start(req: int, make_call) -> None:
        """Run the operation in the loop; never raise into C."""
        try:
            task = loop.create_task(answer(req, make_call()))
        except Exception:   # noqa: BLE001
            log.exception("a FUSE request could not be started; answering EIO")
            libfuse.fuse_reply_err(req, errno.EIO)
            return
        pending.add(task)
        task.add_done_callback(pending.discard)

    def fallocate(req, _ino, mode, offset, length, fi):
        start(req, lambda: operations.fallocate(
            ctypes.c_uint64.from_address(fi + FH_OFFSET).value, mode, offset, length))

    def setxattr(req, ino, name, value, size, flags):
        def call():
            ctx = libfuse.fuse_req_ctx(req).contents
            who = SimpleNamespace(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)
            data = ctypes.string_at(value, size) if size else b""
            return operations.setxattr(ino, name, data, who, flags)
        start(req, call)

    def pyfuse3_entry(offset: int, kind):
        return kind(ctypes.c_void_p.from_address(ops + offset).value)
    pyfuse3_opendir = pyfuse3_entry(OPENDIR_OFFSET, _PYFUSE3_OPENDIR)
    pyfuse3_readdirplus = pyfuse3_entry(READDIRPLUS_OFFSET, _PYFUSE3_READDIRPLUS)
    pyfuse3_fsyncdir = pyfuse3_entry(FSYNCDIR_OFFSET, _PYFUSE3_FSYNCDIR)
    zero_message = kernel_release() >= ZERO_MESSAGE_OPENDIR

    def opendir(req, ino, fi):
        if zero_message:
            libfuse.fuse_reply_err(req, errno.ENOSYS)   # "open it yourself, always"
            return
        bits = ctypes.c_uint32.from_address(fi + BITS_OFFSET)
        bits.value |= KEEP_CACHE | CACHE_READDIR
        pyfuse3_opendir(req, ino, fi)

    def readdirplus(req, ino, size, off, fi):
        ctypes.c_uint64.from_address(fi + FH_OFFSET).value = ino   # the handle is the inode
        pyfuse3_readdirplus(req, ino, size, off, fi)

    def fsyncdir(req, ino, datasync, fi):
        ctypes.c_uint64.from_address(fi + FH_OFFSET).value = ino
        pyfuse3_fsyncdir(req, ino, datasync, fi)

    callbacks = {FALLOCATE_OFFSET: _FALLOCATE(fallocate), SETXATTR_OFFSET: _SETXATTR(setxattr),
                 OPENDIR_OFFSET: _OPENDIR(opendir),
                 READDIRPLUS_OFFSET: _READDIRPLUS(readdirplus),
                 FSYNCDIR_OFFSET: _FSYNCDIR(fsyncdir)}
    _installed.update(callbacks=callbacks, pending=pending, libfuse=libfuse,
                      pyfuse3=(pyfuse3_opendir, pyfuse3_readdirplus, pyfuse3_fsyncdir))
    for offset, callback in callbacks.items():
        ctypes.c_void_p.from_address(ops + offset).value = \
            ctypes.cast(callback, ctypes.c_void_p).value
    return True


def _session_ops() -> int:
    """The address of the session's copy of the FUSE operations."""
    path = pyfuse3.__file__
    symbols = elf_symbols(path, (OPS_SYMBOL, SESSION_SYMBOL, INIT_SYMBOL))
    missing = [n.decode() for n in (OPS_SYMBOL, SESSION_SYMBOL, INIT_SYMBOL)
               if n not in symbols]
    if missing:
        raise NotInstalled(f"{path} does not name {', '.join(missing)} (a stripped or "
                           "different pyfuse3 build)")
    module = ctypes.CDLL(path)
    base = ctypes.cast(module.PyInit_pyfuse3, ctypes.c_void_p).value - symbols[INIT_SYMBOL]
    session = ctypes.c_void_p.from_address(base + symbols[SESSION_SYMBOL]).value
    if not session:
        raise NotInstalled("pyfuse3.init() has not made a session yet")
    ops = ctypes.string_at(base + symbols[OPS_SYMBOL], OPS_SIZE)
    if ops[FALLOCATE_OFFSET:FALLOCATE_OFFSET + 8] != bytes(8):
        raise NotInstalled("pyfuse3 has a fallocate handler of its own (another version)")
    for offset, name in ((SETXATTR_OFFSET, "setxattr"), (OPENDIR_OFFSET, "opendir"),
                         (READDIRPLUS_OFFSET, "readdirplus"), (FSYNCDIR_OFFSET, "fsyncdir")):
        if ops[offset:offset + 8] == bytes(8):
            raise NotInstalled(f"pyfuse3 has no {name} handler where one is expected")
    around = ctypes.string_at(session, SESSION_SCAN + OPS_SIZE)
    found = [at for at in range(0, SESSION_SCAN, 8) if around[at:at + OPS_SIZE] == ops]
    if len(found) != 1:
        raise NotInstalled(f"the session's copy of the FUSE operations was found "
                           f"{len(found)} times, not once")
    return session + found[0]


def kernel_release(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running Linux, or of a release string such as
    "6.1.0-18-amd64"; (0, 0) when it cannot be read."""
    found = re.match(r"(\d+)\.(\d+)", os.uname().release if release is None else release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def elf_symbols(path: str, names: tuple[bytes, ...]) -> dict[bytes, int]:
    """Values (addresses relative to the load address) of `names` in the symbol
    table (.symtab) of the 64-bit little-endian ELF file at `path`."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:5] != b"\x7fELF\x02" or data[5] != 1:
        raise NotInstalled(f"{path} is not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    wanted, found = set(names), {}
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != 2 or not entsize:        # SHT_SYMTAB
            continue
        strings = sections[link][4]
        for at in range(offset, offset + size, entsize):
            name_at, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, at)
            end = data.index(b"\0", strings + name_at)
            name = data[strings + name_at:end]
            if name in wanted:
                found[name] = value
    return found
