"""Errors of the client's data path. Both are OSError(EIO), so the FUSE layer can
answer with their errno; the message says which chunk and what was tried."""

import errno


class DataUnavailableError(OSError):
    """No copy or set of parts could give a chunk's bytes back."""

    def __init__(self, message: str):
        super().__init__(errno.EIO, message)


class WriteFailedError(OSError):
    """Written bytes could not be stored on every copy, even with fresh targets;
    ENOSPC when the chunkservers had no room for them, else EIO."""

    def __init__(self, message: str, code: int = errno.EIO):
        super().__init__(code, message)
