"""Attacks on the RPC layer's receive side (items 2 and 3 of the hostile-clients issue), for
``bench/abuse.py`` (see :mod:`bench._abuse_common`).

Both attackers hold the key (they connect like any client) and then speak raw frames on raw mux
streams, which a well-behaved :class:`kcprpc.Client` never sends:

* ``msgpack-bomb``: several connections, each sending ``CALL`` frames whose 4 MiB payload is nested
  arrays of empty maps (one byte each, ~72 bytes each once decoded: ~300 MB a call), on several
  streams at once, over and over. Bound: ``ServerConfig.max_decoded_bytes`` (the body is refused
  before it is decoded) and ``max_partial_frame_bytes`` (one such frame buffered at a time per
  connection). Counters: ``server.recv_decode_refused``, ``server.recv_frame_refused``.
* ``partial-frames``: several connections, each opening many streams that send the first 256 KiB of
  a 4 MiB ``CALL`` and then nothing more, while the control stream keeps pinging. Bound:
  ``max_partial_frame_bytes`` (and the parking budget: a stream that cannot wait is refused),
  ``partial_frame_timeout`` (a stalled frame is dropped). Counters: ``server.recv_frame_waits``,
  ``server.recv_frame_refused``, ``server.recv_frame_timeouts``.
* ``receive-hoard``: many connections, each sending all but the end of one 4 MiB ``CALL``: each
  within its own bound, together far past what one process should hold. Bound:
  ``ServerConfig.max_receive_total`` (the largest holders are ended). Counter: ``server.receive_shed``.
* ``ooo-hoard``: many connections, each losing one of its own KCP segments for good and sending on
  (four streams of 256 KiB, their windows), so the server holds every segment after the hole out
  of order, up to its receive window (about 700 KB a connection), and nothing reaches the mux.
  Bound: ``ServerConfig.max_receive_total`` (the KCP session reports its out-of-order buffer as it
  grows). Counter: ``server.receive_shed``.
* ``stream-hoard``: many connections, each opening thousands of streams that never send a byte.
  Bounds: the mux's ``max_streams`` per connection (1,024 in ``RPC_MUX_CONFIG``) and
  ``ServerConfig.max_streams_total``. Counters: ``server.streams_refused``, ``server.streams_shed``.

Each attack returns its own counters (connections, streams, bytes written, answers by status).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgpack

from bench._abuse_common import Attack, Target
from kcprpc import codec
from kcprpc.net import dial
from kcprpc.status import Status

MiB = 1024 * 1024
BODY = 4 * MiB - 64  # a CALL body just under max_message_size


def bomb_payload(size: int) -> bytes:
    """Nested arrays of empty maps, ``size`` bytes of msgpack: no container is long (per-container
    limits do not catch it), 4,096 maps per inner array."""
    inner = b"\xdc" + (4096).to_bytes(2, "big") + b"\x80" * 4096
    n = (size - 5) // len(inner)
    return b"\xdd" + n.to_bytes(4, "big") + inner * n


def call_frame(cid: int, method: str, packed_payload: bytes) -> bytes:
    """A CALL frame (flag END) around an already packed payload."""
    body = b"\x95" + msgpack.packb(method) + b"\xc0" + msgpack.packb(30_000) + b"\x01" + packed_payload
    return codec.encode_frame_raw(codec.CALL, cid, body)


class RawPeer:
    """One authenticated connection that writes raw frames."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.ctrl: Any = None

    @classmethod
    async def connect(cls, target: Target) -> RawPeer:
        conn = await dial(target.host, target.port, target.transport())
        peer = cls(conn)
        peer.ctrl = await conn.open_stream()
        peer.ctrl.write(codec.encode_frame(codec.HELLO, 0, {"v": 1, "md": {}}))
        dec = codec.FrameDecoder()
        while True:
            data = await asyncio.wait_for(peer.ctrl.read(65536), 10)
            if not data:
                raise ConnectionError("closed before WELCOME")
            if any(f[0] == codec.WELCOME for f in dec.feed(data)):
                return peer

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.close(), 2)


async def first_frame(stream: Any, deadline: float) -> codec.Frame | None:
    """The first frame the server sends on ``stream`` before ``deadline`` (None: none came)."""
    dec = codec.FrameDecoder()
    loop = asyncio.get_running_loop()
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(stream.read(65536), left)
        except (TimeoutError, ConnectionError, OSError, EOFError):
            return None
        except Exception:
            return None
        if not data:
            return None
        frames = dec.feed(data)
        if frames:
            return frames[0]
    return None


