"""What all clients together may make one server process hold (docs/security.md, the threat table;
docs/rpc.md, "Flow control and memory per connection" and "Rooms and topics of all clients
together").

Every player holds the key, and one of them can open many connections, each within its own
bounds. So three resources are also bounded per process, each counted as it grows:

* the receive side (``ServerConfig.max_receive_total``): frames received in part, counted whole as
  they are reserved (:class:`kcprpc.receive.ReceiveTotal`), and what the connections hold besides
  (bytes received and not read yet: mux buffers, KCP queues), counted when the total passes and by
  the server's sweep;
* the streams (``max_streams_total``): each connection's streams besides its control stream; a
  stream past the bound is refused at once;
* the rooms and topics (``max_membership_bytes``): each membership charged as it is made
  (:attr:`kcprpc.push.PushHub.held`).

Past a bound the sessions holding the most of it are ended with RESOURCE_EXHAUSTED, the largest
first, until the total is under 90 % of it (:func:`shed_largest`, which the send side's
``max_send_backlog_total`` uses too): a client that holds little is never among them.

Live messages held back while recoveries replay (``recovery_buffer_total``) are bounded the same
way in :class:`kcprpc.push.PushHub`, at once as they are held: past it the largest holds are given
up (their recoveries report what they lost), not their sessions ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from kcp.logutil import RateLimitedLog
from kcprpc.push import membership_bytes
from kcprpc.receive import ReceiveTotal
from kcprpc.server_session import ServerHost, ServerSession
from kcprpc.transport import spawn

T = TypeVar("T")

_log = RateLimitedLog(logging.getLogger("kcprpc.server"), burst=3, interval=60.0)

STREAM_ALLOWANCE = 8
"""A connection with at most this many streams besides its control stream is never ended for its
streams: at ``max_streams_total`` its new streams are refused like anyone's, and only connections
with more are shed."""

GROWN_KEEP = 64 * 1024
"""A connection whose transport reported a growing out-of-order buffer (:meth:`ReceiveTotal.grew`)
is counted at every check of the receive total until it holds less than this (bytes)."""

COUNTERS = (
    "receive_shed",  # ended: the largest receive-side holders, all past max_receive_total
    "receive_held",  # bytes held from all clients at the last count (a gauge)
    "memberships_shed",  # ended: in the most rooms and topics, all past max_membership_bytes
    "streams_shed",  # ended: the most streams open, all past max_streams_total
    "streams_refused",  # streams closed at once: the count was at max_streams_total
    "streams_open",  # streams open besides the control streams (a gauge)
)
"""The counters of :class:`ProcessBounds` (in ``Server.stats``)."""


def shed_largest(sized: list[tuple[int, T]], total: int, cap: int) -> list[tuple[int, T]]:
    """Which of ``sized`` (amount held, holder) to end so that ``total`` (their sum, or more) comes
    back under 90 % of ``cap``: none while ``total <= cap``, else the largest first."""
    if total <= cap:
        return []
    target = cap - cap // 10
    out: list[tuple[int, T]] = []
    for held, s in sorted(sized, key=lambda t: t[0], reverse=True):
        if total <= target or held <= 0:
            break
        out.append((held, s))
        total -= held
    return out


class ProcessBounds:
    """The process-wide bounds of one server: counts what grows, and sheds the largest holders
    (soon: once per loop turn at most, whatever the number of triggers)."""

    def __init__(self, server: ServerHost) -> None:
        self.server = server
        self.receive = ReceiveTotal(server.config.receive_total(), lambda: self._soon("receive"))
        """Frames received in part, all connections together (their budgets report here)."""
        self._streams: set[ServerSession] = set()  # connections (first sessions) with streams open
        self._memberships_quiet = 0  # no membership shed is tried below this total (see there)
        self._streams_quiet = 0.0  # no stream shed is tried before this loop time (see there)
        self._pending: set[str] = set()
        self._shed: dict[str, Callable[[], None]] = {
            "receive": self._shed_receive,
            "memberships": self._shed_memberships,
            "streams": self._shed_streams,
        }

    def _soon(self, what: str) -> None:
        if what not in self._pending:
            self._pending.add(what)
            asyncio.get_running_loop().call_soon(self._run, what)

    def _run(self, what: str) -> None:
        self._pending.discard(what)
        self._shed[what]()

    # -- the receive side
    def receive_over(self, sized: list[tuple[int, ServerSession]]) -> None:
        """``sized``: what sessions hold on the receive side (the sweep's count, or the holders'
        when the frames' total passed). Past ``max_receive_total`` in all, end the largest."""
        cap = self.receive.limit
        total = sum(h for h, _s in sized)
        self.server.stats["receive_held"] = total
        for h, s in shed_largest(sized, total, cap):
            s.end_exhausted(
                "receive_shed",
                "receive memory",
                f"{h} bytes held for it (a frame in part counts whole), one of the largest while all "
                f"clients together were over max_receive_total ({cap})",
            )

    def _shed_receive(self) -> None:
        receive = self.receive
        owners = {b.owner for b in receive.holders} | receive.grown
        sized = [(s.receive_held(), s) for s in owners if isinstance(s, ServerSession)]
        # a connection whose out-of-order buffer grew stays counted here until it holds little
        receive.grown = {s for h, s in sized if h >= GROWN_KEEP and not s.closed and s in receive.grown}
        self.receive_over(sized)

    # -- rooms and topics
    def memberships_over(self) -> None:
        """The hub's memberships passed ``max_membership_bytes`` (a join or a subscribe did)."""
        if self.server.push.held >= self._memberships_quiet:
            self._soon("memberships")

    def _shed_memberships(self) -> None:
        """End the sessions in the most rooms and topics, live or kept for a resume; each leaves
        them at once. (Before, only live ones: a client that filled the bound with sessions it
        then abandoned, which keep their rooms while detached, had honest players shed.)"""
        server = self.server
        cap = server.config.max_membership_bytes
        hub = server.push
        sized = [(membership_bytes(s), s) for s in server.sessions if not s.closed]
        sized += [(membership_bytes(s), s) for s in server.kept_sessions()]
        shed = shed_largest(sized, hub.held, cap)
        if not shed and hub.held > cap:
            # the rooms and topics themselves (and the sessions kept for a resume) are over the
            # bound, and no live session holds more than its allowance: nothing to shed; try again
            # only once the total grew by a tenth of the bound (a pass reads every session)
            self._memberships_quiet = hub.held + cap // 10
            _log.warning(
                "memberships",
                "rooms and topics with local members cost %d bytes, over max_membership_bytes (%d), "
                "and no session is in more than its allowance: raise the bound",
                hub.held,
                cap,
            )
            return
        self._memberships_quiet = 0
        for h, s in shed:
            if s.detached:  # kept for a resume: gone now, its rooms and topics at once
                server.stats["memberships_shed"] += 1
                hub.drop(s)
                spawn(server.tasks, server.end_detached(s))
                continue
            s.end_exhausted(
                "memberships_shed",
                "memberships",
                f"in {len(s.rooms)} rooms and {len(s.topics)} topics ({h} bytes), one of the most "
                f"while all sessions together were over max_membership_bytes ({cap})",
            )
            hub.drop(s)

    # -- streams
    def stream_opened(self, owner: ServerSession) -> bool:
        """May ``owner``'s connection (its first session) open one more stream? Each connection's
        first stream (its control stream) is free; the others count against
        ``max_streams_total``. At the bound the stream is refused (``streams_refused``: at once, so
        that a burst of SYNs in one loop turn cannot pass it) and the connections with the most
        are shed soon."""
        stats = self.server.stats
        n = owner.streams
        if n > 0:
            if stats["streams_open"] >= self.server.config.max_streams_total:
                stats["streams_refused"] += 1
                if asyncio.get_running_loop().time() >= self._streams_quiet:
                    self._soon("streams")
                return False
            stats["streams_open"] += 1
        owner.streams = n + 1
        self._streams.add(owner)
        return True

    def stream_closed(self, owner: ServerSession) -> None:
        """A stream :meth:`stream_opened` let open ended."""
        n = owner.streams = owner.streams - 1
        if n > 0:
            self.server.stats["streams_open"] -= 1
        else:
            self._streams.discard(owner)

    def _shed_streams(self) -> None:
        cap = self.server.config.max_streams_total
        live = [(s.streams - 1, s.resumed_into or s) for s in self._streams if s.streams > 1]
        live = [(n, s) for n, s in live if not s.closed]  # (the ended ones' streams are closing)
        total = sum(n for n, _s in live)
        # only connections past their allowance may be shed (the others' excess counts as 0);
        # streams stop at the bound, so reaching it is what counts as over it here
        sized = [(n if n > STREAM_ALLOWANCE else 0, s) for n, s in live]
        shed = shed_largest(sized, total, cap - 1)
        if not shed and total >= cap:
            # every connection is within its allowance: keep refusing new streams, shed nobody,
            # and try again in a second at the earliest (a pass reads every connection)
            self._streams_quiet = asyncio.get_running_loop().time() + 1.0
            _log.warning(
                "streams",
                "%d streams open, at max_streams_total, and no connection has more than %d: new "
                "streams are refused; raise the bound",
                total,
                STREAM_ALLOWANCE,
            )
            return
        for n, s in shed:
            s.end_exhausted(
                "streams_shed",
                "streams",
                f"{n} streams open, one of the most while all connections together were over "
                f"max_streams_total ({cap})",
            )
