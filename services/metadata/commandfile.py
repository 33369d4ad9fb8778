"""A plain file of framed commands: the scripted logs of the demo, tests and tools.

Layout: the magic b"MNGCMDS1", then per command: u32 length, u32 CRC32, the
serialized Command. Reading stops with a clear error at a corrupt record; a torn
record at the very end (a writer that died) is reported, not returned.
"""

import struct
import zlib
from collections.abc import Iterable, Iterator

MAGIC = b"MNGCMDS1"
FRAME = struct.Struct(">II")
MAX_COMMAND = 16 << 20


class CommandFileError(Exception):
    """The file is not a command file, or a record in it is damaged."""


def write_commands(path: str, commands: Iterable[bytes]) -> int:
    count = 0
    with open(path, "wb") as out:
        out.write(MAGIC)
        for data in commands:
            out.write(FRAME.pack(len(data), zlib.crc32(data)) + data)
            count += 1
    return count


def read_commands(path: str) -> Iterator[bytes]:
    """Yield each command's bytes, in order."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise CommandFileError(f"{path}: not a MooseNG command file (bad magic)")
        number = 0
        while header := f.read(FRAME.size):
            number += 1
            if len(header) < FRAME.size:
                raise CommandFileError(f"{path}: record {number} is torn (file ends early)")
            length, crc = FRAME.unpack(header)
            if length > MAX_COMMAND:
                raise CommandFileError(f"{path}: record {number} claims {length} bytes")
            data = f.read(length)
            if len(data) < length:
                raise CommandFileError(f"{path}: record {number} is torn (file ends early)")
            if zlib.crc32(data) != crc:
                raise CommandFileError(f"{path}: record {number} fails its checksum")
            yield data
