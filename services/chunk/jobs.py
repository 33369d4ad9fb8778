"""Jobs the metadata leader gives a chunkserver: copy a chunk here, delete a copy, move
a copy to a new version, erasure-code a copy, rebuild a lost part, decode parts back
into a whole copy.

A copy or part made by a job is created at version 0 (INCOMPLETE), its file and
directory entry synced, then written, synced, and only then moved to the job's version
with a sync: a job is reported done only once its copy would survive a power loss.
Versions in the log start at 1, so a copy left half made by a failure or a crash never
passes for a good one: the chunkserver does not report version-0 copies and deletes
them when it starts.

`JobRunner.run(job)` never raises: every outcome is a JobDone for the master, with a
message that says what went wrong.
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable

from schemas import chunkmaster_pb2 as pb
from services.chunk import protocol as p
from services.chunk.data_client import ChunkClient, ChunkRequestError
from services.chunk.erasure import ErasureCoder, ErasureError
from services.chunk.errors import ChunkError, ChunkNotFoundError, chunk_name
from services.chunk.parts import MAX_PARTS, store_id
from services.chunk.store import ChunkStore

log = logging.getLogger(__name__)

INCOMPLETE = p.INCOMPLETE
PIECE = 4 << 20         # bytes per request when copying
CONCURRENT_JOBS = 4


class JobError(Exception):
    """A job that could not be done; the message goes back to the master."""


# -- the pure decisions ------------------------------------------------------------------

def pieces(length: int, size: int = PIECE) -> list[tuple[int, int]]:
    """(offset, length) of the requests that move `length` bytes."""
    return [(offset, min(size, length - offset)) for offset in range(0, length, size)]


def delete_allowed(held: int, wanted: int) -> bool:
    """A Delete job names version 0 for "whatever version", else only that one goes."""
    return wanted == 0 or held == wanted


def encode_targets(k: int, m: int, targets: Iterable[str]) -> list[str]:
    """The targets of an Encode job, checked: one for each of the k + m parts."""
    targets = list(targets)
    if len(targets) != k + m:
        raise JobError(f"encode as ec={k}+{m} needs {k + m} targets, the job names "
                       f"{len(targets)}: the master's job is malformed")
    return targets


def rebuild_part(k: int, m: int, part: int) -> int:
    """The erasure part index (0-based) a Rebuild job's `part` (p + 1) names."""
    if not 1 <= part <= k + m:
        raise JobError(f"cannot rebuild part field {part}: an ec={k}+{m} chunk has parts "
                       f"1..{k + m} (p + 1)")
    return part - 1


def backend_of(part: bytes, k: int, m: int) -> str:
    """The erasure backend that made `part` (it says so in its header)."""
    try:
        meta = ErasureCoder(k, m)._driver.get_metadata(part, formatted=True)
    except Exception as e:   # pyeclib raises its own error types for a bad header
        raise JobError(f"a source part has no readable erasure header ({e})") from e
    return meta["backend_id"]


# -- where a copy or part is written: here, or on another chunkserver ---------------------

class LocalTarget:
    """Writes one store id into this server's store, via INCOMPLETE."""

    def __init__(self, store: ChunkStore, ident: int, on_change: Callable[[int], None]):
        self.store, self.ident, self.on_change = store, ident, on_change

    async def begin(self) -> None:
        if self.ident in self.store:      # another version, or one the master distrusts
            await asyncio.to_thread(self.store.delete, self.ident, sync=True)
            self.on_change(self.ident)
        # synced (the file and its directory entry), like a CREATE on the data port
        await asyncio.to_thread(self.store.create, self.ident, INCOMPLETE, sync=True)

    async def put(self, offset: int, data: bytes) -> None:
        await asyncio.to_thread(self.store.write, self.ident, INCOMPLETE, offset, data)

    async def finish(self, version: int) -> None:
        await asyncio.to_thread(self.store.sync, self.ident)
        await asyncio.to_thread(self.store.set_version, self.ident, INCOMPLETE, version, True)
        self.on_change(self.ident)

    async def abort(self) -> None:
        with contextlib.suppress(ChunkError):
            self.store.delete(self.ident, INCOMPLETE)


