"""Validation of entry names, symlink targets and xattr names."""

import errno

from services.common.posix.errors import FsError

NAME_MAX = 255
PATH_MAX = 4096
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.")


def check_name(name: bytes) -> None:
    if not name:
        raise FsError(errno.EINVAL, "empty entry name")
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG,
                      f"entry name is {len(name)} bytes; the limit is {NAME_MAX}")
    if b"/" in name or b"\0" in name:
        raise FsError(errno.EINVAL, f"entry name {name!r} contains '/' or NUL")
    if name in (b".", b".."):
        raise FsError(errno.EINVAL, f"{name.decode()!r} is not a name that can be created "
                                    "or removed")


def check_symlink_target(target: bytes) -> None:
    if not target:
        raise FsError(errno.ENOENT, "empty symlink target")
    if len(target) >= PATH_MAX:
        raise FsError(errno.ENAMETOOLONG,
                      f"symlink target is {len(target)} bytes; the limit is {PATH_MAX - 1}")
    if b"\0" in target:
        raise FsError(errno.EINVAL, "symlink target contains NUL")


def check_xattr_name_length(name: bytes) -> None:
    if not name or len(name) > XATTR_NAME_MAX:
        raise FsError(errno.ERANGE,
                      f"xattr name must be 1..{XATTR_NAME_MAX} bytes, not {len(name)}")


def check_xattr_name(name: bytes) -> None:
    check_xattr_name_length(name)
    if b"\0" in name:
        raise FsError(errno.EINVAL, "xattr name contains NUL")
    if not name.startswith(XATTR_NAMESPACES):
        raise FsError(errno.EOPNOTSUPP,
                      f"xattr {name!r}: only the user., trusted. and security. namespaces "
                      "are supported")
    if name in XATTR_NAMESPACES:
        raise FsError(errno.EINVAL, f"xattr {name!r} names a namespace, not an attribute")
