"""Every error becomes an errno for the kernel; nothing unexpected ends the mount.

pyfuse3 lets handlers raise only FUSEError: anything else would stop the FUSE
loop and leave a dead mount. So each operation is wrapped: POSIX errors from the
fold keep their errno, a cluster without a leader past the client's deadline and
data-path failures are EIO, and a bug is logged with its traceback and becomes EIO.
"""

import errno
import functools
import logging

import pyfuse3

from fuse_client.metadata_client import ClusterUnavailableError
from services.common.posix.errors import FsError

log = logging.getLogger(__name__)


def as_errno(exc: BaseException) -> int:
    """The errno the kernel should see for `exc`."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, FsError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def fuse_operation(fn):
    """Wrap an async pyfuse3 handler so that it raises only FUSEError."""
    @functools.wraps(fn)
    async def handler(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except ClusterUnavailableError as exc:
            log.warning("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as exc:
            log.warning("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(as_errno(exc)) from None
        except Exception:
            log.exception("%s failed unexpectedly; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
    return handler
