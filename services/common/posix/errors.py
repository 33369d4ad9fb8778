"""The one exception the namespace raises: a POSIX errno with a sentence for humans."""

import errno as _errno


class FsError(Exception):
    """An operation failed with `errno`; `message` says what was wrong."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{_errno.errorcode.get(code, code)}: {message}")
        self.errno = code
        self.message = message
