"""`mooseng log dump`: one line per archived entry, human-readable or JSON, optionally
with each command's result (computed by replaying the archive up to it)."""

import json
import os
import tempfile
from collections.abc import Callable

from services.logship.archive import Archive
from services.logship.restore import fold_range, replay
from services.logship.tools.describe import describe, line
from services.metadata.applier import Applier
from services.metadata.projection import open_projection


def dump(archive: Archive, out: Callable[[str], None], lo: int | None = None,
         hi: int | None = None, as_json: bool = False, results: bool = False) -> int:
    """Write entries lo..hi through `out`; returns how many were written."""
    lo = archive.first_index if lo is None else lo
    hi = archive.last_index if hi is None else min(hi, archive.last_index)
    show = (lambda info: out(json.dumps(info, ensure_ascii=False))) if as_json else \
        (lambda info: out(line(info)))
    count = 0

    def emit(entries, outcomes) -> None:
        nonlocal count
        for entry, result in zip(entries, outcomes, strict=True):
            show(describe(entry, result))
            count += 1

    if not results:
        for batch in archive.batches(lo, hi):
            emit(batch, [None] * len(batch))
        return count
    with tempfile.TemporaryDirectory(prefix="mooseng-dump-") as work:
        path = os.path.join(work, "projection")
        replay(archive, path, index=lo - 1)   # the state just before the first shown
        with open_projection(path) as proj:
            if lo <= hi:
                fold_range(archive, Applier(proj), lo, hi, emit)
    return count
