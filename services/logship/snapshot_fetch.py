"""Fetch a metadata node's latest snapshot (LogShip.FetchSnapshot) into a staging
directory: every chunk CRC32C-checked as it arrives, every file checked whole at the
end, and an interrupted fetch resumed from what the staging directory holds."""

import asyncio
import os
import shutil
from dataclasses import dataclass

import crc32c
import grpc

from schemas import logship_pb2 as pb

CHUNK = 1 << 20


class SnapshotFetchError(Exception):
    """The node sent something that is not a whole, intact snapshot; retry."""


@dataclass(frozen=True)
class Fetched:
    index: int
    term: int
    config: bytes
    path: str     # a complete checkpoint directory, fsynced


async def fetch_snapshot(stub, staging: str, timeout: float = 600.0) -> Fetched:
    """The node's latest snapshot, in staging/snap-INDEX."""
    have_index, have = await asyncio.to_thread(_partial, staging)
    call = stub.FetchSnapshot(pb.FetchSnapshotRequest(have_index=have_index, have=have),
                              timeout=timeout)
    first = await call.read()
    if first is grpc.aio.EOF or not first.HasField("header"):
        raise SnapshotFetchError("the node's snapshot stream did not begin with a header")
    header = first.header
    for f in header.files:
        if not _plain_file_name(f.name):
            raise SnapshotFetchError(f"the snapshot names a file {f.name!r} outside its folder")
    target = os.path.join(staging, f"snap-{header.index:020d}")
    held = await asyncio.to_thread(_prepare, staging, target, header,
                                   have if header.index == have_index else {})
    while (piece := await call.read()) is not grpc.aio.EOF:
        await _take(piece.chunk, header, target, held)
    bad = await asyncio.to_thread(_verify, target, header.files)
    if bad:
        raise SnapshotFetchError(f"snapshot {header.index}: {', '.join(bad)} failed the "
                                 "whole-file check; fetching them again")
    return Fetched(header.index, header.term, bytes(header.config), target)


def _partial(staging: str) -> tuple[int, dict[str, int]]:
    """What an interrupted fetch left: (its index, bytes held per file) or (0, {})."""
    if not os.path.isdir(staging):
        return 0, {}
    for name in sorted(os.listdir(staging), reverse=True):
        if name.startswith("snap-") and name[5:].isdigit():
            path = os.path.join(staging, name)
            return int(name[5:]), {f: os.path.getsize(os.path.join(path, f))
                                   for f in os.listdir(path)}
    return 0, {}


def _prepare(staging: str, target: str, header: pb.SnapshotHeader,
             kept: dict[str, int]) -> dict[str, int]:
    """Clear fetches of other snapshots and files the node will resend; returns the
    bytes held per file, where each file's chunks must continue."""
    os.makedirs(staging, exist_ok=True)
    for name in os.listdir(staging):
        if os.path.join(staging, name) != target:
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
    os.makedirs(target, exist_ok=True)
    held = {}
    for f in header.files:
        path = os.path.join(target, f.name)
        offset = min(kept.get(f.name, 0), f.size)
        with open(path, "ab") as out:
            out.truncate(offset)
        held[f.name] = offset
    for name in set(os.listdir(target)) - set(held):
        os.unlink(os.path.join(target, name))
    return held


async def _take(chunk, header: pb.SnapshotHeader, target: str, held: dict[str, int]) -> None:
    if chunk.snapshot_index != header.index or chunk.file not in held:
        raise SnapshotFetchError(f"a chunk of {chunk.file!r} does not belong to snapshot "
                                 f"{header.index}")
    if chunk.offset != held[chunk.file]:
        raise SnapshotFetchError(f"{chunk.file}: a chunk at offset {chunk.offset}, expected "
                                 f"{held[chunk.file]}")
    if crc32c.crc32c(chunk.data) != chunk.crc32c:
        raise SnapshotFetchError(f"{chunk.file}: the chunk at offset {chunk.offset} fails "
                                 "its CRC32C")
    await asyncio.to_thread(_append, os.path.join(target, chunk.file), chunk.data)
    held[chunk.file] += len(chunk.data)


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as out:
        out.write(data)


def _verify(target: str, files) -> list[str]:
    """Names of files whose size or CRC32C is wrong (deleted, so a retry refetches
    them); the others are fsynced, and the directory too."""
    bad = []
    for f in files:
        path = os.path.join(target, f.name)
        crc = 0
        with open(path, "rb") as src:
            while block := src.read(CHUNK):
                crc = crc32c.crc32c(block, crc)
            if crc == f.crc32c and os.path.getsize(path) == f.size:
                os.fsync(src.fileno())
                continue
        bad.append(f.name)
        os.unlink(path)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return bad


def _plain_file_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")
