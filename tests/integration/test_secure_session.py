"""Secure-mode sessions over real loopback UDP: handshake outcomes surfaced by kcp.dial, bulk echo
(with and without FEC), migration by rebinding the client socket mid-transfer, replayed packets,
key rotation, CLOSE reasons, GOAWAY, and a spoofed initiation flood while a real client connects."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import kcp
from kcp.demo import echo
from kcp.relay import LossyRelay
from kcp.secure import (
    ConnectionClosed,
    GoAwayReceived,
    HandshakeConfig,
    HandshakeKeyMismatch,
    HandshakePskMismatch,
    HandshakeRefused,
    HandshakeTimeout,
    HandshakeUnreachable,
    PathChanged,
    PathValidated,
    Reason,
    SecureClient,
    SecureConfig,
    generate_keypair,
)
from kcp.secure.testing import seeded_rng
from kcp.session import KCPSession

TIMEOUT = 20.0
PRIV, PUB = generate_keypair(seeded_rng(11))
_OTHER_PRIV, OTHER_PUB = generate_keypair(seeded_rng(12))
PSK = bytes(range(32))


@pytest.fixture
async def server() -> AsyncIterator[kcp.Listener]:
    lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=PSK, static_private_key=PRIV), on_accept=echo)
    yield lis
    lis.close()
    await lis.wait_closed()


async def _roundtrip(c: KCPSession, msg: bytes = b"ping") -> None:
    c.write(msg)
    assert await asyncio.wait_for(c.readexactly(len(msg)), TIMEOUT) == msg


async def _bulk_echo(c: KCPSession, size: int, *, seed: int = 1, at_half: Any = None) -> None:
    """Write ``size`` random bytes, read the echo back, call ``at_half()`` once half has come back."""
    payload = random.Random(seed).randbytes(size)
    got = bytearray()
    half = asyncio.Event()

    async def reader() -> None:
        while len(got) < size:
            chunk = await c.read(65536)
            assert chunk, f"session ended early: {c.close_reason}"
            got.extend(chunk)
            if len(got) >= size // 2:
                half.set()

    task = asyncio.create_task(reader())
    for i in range(0, size, 16384):
        if at_half is not None and i >= size // 2:
            await asyncio.wait_for(half.wait(), TIMEOUT)
            at_half()
            at_half = None
        c.write(payload[i : i + 16384])
        await c.drain()
    await asyncio.wait_for(task, TIMEOUT)
    assert bytes(got) == payload


async def _wait_until(cond: Any, what: str, timeout: float = TIMEOUT) -> None:
    """Poll a condition that is set by the event loop's own I/O (bounded)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------------------------ handshake


async def test_handshake_ik_and_passphrase_and_token() -> None:
    seen: list[tuple[bytes, bytes | None]] = []

    def authorize(token: bytes, client_static: bytes | None, addr: Any) -> str | None:
        seen.append((token, client_static))
        return None if token in (b"", b"good") else "unknown token"

    async with await kcp.listen(
        "127.0.0.1",
        0,
        kcp.SecureWire(key="one line", static_private_key=PRIV, authorize=authorize, fec=(3, 1)),
        on_accept=echo,
    ) as lis:
        port = lis.address[1]
        # pinned key (IKpsk2) with a token and a client identity
        cpriv, cpub = generate_keypair(seeded_rng(3))
        c = await kcp.dial(
            "127.0.0.1",
            port,
            kcp.SecureWire(key="one line", static_private_key=cpriv, server_public_key=PUB, token=b"good"),
            session=kcp.SessionConfig(mtu=1200, snd_wnd=64, rcv_wnd=1024),
        )
        p = c.secure.params if c.secure else None
        # the server -> client window is capped by the listener's own send window (512, the default)
        assert p is not None and (p.mtu, p.snd_wnd, p.rcv_wnd) == (1200, 64, 512)
        assert (p.data_shards, p.parity_shards) == (0, 0)  # a non-strict server takes the client's FEC
        assert c.mode == "secure" and c.engine.mtu == 1200 - 34
        await _roundtrip(c)
        assert seen[-1] == (b"good", cpub)
        # passphrase only (NNpsk0): the quickstart one-liner, FEC proposed by the client
        c2 = await kcp.dial("127.0.0.1", port, kcp.SecureWire(key="one line", fec=(3, 1)))
        assert c2.secure is not None and c2.secure.params.data_shards == 3
        await _roundtrip(c2, b"x" * 5000)
        last_token, last_static = seen[-1]
        assert not last_token and last_static is None
        await _wait_until(lambda: len(lis) == 2, "both sessions accepted")
        srv = next(s for s in lis.sessions.values() if s.conv == c.conv)
        assert srv.secure is not None and srv.secure.peer_static == cpub
        assert (srv.engine.snd_wnd, srv.engine.rcv_wnd) == (512, 128)  # mirrored (ikcp: rcv_wnd >= 128)
        for s in (c, c2):
            s.close()
            await s.wait_closed()


