"""Python's cyclic garbage collector stops the process while it runs, and a full
collection walks every container object: on a metadata node holding hundreds of
thousands of them that took up to 1.5 s, long enough for followers to elect a new
leader. Collections are watched (a WARNING for a long one) and kept rare."""

import gc
import logging
import time

log = logging.getLogger(__name__)
WARN_S = 0.1
# A full collection once every 100 of the middle generation's instead of every 10:
# they found nothing to free in a metadata node's bursts, and each walked the heap.
THRESHOLDS = (700, 10, 100)


def tune() -> None:
    """Collect the oldest generation ten times less often, and leave what the process
    loaded to start (modules, classes) out of every collection from now on."""
    gc.set_threshold(*THRESHOLDS)
    gc.freeze()


def watch(name: str) -> None:
    """Log every collection that holds the process up for WARN_S or more."""
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took >= WARN_S:
            log.warning("%s: a garbage collection of generation %d held the process up "
                        "for %.2f s (%d objects collected)", name, info["generation"],
                        took, info["collected"])
    gc.callbacks.append(callback)
