"""The chunk data protocol: small fixed binary frames over TCP (see
docs/data-transport.md for why not gRPC).

Request:  magic(2) op(1) flags(1) id(4) chunk(8) version(4) offset(8) length(4)
          chain_len(2) chain (comma-separated HOST:PORT, for pipelined writes)
          then `length` bytes of data for a WRITE.
Reply:    magic(2) op(1) status(1) id(4) length(4) message_len(2) message,
          then `length` bytes of data for a READ (for a STAT: version(4) length(8)).
A SYNC or TRUNCATE (offset = the new length), like a WRITE, travels along the chain and
is answered once every copy has done it. A server applies one connection's requests
on a chunk in the order they arrive.
Status 0 is success; the others name the failure (see STATUS) and carry a message.
"""

import struct

MAGIC = 0x4D43  # "MC"
REQUEST = struct.Struct(">HBBIQIQIH")
REPLY = struct.Struct(">HBBIIH")
MAX_DATA = 64 << 20
MAX_CHAIN = 1024
# The version of a copy still being made (by a job, or a writer filling a new copy):
# versions in the log start at 1, reports leave it out, and a restart deletes it.
INCOMPLETE = 0

READ, WRITE, CREATE, SET_VERSION, DELETE, SYNC, STAT, TRUNCATE = 1, 2, 3, 4, 5, 6, 7, 8
OPS = {READ: "read", WRITE: "write", CREATE: "create", SET_VERSION: "set_version",
       DELETE: "delete", SYNC: "sync", STAT: "stat", TRUNCATE: "truncate"}
CHAINED = (WRITE, SYNC, TRUNCATE)   # forwarded along the chain of copies
STAT_REPLY = struct.Struct(">IQ")   # version, length of the stored chunk

OK, NOT_FOUND, STALE, CORRUPT, BAD_REQUEST, EXISTS, IO_ERROR, FORWARD_FAILED, NO_SPACE = \
    range(9)
STATUS = {OK: "ok", NOT_FOUND: "no such chunk", STALE: "stale version",
          CORRUPT: "damaged copy", BAD_REQUEST: "bad request", EXISTS: "chunk exists",
          IO_ERROR: "disk error", FORWARD_FAILED: "a later copy in the chain failed",
          NO_SPACE: "no space left"}


class ProtocolError(Exception):
    """The peer sent something that is not this protocol; close the connection."""


def encode_request(op: int, ident: int, chunk: int, version: int, offset: int = 0,
                   length: int = 0, chain: tuple[str, ...] = ()) -> bytes:
    route = ",".join(chain).encode()
    return REQUEST.pack(MAGIC, op, 0, ident, chunk, version, offset, length,
                        len(route)) + route


def decode_request(header: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(op, id, chunk, version, offset, length, chain_len); ProtocolError if bad."""
    magic, op, _flags, ident, chunk, version, offset, length, chain_len = \
        REQUEST.unpack(header)
    if magic != MAGIC or op not in OPS:
        raise ProtocolError(f"not a chunk request (magic {magic:#x}, op {op})")
    if length > MAX_DATA or chain_len > MAX_CHAIN:
        raise ProtocolError(f"request too large ({length} bytes, chain {chain_len})")
    return op, ident, chunk, version, offset, length, chain_len


def encode_reply(op: int, ident: int, status: int, length: int = 0,
                 message: str = "") -> bytes:
    text = message.encode()[:4096]
    return REPLY.pack(MAGIC, op, status, ident, length, len(text)) + text


def decode_reply(header: bytes) -> tuple[int, int, int, int, int]:
    """(op, status, id, length, message_len); ProtocolError if bad."""
    magic, op, status, ident, length, message_len = REPLY.unpack(header)
    if magic != MAGIC or status not in STATUS or length > MAX_DATA:
        raise ProtocolError(f"not a chunk reply (magic {magic:#x}, status {status})")
    return op, status, ident, length, message_len