async def test_wrong_static_key_fails_at_once_with_message(server: kcp.Listener) -> None:
    t0 = time.monotonic()
    with pytest.raises(HandshakeKeyMismatch, match=r"wrong key: the server at 127.0.0.1:[0-9]+ could not verify"):
        await kcp.dial(
            "127.0.0.1",
            server.address[1],
            kcp.SecureWire(server_public_key=OTHER_PUB, config=SecureConfig(handshake_timeout_ms=600)),
        )
    assert time.monotonic() - t0 < 0.5  # the server's wire hint, not the timeout
    assert server.stats["secure_bad_mac1"] >= 1 and len(server) == 0
    assert server.stats["secure_hints_sent"] >= 1


async def test_wrong_psk_passphrase_fails_at_once(server: kcp.Listener) -> None:
    with pytest.raises(HandshakeKeyMismatch, match="wrong key"):
        await kcp.dial(
            "127.0.0.1",
            server.address[1],
            kcp.SecureWire(key=bytes(32), config=SecureConfig(handshake_timeout_ms=600)),
        )


async def test_wrong_psk_with_pinned_key_fails_in_one_round_trip(server: kcp.Listener) -> None:
    t0 = time.monotonic()
    with pytest.raises(HandshakePskMismatch, match="PSK mismatch") as info:
        await kcp.dial(
            "127.0.0.1",
            server.address[1],
            kcp.SecureWire(
                key=bytes(32), server_public_key=PUB, config=SecureConfig(handshake_timeout_ms=10000)
            ),
        )
    assert not isinstance(info.value, HandshakeTimeout)
    assert time.monotonic() - t0 < 2.0  # one RTT, not the 10 s timeout


@pytest.mark.parametrize(
    ("server_kw", "client_kw", "message"),
    [
        ({}, {"token": b"nope"}, "handshake refused by the server at 127.0.0.1:.*: bad token: unknown token"),
        (
            {},
            {"config": SecureConfig(versions=(2, 3))},
            "version mismatch: client speaks [2, 3], server speaks [1]",
        ),
        (
            {"config": SecureConfig(min_mtu=1300)},
            {"session": kcp.SessionConfig(mtu=1000)},
            "MTU 1000 is below the server's minimum 1300",
        ),
        (
            {"fec": (10, 3), "config": SecureConfig(fec_strict=True)},
            {"fec": (4, 2), "config": SecureConfig(fec_strict=True)},
            "FEC mismatch: client requires 4/2 shards, server requires 10/3",
        ),
        (
            {"config": SecureConfig(mux_versions=(1,))},
            {"config": SecureConfig(mux_versions=(2,))},
            "mux version mismatch",
        ),
    ],
)
async def test_refusals_carry_the_servers_reason(
    server_kw: dict[str, Any], client_kw: dict[str, Any], message: str
) -> None:
    def authorize(token: bytes, client_static: bytes | None, addr: Any) -> str | None:
        return "unknown token" if token == b"nope" else None

    client_kw = dict(client_kw)
    client_session = client_kw.pop("session", None)
    async with await kcp.listen(
        "127.0.0.1", 0, kcp.SecureWire(static_private_key=PRIV, authorize=authorize, **server_kw)
    ) as lis:
        with pytest.raises(HandshakeRefused, match=message.replace("[", r"\[").replace("]", r"\]")):
            await kcp.dial(
                "127.0.0.1",
                lis.address[1],
                kcp.SecureWire(server_public_key=PUB, **client_kw),
                session=client_session,
            )
        assert lis.stats["secure_refused"] == 1 and len(lis) == 0