class RemoteTarget:
    """Writes one store id on another chunkserver, via INCOMPLETE."""

    def __init__(self, client: ChunkClient, ident: int):
        self.client, self.ident = client, ident

    async def begin(self) -> None:
        try:
            await self.client.create(self.ident, INCOMPLETE)
        except ChunkRequestError as e:
            if e.status != p.EXISTS:
                raise
            await self.client.delete(self.ident)
            await self.client.create(self.ident, INCOMPLETE)

    async def put(self, offset: int, data: bytes) -> None:
        await self.client.write(self.ident, INCOMPLETE, offset, data)

    async def finish(self, version: int) -> None:
        await self.client.sync(self.ident, INCOMPLETE)
        await self.client.set_version(self.ident, INCOMPLETE, version)
        await self.client.sync(self.ident, version)

    async def abort(self) -> None:
        with contextlib.suppress(ChunkRequestError, OSError):
            await self.client.delete(self.ident)


async def fill(target, version: int, length: int,
               get: Callable[[int, int], Awaitable[bytes]]) -> None:
    """Make the target hold `length` bytes, fetched piece by piece with `get(offset, n)`,
    at `version`; on any failure leave nothing behind."""
    await target.begin()
    try:
        for offset, n in pieces(length):
            await target.put(offset, await get(offset, n))
        await target.finish(version)
    except BaseException:
        await target.abort()
        raise


async def store_whole(target, data: bytes, version: int) -> None:
    async def get(offset: int, n: int) -> bytes:
        return data[offset:offset + n]
    await fill(target, version, len(data), get)


async def checked_length(client: ChunkClient, ident: int, version: int) -> int:
    """The length of store id `ident` on a peer, which must hold it at `version`."""
    held, length = await client.stat(ident)
    if held != version:
        raise JobError(f"{client.address} holds {chunk_name(ident)} at version {held}, "
                       f"not {version}")
    return length


async def read_whole(client: ChunkClient, ident: int, version: int) -> bytes:
    out = bytearray()
    for offset, n in pieces(await checked_length(client, ident, version)):
        out += await client.read(ident, version, offset, n)
    return bytes(out)


# -- the jobs ----------------------------------------------------------------------------

