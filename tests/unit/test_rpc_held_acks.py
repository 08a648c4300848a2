"""``ServerConfig.ack_hold``: the server's WELCOME asks its secure-KCP clients to hold their
transport's lone acks (docs/tuning.md "Delayed acks"), so a subscriber acks every second push;
``WELCOME.ackhold`` on the wire (docs/wire-format/rpc.md)."""

from __future__ import annotations

import asyncio

import pytest
from test_rpc_support import Demo, Tick

from kcprpc import ServerConfig, UsageError, codec
from kcprpc.net import MuxConnection
from kcprpc.protocol import frames as fr
from kcprpc.testing import pair

TIMEOUT = 10.0


def test_ackhold_round_trips_in_welcome_and_reads_only_ints() -> None:
    w = fr.Welcome(1, "s", 1000, 0, 1 << 20, None, ack_hold=200)
    assert w.encode() == codec.encode_frame(
        codec.WELCOME, 0, {"v": 1, "sid": "s", "hb": 1000, "epoch": 0, "max_msg": 1 << 20, "ackhold": 200}
    )
    assert fr.decode(codec.WELCOME, 0, {"v": 1, "ackhold": 200}).ack_hold == 200  # type: ignore[union-attr]
    assert fr.decode(codec.WELCOME, 0, {"v": 1, "ackhold": "200"}).ack_hold is None  # type: ignore[union-attr]
    assert fr.decode(codec.WELCOME, 0, {"v": 1}).ack_hold is None  # type: ignore[union-attr]
    assert b"ackhold" not in fr.Welcome(1, "s", 1000, 0, 1 << 20, None).encode()


def test_the_server_setting_is_bounded() -> None:
    assert ServerConfig().ack_hold == 0
    for bad in (-1, 251, 1.5):
        with pytest.raises(UsageError, match="ack_hold"):
            ServerConfig(ack_hold=bad)  # type: ignore[arg-type]


async def _pushes_held(server_hold: int) -> tuple[int, int]:
    """30 pushes about 20 ms apart to a subscriber; the client session's hold and its held acks."""
    async with pair([Demo()], link="kcp", server_config=ServerConfig(ack_hold=server_hold)) as p:
        link = p.client.lifecycle.link
        assert link is not None and isinstance(link.conn, MuxConnection)
        session = link.conn.session
        assert session is not None
        ticks: asyncio.Queue[Tick] = asyncio.Queue()
        p.client.on(Tick, lambda t, info: ticks.put_nowait(t))
        await p.client.subscribe("news")
        for n in range(30):
            await p.server.push.publish("news", Tick(n=n))
            assert (await asyncio.wait_for(ticks.get(), TIMEOUT)).n == n
            await asyncio.sleep(0.02)  # the publisher's pace
        return session._hold, session.counters.acks_held


async def test_a_server_asks_its_subscribers_to_hold_their_acks() -> None:
    hold, held = await _pushes_held(200)
    assert hold == 200 and held >= 5  # after LONE_ACKS lone ones, about one in two


async def test_by_default_no_subscriber_holds() -> None:
    hold, held = await _pushes_held(0)
    assert hold == 0 and held == 0
