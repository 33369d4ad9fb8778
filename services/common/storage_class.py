"""Storage classes: how a file's chunks are kept.

`copies=N` keeps N whole copies on distinct chunkservers; `ec=K+M` keeps K data and
M parity parts (pyeclib) on K + M distinct chunkservers, any K of which give the
data back. The text form is what users type and what the log records.
"""

import re
from typing import NamedTuple

MAX_COPIES = 16
MAX_PARTS = 32
DEFAULT = "copies=2"
_COPIES = re.compile(r"copies=(\d+)")
_EC = re.compile(r"ec=(\d+)\+(\d+)")


class StorageClassError(ValueError):
    pass


class StorageClass(NamedTuple):
    copies: int = 0   # N for copies=N, else 0
    k: int = 0        # data parts for ec=K+M
    m: int = 0        # parity parts

    @property
    def is_ec(self) -> bool:
        return self.k > 0

    @property
    def servers(self) -> int:
        """Distinct chunkservers the class needs to be at its goal."""
        return self.k + self.m if self.is_ec else self.copies

    def __str__(self) -> str:
        return f"ec={self.k}+{self.m}" if self.is_ec else f"copies={self.copies}"


def parse(text: str) -> StorageClass:
    """The class `text` names; StorageClassError says what a valid one looks like."""
    if m := _COPIES.fullmatch(text):
        copies = int(m[1])
        if 1 <= copies <= MAX_COPIES:
            return StorageClass(copies=copies)
    elif m := _EC.fullmatch(text):
        k, parity = int(m[1]), int(m[2])
        if k >= 1 and parity >= 1 and k + parity <= MAX_PARTS:
            return StorageClass(k=k, m=parity)
    raise StorageClassError(
        f"{text!r} is not a storage class: use copies=N (1 <= N <= {MAX_COPIES}) or "
        f"ec=K+M (K, M >= 1, K + M <= {MAX_PARTS})")
