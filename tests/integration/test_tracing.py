"""One trace per client operation: client -> server -> propose -> commit -> apply."""

import asyncio

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fuse_client.metadata_client import MetadataClient
from mooseng.ports import free_ports
from schemas import metadata_pb2 as mpb
from schemas import namespace_pb2 as pb
from services.common import tracing
from services.common.posix.errors import FsError
from services.metadata.raft.node import NodeOptions
from services.metadata.server import MetadataServer

ROOT = pb.Caller()


@pytest.fixture(scope="module")
def spans():
    exporter = InMemorySpanExporter()
    tracing.configure("mooseng-test", span_exporter=exporter)
    return exporter


async def one_node_cluster(tmp_path, work):
    address = f"127.0.0.1:{free_ports(1)[0]}"
    server = MetadataServer(1, address, {1: address}, str(tmp_path),
                            NodeOptions(tick_s=0.01))
    await server.start()
    try:
        async with MetadataClient([address], "trace-test") as client:
            return await work(client)
    finally:
        await server.stop()


def test_a_mutation_is_one_trace_down_to_the_apply(tmp_path, spans):
    async def work(client):
        spans.clear()
        await client.mutate(ROOT, mkdir=pb.Mkdir(parent=1, name=b"traced", mode=0o755))
    asyncio.run(one_node_cluster(tmp_path, work))
    [client] = [s for s in spans.get_finished_spans() if s.name == "mooseng.client/mkdir"]
    trace = [s for s in spans.get_finished_spans()
             if s.context.trace_id == client.context.trace_id]
    finished = {s.name: s for s in trace}
    assert len(finished) == len(trace) == 5, [s.name for s in trace]
    server = finished["Metadata/mkdir"]
    assert server.parent.span_id == client.context.span_id
    assert server.context.trace_id == client.context.trace_id
    stages = ["raft.propose", "raft.commit", "namespace.apply"]
    for name in stages:
        assert finished[name].parent.span_id == server.context.span_id
        assert finished[name].context.trace_id == client.context.trace_id
    starts = [finished[n].start_time for n in stages]
    assert starts == sorted(starts) and finished[stages[-1]].end_time <= server.end_time
    assert server.attributes["mooseng.status"] == "OK"


def test_a_read_is_traced_and_records_its_errno(tmp_path, spans):
    async def work(client):
        spans.clear()
        with pytest.raises(FsError):
            await client.read(ROOT, lookup=mpb.Lookup(parent=1, name=b"missing"))
    asyncio.run(one_node_cluster(tmp_path, work))
    finished = {s.name: s for s in spans.get_finished_spans()}
    server = finished["Metadata/lookup"]
    assert server.parent.span_id == finished["mooseng.client/lookup"].context.span_id
    assert server.attributes["mooseng.errno"] == 2
