"""Attacks on secure mode's negotiation and liveness (hostile-clients issue, items 5 and 6).

Every attacker holds the key (:data:`bench._abuse_common.KEY`). See :mod:`bench._abuse_common` for
the interface: each ``run(target, seconds)`` stops at its deadline and returns its own counters.

- ``fec-oversize`` (item 5): handshakes proposing FEC 200/100 (300 shards per group, above the 256
  Reed-Solomon allows), as fast as 4 workers can. The server must refuse each one in the handshake
  with its reason (``refused``), keep nothing, and log with a rate limit. Before the fix it
  accepted them, failed building the session (one traceback each) and leaked the connection.
- ``fec-amplify`` (item 5): an RPC client proposing FEC 1/255 to a 10/3 server, then pulling
  server streams and making calls. The server must run at most its own 10/3: the counters show
  the FEC agreed and the datagrams received per MiB pulled (before the fix ~256 datagrams per packet).
- ``junk-keepalive`` (item 6): live secure connections whose client goes silent after the
  handshake, while junk datagrams and replays of one authentic packet go to their connection IDs.
  The server must end them by its own timers (authenticated CLOSE, or a stateless reset once it
  forgot them) as if the junk did not exist. On the RPC target the RPC heartbeat sweep (10 s) plus
  the KCP close linger (5 s) ends them at ~15 s with or without the fix; a bare ``kcp.listen``
  session relied on the idle timeout alone, which the junk kept resetting before the fix
  (tests/integration/test_secure_hostile.py). The listener counts the junk (``transport_rejected``).
- ``data-parts`` (issue 15, path MTU): authenticated DATA_PART pieces (the frame that carries a
  KCP segment larger than the path MTU in pieces) that never complete, that claim more than any
  datagram may hold, or that contradict each other, as fast as 4 connections can send them. The
  server must hold at most 8 payloads of at most 2 KiB per connection, drop and count the rest
  (``part_errors``, ``parts_dropped``) and keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import kcprpc
from bench._abuse_common import ATTACKER_HOST, AbuseService, Attack, BlobRequest, EchoMsg, Target
from kcp.secure import HandshakeConfig, HandshakeRefused, SecureClient, SecureConnection
from kcp.secure.packet import F_DATA_PART, T_RESPONSE, T_RETRY, T_TRANSPORT
from kcp.secure.testing import CookieClient, HostileClient, seal_raw

_WORKERS = 4
_REPLY_TIMEOUT = 1.0


def now_ms() -> int:
    return int(asyncio.get_running_loop().time() * 1000)


def _udp(target: Target, source: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((target.host, target.port))
    return sock


async def _handshake(sock: socket.socket, client: SecureClient, deadline: float) -> None:
    """Drive ``client``'s handshake over ``sock`` until it ends or ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    sock.send(client.initiate(now_ms()))
    while client.state == "initiating":
        left = min(deadline, loop.time() + _REPLY_TIMEOUT) - loop.time()
        if left <= 0:
            client.abandon(now_ms())
            return
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
        except TimeoutError:
            client.handle_timer(now_ms())
            for d in client.datagrams_to_send(now_ms()):
                sock.send(d)
            continue
        client.receive(data, sock.getpeername(), now_ms())
        for d in client.datagrams_to_send(now_ms()):
            sock.send(d)
    if client.connection is not None:  # confirm the keys: the server then builds the session
        for d, _addr in client.connection.datagrams_to_send(now_ms()):
            sock.send(d)


@contextlib.asynccontextmanager
async def connected(
    target: Target, deadline: float, out: dict[str, int], source: str | None = None
) -> AsyncIterator[tuple[socket.socket, SecureConnection | None]]:
    """A socket (bound to the address ``source``, if given) and a secure connection over it with
    the target's key (None: the handshake failed), counted in ``out`` (``connections`` or
    ``handshake_failed``); the socket is closed on exit."""
    sock = _udp(target, source)
    try:
        client = SecureClient(HandshakeConfig(passphrase=target.key))
        await _handshake(sock, client, deadline)
        out["handshake_failed" if client.connection is None else "connections"] += 1
        yield sock, client.connection
    finally:
        sock.close()