class JobRunner:
    """Runs jobs against this server's store, at most CONCURRENT_JOBS at a time."""

    def __init__(self, store: ChunkStore, data_address: str,
                 on_change: Callable[[int], None] = lambda ident: None,
                 concurrency: int = CONCURRENT_JOBS):
        self.store, self.data_address, self.on_change = store, data_address, on_change
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self, job: pb.Job) -> pb.JobDone:
        kind = job.WhichOneof("kind")
        what = f"job {job.id} ({kind or 'no kind'} of chunk {chunk_name(job.chunk)} " \
               f"version {job.version})"
        async with self._slots:
            try:
                if kind is None:
                    raise JobError("the job names no kind: this chunkserver may be older "
                                   "than the master; upgrade it")
                message = await getattr(self, f"_{kind}")(job) or ""
            except (JobError, ChunkError, ChunkRequestError, ErasureError, OSError) as e:
                log.warning("%s failed: %s", what, e)
                return pb.JobDone(job=job.id, ok=False, message=f"{what}: {e}")
            except Exception as e:   # a bug: say so rather than leave the master waiting
                log.exception("%s failed unexpectedly", what)
                return pb.JobDone(job=job.id, ok=False,
                                  message=f"{what}: unexpected {type(e).__name__}: {e}")
        log.info("%s done%s", what, f": {message}" if message else "")
        return pb.JobDone(job=job.id, ok=True, message=message)

    async def _replicate(self, job: pb.Job) -> None:
        ident, failures = store_id(job.chunk), []
        for source in job.replicate.sources:
            client = ChunkClient(source)
            try:
                length = await checked_length(client, ident, job.version)
                await fill(LocalTarget(self.store, ident, self.on_change), job.version,
                           length, functools.partial(client.read, ident, job.version))
                return
            except (JobError, ChunkRequestError, OSError) as e:
                failures.append(f"{source}: {e}")
            finally:
                await client.close()
        raise JobError("no source gave a copy (" + ("; ".join(failures) or "none named")
                       + ")")

    async def _delete(self, job: pb.Job) -> str | None:
        ident = store_id(job.chunk, job.delete.part)
        try:
            held = self.store.version(ident)
        except ChunkNotFoundError:
            return "it was not here"
        except ChunkError:              # a damaged header: no version to compare
            held = job.version
        if not delete_allowed(held, job.version):
            raise JobError(f"this server holds version {held}, the job deletes only "
                           f"version {job.version}: not deleted")
        self.store.delete(ident, sync=True)
        self.on_change(ident)
        return None

    async def _set_version(self, job: pb.Job) -> None:
        """The copy, or every part of this chunk held here, at old_version moves on."""
        old, moved = job.set_version.old_version, []
        for part in range(MAX_PARTS + 1):
            ident = store_id(job.chunk, part)
            if ident in self.store and self.store.version(ident) == old:
                await asyncio.to_thread(self.store.set_version, ident, old, job.version, True)
                self.on_change(ident)
                moved.append(ident)
        if not moved:
            raise JobError(f"no copy or part of it is here at version {old}")

    async def _encode(self, job: pb.Job) -> None:
        e = job.encode
        targets = encode_targets(e.k, e.m, e.targets)
        ident = store_id(job.chunk)
        length = self.store.length(ident)
        data = await asyncio.to_thread(self.store.read, ident, job.version, 0, length)
        coder = ErasureCoder(e.k, e.m, e.backend or None)
        parts = await asyncio.to_thread(coder.encode, data)
        await asyncio.gather(*(self._store_part(job.chunk, i + 1, part, job.version, target)
                               for i, (part, target) in enumerate(zip(parts, targets,
                                                                      strict=True))))

    async def _store_part(self, chunk: int, part: int, data: bytes, version: int,
                          address: str) -> None:
        ident = store_id(chunk, part)
        if address == self.data_address:
            await store_whole(LocalTarget(self.store, ident, self.on_change), data, version)
            return
        client = ChunkClient(address)
        try:
            await store_whole(RemoteTarget(client, ident), data, version)
        except (ChunkRequestError, OSError) as e:
            raise JobError(f"storing part {part - 1} on {address} failed: {e}") from e
        finally:
            await client.close()

    async def _rebuild(self, job: pb.Job) -> None:
        r = job.rebuild
        missing = rebuild_part(r.k, r.m, r.part)
        found, coder = await self._enough_parts(job, r.k, r.m, r.sources)
        rebuilt = await asyncio.to_thread(coder.reconstruct, found, [missing])
        await store_whole(LocalTarget(self.store, store_id(job.chunk, r.part), self.on_change),
                          rebuilt[missing], job.version)

    async def _decode(self, job: pb.Job) -> None:
        found, coder = await self._enough_parts(job, job.decode.k, job.decode.m,
                                                job.decode.sources)
        data = await asyncio.to_thread(coder.decode, found)
        await store_whole(LocalTarget(self.store, store_id(job.chunk), self.on_change),
                          data, job.version)

    async def _enough_parts(self, job: pb.Job, k: int, m: int, sources
                            ) -> tuple[dict[int, bytes], ErasureCoder]:
        """At least k of the parts, and a coder of the backend that made them."""
        found, failures = await self._fetch_parts(job.chunk, job.version, sources)
        if len(found) < k:
            raise JobError(f"only {len(found)} of the {k} parts needed could be read ("
                           + "; ".join(failures) + ")")
        return found, ErasureCoder(k, m, backend_of(next(iter(found.values())), k, m))

    async def _fetch_parts(self, chunk: int, version: int, sources
                           ) -> tuple[dict[int, bytes], list[str]]:
        """{part index: part} of the sources that answered, and what the others said."""
        async def fetch(source: pb.PartSource) -> bytes:
            client = ChunkClient(source.address)
            try:
                return await read_whole(client, store_id(chunk, source.part), version)
            finally:
                await client.close()
        results = await asyncio.gather(*(fetch(s) for s in sources), return_exceptions=True)
        found, failures = {}, []
        for source, result in zip(sources, results, strict=True):
            if isinstance(result, (JobError, ChunkRequestError, OSError)):
                failures.append(f"part {source.part - 1} from {source.address}: {result}")
            elif isinstance(result, BaseException):
                raise result
            else:
                found[source.part - 1] = result
        return found, failures