async def test_usage_errors() -> None:
    with pytest.raises(kcp.KCPUsageError, match="secure mode needs"):
        await kcp.dial("127.0.0.1", 9, kcp.SecureWire())
    with pytest.raises(kcp.KCPUsageError, match="compat-mode"):
        await kcp.dial("127.0.0.1", 9, kcp.SecureWire(key="x"), conv=5)
    with pytest.raises(kcp.KCPUsageError, match="wire must be"):
        await kcp.dial("127.0.0.1", 9, "quic")  # type: ignore[arg-type]
    with pytest.raises(kcp.KCPUsageError, match="client options"):
        await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=PSK, server_public_key=PUB))
    with pytest.raises(kcp.KCPUsageError, match="server option"):
        await kcp.dial("127.0.0.1", 9, kcp.SecureWire(key=PSK, authorize=lambda t, k, a: None))


# ------------------------------------------------------------------------------------ data


@pytest.mark.parametrize("fec", [(0, 0), (10, 3)])
async def test_bulk_echo(fec: tuple[int, int]) -> None:
    async with await kcp.listen(
        "127.0.0.1", 0, kcp.SecureWire(key="bulk", fec=(fec[0], fec[1])), on_accept=echo
    ) as lis:
        c = await kcp.dial(
            "127.0.0.1",
            lis.address[1],
            kcp.SecureWire(key="bulk", fec=(fec[0], fec[1])),
            session=kcp.SessionConfig(snd_wnd=256, rcv_wnd=256),
        )
        await _bulk_echo(c, 3 << 20)
        st = c.stats
        assert st["secure_decrypt_errors"] == 0 and st["secure_packets_opened"] > 2000
        assert (st["fec_parity_shards"] > 0) == bool(fec[0])
        (srv,) = lis.sessions.values()
        c.send_datagram(b"oob")  # OOB datagrams are sealed like everything else
        assert await asyncio.wait_for(srv.recv_datagram(), TIMEOUT) == b"oob"
        c.close()
        await c.wait_closed()


async def test_migration_mid_transfer_by_rebinding(server: kcp.Listener) -> None:
    c = await kcp.dial(
        "127.0.0.1",
        server.address[1],
        kcp.SecureWire(key=PSK, server_public_key=PUB),
        session=kcp.SessionConfig(snd_wnd=256, rcv_wnd=256),
    )
    await _roundtrip(c)
    (srv,) = server.sessions.values()
    events: list[Any] = []
    srv.add_event_callback(events.append)
    old_local = c.local_address
    old_remote = srv.remote_address
    assert old_remote[1] == old_local[1]
    new_local: list[Any] = []
    await _bulk_echo(c, 4 << 20, at_half=lambda: new_local.append(c.rebind()))
    assert new_local and new_local[0][1] != old_local[1]
    assert srv.remote_address[1] == new_local[0][1]  # the session moved, same object, same conv
    assert server.sessions == {srv.secure.local_cid: srv} if srv.secure else False
    assert PathChanged(old_remote, srv.remote_address) in events
    await _wait_until(lambda: PathValidated(srv.remote_address) in events, "path validation")
    st = srv.stats
    assert st["secure_path_changes"] == 1 and st["secure_path_validated"] == 1
    await _roundtrip(c, b"after the move")
    c.close()
    await c.wait_closed()


async def test_migration_through_a_lossy_relay() -> None:
    """The client rebinds behind kcp.relay, which gives each client address its own upstream
    socket: the server sees a new source port, on a link with 5 % loss, reordering and duplicates."""
    lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key="nat"), on_accept=echo)
    relay = LossyRelay(target=lis.address, loss=5.0, delay=2.0, jitter=1.0, reorder=2.0, dup=1.0, seed=4)
    async with lis, relay:
        c = await kcp.dial(
            "127.0.0.1",
            relay.address[1],
            kcp.SecureWire(key="nat", config=SecureConfig(handshake_timeout_ms=10000)),
            session=kcp.SessionConfig(snd_wnd=256, rcv_wnd=256),
        )
        await _roundtrip(c)
        (srv,) = lis.sessions.values()
        first = srv.remote_address
        await _bulk_echo(c, 1 << 20, at_half=c.rebind)
        assert srv.remote_address != first
        await _wait_until(lambda: srv.stats["secure_path_validated"] >= 1, "path validation")
        assert srv.stats["secure_path_changes"] >= 1 and srv.stats["secure_decrypt_errors"] == 0
        assert relay.stats["up_dropped"] > 0
        c.close()
        await c.wait_closed()