# ------------------------------------------------------------------------------------ fec-oversize


async def fec_oversize(target: Target, seconds: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    cfg = HandshakeConfig(passphrase=target.key)
    out = {"attempts": 0, "refused": 0, "accepted": 0, "timeouts": 0, "other_failures": 0, "retries": 0}

    async def worker() -> None:
        sock = _udp(target)
        try:
            while loop.time() < deadline:
                client = HostileClient(cfg, fec=(200, 100))
                out["attempts"] += 1
                await _handshake(sock, client, deadline)
                out["retries"] += client.counters.retries_received
                if client.state == "established":
                    out["accepted"] += 1  # the server took a proposal no session can run
                elif isinstance(client.error, HandshakeRefused):
                    out["refused"] += 1
                elif client.state == "failed" and "gave up" in str(client.error):
                    out["timeouts"] += 1
                else:
                    out["other_failures"] += 1
        finally:
            sock.close()

    await asyncio.gather(*(worker() for _ in range(_WORKERS)))
    return out


# ------------------------------------------------------------------------------------ fec-amplify


async def fec_amplify(target: Target, seconds: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out = {"calls": 0, "blob_bytes": 0, "fec_data": -1, "fec_parity": -1, "connect_failed": 0}
    greedy = kcprpc.Transport(kcprpc.SecureWire(key=target.key, fec=(1, 255)))
    client = kcprpc.connect(target.host, target.port, transport=greedy)
    try:
        await asyncio.wait_for(client.connect(), max(0.1, deadline - loop.time()))
    except (TimeoutError, kcprpc.RpcError):
        out["connect_failed"] = 1
        await client.close()
        return out
    session: Any = None
    try:
        link = client.lifecycle.link
        session = link.conn.datagrams if link is not None else None  # type: ignore[attr-defined]
        params = session.secure.params if session is not None and session.secure is not None else None
        if params is not None:
            out["fec_data"], out["fec_parity"] = params.data_shards, params.parity_shards
        stub = client.stub(AbuseService)

        async def pull() -> None:
            while True:
                async for blob in stub.blob(BlobRequest(count=64, size=1024)):
                    data = blob["data"] if isinstance(blob, dict) else blob.data  # blob() is untyped
                    out["blob_bytes"] += len(data)
                await stub.echo(EchoMsg(data=b"x" * 256))
                out["calls"] += 2

        with contextlib.suppress(asyncio.TimeoutError, kcprpc.RpcError):
            await asyncio.wait_for(pull(), max(0.0, deadline - loop.time()))
    finally:
        if session is not None:
            st = session.stats
            out["client_in_pkts"] = st["in_pkts"]
            out["client_out_pkts"] = st["out_pkts"]
            out["client_fec_parity_received"] = st["fec_parity_shards"]
            out["datagrams_received_per_mib"] = st["in_pkts"] * 1048576 // max(1, out["blob_bytes"])
        await client.close()
    return out


# ------------------------------------------------------------------------------------ junk-keepalive


async def junk_keepalive(target: Target, seconds: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out = {"connections": 0, "junk_sent": 0, "replays_sent": 0, "ended_by_server": 0, "handshake_failed": 0}
    alive_ms: list[int] = []

    async def one(seed: int) -> None:
        async with connected(target, deadline, out) as (sock, conn):
            if conn is None:
                return
            authentic = conn.ping(now_ms())  # the last authentic packet: later only replayed
            sock.send(authentic)
            silent_since = loop.time()
            ended = asyncio.Event()
            reader = asyncio.create_task(_watch(sock, conn, ended))
            header = bytes((T_TRANSPORT,)) + conn.remote_cid
            rnd = random.Random(seed)
            try:
                while not ended.is_set() and loop.time() < deadline:
                    for _ in range(10):
                        sock.send(header + rnd.randbytes(8) + rnd.randbytes(rnd.randrange(20, 300)))
                    sock.send(authentic)
                    out["junk_sent"] += 10
                    out["replays_sent"] += 1
                    await asyncio.sleep(0.005)  # pacing: ~2000 junk datagrams/s per connection
            finally:
                reader.cancel()
            if ended.is_set():
                out["ended_by_server"] += 1
                alive_ms.append(int((loop.time() - silent_since) * 1000))
                out["last_close_code"] = conn.close_code or 0  # 8 idle timeout, 11 stateless reset

    await asyncio.gather(*(one(i) for i in range(_WORKERS)))
    out["max_alive_ms_after_silence"] = max(alive_ms) if alive_ms else -1
    return out


async def _watch(sock: socket.socket, conn: SecureConnection, ended: asyncio.Event) -> None:
    """Read what the server sends; set ``ended`` on its CLOSE or a stateless reset."""
    loop = asyncio.get_running_loop()
    while not conn.closed:
        data = await loop.sock_recv(sock, 65536)
        conn.open(data, sock.getpeername(), now_ms())
    ended.set()


# ------------------------------------------------------------------------------------ data-parts


async def data_parts(target: Target, seconds: float) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    out = {"connections": 0, "agreed": 0, "pieces_sent": 0, "handshake_failed": 0}

    async def one(seed: int) -> None:
        async with connected(target, deadline, out) as (sock, conn):
            if conn is None:
                return
            out["agreed"] += int(conn.params.data_parts)
            rnd = random.Random(seed)
            mid = 0
            while loop.time() < deadline:
                for _ in range(32):
                    mid += 1
                    kind = rnd.randrange(3)
                    if kind == 0:  # the first of 16 pieces, never the rest: the server must evict
                        frame = _part(mid, 0, 16, rnd.randbytes(1200))
                    elif kind == 1:  # two pieces that add up to more than any datagram may hold
                        sock.send(seal_raw(conn, _part(mid, 0, 2, rnd.randbytes(1400)), now_ms()))
                        frame = _part(mid, 1, 2, rnd.randbytes(1400))
                        out["pieces_sent"] += 1
                    else:  # a piece that contradicts an earlier one (another count)
                        frame = _part(mid - 1, 1, 3, rnd.randbytes(600))
                    sock.send(seal_raw(conn, frame, now_ms()))
                    out["pieces_sent"] += 1
                await asyncio.sleep(0.002)  # pacing: ~10,000 pieces/s per connection at most

    await asyncio.gather(*(one(i) for i in range(_WORKERS)))
    return out


def _part(mid: int, index: int, count: int, piece: bytes) -> bytes:
    return bytes((F_DATA_PART,)) + (mid & 0xFFFFFFFF).to_bytes(4, "big") + bytes((index, count)) + piece


# ------------------------------------------------------------------------------------ handshake-flood


async def handshake_flood(target: Target, seconds: float) -> dict[str, int]:
    """Initiations with the key and fresh ephemeral keys from one address, as fast as it can send,
    never confirmed: each costs the server a DH and a half-open entry (the RETRY's cookie is
    fetched once and every later initiation carries its mac2, so "under load" proves nothing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    cfg = HandshakeConfig(passphrase=target.key)
    out = {"initiations": 0, "responses": 0, "retries": 0, "hints": 0}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((ATTACKER_HOST, 0))
    sock.connect((target.host, target.port))
    waiting: dict[bytes, CookieClient] = {}
    cookie: bytes | None = None
    try:
        while loop.time() < deadline:
            for _ in range(32):
                client = CookieClient(cfg, cookie)
                first = client.initiate(now_ms())
                waiting[bytes(client.local_cid)] = client
                with contextlib.suppress(BlockingIOError):
                    sock.send(first)
                    out["initiations"] += 1
            while len(waiting) > 4096:
                waiting.pop(next(iter(waiting)))
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                kind = data[0]
                if kind == T_RESPONSE:
                    out["responses"] += 1  # never confirmed: the entry stays half-open
                elif kind == T_RETRY:
                    out["retries"] += 1
                    c = waiting.get(bytes(data[2 : 2 + 8]))
                    if c is not None:
                        c.receive(data, sock.getpeername(), now_ms())
                        for d in c.datagrams_to_send(now_ms()):
                            with contextlib.suppress(BlockingIOError):
                                sock.send(d)
                        cookie = c.cookie
                else:
                    out["hints"] += 1
            await asyncio.sleep(0)
    finally:
        sock.close()
    return out


# ------------------------------------------------------------------------------------ connection-hoard

HOARD_TABLE = 320
"""The target's session table in this attack (``ServerConfig.max_connections``): small, so that
one Python process can try to fill it; the default is 16,384, which a client written for it fills
the same way."""


async def connection_hoard(target: Target, seconds: float) -> dict[str, int]:
    """Real RPC connections with the key from one address (127.0.0.2), as many as the server
    takes, each kept alive by its heartbeats until the attack ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    transport = target.attacker_transport()
    out = {"connected": 0, "refused": 0, "other_failures": 0}
    clients: list[kcprpc.Client] = []

    async def one() -> None:
        client = kcprpc.connect(target.host, target.port, transport=transport)
        try:
            await asyncio.wait_for(client.connect(), max(0.1, deadline - loop.time()))
        except Exception as exc:  # refused (RpcError); anything else is counted by its type
            out["refused" if "from one address" in str(exc) else "other_failures"] += 1
            out[f"error {type(exc).__name__}"] = out.get(f"error {type(exc).__name__}", 0) + 1
            await client.close()
            return
        clients.append(client)
        out["connected"] += 1

    try:
        while loop.time() < deadline - 1.0 and out["refused"] < 64:
            await asyncio.gather(*(one() for _ in range(32)))  # 32 connects at a time, the table's fill
        await asyncio.sleep(max(0.0, deadline - loop.time()))  # hold them: their heartbeats go on
        out["held_at_end"] = sum(1 for c in clients if c.connected)
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return out


# ------------------------------------------------------------------------------------ connect-churn


async def connect_churn(target: Target, seconds: float) -> dict[str, int]:
    """RPC connections from one address (127.0.0.2) opened and closed again as fast as 16 at a time
    go: each costs the server a handshake and a session set up and torn down."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    transport = target.attacker_transport()
    out = {"connected": 0, "failed": 0}

    async def worker() -> None:
        while loop.time() < deadline:
            client = kcprpc.connect(target.host, target.port, transport=transport)
            try:
                await asyncio.wait_for(client.connect(), max(0.1, deadline - loop.time()))
                out["connected"] += 1
            except Exception as exc:  # refused or slowed down: counted by its type
                out["failed"] += 1
                out[f"error {type(exc).__name__}"] = out.get(f"error {type(exc).__name__}", 0) + 1
            finally:
                await client.close()

    await asyncio.gather(*(worker() for _ in range(16)))
    return out


ATTACKS: list[Attack] = [
    Attack(
        name="fec-oversize",
        item=5,
        mode="secure",
        run=fec_oversize,
        description="handshakes proposing FEC 200/100 (> 256 shards), as fast as possible",
        fec=(10, 3),
        server_args=("--datashard", "10", "--parityshard", "3"),
    ),
    Attack(
        name="fec-amplify",
        item=5,
        mode="secure",
        run=fec_amplify,
        description="an RPC client proposing FEC 1/255 to a 10/3 server, pulling streams and calling",
        fec=(10, 3),
        server_args=("--datashard", "10", "--parityshard", "3"),
    ),
    Attack(
        name="junk-keepalive",
        item=6,
        mode="secure",
        run=junk_keepalive,
        description="silent secure connections kept busy with junk and replays to their connection IDs",
    ),
    Attack(
        name="data-parts",
        item=15,
        mode="secure",
        run=data_parts,
        description="authenticated DATA_PART pieces that never complete, are too large or contradict",
    ),
    Attack(
        name="handshake-flood",
        item=5,
        mode="secure",
        run=handshake_flood,
        description="initiations with the key from one address as fast as it can send (cookie reused), never confirmed",
    ),
    Attack(
        name="connection-hoard",
        item=5,
        mode="secure",
        run=connection_hoard,
        description=f"RPC connections from one address held open, to fill a table of {HOARD_TABLE} sessions",
        server_args=("--max-connections", str(HOARD_TABLE)),
    ),
    Attack(
        name="connect-churn",
        item=5,
        mode="secure",
        run=connect_churn,
        description="RPC connections from one address opened and closed again, 16 at a time, as fast as they go",
    ),
]
