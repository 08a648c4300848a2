"""Full stack on 127.0.0.1: MuxSession over real KCP sessions through the seeded lossy relay.

Many streams opened by both sides move data both ways at once through 10 % loss (plus
duplication and reordering); everything must arrive intact. Then the client's KCP session is
aborted underneath the mux: the server's mux must notice (keepalive, short here) and fail its
streams with a clear error. Bounded by ``asyncio.wait_for`` throughout.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import pytest

import kcp
from kcp.relay import LossyRelay
from kcprpc.mux import MuxClosedError, MuxConfig, MuxSession, MuxStream

KCP_OPTS: dict[str, Any] = {
    "nodelay": 1,
    "interval": 10,
    "resend": 2,
    "nc": 1,
    "snd_wnd": 256,
    "rcv_wnd": 256,
    "idle_timeout": 30.0,
}


async def _sessions(
    relay_loss: float, seed: int, **opts: Any
) -> tuple[kcp.KCPSession, kcp.KCPSession, kcp.Listener, LossyRelay]:
    cfg = kcp.SessionConfig(**{**KCP_OPTS, **opts})
    listener = await kcp.listen("127.0.0.1", 0, session=cfg)
    relay = LossyRelay(("127.0.0.1", 0), listener.address, loss=relay_loss, dup=1, reorder=2, seed=seed)
    await relay.start()
    client = await kcp.dial(*relay.address, session=cfg)
    client.write(b"!")  # KCP has no handshake: the listener learns of us from the first packet
    server = await asyncio.wait_for(listener.accept(), 10)
    assert await asyncio.wait_for(server.readexactly(1), 10) == b"!"
    return client, server, listener, relay


@pytest.mark.parametrize(
    ("version", "tight"),
    [(1, False), (2, False), (1, True)],
    ids=["v1", "v2", "v1-tight"],
)
async def test_streams_both_ways_through_lossy_relay(version: int, tight: bool) -> None:
    # tight: a mux receive buffer of 48 KiB and KCP read buffers of 8 KiB, so that the mux often
    # refuses its KCP session's direct input (bucket spent) and the data takes the read buffer and
    # the reader task's way, with read() refilling from the engine, then the direct way again
    ck, sk, listener, relay = await _sessions(10.0, seed=version + 10 * tight, **({"read_buffer": 8192} if tight else {}))
    receive = 48 * 1024 if tight else 512 * 1024
    cfg = MuxConfig(version=version, max_stream_buffer=32768, max_receive_buffer=receive)
    client = MuxSession(ck, client=True, config=cfg)
    server = MuxSession(sk, client=False, config=cfg)
    rng = random.Random(version)

    async def opener(sess: MuxSession, tag: str) -> None:
        st = await sess.open_stream()
        data = random.Random(f"{tag}{st.stream_id}").randbytes(rng.choice((1, 3000, 40_000, 120_000)))
        for off in range(0, len(data), 8192):
            st.write(data[off : off + 8192])
            await st.drain()
        st.close()
        answer = await st.readexactly(64)
        assert answer == hashlib.sha256(data).hexdigest().encode()
        assert await st.read() == b""

    async def acceptor(sess: MuxSession, n: int) -> None:
        async def serve(st: MuxStream) -> None:
            h = hashlib.sha256()
            while chunk := await st.read():
                h.update(chunk)
            st.write(h.hexdigest().encode())
            st.close()

        tasks = [asyncio.ensure_future(serve(await sess.accept_stream())) for _ in range(n)]
        await asyncio.gather(*tasks)

    try:
        await asyncio.wait_for(
            asyncio.gather(
                acceptor(server, 12),
                acceptor(client, 6),
                *(opener(client, "c") for _ in range(12)),
                *(opener(server, "s") for _ in range(6)),
            ),
            60,
        )
        stats = relay.stats
        assert stats["up_dropped"] > 0 and stats["down_dropped"] > 0  # the link really was lossy
        for s in (client, server):
            assert s.counters["protocol_errors"] == 0
    finally:
        await client.close()
        await server.close()
        await relay.close()
        listener.close()


async def test_kcp_session_dies_underneath_streams_fail_clearly() -> None:
    ck, sk, listener, relay = await _sessions(0.0, seed=7)
    cfg = MuxConfig(keepalive_interval=0.05, keepalive_timeout=0.3)
    client = MuxSession(ck, client=True, config=cfg)
    server = MuxSession(sk, client=False, config=cfg)
    try:
        cs = await client.open_stream()
        cs.write(b"hello")
        ss = await asyncio.wait_for(server.accept_stream(), 10)
        assert await asyncio.wait_for(ss.readexactly(5), 10) == b"hello"
        pending = asyncio.ensure_future(ss.read())
        ck.abort()  # the client's KCP session vanishes: no more packets, no FIN, nothing
        with pytest.raises(MuxClosedError) as info:
            await asyncio.wait_for(pending, 10)
        assert "keepalive" in str(info.value) or "transport" in str(info.value)
        with pytest.raises(MuxClosedError):
            await asyncio.wait_for(cs.read(), 10)  # the client side failed too (its transport ended)
    finally:
        await client.close()
        await server.close()
        await relay.close()
        listener.close()
