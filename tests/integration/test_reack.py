"""Repeated acks (docs/tuning.md "Repeated acks") on real secure sessions: both ends offer them in
the handshake by default and their engines then send and take REACKs; either end's
``SecureConfig(ack_repeat=False)`` turns them off for the session. Then a bulk upload through a
seeded lossy relay: every byte arrives in order, and REACKs saved resends of segments that had
arrived."""

from __future__ import annotations

import asyncio
import random

import pytest

import kcp
from kcp.relay import LossyRelay
from kcp.secure import SecureConfig

PSK = bytes(range(32))
TIMEOUT = 20.0


async def _pair(
    client_cfg: SecureConfig, server_cfg: SecureConfig, via_relay: LossyRelay | None = None
) -> tuple[kcp.KCPSession, kcp.KCPSession, kcp.Listener]:
    accepted: asyncio.Queue[kcp.KCPSession] = asyncio.Queue()
    lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key=PSK, config=server_cfg), on_accept=accepted.put)
    port = lis.address[1]
    if via_relay is not None:
        via_relay.target = ("127.0.0.1", port)
        await via_relay.start()
        port = via_relay.address[1]
    c = await kcp.dial("127.0.0.1", port, kcp.SecureWire(key=PSK, config=client_cfg))
    c.write(b"hi")
    srv = await asyncio.wait_for(accepted.get(), TIMEOUT)
    assert await asyncio.wait_for(srv.readexactly(2), TIMEOUT) == b"hi"
    return c, srv, lis


@pytest.mark.parametrize(("client", "server"), [(True, True), (True, False), (False, True)])
async def test_both_ends_must_offer_them(client: bool, server: bool) -> None:
    c, srv, lis = await _pair(SecureConfig(ack_repeat=client), SecureConfig(ack_repeat=server))
    try:
        agreed = client and server
        assert c._engine.ack_repeat is agreed and srv._engine.ack_repeat is agreed
    finally:
        c.abort()
        lis.close()
        await lis.wait_closed()


async def test_a_bulk_upload_across_loss_arrives_whole_and_reacks_spare_resends() -> None:
    """512 KB from the client through 8 % loss up and 25 % down (seeded): the server's REACKs acknowledge
    segments whose ACK the relay dropped, so the client does not resend those."""
    relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", 0), loss_up=8.0, loss_down=25.0, delay=5.0, seed=11)
    c, srv, lis = await _pair(SecureConfig(), SecureConfig(), relay)
    try:
        data = random.Random(5).randbytes(512 * 1024)
        c.write(data)
        got = await asyncio.wait_for(srv.readexactly(len(data)), TIMEOUT)
        assert got == data
        await asyncio.wait_for(c.drain(), TIMEOUT)
        assert relay.stats["up_dropped"] > 0 and relay.stats["down_dropped"] > 0
        assert srv.counters.reacks_sent > 0
        assert c.counters.reacks_useful > 0
        assert c.counters.reacks_sent == 0  # the client received nothing above a hole: "hi" only
    finally:
        c.abort()
        await relay.close()
        lis.close()
        await lis.wait_closed()