class _RecordingRelay:
    """A UDP forwarder that records every client→server datagram (to replay them later)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.front.setblocking(False)
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up.bind(("127.0.0.1", 0))
        self.up.setblocking(False)
        self.client: Any = None
        self.recorded: list[bytes] = []
        loop = asyncio.get_running_loop()
        loop.add_reader(self.front.fileno(), self._from_client)
        loop.add_reader(self.up.fileno(), self._from_server)

    @property
    def address(self) -> tuple[str, int]:
        a = self.front.getsockname()
        return (a[0], a[1])

    def _from_client(self) -> None:
        while True:
            try:
                data, self.client = self.front.recvfrom(65536)
            except BlockingIOError:
                return
            self.recorded.append(data)
            self.up.sendto(data, self.target)

    def _from_server(self) -> None:
        while True:
            try:
                data, _ = self.up.recvfrom(65536)
            except BlockingIOError:
                return
            if self.client is not None:
                self.front.sendto(data, self.client)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for s in (self.front, self.up):
            loop.remove_reader(s.fileno())
            s.close()


async def test_replayed_packets_are_rejected_and_counted(server: kcp.Listener) -> None:
    relay = _RecordingRelay(server.address)
    try:
        c = await kcp.dial("127.0.0.1", relay.address[1], kcp.SecureWire(key=PSK, server_public_key=PUB))
        await _bulk_echo(c, 256 << 10)
        (srv,) = server.sessions.values()

        def forwarded() -> int:
            return sum(1 for d in relay.recorded if d[0] in (0xC8, 0xC9))

        await _wait_until(lambda: srv.stats["secure_packets_opened"] == forwarded(), "quiet link")
        before = srv.stats
        recorded = list(relay.recorded)
        assert len(recorded) > 100
        # replay every recorded datagram (the initiation included), from the relay's own address
        # and from a stranger's address
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind(("127.0.0.1", 0))
        for d in recorded:
            relay.up.sendto(d, server.address)
            stranger.sendto(d, server.address)
        stranger.close()
        transport = sum(1 for d in recorded if d[0] in (0xC8, 0xC9))
        await _wait_until(
            lambda: (
                srv.stats["secure_replay_duplicates"]
                + srv.stats["secure_replay_too_old"]
                - before["secure_replay_duplicates"]
                - before["secure_replay_too_old"]
                >= 2 * transport
            ),
            "every replayed transport packet counted",
        )
        after = srv.stats
        legit = sum(1 for d in relay.recorded[len(recorded) :] if d[0] in (0xC8, 0xC9))  # late acks
        assert after["secure_packets_opened"] - before["secure_packets_opened"] == legit  # no replay got in
        assert after["secure_path_changes"] == 0  # replays never move the session
        assert server.stats["secure_initiation_replays"] >= 1  # the replayed initiation too
        assert len(server) == 1
        await _bulk_echo(c, 64 << 10, seed=2)  # the session is unharmed
        c.close()
        await c.wait_closed()
    finally:
        relay.close()


async def test_tampered_and_garbage_datagrams_are_dropped(server: kcp.Listener) -> None:
    relay = _RecordingRelay(server.address)
    try:
        c = await kcp.dial("127.0.0.1", relay.address[1], kcp.SecureWire(key=PSK, server_public_key=PUB))
        await _bulk_echo(c, 64 << 10)
        (srv,) = server.sessions.values()
        sample = next(d for d in reversed(relay.recorded) if d[0] in (0xC8, 0xC9) and len(d) > 1000)
        rnd = random.Random(9)
        junk = [rnd.randbytes(rnd.randrange(0, 1500)) for _ in range(500)]
        junk += [
            bytes((t,)) + sample[1:9] + rnd.randbytes(rnd.randrange(0, 1400)) for t in (0xC8, 0xC9) * 250
        ]
        junk += [bytes((0xC1,)) + rnd.randbytes(1199) for _ in range(200)]
        flipped = [sample[:i] + bytes((sample[i] ^ 0x01,)) + sample[i + 1 :] for i in range(len(sample))]

        def forwarded() -> int:
            return sum(1 for d in relay.recorded if d[0] in (0xC8, 0xC9))

        await _wait_until(lambda: srv.stats["secure_packets_opened"] == forwarded(), "quiet link")
        before = srv.stats["secure_packets_opened"] - forwarded()
        for d in junk + flipped:
            relay.up.sendto(d, server.address)
        await _bulk_echo(c, 64 << 10, seed=3)  # the session is unharmed (and the junk was read)
        st = server.stats
        assert st["in_errs"] == 0  # nothing raised in the receive path
        assert srv.stats["secure_decrypt_errors"] >= 500
        # every packet the server opened is one the client sent: no flipped byte went unnoticed
        await _wait_until(lambda: srv.stats["secure_packets_opened"] - before == forwarded(), "quiet link")
        assert srv.stats["secure_path_changes"] == 0
        c.close()
        await c.wait_closed()
    finally:
        relay.close()


async def test_key_rotation_across_a_long_transfer() -> None:
    # small limits: a new epoch every 200 packets; the old key goes once 128 newer packets came
    opts = {"rekey_after_packets": 200, "key_grace_ms": 100, "replay_window": 128}
    async with await kcp.listen(
        "127.0.0.1", 0, kcp.SecureWire(key="rotate", config=SecureConfig(**opts)), on_accept=echo
    ) as lis:
        c = await kcp.dial(
            "127.0.0.1",
            lis.address[1],
            kcp.SecureWire(key="rotate", config=SecureConfig(**opts)),
            session=kcp.SessionConfig(snd_wnd=256, rcv_wnd=256),
        )
        await _bulk_echo(c, 4 << 20)
        st = c.stats
        assert st["secure_key_epoch"] >= 5
        assert st["secure_key_updates"] + st["secure_key_updates_by_peer"] == st["secure_key_epoch"]
        assert st["secure_decrypt_errors"] == 0
        c.close()
        await c.wait_closed()


async def test_keys_age_out_on_the_timer_while_idle() -> None:
    opts = {"rekey_after_ms": 60, "key_grace_ms": 20}
    async with await kcp.listen(
        "127.0.0.1", 0, kcp.SecureWire(key="age", config=SecureConfig(**opts)), on_accept=echo
    ) as lis:
        c = await kcp.dial(
            "127.0.0.1", lis.address[1], kcp.SecureWire(key="age", config=SecureConfig(**opts))
        )
        await _roundtrip(c)
        (srv,) = lis.sessions.values()
        assert c.secure is not None and srv.secure is not None
        # nothing is written: only the timer heap can move the keys forward
        await _wait_until(lambda: c.secure is not None and c.secure.epoch >= 4, "four key updates")
        cc, sc = c.secure, srv.secure
        await _wait_until(lambda: sc.epoch == cc.epoch, "the server follows")
        await _roundtrip(c, b"still talking")
        assert c.stats["secure_decrypt_errors"] == 0 and srv.stats["secure_decrypt_errors"] == 0
        c.close()
        await c.wait_closed()


# ------------------------------------------------------------------------------------ closing


async def test_close_reason_reaches_the_peer_at_once() -> None:
    accepted: asyncio.Queue[KCPSession] = asyncio.Queue()
    async with await kcp.listen(
        "127.0.0.1",
        0,
        kcp.SecureWire(key="close"),
        session=kcp.SessionConfig(idle_timeout=60),
        on_accept=accepted.put_nowait,
    ) as lis:
        # server closes with a reason: the client's reads end and it knows why
        c = await kcp.dial(
            "127.0.0.1",
            lis.address[1],
            kcp.SecureWire(key="close"),
            session=kcp.SessionConfig(idle_timeout=60),
        )
        c.write(b"hi")
        srv = await asyncio.wait_for(accepted.get(), TIMEOUT)
        assert await asyncio.wait_for(srv.readexactly(2), TIMEOUT) == b"hi"
        srv.write(b"last words")
        srv.close(7, "maintenance window")
        assert await asyncio.wait_for(c.readexactly(10), TIMEOUT) == b"last words"
        assert await asyncio.wait_for(c.read(), TIMEOUT) == b""
        await asyncio.wait_for(c.wait_closed(), TIMEOUT)
        assert c.close_code == 7 and c.close_reason == "closed by peer: application: maintenance window"
        with pytest.raises(kcp.ConnectionClosedError, match="maintenance window"):
            c.write(b"more")
        # client closes: the server session ends at once, long before its idle timeout
        c2 = await kcp.dial(
            "127.0.0.1",
            lis.address[1],
            kcp.SecureWire(key="close"),
            session=kcp.SessionConfig(idle_timeout=60),
        )
        c2.write(b"x")
        srv2 = await asyncio.wait_for(accepted.get(), TIMEOUT)
        # an answer carries the ack of "x": nothing is left in flight, so the close is at once
        assert await asyncio.wait_for(srv2.readexactly(1), TIMEOUT) == b"x"
        srv2.write(b"y")
        assert await asyncio.wait_for(c2.readexactly(1), TIMEOUT) == b"y"
        mine: list[Any] = []
        c2.add_event_callback(mine.append)
        c2.close(0, "user logged out")
        assert mine == [ConnectionClosed(0, "user logged out", by_peer=False)]
        await asyncio.wait_for(srv2.wait_closed(), 5)
        assert srv2.close_reason == "closed by peer: none: user logged out" and srv2.close_code == 0
        assert len(lis) == 0


_CRASHING_SERVER = """
import asyncio, sys, kcp
async def main():
    async def echo(s):
        while d := await s.read(65536):
            s.write(d)
    wire = kcp.SecureWire(static_private_key=bytes.fromhex(sys.argv[1]))
    lis = await kcp.listen("127.0.0.1", 0, wire, on_accept=echo)
    print(lis.address[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def test_server_restart_ends_the_client_at_once_by_stateless_reset() -> None:
    root = str(Path(__file__).resolve().parents[2])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHING_SERVER,
        PRIV.hex(),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), TIMEOUT))
        c = await kcp.dial(
            "127.0.0.1",
            port,
            kcp.SecureWire(server_public_key=PUB),
            session=kcp.SessionConfig(idle_timeout=60),
        )
        await _roundtrip(c)
    finally:
        proc.kill()  # a crash: no CLOSE
        await proc.wait()
    # the server comes back on the same port with the same key, but without the connection
    async with await kcp.listen(
        "127.0.0.1", port, kcp.SecureWire(static_private_key=PRIV), on_accept=echo
    ) as lis:
        c.write(b"anyone there?")
        await asyncio.wait_for(c.wait_closed(), 5)
        assert c.close_reason.startswith("closed by peer: stateless reset") and c.close_code == 11
        assert lis.stats["secure_stateless_resets_sent"] >= 1
        c2 = await kcp.dial("127.0.0.1", port, kcp.SecureWire(server_public_key=PUB))  # reconnect works
        await _roundtrip(c2)
        c2.close()
        await c2.wait_closed()


