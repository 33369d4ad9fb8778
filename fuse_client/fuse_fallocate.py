"""FUSE's fallocate request, answered by Operations.fallocate.

pyfuse3 3.5 has no fallocate hook, so libfuse answers ENOSYS, the kernel stops
asking and fallocate(2) fails with EOPNOTSUPP. glibc's posix_fallocate then falls
back to writing a byte into every block, which cannot work on a write-only file
descriptor (it reads first): EBADF where a local file system succeeds.

So after pyfuse3.init() we add the handler to the session's copy of libfuse's
`struct fuse_lowlevel_ops`. pyfuse3 keeps its own copy and the session pointer in
module statics; their addresses come from the module's ELF symbol table. The
session's copy is found by content (the bytes of pyfuse3's copy), so nothing
depends on libfuse's private session layout; if anything does not line up, the
mount goes on without fallocate, as before, and says so in the log.
"""

import asyncio
import ctypes
import errno
import logging
import struct

import pyfuse3

log = logging.getLogger(__name__)

# struct fuse_lowlevel_ops of libfuse 3.x (fuse_lowlevel.h): 44 function pointers,
# fallocate is the 41st. Checked against the header when this was written.
OPS_SIZE = 44 * 8
FALLOCATE_OFFSET = 40 * 8
FH_OFFSET = 16                 # struct fuse_file_info: flags, bit fields, padding, fh
SESSION_SCAN = 256             # the ops sit near the start of struct fuse_session

OPS_SYMBOL = b"__pyx_v_7pyfuse3_fuse_ops"
SESSION_SYMBOL = b"__pyx_v_7pyfuse3_session"
INIT_SYMBOL = b"PyInit_pyfuse3"    # exported: gives the module's load address

# void fallocate(fuse_req_t, fuse_ino_t, int mode, off_t, off_t, struct fuse_file_info *)
_HANDLER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_installed: dict = {}          # keeps the C callback and the pending answers alive


class NotInstalled(Exception):
    """The handler could not be added; the message says why."""


def install(operations) -> bool:
    """Answer FUSE fallocate requests with `await operations.fallocate(fh, mode,
    offset, length)`. Call between pyfuse3.init() and pyfuse3.main(), in the loop
    that serves the mount. Returns whether it worked."""
    try:
        slot = _fallocate_slot()
    except (NotInstalled, OSError, ValueError, struct.error) as exc:
        log.warning("fallocate(2) will answer EOPNOTSUPP on this mount: %s", exc)
        return False
    libfuse = ctypes.CDLL("libfuse3.so.3")
    libfuse.fuse_reply_err.argtypes = (ctypes.c_void_p, ctypes.c_int)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task] = set()

    async def answer(req: int, fh: int, mode: int, offset: int, length: int) -> None:
        try:
            await operations.fallocate(fh, mode, offset, length)
            code = 0
        except pyfuse3.FUSEError as exc:
            code = exc.errno
        except Exception:   # noqa: BLE001 (the kernel must get an answer)
            log.exception("fallocate failed unexpectedly; answering EIO")
            code = errno.EIO
        libfuse.fuse_reply_err(req, code)

    def handler(req, _ino, mode, offset, length, fi):
        try:
            fh = ctypes.c_uint64.from_address(fi + FH_OFFSET).value
            task = loop.create_task(answer(req, fh, mode, offset, length))
        except Exception:   # noqa: BLE001 (never raise into C)
            log.exception("fallocate could not be started; answering EIO")
            libfuse.fuse_reply_err(req, errno.EIO)
            return
        pending.add(task)
        task.add_done_callback(pending.discard)

    callback = _HANDLER_TYPE(handler)
    _installed.update(callback=callback, pending=pending, libfuse=libfuse)
    ctypes.c_void_p.from_address(slot).value = ctypes.cast(callback, ctypes.c_void_p).value
    return True


def _fallocate_slot() -> int:
    """The address of the fallocate pointer in the session's ops."""
    path = pyfuse3.__file__
    symbols = elf_symbols(path, (OPS_SYMBOL, SESSION_SYMBOL, INIT_SYMBOL))
    missing = [n.decode() for n in (OPS_SYMBOL, SESSION_SYMBOL, INIT_SYMBOL)
               if n not in symbols]
    if missing:
        raise NotInstalled(f"{path} does not name {', '.join(missing)} (a stripped or "
                           "different pyfuse3 build)")
    module = ctypes.CDLL(path)
    base = ctypes.cast(module.PyInit_pyfuse3, ctypes.c_void_p).value - symbols[INIT_SYMBOL]
    ops = ctypes.string_at(base + symbols[OPS_SYMBOL], OPS_SIZE)
    if ops[FALLOCATE_OFFSET:FALLOCATE_OFFSET + 8] != bytes(8):
        raise NotInstalled("pyfuse3 already has a fallocate handler")
    session = ctypes.c_void_p.from_address(base + symbols[SESSION_SYMBOL]).value
    if not session:
        raise NotInstalled("pyfuse3.init() has not made a session yet")
    around = ctypes.string_at(session, SESSION_SCAN + OPS_SIZE)
    found = [at for at in range(0, SESSION_SCAN, 8) if around[at:at + OPS_SIZE] == ops]
    if len(found) != 1:
        raise NotInstalled(f"the session's copy of the FUSE operations was found "
                           f"{len(found)} times, not once")
    return session + found[0] + FALLOCATE_OFFSET


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
