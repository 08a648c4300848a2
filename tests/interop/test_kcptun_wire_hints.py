"""Wire hints against real kcptun (kcp-go) processes: a kcptun client pointed at a secure kcprpc
server gets 20-byte hints that it drops, keeps running and opens nothing; a secure dial to a
kcptun server (which sends no hints: the protocol cannot tell) ends as "no answer", and kcptun
keeps serving kcp-go clients. Every wait is bounded."""

from __future__ import annotations

import asyncio

import pytest
from kcptun_peer import Kcptun, PeerOptions

import kcp
from kcp.secure import HandshakeNoAnswer, SecureConfig

BOUND = 10.0


async def _until(cond: object, what: str) -> None:
    async def wait() -> None:
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(wait(), BOUND)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# with encryption: every datagram starts with a fresh random nonce, so the hint comes even when one
# datagram starts like a hint or a transport packet (without it, 3 in 256 random convs get none)
@pytest.mark.parametrize("crypt", ["aes", "salsa20"])
async def test_kcptun_client_to_a_secure_server_gets_hints_and_is_unaffected(
    kcptun: None, crypt: str
) -> None:
    opts = PeerOptions(crypt=crypt)
    lis = await kcp.listen("127.0.0.1", 0, kcp.SecureWire(key="secret"))
    async with lis, Kcptun.client(lis.address[1], opts) as peer:
        _, w = await asyncio.wait_for(asyncio.open_connection(*peer.address), BOUND)
        w.write(b"hello")  # kcptun-client opens its KCP session and an smux stream
        await _until(lambda: lis.stats["secure_hints_sent"] >= 1, "the secure server's hint")
        assert len(lis) == 0  # nothing opened for it
        assert peer.alive(), peer.log()
        w.close()


async def test_secure_dial_to_a_kcptun_server_is_no_answer(kcptun: None) -> None:
    opts = PeerOptions()
    async with Kcptun.server(9, opts) as peer:  # the TCP target is never reached
        wire = kcp.SecureWire(key="k", config=SecureConfig(handshake_timeout_ms=400, handshake_retry_ms=100))
        with pytest.raises(HandshakeNoAnswer, match=r"no answer from the server at 127\.0\.0\.1:"):
            await asyncio.wait_for(kcp.dial(*peer.address, wire), BOUND)
        assert peer.alive(), peer.log()
