"""kcp.endpoint.Endpoint and the sessions it serves: one session's bug in its delivery or its flush
is reported (a few times a minute) and counted, and the other sessions of the batch are still
served. On a real loopback socket; the sessions are stand-ins that record or raise."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from kcp.batch import open_udp_socket
from kcp.endpoint import Endpoint
from kcp.stats import Counters


class User:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.delivered: list[int] = []
        self.flushed: list[int] = []

    def after_input(self, now: int) -> None:
        if self.fail:
            raise RuntimeError("a session's bug")
        self.delivered.append(now)

    def flush_now(self, now: int) -> None:
        if self.fail:
            raise RuntimeError("a session's bug")
        self.flushed.append(now)


async def test_one_sessions_bug_leaves_the_others_of_the_batch_served() -> None:
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx["exception"]))
    counters = Counters()
    ep = Endpoint(loop, open_udp_socket("127.0.0.1", 0), counters, snmp=False)
    bad, good = User(fail=True), User(fail=False)

    def dispatch(data: bytes, addr: Any, now: int) -> None:
        ep.dirty.append(bad if data == b"bad" else good)

    ep.dispatch = dispatch
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data in (b"bad", b"good"):  # one receive batch: the bad session first
            peer.sendto(data, ep.io.sock.getsockname())
        end = loop.time() + 5
        while not good.delivered and loop.time() < end:
            await asyncio.sleep(0.01)
        assert good.delivered and counters.in_errs == 1
        ep.queue_flush(bad)
        ep.queue_flush(good)
        await asyncio.sleep(0)  # the tick
        assert good.flushed and counters.in_errs == 2
        assert [str(e) for e in reported] == ["a session's bug"] * 2
    finally:
        loop.set_exception_handler(None)
        ep.close()
        peer.close()
