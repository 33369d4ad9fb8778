"""The chunk file header: two copies of (identity, version, length, CRC table), pure code.

A chunk file starts with a 16 KiB header holding two copies ("slots") of the header, each
with its own CRC and a generation number; data starts at byte 16384. A header update
overwrites only the slot that does not hold the last durable header, so a crash in the
middle of one leaves the other intact: the reader takes the valid slot with the highest
generation. docs/chunk-format.md has the byte layout and the crash-safety argument.
"""

import struct
import sys
from array import array
from dataclasses import dataclass, field

import crc32c

MAGIC = b"MNGCHNK\x00"
FORMAT_VERSION = 1
BLOCK_SIZE = 64 << 10
BLOCKS = 1024
CHUNK_SIZE = BLOCK_SIZE * BLOCKS            # 64 MiB
SLOT_STRIDE = 8 << 10                       # slots start on page boundaries
SLOTS = 2
HEADER_SIZE = SLOTS * SLOT_STRIDE           # data starts here, page aligned
MAX_VERSION = (1 << 32) - 1                 # versions are uint32 in the log
MAX_CHUNK_ID = (1 << 64) - 1

# magic, format version, reserved, block size, generation, chunk id, version, reserved, length
_FIELDS = struct.Struct("<8sHHIQQIIQ")
_CRC = struct.Struct("<I")
SLOT_SIZE = _FIELDS.size + 4 * BLOCKS + _CRC.size   # 4148 bytes used of each 8 KiB slot

ZERO_BLOCK_CRC = crc32c.crc32c(bytes(BLOCK_SIZE))
_ZEROS = memoryview(bytes(BLOCK_SIZE))


def zero_padded_crc(data) -> int:
    """CRC32C of one block whose stored bytes are `data` and the rest, up to 64 KiB, zeros."""
    return crc32c.crc32c(_ZEROS[:BLOCK_SIZE - len(data)], crc32c.crc32c(data))


@dataclass
class Header:
    chunk_id: int
    version: int
    length: int = 0
    generation: int = 1
    crcs: array = field(default_factory=lambda: array("I", [ZERO_BLOCK_CRC]) * BLOCKS)

    def successor(self, **changes) -> "Header":
        """A copy with the next generation and `changes` applied; the CRC table is copied."""
        fields = {"chunk_id": self.chunk_id, "version": self.version, "length": self.length,
                  "generation": self.generation + 1, "crcs": array("I", self.crcs)}
        fields.update(changes)
        return Header(**fields)


class HeaderError(ValueError):
    """A slot that cannot be used; the message says why."""


class UnsupportedFormatError(HeaderError):
    """A valid slot of a format this code does not know: never fall back past it."""


def encode(header: Header) -> bytes:
    crcs = array("I", header.crcs)
    if sys.byteorder == "big":
        crcs.byteswap()
    body = _FIELDS.pack(MAGIC, FORMAT_VERSION, 0, BLOCK_SIZE, header.generation,
                        header.chunk_id, header.version, 0, header.length) + crcs.tobytes()
    return body + _CRC.pack(crc32c.crc32c(body))


def decode(raw: bytes) -> Header:
    """The header in one slot's bytes, or HeaderError saying what is wrong with them."""
    if len(raw) < SLOT_SIZE:
        raise HeaderError(f"cut short ({len(raw)} of {SLOT_SIZE} bytes)")
    if not any(raw[:SLOT_SIZE]):
        raise HeaderError("never written")
    magic, fmt, _, block_size, generation, chunk_id, version, _, length = _FIELDS.unpack_from(raw)
    if magic != MAGIC:
        raise HeaderError(f"no chunk header here (starts with {bytes(raw[:8])!r})")
    body = raw[:SLOT_SIZE - _CRC.size]
    stored, = _CRC.unpack_from(raw, SLOT_SIZE - _CRC.size)
    computed = crc32c.crc32c(body)
    if stored != computed:
        raise HeaderError(f"fails its CRC32C (stored {stored:08x}, computed {computed:08x})")
    if fmt != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"format version {fmt}, but this MooseNG reads only version {FORMAT_VERSION}: "
            "run a MooseNG that knows it")
    if block_size != BLOCK_SIZE or length > CHUNK_SIZE:
        raise HeaderError(f"impossible block size {block_size} or length {length}")
    crcs = array("I")
    crcs.frombytes(body[_FIELDS.size:])
    if sys.byteorder == "big":
        crcs.byteswap()
    return Header(chunk_id, version, length, generation, crcs)


def pick(region: bytes) -> tuple[Header, int]:
    """The current header in a file's header region and the slot it is in.

    The valid slot with the highest generation wins; the other may legitimately be torn
    by a crash or never written. HeaderError if neither slot is valid.
    """
    found, problems = [], []
    for slot in range(SLOTS):
        try:
            found.append((decode(region[slot * SLOT_STRIDE:(slot + 1) * SLOT_STRIDE]), slot))
        except UnsupportedFormatError:
            raise
        except HeaderError as e:
            problems.append(f"copy {slot} {e}")
    if not found:
        raise HeaderError("both header copies are unusable: " + "; ".join(problems))
    return max(found, key=lambda hs: hs[0].generation)
