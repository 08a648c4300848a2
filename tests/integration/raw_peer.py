"""A hand-driven compat-mode KCP peer on a raw UDP socket, for listener tests.

A compat listener keeps a new peer pending until it acknowledges a challenge (kcp.admission):
a PUSH without data, ``sn`` 0xFFFFFFFF and a random ``ts``. An ikcp engine answers that by
itself; a test that writes KCP packets by hand answers it with :meth:`RawPeer.prove`.
"""

from __future__ import annotations

import asyncio
import struct

from kcp.batch import open_udp_socket
from kcp.crypt import derive_key, new_crypt
from kcp.pipeline import KIND_KCP, Pipeline
from kcp.stats import Counters

_HDR = struct.Struct("<IBBHIIII")  # conv cmd frg wnd ts sn una len
CHALLENGE_SN = 0xFFFFFFFF


def push(conv: int, sn: int, payload: bytes = b"x", ts: int = 0) -> bytes:
    """A well-formed KCP PUSH segment."""
    return _HDR.pack(conv, 81, 0, 128, ts, sn, 0, len(payload)) + payload


class RawPeer:
    """One UDP socket that sends hand-made KCP packets to ``target`` (sealed with ``crypt``/``key``)."""

    def __init__(self, target: tuple[str, int], crypt: str | None = None, key: str | None = None) -> None:
        self.target = target
        self.sock = open_udp_socket("127.0.0.1", 0)
        c = None if crypt is None else new_crypt(crypt, derive_key(key or ""))
        self.pipe = Pipeline(c, 0, 0, Counters())

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return host, port

    def send(self, packet: bytes) -> bytes:
        """Seal and send one KCP packet; returns the datagram."""
        (datagram,) = self.pipe.seal(packet, 0)
        self.sock.sendto(datagram, self.target)
        return datagram

    async def recv_packets(self, timeout: float = 5.0) -> list[tuple[int, int, int, int]]:
        """The (conv, cmd, ts, sn) of every segment in the next datagram from the listener."""
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
        out = []
        for kind, pkt in self.pipe.open(data, 0):
            off = 0
            while kind == KIND_KCP and len(pkt) - off >= 24:
                conv, cmd, _frg, _wnd, ts, sn, _una, ln = _HDR.unpack_from(pkt, off)
                out.append((conv, cmd, ts, sn))
                off += 24 + ln
        return out

    async def challenge(self, conv: int, timeout: float = 5.0) -> int:
        """Wait (bounded) for the listener's challenge for ``conv``; returns its ``ts``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            for c, cmd, ts, sn in await self.recv_packets(max(0.01, end - loop.time())):
                if c == conv and cmd == 81 and sn == CHALLENGE_SN:
                    return ts

    def answer(self, conv: int, ts: int, more: bytes = b"") -> bytes:
        """Acknowledge a challenge, as an ikcp engine does (``more``: segments in the same datagram)."""
        return self.send(_HDR.pack(conv, 82, 0, 128, ts, CHALLENGE_SN, 0, 0) + more)

    async def prove(self, conv: int, timeout: float = 5.0) -> bytes:
        """Wait for the challenge for ``conv`` and acknowledge it; returns the answer datagram."""
        return self.answer(conv, await self.challenge(conv, timeout))

    def close(self) -> None:
        self.sock.close()