async def test_goaway_from_the_listener() -> None:
    async with await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key="drain"), on_accept=echo) as lis:
        c = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key="drain"))
        events: list[Any] = []
        c.add_event_callback(events.append)
        await _roundtrip(c)
        lis.goaway(9, "deploying v2")
        await _wait_until(lambda: c.goaway_received is not None, "GOAWAY")
        assert c.goaway_received == (9, "deploying v2") and GoAwayReceived(9, "deploying v2") in events
        await _roundtrip(c, b"calls in flight still finish")
        with pytest.raises(HandshakeRefused, match="draining") as refused:
            await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key="drain"))
        assert refused.value.code == Reason.GOING_AWAY  # a reason code, not a bad token: callers need no text match
        assert lis.draining and len(lis) == 1
        c.close()
        await c.wait_closed()


async def test_listener_close_ends_clients_at_once() -> None:
    lis = await kcp.listen(
        "127.0.0.1", 0, kcp.SecureWire(key="bye"), session=kcp.SessionConfig(idle_timeout=60), on_accept=echo
    )
    c = await kcp.dial(
        "127.0.0.1", lis.address[1], kcp.SecureWire(key="bye"), session=kcp.SessionConfig(idle_timeout=60)
    )
    await _roundtrip(c)
    lis.close()
    await lis.wait_closed()
    await asyncio.wait_for(c.wait_closed(), 5)
    assert c.close_reason == "closed by peer: going away: listener closed" and c.close_code == 9


