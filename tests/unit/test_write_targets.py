"""Where the leader sends a writer: never to fresh, empty servers while the chunk has
committed contents, whoever moved its copies last.

The chunk manager reads the committed versions from the projection; here a dict plays
the projection, and the chunkservers are registry entries fed real report messages.
"""

from types import SimpleNamespace

import pytest

from schemas import chunkmaster_pb2 as cpb
from services.common import storage_class
from services.common.posix import records as r
from services.metadata.chunks.manager import ChunkManager, ContentsUnknownError

CHUNK = 7
COPIES2 = storage_class.parse("copies=2")


class Projection(dict):
    def get(self, cf, key, default=None):
        return super().get((cf, key), default)


def manager(committed: int | None, holdings: dict[str, list[tuple[int, int]]],
            spare: int = 2):
    """A leading manager; `holdings`: server -> [(part, version)] of CHUNK it reports.
    `spare` more servers with room hold nothing."""
    projection = Projection()
    if committed is not None:
        projection[(r.COMMITTED, r.u64(CHUNK))] = r.U32.pack(committed)
    node = SimpleNamespace(core=SimpleNamespace(role="leader", term=1),
                           machine=SimpleNamespace(projection=projection, applied_index=0))
    chunks = ChunkManager(node)
    for name in [*holdings, *(f"empty{i}" for i in range(spare))]:
        server = chunks.registry.connect(name, f"{name}:1", lambda job: None)
        held = [cpb.Held(chunk=CHUNK, part=part, version=version, length=1 << 20)
                for part, version in holdings.get(name, [])]
        chunks.registry.report(server, cpb.ServerMessage(
            full_report=True, holding=held, space=cpb.Space(free_bytes=1 << 40)))
    return chunks


def targets(chunks: ChunkManager, version: int) -> list[tuple[str, int]]:
    return sorted((t.address, t.version)
                  for t in chunks.write_targets(CHUNK, version, COPIES2))


def test_the_copies_holding_the_committed_contents_are_moved_to_the_new_version():
    chunks = manager(committed=3, holdings={"a": [(0, 3)], "b": [(0, 3)]})
    assert targets(chunks, 4) == [("a:1", 3), ("b:1", 3)]


def test_copies_a_repair_already_moved_to_the_new_version_still_carry_the_contents():
    # A new leader took the writer, still retrying its begin_write, for dead and moved
    # the copies on: sending the writer to fresh servers would zero the chunk.
    chunks = manager(committed=3, holdings={"a": [(0, 4)], "b": [(0, 4)]})
    assert targets(chunks, 4) == [("a:1", 4), ("b:1", 4)]


def test_a_copy_older_than_the_committed_version_is_not_taken_for_the_contents():
    # b carries the contents; a fresh server (filled from b) makes up the goal, not a
    chunks = manager(committed=3, holdings={"a": [(0, 2)], "b": [(0, 3)]})
    chosen = targets(chunks, 4)
    assert ("b:1", 3) in chosen and len(chosen) == 2
    assert [version for address, version in chosen if address != "b:1"] == [0]
    assert "a:1" not in {address for address, _ in chosen}


def test_a_write_to_a_chunk_short_of_its_goal_gets_fresh_servers_to_make_it_up():
    # The server of one copy died under the last write: the next writer fills another
    # server from the surviving copy, so fsync can find the bytes on two copies.
    chunks = manager(committed=3, holdings={"b": [(0, 3)]})
    chosen = targets(chunks, 4)
    assert ("b:1", 3) in chosen and sorted(v for _, v in chosen) == [0, 3]


def test_committed_contents_nobody_is_known_to_hold_refuse_the_write():
    chunks = manager(committed=3, holdings={"a": [(0, 2)]})
    with pytest.raises(ContentsUnknownError, match="chunk 7 at version 3"):
        chunks.write_targets(CHUNK, 4, COPIES2)
    assert CHUNK not in chunks.registry.expected      # no writer was sent anywhere


def test_a_chunk_held_only_as_parts_gets_fresh_servers_to_fill_from_them():
    chunks = manager(committed=3, holdings={"a": [(1, 3)], "b": [(2, 3)], "c": [(3, 3)]})
    assert [version for _, version in targets(chunks, 4)] == [0, 0]


def test_a_new_chunk_gets_fresh_servers():
    chunks = manager(committed=None, holdings={})
    chosen = targets(chunks, 1)
    assert len(chosen) == 2 and all(version == 0 for _, version in chosen)


def test_parts_a_repair_moved_to_the_new_version_are_read_to_fill_fresh_copies():
    chunks = manager(committed=3, holdings={"a": [(1, 4)], "b": [(2, 4)], "c": [(3, 4)]})
    assert [version for _, version in targets(chunks, 4)] == [0, 0]
    assert sorted(loc.part for loc in chunks.contents(CHUNK, 4)) == [1, 2, 3]


def test_fresh_copies_may_go_beside_parts_when_every_server_holds_one():
    chunks = manager(committed=3, holdings={"a": [(1, 3)], "b": [(2, 3)], "c": [(3, 3)]},
                     spare=0)
    chosen = targets(chunks, 4)
    assert len(chosen) == 2 and all(version == 0 for _, version in chosen)
