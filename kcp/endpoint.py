"""The shared UDP endpoint: one socket under one dialled session or under a listener's many.

* receive: the socket is read in a ``loop.add_reader`` callback with :class:`kcp.batch.DatagramIO`
  (``recvmmsg`` on Linux); each datagram goes to :attr:`Endpoint.dispatch` (the dialled session's
  input, or the listener's demux). After the whole batch every session that got input runs its
  :meth:`EndpointUser.after_input` (deliver to the reader, flush acks);
* send: sessions queue ``(datagram, address)`` pairs on :attr:`Endpoint.tx` and mark themselves
  in :attr:`Endpoint.flushq`; one ``call_soon`` per loop tick flushes every marked session and
  hands the tick's datagrams to ``sendmmsg`` (as aioquic batches its datagrams), each full batch
  as soon as it is sealed (a fan-out's first peers do not wait for its last);
* timers: the loop's :class:`kcp.timers.TimerHeap`; before it fires a batch of wake-ups it reads
  the socket once (:meth:`Endpoint.poll_input`), so acks already waiting there cancel
  retransmissions that a long loop callback made overdue;
* read coalescing (a listener's socket, opt-in: ``IOOptions.read_coalesce_ms``): while datagrams arrive
  one by one faster than the loop should wake for each, the socket is read on a timer instead of
  at each readiness (:class:`kcp.coalesce.ReadCoalescer` decides when).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Final, Protocol

from kcp.batch import Address, DatagramIO
from kcp.coalesce import ReadCoalescer
from kcp.logutil import RateLimitedLog
from kcp.stats import SNMP, Counters
from kcp.timers import TimerHeap

__all__ = ["Dispatch", "Endpoint", "EndpointUser"]

TX_LIMIT = 65536
"""Datagrams held while the socket buffer is full; beyond that the oldest are dropped."""

Dispatch = Callable[[bytes, Address, int], object]
"""``dispatch(datagram, source_address, now_ms)``: where the endpoint hands each datagram."""

_bug_reports = RateLimitedLog(logging.getLogger("kcp.session"), burst=3, interval=60.0)
"""Datagram handling that raised (a bug): at most 3 reports (with traceback) a minute, the rest counted."""


QUIET_BATCH: Final = 2
"""A receive batch of at most this many datagrams is flushed in the callback that read it."""

BUSY_READ: Final = 128
"""A read that finds this many datagrams waiting (half of what one readiness callback takes; about
what a default 208 KiB socket buffer holds of small datagrams) means the loop is behind its socket."""
BUSY_HOLD_MS: Final = 2000
"""How long the endpoint counts as busy (:attr:`Endpoint.busy_until`) after such a read."""


class EndpointUser(Protocol):
    """What the endpoint calls on a session it serves."""

    def flush_now(self, now: int) -> None:
        """Flush the engine (the session marked itself in :attr:`Endpoint.flushq`)."""

    def after_input(self, now: int) -> None:
        """The receive batch is over (the session put itself in :attr:`Endpoint.dirty`)."""


def _refused(io: DatagramIO) -> bool:
    """Whether the last receive error was ICMP "port unreachable" (then forgotten)."""
    err = io.last_error
    if err is not None and err.errno == errno.ECONNREFUSED:
        io.last_error = None
        return True
    return False


def _drop(data: bytes, addr: Address, now: int) -> None:
    return None


class Endpoint:
    """One UDP socket shared by one session (client) or many (listener)."""

    __slots__ = (
        "busy_until",
        "closed",
        "coalesce",
        "counters",
        "dirty",
        "dispatch",
        "flushq",
        "forgets",
        "forgets_skipped",
        "gso",
        "io",
        "loop",
        "mmsg",
        "on_refused",
        "on_sent",
        "poll_handle",
        "scheduled",
        "sinks",
        "sock",
        "timers",
        "tx",
        "tx_dropped",
        "writer_armed",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        counters: Counters,
        *,
        mmsg: bool | None = None,
        gso: bool | None = None,
        coalesce_ms: int = 0,
        snmp: bool = True,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.counters = counters
        self.mmsg = mmsg
        self.gso = gso
        # the counters the socket's traffic goes to: the endpoint's, and the process's KCP totals
        # (:data:`kcp.stats.SNMP`) unless ``snmp`` is false (a socket that carries no KCP)
        self.sinks = (counters, SNMP) if snmp else (counters,)
        self.io = DatagramIO(sock, self.sinks, mmsg=mmsg, gso=gso)
        self.timers = TimerHeap.for_loop(loop)
        self.tx: list[tuple[bytes, Address]] = []
        self.forgets: list[Address] = []  # addresses to drop from the io's caches once tx is sent
        self.forgets_skipped = 0
        """Forgets not kept while :data:`TX_LIMIT` waited (the socket could not send): those
        addresses stay in the caches until their own bound clears them."""
        self.flushq: list[EndpointUser] = []
        self.dirty: list[EndpointUser] = []
        self.scheduled = False
        self.writer_armed = False
        self.closed = False
        self.tx_dropped = 0
        self.dispatch: Dispatch = _drop
        self.on_refused: Callable[[], object] | None = None
        """Called when the socket reports ICMP "port unreachable" (a connected socket: nothing
        listens at the peer's address); a dial sets it while its handshake runs."""
        self.on_sent: Callable[[bytes], object] | None = None
        """Called with each datagram as it is handed to the socket; a compat dial sets it until
        the server answered (to recognise a wire hint bound to what it sent, kcp.wirehint)."""
        self.coalesce = ReadCoalescer(coalesce_ms) if coalesce_ms else None
        """Read coalescing (None: off): the socket is read on a timer while it is busy."""
        self.poll_handle: asyncio.TimerHandle | None = None  # the next timed read, while coalescing
        self.busy_until = 0
        """Until this time (ms, :attr:`timers`' clock) the socket counts as busy: a read found at
        least ``BUSY_READ`` datagrams waiting (up to ``BUSY_HOLD_MS`` before). A listener's limits
        that apply under load only (``kcp.secure.SecureConfig.datagram_rate``) read it."""
        loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def local_address(self) -> Address:
        """The socket's address."""
        address: Address = self.sock.getsockname()
        return address

    def ignore_input(self) -> None:
        """Drop every datagram from now on (between a handshake and its session)."""
        self.dispatch = _drop

    def replace_socket(self, sock: socket.socket) -> None:
        """Move to a new socket (a client's rebinding): the old one is closed, queued sends stay."""
        old = self.sock
        fd = old.fileno()
        self._stop_timed_reads()
        if fd >= 0:
            self.loop.remove_reader(fd)
            if self.writer_armed:
                self.loop.remove_writer(fd)
                self.writer_armed = False
        old.close()
        self.sock = sock
        self.io = DatagramIO(sock, self.sinks, mmsg=self.mmsg, gso=self.gso)
        self.loop.add_reader(sock.fileno(), self._on_readable)
        self.kick()

    def forget(self, addr: Address) -> None:
        """Drop ``addr`` from the socket's address caches (a peer no longer served:
        :meth:`kcp.batch.DatagramIO.forget`), once what is queued now has been sent, since sending
        it would cache the address again (a session's last datagrams, its CLOSE)."""
        if not self.tx:
            self.io.forget(addr)
        elif len(self.forgets) < TX_LIMIT:
            self.forgets.append(addr)
        else:  # (the caches' own bound applies to what is skipped)
            self.forgets_skipped += 1

    def send(self, datagram: bytes, addr: Address) -> None:
        """Queue one datagram and make sure this tick's batch goes out."""
        self.tx.append((datagram, addr))
        self.kick()

    def queue_flush(self, user: EndpointUser) -> None:
        """Flush ``user`` at this tick; a queue that reaches a send batch's worth of users (a
        fan-out's writes) is flushed, sealed and sent at once, so the first peers get theirs while
        the rest are still being written, not after every write of the fan-out."""
        q = self.flushq
        q.append(user)
        if len(q) >= self.io.batch and not self.writer_armed:
            self._tick()
        else:
            self.kick()

    def kick(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._tick)

    def _on_readable(self) -> None:
        # at most 256 datagrams per callback: acks and reads go out between batches
        self._read(4)
        c = self.coalesce
        if c is not None and c.woke(self.loop.time()):
            # busy with datagrams that come one by one: read on the timer from now on
            self.loop.remove_reader(self.sock.fileno())
            self.poll_handle = self.loop.call_later(c.hold, self._on_timed_read)

    def _on_timed_read(self) -> None:
        self.poll_handle = None
        c = self.coalesce
        if self.closed or c is None:
            return
        began = self.loop.time()
        got = self._read(16)
        if c.read(began, got):
            # every hold from the last read's start: the time spent on a batch is not added to
            # the next one's wait (a read that took longer than hold is followed at once)
            self.poll_handle = self.loop.call_at(began + c.hold, self._on_timed_read)
        else:
            self.loop.add_reader(self.sock.fileno(), self._on_readable)

    def _stop_timed_reads(self) -> None:
        if self.poll_handle is not None:
            self.poll_handle.cancel()
            self.poll_handle = None
        if self.coalesce is not None:
            self.coalesce.reset()

    def poll_input(self) -> None:
        """Read what the socket already holds (called by the timer heap before it fires).

        Bounded (16 batches), non-blocking: returns at once when nothing is pending.
        """
        if not self.closed:
            self._read(16)

    def _read(self, max_batches: int) -> int:
        """Read and dispatch up to ``max_batches`` receive batches; returns the datagrams read."""
        items = self.io.recv(max_batches)
        if not items:
            if self.on_refused is not None and _refused(self.io):
                self.on_refused()
            return 0
        now = self.timers.now_ms()
        if len(items) >= BUSY_READ:
            self.busy_until = now + BUSY_HOLD_MS  # that much was waiting: the loop is behind its socket
        dispatch = self.dispatch
        # what the input queues to send does not schedule a tick of its own (kick() is a no-op
        # while this is set): this read's end sends it, or schedules the one tick
        ticking = self.scheduled
        self.scheduled = True
        try:
            for data, addr in items:
                try:
                    dispatch(data, addr, now)
                except Exception as exc:  # a bug below must not stop the socket: drop, count, report
                    c = self.counters
                    c.in_errs += 1
                    # a peer that hits the bug must not write a traceback per packet
                    _bug_reports.report_exception(
                        self.loop,
                        "datagram handling failed",
                        "KCP datagram handling failed",
                        exc,
                        remote=addr,
                    )
            dirty = self.dirty
            if dirty:
                self.dirty = []
                for s in dirty:
                    try:
                        s.after_input(now)
                    except Exception as exc:  # a bug in one session must not leave the rest undelivered
                        self._session_bug("a session's delivery failed", exc)
        finally:
            self.scheduled = ticking
        if len(items) <= QUIET_BATCH and (self.flushq or self.tx):
            # a quiet socket: what this input made (a reply its receiver wrote in this turn, acks
            # that go at once, a keepalive's answer) leaves now, ahead of the callbacks the input
            # queued (a handler task's last step), and with no loop turn of its own; a busier
            # batch leaves it to the tick, after those callbacks, so that replies and acks of
            # many calls share datagrams
            self._tick()
        else:
            # a tick after the callbacks this input queued (a caller woken by its reply), which
            # sends what they write in the same loop turn (its next call)
            self.kick()
        return len(items)

    def _tick(self) -> None:
        self.scheduled = False
        if self.flushq:
            now = self.timers.now_ms()
            q = self.flushq
            self.flushq = []
            tx = self.tx
            chunk = self.io.batch
            for s in q:
                try:
                    s.flush_now(now)
                except Exception as exc:  # a bug in one session must not leave the rest unflushed
                    self._session_bug("a session's flush failed", exc)
                # a fan-out flushes a thousand sessions in one tick: each full sendmmsg batch goes
                # as soon as it is sealed (no extra system call), so the first peers get theirs
                # while the rest are still being flushed, not after the whole tick
                if len(tx) >= chunk and not self.writer_armed:
                    self.send_now()
        if self.tx and not self.writer_armed:
            self.send_now()

    def _session_bug(self, what: str, exc: Exception) -> None:
        """Report a session's bug (a few times a minute: its peer may trigger it at every packet)."""
        self.counters.in_errs += 1
        _bug_reports.report_exception(self.loop, what, "KCP " + what, exc)

    def send_now(self) -> None:
        if self.closed:
            self.tx.clear()
            return
        tx = self.tx
        if self.on_sent is not None:
            for datagram, _addr in tx:
                self.on_sent(datagram)
        n = self.io.send(tx)
        if n >= len(tx):
            tx.clear()
            if self.forgets:
                forgets, self.forgets = self.forgets, []
                for addr in forgets:
                    self.io.forget(addr)
            return
        del tx[:n]
        if len(tx) > TX_LIMIT:
            extra = len(tx) - TX_LIMIT
            del tx[:extra]
            self.tx_dropped += extra
        if not self.writer_armed:
            self.writer_armed = True
            self.loop.add_writer(self.sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        self.loop.remove_writer(self.sock.fileno())
        self.writer_armed = False
        self.send_now()

    def close(self) -> None:
        if self.closed:
            return
        if self.tx and not self.writer_armed:
            self.send_now()  # last acks and data, best effort
        self.closed = True
        self._stop_timed_reads()
        fd = self.sock.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            if self.writer_armed:
                self.loop.remove_writer(fd)
        self.sock.close()
        self.tx.clear()
        self.forgets.clear()