async def test_full_table_closes_new_sessions_with_server_busy() -> None:
    async with await kcp.listen(
        "127.0.0.1", 0, kcp.SecureWire(key="full"), on_accept=echo, max_sessions=1
    ) as lis:
        c1 = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key="full"))
        await _roundtrip(c1)
        assert lis.secure_server is not None and lis.secure_server.host_busy  # full: cookies first
        c2 = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key="full"))
        await asyncio.wait_for(c2.wait_closed(), 5)
        assert c2.close_code == 5 and c2.close_reason == "closed by peer: server busy: session table full"
        assert lis.stats["dropped_table_full"] == 1 and lis.stats["secure_retries_sent"] >= 1
        await _roundtrip(c1, b"the first one is fine")
        c1.close()
        await c1.wait_closed()
        await _wait_until(lambda: len(lis) == 0, "the first session ends")
        assert not lis.secure_server.host_busy


async def test_always_retry_stays_on_after_sessions_come_and_go() -> None:
    """``SecureConfig(always_retry=True)`` is the operator's: the listener's own verdict (table
    nearly full, draining) goes beside it and never turns it off."""
    wire = kcp.SecureWire(key="always", config=SecureConfig(always_retry=True))
    async with await kcp.listen("127.0.0.1", 0, wire, on_accept=echo) as lis:
        for i in range(1, 3):
            c = await kcp.dial("127.0.0.1", lis.address[1], kcp.SecureWire(key="always"))
            await _roundtrip(c)
            assert lis.stats["secure_retries_sent"] == i  # every handshake proved its address first
            c.close()
            await c.wait_closed()
        assert lis.secure_server is not None and lis.secure_server.config.always_retry
        assert not lis.secure_server.host_busy


