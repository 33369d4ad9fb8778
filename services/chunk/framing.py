"""Receiving the data protocol's frames straight into their final buffers.

Both ends of a data connection read fixed-size pieces (a header, then what it
announces): the protocol names the buffer the next bytes go to, so a request's or a
reply's megabytes are received in place and never copied on the way.
"""

import asyncio

from services.chunk import protocol as p


class FramedProtocol(asyncio.BufferedProtocol):
    """Subclasses call `_expect(state, buffer)` for the next piece, and implement
    `_advance()` (the piece is complete) and `_bad(exc)` (it made no sense)."""

    transport = None

    def _expect(self, state: int, buffer: bytearray) -> None:
        self.state, self.buffer, self.filled = state, buffer, 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int):
        return memoryview(self.buffer)[self.filled:]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        try:
            while self.filled == len(self.buffer):
                self._advance()
        except (p.ProtocolError, UnicodeDecodeError) as exc:
            self._bad(exc)
            self.transport.close()

    def _advance(self) -> None:
        raise NotImplementedError

    def _bad(self, exc: Exception) -> None:
        raise NotImplementedError
