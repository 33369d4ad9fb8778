"""`mooseng log diff DIR1 DIR2`: two projections compared key by key, column family by
column family, in key order; the first differences shown readably. The applied
position (index and running digest) is reported but not counted as a difference."""

import os
from collections.abc import Callable, Iterator

from rocksdict import AccessType, Options, Rdict

from services.common.posix import records as r
from services.logship.archive import ArchiveError
from services.metadata.projection import APPLIED_DIGEST, APPLIED_INDEX, POSITION_KEYS

_MISSING = object()


def projection_path(path: str) -> str:
    """A projection directory, or a metadata node's data directory holding one."""
    inner = os.path.join(path, "projection")
    if os.path.isdir(inner):
        return inner
    if not os.path.isfile(os.path.join(path, "CURRENT")):
        raise ArchiveError(f"{path} is not a projection (no RocksDB CURRENT file) nor a "
                           f"metadata node's data directory (no projection/ in it)")
    return path


def _open(path: str) -> Rdict:
    families = {cf: Options(raw_mode=True) for cf in r.COLUMN_FAMILIES}
    try:
        return Rdict(projection_path(path), Options(raw_mode=True), column_families=families,
                     access_type=AccessType.read_only())
    except ArchiveError:
        raise
    except Exception as exc:  # rocksdict raises plain Exception
        raise ArchiveError(f"cannot open the projection in {path}: {exc}") from None


def show_key(cf: str, key: bytes) -> str:
    if cf in (r.INODES, r.SESSIONS, r.CLASSES, r.ORPHANS, r.INODE_OPENS, r.DELEGATIONS,
              r.RESERVED) and len(key) == 8:
        return f"{cf}[{r.from_u64(key)}]"
    if cf == r.DENTRIES and len(key) >= 16:
        name = key[16:].decode("utf-8", "backslashreplace")
        return f"{cf}[parent {r.from_u64(key[:8])}, {name!r}]"
    if cf == r.META:
        return f"{cf}[{key.decode('ascii', 'backslashreplace')}]"
    return f"{cf}[{key.hex()}]"


def show_value(cf: str, key: bytes, value) -> str:
    if value is _MISSING:
        return "(absent)"
    if cf == r.INODES and len(key) == 8:
        try:
            node = r.Inode.unpack(r.from_u64(key), value)
            return (f"mode={oct(node.mode)} uid={node.uid} gid={node.gid} nlink={node.nlink} "
                    f"size={node.size} mtime={node.mtime}")
        except Exception:  # noqa: BLE001 - a damaged record is shown raw
            pass
    if cf == r.META and len(value) == 8:
        return str(r.from_u64(value))
    text = value.hex()
    return text if len(text) <= 64 else text[:64] + f"... ({len(value)} bytes)"


def _pairs(db: Rdict, cf: str) -> Iterator[tuple[bytes, bytes]]:
    for key, value in db.get_column_family(cf).items():
        if cf == r.META and key in POSITION_KEYS:
            continue
        yield key, value


def differences(db1: Rdict, db2: Rdict) -> Iterator[tuple[str, bytes, object, object]]:
    """(cf, key, value in 1, value in 2) for every key that differs, in order."""
    for cf in r.COLUMN_FAMILIES:
        left, right = _pairs(db1, cf), _pairs(db2, cf)
        a, b = next(left, None), next(right, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                yield cf, a[0], a[1], _MISSING
                a = next(left, None)
            elif a is None or b[0] < a[0]:
                yield cf, b[0], _MISSING, b[1]
                b = next(right, None)
            else:
                if a[1] != b[1]:
                    yield cf, a[0], a[1], b[1]
                a, b = next(left, None), next(right, None)


def diff(path1: str, path2: str, out: Callable[[str], None], limit: int = 20) -> int:
    """Report the first `limit` differences; returns how many there are in all."""
    db1 = _open(path1)
    try:
        db2 = _open(path2)
    except BaseException:
        db1.close()
        raise
    try:
        for label, path, db in (("1", path1, db1), ("2", path2, db2)):
            meta = db.get_column_family(r.META)
            index, digest = meta.get(APPLIED_INDEX), meta.get(APPLIED_DIGEST)
            out(f"{label}: {path} at index {r.from_u64(index) if index else 0}, running "
                f"digest {digest.hex()[:16] if digest else '-'}")
        count = 0
        for cf, key, v1, v2 in differences(db1, db2):
            count += 1
            if count <= limit:
                out(f"differs {show_key(cf, key)}: 1 has {show_value(cf, key, v1)}; "
                    f"2 has {show_value(cf, key, v2)}")
        if count > limit:
            out(f"... and {count - limit} more differences")
        out("identical" if count == 0 else f"{count} keys differ")
        return count
    finally:
        db1.close()
        db2.close()