# ------------------------------------------------------------------------------------ flood


def _raw_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 + UDP packet (checksums: the kernel fills the IP one; UDP's 0 = none)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src[0]),
        socket.inet_aton(dst[0]),
    )
    return ip + udp


async def test_spoofed_initiation_flood_while_a_real_client_connects() -> None:
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        # CI runs as root, so there the test must run; elsewhere say what it needs.
        message = "raw sockets are needed to spoof source addresses (run as root / CAP_NET_RAW)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    raw.setblocking(False)
    max_half_open = 256
    async with await kcp.listen(
        "127.0.0.1",
        0,
        kcp.SecureWire(
            static_private_key=PRIV, config=SecureConfig(max_half_open=max_half_open, retry_threshold=32)
        ),
        on_accept=echo,
    ) as lis:
        dst = lis.address
        rnd = random.Random(5)
        # 100,000 spoofed initiations from random 127/8 addresses: 5,000 valid ones (the attacker
        # knows the server's public key) and 95,000 with a bad mac1
        valid = [
            SecureClient(HandshakeConfig(server_public_key=PUB), seeded_rng(100 + i)).initiate(0)
            for i in range(5000)
        ]
        junk_template = bytearray(valid[0])
        datagrams: list[bytes] = []
        for i in range(100_000):
            if i % 20 == 0:
                datagrams.append(valid[i // 20])
            else:
                junk_template[-40:] = rnd.randbytes(40)  # bad mac1
                datagrams.append(bytes(junk_template))
        sent = 0
        client_task: asyncio.Task[KCPSession] | None = None
        t0 = time.monotonic()
        for i, d in enumerate(datagrams):
            src = (
                f"127.{rnd.randrange(1, 255)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}",
                rnd.randrange(1024, 65535),
            )
            try:
                raw.sendto(_raw_udp(src, dst, d), (dst[0], 0))
                sent += 1
            except (BlockingIOError, OSError):
                pass
            if i % 200 == 199:
                await asyncio.sleep(0)  # let the server (same loop) read
            if i == 30_000:
                client_task = asyncio.create_task(
                    kcp.dial(
                        "127.0.0.1",
                        dst[1],
                        kcp.SecureWire(
                            server_public_key=PUB, config=SecureConfig(handshake_timeout_ms=15000)
                        ),
                    )
                )
        raw.close()
        assert client_task is not None
        c = await asyncio.wait_for(client_task, TIMEOUT)
        await _roundtrip(c, b"through the flood")
        srv = lis.secure_server
        assert srv is not None
        st = lis.stats
        sizes = srv.state_sizes()
        assert sent >= 90_000, sent
        assert st["secure_bad_mac1"] > 50_000
        assert st["secure_retries_sent"] > 1_000  # under load: stateless cookies, no state kept
        assert sizes["half_open"] <= max_half_open and st["secure_half_open_max"] <= 40
        assert sizes["connections"] == 1 and len(lis) == 1 and st["secure_accepted"] == 1
        # the 100,000 spoofed sources are not kept in the socket's address caches: the client's is
        caches = lis.state_sizes()
        assert caches["recv_addr_cache"] <= 1 and caches["send_addr_cache"] <= 1, caches
        assert time.monotonic() - t0 < 30
        c.close()
        await c.wait_closed()


async def test_per_peer_tables_return_to_zero_after_clients_come_and_go() -> None:
    """Clients that close, abort, move to a new port first, vanish (a relay that stops carrying
    them: the idle timeout ends their sessions), send garbage, or reach the server after their
    session ended (a stateless reset answers) leave nothing behind: every table of the listener,
    the socket's address caches included, is back to 0. (Secure mode kept every address that
    ever reached it in those caches until they filled: 65,536 entries each.)"""
    wire = kcp.SecureWire(key=PSK)
    async with await kcp.listen(
        "127.0.0.1", 0, wire, session=kcp.SessionConfig(idle_timeout=0.5), on_accept=echo
    ) as lis:
        dst = lis.address
        for rnd in range(3):
            relay = LossyRelay(target=dst)
            await relay.start()
            direct = await asyncio.gather(*(kcp.dial("127.0.0.1", dst[1], wire) for _ in range(6)))
            hidden = await asyncio.gather(*(kcp.dial("127.0.0.1", relay.address[1], wire) for _ in range(2)))
            await asyncio.gather(*(_roundtrip(c, b"round %d" % rnd) for c in direct + hidden))
            cids = [s.secure.local_cid for s in lis.sessions.values() if s.secure is not None]
            assert len(cids) == 8
            for i, c in enumerate(direct):
                if i % 3 == 0:
                    c.rebind()  # the session moves to the new port: the old address is left behind
                    await _roundtrip(c, b"moved")
                if i % 3 == 2:
                    c.abort()  # an authenticated CLOSE
                else:
                    c.close()
                    await c.wait_closed()
            await relay.close()  # the hidden clients vanish
            for c in hidden:
                c.abort()
            await _wait_until(lambda: len(lis) == 0, "every session ended")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
                late.sendto(b"garbage" * 20, dst)  # no session, not a handshake
                for cid in cids:  # a packet for a session that ended: a stateless reset answers
                    late.sendto(bytes((0xC8,)) + cid + os.urandom(64), dst)
                late.setblocking(False)
                reset = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(late, 2048), TIMEOUT)
                assert 0 < len(reset) < 64 + 1 + len(cid)  # a reset: shorter than its trigger
                resets = 8 * (rnd + 1)
                await _wait_until(lambda: lis.stats["secure_stateless_resets_sent"] >= resets, "the resets")  # noqa: B023
            await asyncio.sleep(0)  # the resets leave
            sizes = lis.state_sizes()
            assert all(v == 0 for v in sizes.values()), sizes


async def test_secure_counters_reach_the_process_wide_snmp() -> None:
    before = kcp.snmp()
    lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=PSK, static_private_key=PRIV), on_accept=echo)
    port = lis.address[1]
    c = await kcp.dial("127.0.0.1", port, kcp.SecureWire(key=PSK, server_public_key=PUB))
    await _roundtrip(c)
    live = kcp.snmp()  # live sessions and the live listener are counted before they end
    assert live["secure_handshakes"] - before["secure_handshakes"] == 2  # dialled + accepted
    (srv,) = lis.sessions.values()
    c.rebind()
    await _wait_until(lambda: srv.stats["secure_path_validated"] == 1, "path validation")
    with pytest.raises(HandshakeKeyMismatch):  # the wrong PSK for a passphrase server: bad mac1, a hint
        await kcp.dial(
            "127.0.0.1", port, kcp.SecureWire(key="wrong", config=SecureConfig(handshake_timeout_ms=200))
        )
    mid = kcp.snmp()
    assert mid["secure_path_changes"] - before["secure_path_changes"] == 1
    assert mid["secure_path_validated"] - before["secure_path_validated"] == 1
    assert mid["secure_handshake_failures"] - before["secure_handshake_failures"] == 1
    assert mid["secure_bad_mac1"] - before["secure_bad_mac1"] >= 1
    c.close(7, "bye")
    await c.wait_closed()
    await _wait_until(lambda: srv.closed, "the peer's CLOSE")
    lis.close()
    await lis.wait_closed()
    after = kcp.snmp()  # ours have ended: their counts are folded into kcp.SNMP now
    for field, n in {"secure_handshakes": 2, "secure_path_changes": 1, "secure_closes_sent": 1,
                     "secure_closes_received": 1, "secure_handshake_failures": 1}.items():  # fmt: skip
        assert after[field] - before[field] == n, field


def _closed_udp_port() -> int:
    """A loopback UDP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_nothing_listening_is_reported_at_once_not_after_the_timeout() -> None:
    """ICMP "port unreachable" ends the handshake at once, with its own error (not the 5 s
    "key mismatch or unreachable" timeout)."""
    port = _closed_udp_port()
    t0 = time.monotonic()
    with pytest.raises(HandshakeUnreachable, match=f"connection refused \\(nothing listens on 127.0.0.1:{port}\\)"):
        await kcp.dial("127.0.0.1", port, kcp.SecureWire(key="k", config=SecureConfig(handshake_timeout_ms=4000)))
    assert time.monotonic() - t0 < 2.0
