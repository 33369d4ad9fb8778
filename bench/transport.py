"""Bulk data over loopback three ways, to choose the chunk data protocol.

1 MiB messages through a grpc.aio client stream; the same bytes written on a plain
asyncio stream under uvloop; and a file sent with sendfile (zero copy) to a plain
reader (os.sendfile in a thread, since uvloop has no sock_sendfile). All in one
run; with --separate the receiving end runs in its own process, as a chunkserver
and a client would. Prints one JSON object with
MiB/s for each and their ratios to gRPC.

Usage: python bench/transport.py [--mib N]
"""

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time

import grpc
import uvloop

from mooseng.ports import free_ports

MESSAGE = 1 << 20


def _grpc_server(port: int) -> grpc.aio.Server:
    async def sink(request_iterator, context):
        total = 0
        async for chunk in request_iterator:
            total += len(chunk)
        return total.to_bytes(8, "big")

    handler = grpc.stream_unary_rpc_method_handler(
        sink, request_deserializer=lambda b: b, response_serializer=lambda b: b)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bench.Sink", {"Send": handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    return server


async def _grpc_send(port: int, mib: int) -> tuple[float, int]:
    """Stream `mib` 1 MiB messages to a sink; (MiB/s, bytes it says it received)."""
    payload = os.urandom(MESSAGE)
    async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
        send = ch.stream_unary("/bench.Sink/Send", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)

        async def chunks():
            for _ in range(mib):
                yield payload
        start = time.perf_counter()
        total = int.from_bytes(await send(chunks()), "big")
        return mib / (time.perf_counter() - start), total


async def via_grpc(mib: int) -> float:
    port = free_ports(1)[0]
    server = _grpc_server(port)
    await server.start()
    rate, total = await _grpc_send(port, mib)
    await server.stop(None)
    assert total == mib * MESSAGE
    return rate


async def _count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, want: int,
                 done: asyncio.Future) -> None:
    got = 0
    while got < want:
        block = await reader.read(4 << 20)
        if not block:
            break
        got += len(block)
    writer.close()
    done.set_result(got)


async def via_stream(mib: int) -> float:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    server = await asyncio.start_server(
        lambda r, w: _count(r, w, mib * MESSAGE, done), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    payload = os.urandom(MESSAGE)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    for _ in range(mib):
        writer.write(payload)
        await writer.drain()
    got = await done
    elapsed = time.perf_counter() - start
    writer.close()
    server.close()
    assert got == mib * MESSAGE
    return mib / elapsed


async def via_sendfile(mib: int, path: str) -> float:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    server = await asyncio.start_server(
        lambda r, w: _count(r, w, mib * MESSAGE, done), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sock = socket.create_connection(("127.0.0.1", port))
    with open(path, "rb") as f:
        start = time.perf_counter()
        # uvloop has no sock_sendfile: the zero-copy send runs in a thread.
        await asyncio.to_thread(sock.sendfile, f)
        got = await done
        elapsed = time.perf_counter() - start
    sock.close()
    server.close()
    assert got == mib * MESSAGE
    return mib / elapsed


async def receive_forever(kind: str, port: int) -> None:
    """The receiving end in its own process: count bytes until killed."""
    if kind == "grpc":
        server = _grpc_server(port)
        await server.start()
        await server.wait_for_termination()
        return

    class Drain(asyncio.Protocol):
        """Counts nothing, copies nothing: the cheapest possible receiver."""

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            pass

        def eof_received(self):
            self.transport.write(b"k")   # one byte back: everything arrived
            return True

    server = await asyncio.get_running_loop().create_server(Drain, "127.0.0.1", port)
    await server.serve_forever()


def separate(mib: int) -> dict:
    """Send from this process to a receiver process; MiB/s for gRPC and a raw stream."""
    import subprocess
    import sys
    uvloop.install()
    rates = {}
    for kind in ("grpc", "stream"):
        port = free_ports(1)[0]
        child = subprocess.Popen([sys.executable, __file__, "--receive", kind, "--port",
                                  str(port)])
        try:
            time.sleep(1.0)
            rates[kind] = asyncio.run(_send_to(kind, port, mib))
        finally:
            child.kill()
            child.wait()
    return {"mib": mib, "separate_processes": True,
            "grpc_stream_MiBps": round(rates["grpc"]),
            "uvloop_stream_MiBps": round(rates["stream"]),
            "stream_vs_grpc": round(rates["stream"] / rates["grpc"], 2)}


async def _send_to(kind: str, port: int, mib: int) -> float:
    if kind == "grpc":
        return (await _grpc_send(port, mib))[0]
    payload = os.urandom(MESSAGE)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    for _ in range(mib):
        writer.write(payload)
        await writer.drain()
    writer.write_eof()
    await reader.read(1)
    elapsed = time.perf_counter() - start
    writer.close()
    return mib / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB to move per method")
    parser.add_argument("--separate", action="store_true",
                        help="receive in another process (default: the same one)")
    parser.add_argument("--receive", choices=("grpc", "stream"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        uvloop.install()
        asyncio.run(receive_forever(args.receive, args.port))
        return
    if args.separate:
        print(json.dumps(separate(args.mib)))
        return
    with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:
        f.write(os.urandom(MESSAGE) * args.mib)
        f.flush()
        grpc_rate = asyncio.run(via_grpc(args.mib))
        uvloop.install()
        stream_rate = asyncio.run(via_stream(args.mib))
        sendfile_rate = asyncio.run(via_sendfile(args.mib, f.name))
    print(json.dumps({
        "mib": args.mib,
        "grpc_stream_MiBps": round(grpc_rate), "uvloop_stream_MiBps": round(stream_rate),
        "uvloop_sendfile_MiBps": round(sendfile_rate),
        "stream_vs_grpc": round(stream_rate / grpc_rate, 2),
        "sendfile_vs_grpc": round(sendfile_rate / grpc_rate, 2)}))


if __name__ == "__main__":
    main()
