"""The chunk manager's background walk gives way to clients, and never stops."""

from types import SimpleNamespace

from services.metadata.chunks.manager import ChunkManager, ManagerOptions


def test_the_walk_waits_while_the_log_is_busy_but_goes_on_one_tick_in_ten():
    machine = SimpleNamespace(projection=None, applied_index=0)
    node = SimpleNamespace(core=SimpleNamespace(role="leader", term=1), machine=machine)
    chunks = ChunkManager(node, ManagerOptions(busy_entries=50, walk_anyway_ticks=10))
    walked = []
    for tick in range(40):
        if 10 <= tick < 30:
            machine.applied_index += 200        # clients commit 400 entries a second
        walked.append(chunks._walk_due())
    assert all(walked[:10]) and all(walked[30:])          # quiet: every tick
    busy = walked[10:30]
    assert busy.count(True) == 2 and not any(busy[:9])    # busy: one tick in ten
