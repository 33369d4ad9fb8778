"""What can go wrong with a chunk on a chunkserver's disks, each saying what to do about it.

Chunk ids print as 16 hex digits, the way they appear in chunk file names.
"""


def chunk_name(chunk_id: int) -> str:
    return f"{chunk_id:016x}"


class ChunkError(Exception):
    """Base of every error the chunk store raises."""


class ChunkNotFoundError(ChunkError, KeyError):
    def __init__(self, chunk_id: int):
        self.chunk_id = chunk_id
        super().__init__(chunk_id)

    def __str__(self) -> str:
        return (f"chunk {chunk_name(self.chunk_id)} is not on this chunkserver: "
                "the master's list of copies is out of date; ask it for another copy")


class ChunkExistsError(ChunkError):
    def __init__(self, chunk_id: int, path: str):
        self.chunk_id, self.path = chunk_id, path
        super().__init__(f"chunk {chunk_name(chunk_id)} already exists ({path}): "
                         "delete it first, or write to it with its current version")


class StaleVersionError(ChunkError):
    """The caller named a version other than the one the copy on disk has."""

    def __init__(self, chunk_id: int, requested: int, stored: int):
        self.chunk_id, self.requested, self.stored = chunk_id, requested, stored
        super().__init__(
            f"chunk {chunk_name(chunk_id)}: the request is for version {requested} but this "
            f"copy has version {stored}; one of them is stale, so ask the master for the "
            "chunk's current version and its up-to-date copies")


class ChunkCorruptError(ChunkError):
    """Stored data fails its check. `block` is None when the header itself is damaged."""

    def __init__(self, chunk_id: int, path: str, block: int | None, detail: str):
        self.chunk_id, self.path, self.block, self.detail = chunk_id, path, block, detail
        where = "header" if block is None else f"block {block}"
        super().__init__(
            f"chunk {chunk_name(chunk_id)} is corrupt: {where} of {path}: {detail}; "
            "read it from another copy and have the master replace this one")


class ChunkRangeError(ChunkError, ValueError):
    """A byte range, length, id or version outside what a chunk can hold."""


class ChunkIOError(ChunkError, OSError):
    """The disk refused a read, write or sync. The chunk's state on disk is whatever the
    operation got to: reads of anything it touched fail their CRC rather than return
    wrong data."""

    def __init__(self, chunk_id: int, path: str, cause: OSError):
        self.chunk_id, self.path, self.cause = chunk_id, path, cause
        super().__init__(cause.errno, f"chunk {chunk_name(chunk_id)} ({path}): {cause.strerror}")

    def __str__(self) -> str:
        return (f"I/O error on chunk {chunk_name(self.chunk_id)} ({self.path}): "
                f"{self.cause.strerror or self.cause}; check the disk (dmesg), and treat what "
                "this call wrote as not written")


class ChunkStoreFullError(ChunkError):
    """No chunk directory has room for another whole chunk."""


class ChunkDirectoryError(ChunkError):
    """A configured chunk directory that cannot be used."""


class ChunkFormatError(ChunkError):
    """A chunk file written by a MooseNG whose format this one does not read."""
