"""Free TCP ports on loopback, for local clusters, tests and benchmarks."""

import socket


def free_ports(n: int) -> list[int]:
    """`n` distinct ports nobody listens on right now (all held open while choosing)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
