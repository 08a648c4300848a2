"""kcp.endpoint.Endpoint.forget: an address leaves the socket's caches at once, or once the
datagrams queued for it are sent (sending them would cache it again); the deferred forgets are
bounded and what is skipped past the bound is counted. On a real loopback socket."""

from __future__ import annotations

import asyncio
import socket

from kcp.batch import open_udp_socket
from kcp.endpoint import TX_LIMIT, Endpoint
from kcp.stats import Counters


def _peer() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5.0)
    return s


async def test_a_forget_waits_for_what_is_queued_then_clears_the_caches() -> None:
    ep = Endpoint(asyncio.get_running_loop(), open_udp_socket("127.0.0.1", 0), Counters(), snmp=False)
    peer = _peer()
    try:
        to = peer.getsockname()
        ep.send(b"first", to)
        ep.send_now()  # sent: the address is cached
        assert peer.recv(64) == b"first"
        ep.forget(to)  # nothing queued: gone at once
        assert ep.io.cache_sizes()[1] == 0 or not ep.io.mmsg
        ep.send(b"last", to)  # a session's last datagram, queued for this turn
        ep.forget(to)
        assert ep.forgets == [to]  # waits for the datagram
        await asyncio.sleep(0)  # the turn's send
        assert peer.recv(64) == b"last"
        assert ep.forgets == [] and ep.io.cache_sizes() == (0, 0)
        assert ep.forgets_skipped == 0
    finally:
        ep.close()
        peer.close()


async def test_forgets_past_the_bound_are_skipped_and_counted() -> None:
    ep = Endpoint(asyncio.get_running_loop(), open_udp_socket("127.0.0.1", 0), Counters(), snmp=False)
    try:
        ep.tx.append((b"x", ("127.0.0.1", 9)))  # queued, as while the socket cannot send
        for i in range(TX_LIMIT + 5):
            ep.forget(("198.51.100.1", i))
        assert len(ep.forgets) == TX_LIMIT and ep.forgets_skipped == 5
    finally:
        ep.close()
    assert ep.forgets == []  # a closed endpoint keeps nothing