def count_answer(counters: dict[str, int], frame: codec.Frame | None) -> None:
    if frame is None:
        counters["no_answer"] += 1
    elif frame[0] == codec.TRAILER and isinstance(frame[2], list) and frame[2]:
        counters[f"answer_{Status.from_wire(frame[2][0]).name.lower()}"] += 1
    else:
        counters[f"answer_type_{frame[0]}"] += 1


async def _bomb_stream(peer: RawPeer, frame: bytes, deadline: float, counters: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        try:
            s = await peer.conn.open_stream()
        except Exception:
            counters["open_failed"] += 1
            return
        counters["streams"] += 1
        s.write(frame)
        counters["bytes_written"] += len(frame)
        count_answer(counters, await first_frame(s, deadline))
        with contextlib.suppress(Exception):
            s.close()


async def _connect_peers(
    target: Target, n: int, deadline: float, peers: list[RawPeer], counters: dict[str, int]
) -> None:
    """Connect ``n`` raw peers (before ``deadline``) into ``peers`` (the caller closes them)."""
    loop = asyncio.get_running_loop()
    for _ in range(n):
        try:
            peers.append(await asyncio.wait_for(RawPeer.connect(target), max(0.1, deadline - loop.time())))
            counters["connections"] += 1
        except Exception:
            counters["connect_failed"] += 1


async def msgpack_bomb(
    target: Target, seconds: float, *, connections: int = 4, streams: int = 4
) -> dict[str, int]:
    """``connections`` connections x ``streams`` streams, each sending 4 MiB bombs one after the other."""
    counters = _default_counter({"connections": 0, "streams": 0, "bytes_written": 0, "no_answer": 0})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    frame = call_frame(1, "abuse.Target/echo", bomb_payload(BODY - 64))
    peers: list[RawPeer] = []
    try:
        await _connect_peers(target, connections, deadline, peers, counters)
        await asyncio.gather(
            *(_bomb_stream(p, frame, deadline, counters) for p in peers for _ in range(streams)),
            return_exceptions=True,
        )
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
    return dict(counters)


async def _pinger(peer: RawPeer, deadline: float, counters: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    dec = codec.FrameDecoder()
    nonce = 0
    while loop.time() < deadline:
        nonce += 1
        try:
            peer.ctrl.write(codec.encode_frame(codec.PING, 0, [nonce, None]))
        except Exception:
            counters["ping_failed"] += 1
            return
        counters["pings"] += 1
        end = min(deadline, loop.time() + 0.5)
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(peer.ctrl.read(65536), left)
            except TimeoutError:
                break
            except Exception:
                counters["control_lost"] += 1
                return
            if not data:
                counters["control_lost"] += 1
                return
            counters["pongs"] += sum(1 for f in dec.feed(data) if f[0] == codec.PONG)


async def _stall(peer: RawPeer, cid: int, first: int, deadline: float, counters: dict[str, int]) -> None:
    try:
        s = await peer.conn.open_stream()
    except Exception:
        counters["open_failed"] += 1
        return
    counters["streams"] += 1
    head = codec.HEADER.pack(BODY, codec.CALL, cid)
    s.write(head + b"\xc6" + (BODY - 5).to_bytes(4, "big") + bytes(first - 5))  # a bin payload, cut short
    counters["bytes_written"] += codec.HEADER_SIZE + first
    count_answer(counters, await first_frame(s, deadline))


async def partial_frames(
    target: Target, seconds: float, *, connections: int = 3, streams: int = 200, first: int = 256 * 1024
) -> dict[str, int]:
    """``connections`` connections, each with ``streams`` streams that send the first ``first`` bytes
    of a 4 MiB CALL and stall, while their control stream pings twice a second."""
    counters = _default_counter(
        {"connections": 0, "streams": 0, "bytes_written": 0, "pings": 0, "pongs": 0, "no_answer": 0}
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    peers: list[RawPeer] = []
    try:
        await _connect_peers(target, connections, deadline, peers, counters)
        tasks = [_pinger(p, deadline, counters) for p in peers]
        tasks += [_stall(p, 1 + i, first, deadline, counters) for p in peers for i in range(streams)]
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
    return dict(counters)


class _Counter(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 0


def _default_counter(initial: dict[str, int]) -> dict[str, int]:
    c = _Counter()
    c.update(initial)
    return c


async def receive_hoard(target: Target, seconds: float) -> dict[str, int]:
    """48 connections, each sending all but the last KiB of a 4 MiB ``CALL`` on one stream and then
    nothing: every one within its own bound, 200 MB together."""
    return await partial_frames(target, seconds, connections=48, streams=1, first=BODY - 1024)


def _lose_for_good(conn: Any) -> None:
    """Make the KCP session under ``conn`` lose its next segment on every send, and never give up."""
    eng = conn.datagrams._engine
    hole, out = eng.snd_nxt, eng.output
    eng.dead_link = 1 << 30

    def output(d: bytes) -> None:
        off = 0
        while off + 24 <= len(d):
            cmd, sn, ln = (
                d[off + 4],
                int.from_bytes(d[off + 12 : off + 16], "little"),
                int.from_bytes(d[off + 20 : off + 24], "little"),
            )
            if cmd == 81 and sn == hole:
                return
            off += 24 + ln
        out(d)

    eng.output = output


async def ooo_hoard(target: Target, seconds: float, *, connections: int = 160) -> dict[str, int]:
    """``connections`` connections, each holding ~700 KB out of order on the server (110 MB together)."""
    counters = _default_counter({"connections": 0, "streams": 0, "bytes_written": 0})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    peers: list[RawPeer] = []
    try:
        await _connect_peers(target, connections, deadline, peers, counters)
        for p in peers:
            _lose_for_good(p.conn)
            for _ in range(4):  # a stream's window is 256 KiB: no more leaves unacknowledged
                s = await p.conn.open_stream()
                s.write(bytes(256 * 1024))
                counters["streams"] += 1
                counters["bytes_written"] += 256 * 1024
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        counters["ended"] = sum(1 for p in peers if p.conn.datagrams.close_code is not None)
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
    return dict(counters)


async def _idle_streams(peer: RawPeer, n: int, deadline: float, counters: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    held = []
    for _ in range(n):
        if loop.time() >= deadline:
            break
        try:
            held.append(await peer.conn.open_stream())
        except Exception:
            counters["open_failed"] += 1
            break
        counters["streams"] += 1
    await asyncio.sleep(max(0.0, deadline - loop.time()))


async def stream_hoard(target: Target, seconds: float) -> dict[str, int]:
    """8 connections, each opening 4,000 streams that never send a byte."""
    counters = _default_counter({"connections": 0, "streams": 0})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    peers: list[RawPeer] = []
    try:
        await _connect_peers(target, 8, deadline, peers, counters)
        await asyncio.gather(
            *(_idle_streams(p, 4000, deadline, counters) for p in peers), return_exceptions=True
        )
    finally:
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
    return dict(counters)


ATTACKS: list[Attack] = [
    Attack(
        name="ooo-hoard",
        item=3,
        mode="secure",
        run=ooo_hoard,
        description=(
            "160 connections, each losing one of its own KCP segments for good and sending on, so "
            "the server holds ~700 KB after each hole out of order (110 MB together)"
        ),
    ),
    Attack(
        name="stream-hoard",
        item=3,
        mode="secure",
        run=stream_hoard,
        description="8 connections, each opening 4,000 streams that never send a byte (about 5 KB each on the server)",
    ),
    Attack(
        name="receive-hoard",
        item=3,
        mode="secure",
        run=receive_hoard,
        description=(
            "48 connections, each sending all but the last KiB of a 4 MiB CALL and then nothing "
            "(each within its own bound, 200 MB together), while their control streams ping"
        ),
    ),
    Attack(
        name="msgpack-bomb",
        item=2,
        mode="secure",
        run=msgpack_bomb,
        description=(
            "4 connections x 4 streams, each sending CALLs whose 4 MiB payload is nested arrays of "
            "empty maps (~300 MB once decoded), again and again"
        ),
    ),
    Attack(
        name="partial-frames",
        item=3,
        mode="secure",
        run=partial_frames,
        description=(
            "3 connections x 200 streams, each sending the first 256 KiB of a 4 MiB CALL and then "
            "nothing, while the control stream pings"
        ),
    ),
]


if __name__ == "__main__":  # a quick manual run against a target started by hand
    import sys

    port = int(sys.argv[1])
    name = sys.argv[2] if len(sys.argv) > 2 else "msgpack-bomb"
    secs = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    attack = next(a for a in ATTACKS if a.name == name)
    t0 = time.perf_counter()
    import kcp

    print(kcp.run(attack.run(Target("127.0.0.1", port, attack.mode), secs)), time.perf_counter() - t0)
