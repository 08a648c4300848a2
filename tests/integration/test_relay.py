"""The seeded lossy relay: forwarding, per-client upstream sockets, loss, delay, duplication."""

from __future__ import annotations

import asyncio
import itertools
import socket
from typing import Any

import pytest

from kcp.batch import open_udp_socket
from kcp.relay import LossyRelay, main


class Echo(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.peers: set[tuple[str, int]] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.peers.add(addr)
        assert self.transport is not None
        self.transport.sendto(data, addr)


class Client(asyncio.DatagramProtocol):
    def __init__(self, expect: int) -> None:
        self.got: list[bytes] = []
        self.times: list[float] = []
        self.expect = expect
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.append(data)
        self.times.append(asyncio.get_running_loop().time())
        if len(self.got) >= self.expect and not self.done.done():
            self.done.set_result(None)


async def _echo_server() -> tuple[asyncio.DatagramTransport, Echo]:
    loop = asyncio.get_running_loop()
    # big socket buffers: the kernel must not drop what the test counts
    tr, proto = await loop.create_datagram_endpoint(Echo, sock=open_udp_socket("127.0.0.1", 0))
    return tr, proto


async def _client(relay: LossyRelay, expect: int) -> tuple[asyncio.DatagramTransport, Client]:
    loop = asyncio.get_running_loop()
    sock = open_udp_socket("127.0.0.1", 0)
    sock.connect(relay.address)
    tr, proto = await loop.create_datagram_endpoint(lambda: Client(expect), sock=sock)
    return tr, proto


async def _until_sentinel_returns(tr: asyncio.DatagramTransport, c: Client) -> None:
    """Sentinels until one comes back: the link is FIFO here, so once it has, everything sent
    before it came back or was lost. Another goes only after 0.3 s with nothing back (a loss, or
    a burst that swallowed a few), never while the datagrams sent before it are still coming."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    quiet = True
    while b"end" not in c.got:
        if loop.time() >= deadline:
            raise AssertionError("no sentinel came back")
        c.expect = len(c.got) + 1
        c.done = loop.create_future()
        if quiet:
            tr.sendto(b"end")
        try:
            await asyncio.wait_for(asyncio.shield(c.done), 0.3)
            quiet = False
        except TimeoutError:
            quiet = True


async def test_relay_forwards_both_ways_with_one_upstream_per_client() -> None:
    server, echo = await _echo_server()
    async with LossyRelay(target=server.get_extra_info("sockname")) as relay:
        clients = [await _client(relay, 20) for _ in range(3)]
        for tr, _ in clients:
            for i in range(20):
                tr.sendto(b"m%d" % i)
        await asyncio.wait_for(asyncio.gather(*(c.done for _, c in clients)), 5)
        for tr, c in clients:
            assert c.got == [b"m%d" % i for i in range(20)]
            tr.close()
        assert len(echo.peers) == 3
        assert relay.stats["clients"] == 3
        assert relay.stats["up_delivered"] == relay.stats["down_delivered"] == 60
    server.close()


async def test_loss_is_seeded_and_near_the_rate() -> None:
    server, _ = await _echo_server()
    drops = []
    for _ in range(2):
        async with LossyRelay(target=server.get_extra_info("sockname"), loss_up=10, seed=7) as relay:
            tr, c = await _client(relay, 10**9)
            for i in range(1000):
                tr.sendto(b"%d" % i)
            await _until_sentinel_returns(tr, c)
            got = {int(x) for x in c.got if x != b"end"}
            drops.append(sorted(set(range(1000)) - got))
            sentinels = c.got.count(b"end")
            assert relay.stats["up_delivered"] == len(got) + sentinels
            tr.close()
    assert drops[0] == drops[1]  # same seed, same datagrams lost
    assert 60 <= len(drops[0]) <= 140
    server.close()


async def test_burst_loss_is_seeded_and_comes_in_runs() -> None:
    """Gilbert-Elliott (ge_p 1 %, ge_r 25 %): 1/26 of the datagrams lost each way, in runs of about
    4, where random loss at the same rate would lose them one at a time."""
    server, _ = await _echo_server()
    drops = []
    for _ in range(2):
        async with LossyRelay(target=server.get_extra_info("sockname"), ge_p=1, ge_r=25, seed=11) as relay:
            tr, c = await _client(relay, 10**9)
            for i in range(3000):
                tr.sendto(b"%d" % i)
                if i % 100 == 99:
                    await asyncio.sleep(0)  # (the socket buffers stay far from full)
            await _until_sentinel_returns(tr, c)  # (a burst may swallow a few sentinels)
            got = {int(x) for x in c.got if x != b"end"}
            drops.append(sorted(set(range(3000)) - got))
            tr.close()
    assert drops[0] == drops[1]  # same seed, same datagrams lost
    lost = drops[0]
    # both ways lose 1/26: about 7.5 % of the round trips
    assert 0.04 * 3000 <= len(lost) <= 0.12 * 3000
    runs = 1 + sum(1 for a, b in itertools.pairwise(lost) if b != a + 1)
    assert len(lost) / runs >= 2.5  # bursts (random loss: about 1.04 per run)
    server.close()


async def test_delay_and_duplication() -> None:
    server, _ = await _echo_server()
    async with LossyRelay(target=server.get_extra_info("sockname"), delay=20, dup=100, seed=3) as relay:
        tr, c = await _client(relay, 4)  # one datagram, duplicated each way: 4 copies back
        t0 = asyncio.get_running_loop().time()
        tr.sendto(b"ping")
        await asyncio.wait_for(c.done, 5)
        assert c.got == [b"ping"] * 4
        assert c.times[0] - t0 >= 0.039  # 20 ms each way
        assert relay.stats["up_duplicated"] == 1 and relay.stats["down_duplicated"] == 2
        tr.close()
    server.close()


async def test_reorder_swaps_datagrams() -> None:
    server, _ = await _echo_server()
    async with LossyRelay(target=server.get_extra_info("sockname"), reorder=30, seed=5) as relay:
        tr, c = await _client(relay, 200)
        for i in range(200):
            tr.sendto(b"%d" % i)
        await asyncio.wait_for(c.done, 5)
        order = [int(x) for x in c.got]
        assert sorted(order) == list(range(200))
        assert order != sorted(order)
        assert relay.stats["up_reordered"] > 0
        tr.close()
    server.close()


async def test_rate_limit_paces_and_tail_drops() -> None:
    """2,000 kbit/s with a 50 ms queue: 30 datagrams of 1,000 B sent at once (4.1 ms each on the
    link, with 28 B of headers): 13 fit in the queue and come back spread over about 50 ms, the
    rest are dropped and counted."""
    server, _ = await _echo_server()
    async with LossyRelay(target=server.get_extra_info("sockname"), rate=2000, queue=50) as relay:
        tr, c = await _client(relay, 10**9)
        for i in range(30):
            tr.sendto(b"%04d" % i + bytes(996))
        await _until_sentinel_returns(tr, c)
        got = [x for x in c.got if x != b"end"]
        st = relay.stats
        assert 12 <= len(got) <= 14 and st["up_delivered"] == len(got) + c.got.count(b"end")
        # (a sentinel sent while the queue was still full overflows too)
        assert 30 - len(got) <= st["up_overflow"] <= 30 - len(got) + 2 and st["down_overflow"] == 0
        assert [int(x[:4]) for x in got] == list(range(len(got)))  # the first ones, in order
        span = c.times[len(got) - 1] - c.times[0]
        assert 0.040 <= span <= 0.2  # paced at the rate, not forwarded at once
        tr.close()
    server.close()


def test_bad_parameters_and_cli_duration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        LossyRelay(loss=150)
    with pytest.raises(ValueError, match="ge_r"):
        LossyRelay(ge_p=1, ge_r=101)
    for direction in ("loss_up", "loss_down"):
        for bad in (150.0, -1.0):
            kwargs: dict[str, Any] = {direction: bad}
            with pytest.raises(ValueError, match=direction):
                LossyRelay(**kwargs)
    with pytest.raises(ValueError, match="rate"):
        LossyRelay(rate=-1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert main(["--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{port}", "--duration", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "relay 127.0.0.1:" in out and "up_dropped" in out
