"""Cutting a file's byte range into the pieces that fall in each 64 MiB chunk."""

from typing import NamedTuple

from services.common.posix.records import CHUNK_SIZE


class Span(NamedTuple):
    index: int     # which chunk of the file
    offset: int    # where the piece starts inside that chunk
    length: int
    start: int     # where it starts in the range that was cut (0 for the first piece)


def spans(offset: int, length: int, chunk_size: int = CHUNK_SIZE) -> list[Span]:
    """The per-chunk pieces of [offset, offset + length), in file order."""
    if offset < 0 or length < 0:
        raise ValueError(f"a byte range needs offset >= 0 and length >= 0, got "
                         f"offset {offset}, length {length}")
    out, done = [], 0
    while done < length:
        index, inside = divmod(offset + done, chunk_size)
        piece = min(length - done, chunk_size - inside)
        out.append(Span(index, inside, piece, done))
        done += piece
    return out


def clamp(offset: int, length: int, file_size: int) -> int:
    """How many of `length` bytes from `offset` lie before `file_size`."""
    return max(0, min(offset + length, file_size) - offset)


def zero_padded(data: bytes, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of `data`, with zeros where `data` ends early
    (bytes a chunk never stored read as zeros)."""
    piece = data[offset:offset + length]
    return piece + bytes(length - len(piece)) if len(piece) < length else piece
