"""asyncio KCP sessions over UDP: :func:`dial`, :class:`KCPSession`, and the shared UDP endpoint.

Data path (one UDP socket = one :class:`_Endpoint`):

* receive: the socket is read in a ``loop.add_reader`` callback with :class:`kcp.batch.DatagramIO`
  (``recvmmsg`` on Linux), each datagram goes through the session's :class:`kcp.pipeline.Pipeline`
  (decrypt, crc, FEC) into its :class:`kcp.engine.KCP`; after the whole batch every touched
  session delivers to its reader, and acks are flushed;
* send: ``write()`` queues into the engine and marks the session; one ``call_soon`` per loop tick
  flushes every marked engine and hands all datagrams of the tick to one ``sendmmsg`` batch (as
  aioquic batches its datagrams);
* timers: one :class:`kcp.timers.TimerHeap` per loop. A session with data in flight is woken when
  its engine's ``check()`` says; an idle session is only woken at its idle deadline. Before the
  heap fires a batch of wake-ups it reads the sessions' sockets once (``_Endpoint.poll_input``), so
  acks already waiting there cancel retransmissions that a long loop callback made overdue.

KCP has no FIN: a session ends on :meth:`KCPSession.close` (after a bounded linger while sent data
is unacknowledged), on the idle timeout, or when the engine reports a dead link. After a local
close or an idle timeout, reads return ``b""``; after a dead link they raise
:class:`kcp.errors.DeadLinkError`. Writes after the end raise the matching
:class:`kcp.errors.ConnectionClosedError`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from kcp.batch import Address, DatagramIO, open_udp_socket
from kcp.config import IOOptions, SessionConfig, Wire
from kcp.crypt import PacketCrypt, derive_key, new_crypt
from kcp.engine import IKCP_ASK_SEND, IKCP_ASK_TELL, IKCP_OVERHEAD, KCP
from kcp.errors import ConnectionClosedError, DeadLinkError, KCPUsageError
from kcp.logutil import RateLimitedLog
from kcp.pipeline import KIND_KCP, KIND_OOB, Pipeline
from kcp.stats import SNMP, Counters
from kcp.timers import TimerHeap

if TYPE_CHECKING:
    from kcp.listener import Listener
    from kcp.secure import Event, SecureConnection
    from kcp.secure_io import SecureLink

__all__ = ["KCPSession", "SessionConfig", "dial", "run", "snmp"]

_T = TypeVar("_T")
_U32 = struct.Struct("<I")
_OPEN, _CLOSING, _CLOSED = 0, 1, 2
_KCPGO_INITIAL_RMT_WND = 32  # kcp-go's IKCP_WND_RCV, the peer window assumed before any packet
_TX_LIMIT = 65536  # datagrams held while the socket buffer is full; beyond that they are dropped

# Counters that live on the endpoint/listener/SNMP directly, not per session (never folded twice)
_NOT_FOLDED = frozenset(
    {
        "bytes_sent",
        "bytes_received",
        "out_pkts",
        "in_pkts",
        "send_syscalls",
        "recv_syscalls",
        "active_opens",
        "passive_opens",
        "curr_estab",
        "max_conn",
        "closed",
        "dropped_no_session",
        "dropped_table_full",
        "dropped_bad_conv",
        "dropped_backlog_full",
        "dropped_replay",
        "dropped_rate_limited",
        "pending_created",
        "pending_promoted",
        "pending_expired",
        "pending_evicted",
        "pending_overflow",
        "restart_deferred",
        "sessions_replaced",
    }
)
# secure_* fields come from kcp.secure's counters (kcp.secure_io folds them), not from sessions' own
_FOLDED = tuple(f for f in Counters.FIELDS if f not in _NOT_FOLDED and not f.startswith("secure_"))
_live: weakref.WeakSet[KCPSession] = weakref.WeakSet()
_bug_reports = RateLimitedLog(logging.getLogger("kcp.session"), burst=3, interval=60.0)
"""Datagram handling that raised (a bug): at most 3 reports (with traceback) a minute, the rest counted."""
_snmp: Any = SNMP  # Any: Counters declares its fields through a computed __slots__


def snmp() -> dict[str, int]:
    """Process-wide counters: :data:`kcp.stats.SNMP` plus what live sessions counted so far.

    Sessions count engine and packet-layer events in their own :class:`Counters` and fold them into
    ``SNMP`` when they close; socket-level and session-lifecycle counters go to ``SNMP`` directly.
    The ``secure_*`` fields come from secure mode's counters (connections, listeners' handshake
    cores, dials), folded in the same way (:data:`kcp.secure_io.SNMP_SECURE`).
    """
    total = SNMP.snapshot()
    for s in list(_live):
        c = s.counters
        for f in _FOLDED:
            total[f] += getattr(c, f)
    if "kcp.secure_io" in sys.modules:  # secure mode was used in this process
        from kcp.secure_io import add_secure_counters, live_secure_totals

        for s in list(_live):
            if s._secure is not None:
                add_secure_counters(total, s._secure.conn.counters)
        live_secure_totals(total)
    return total


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(main)
    result: _T = uvloop.run(main)
    return result


def _make_crypt(crypt: str | PacketCrypt | None, key: bytes | str | None) -> PacketCrypt | None:
    if crypt is None or crypt == "null":
        return None
    if not isinstance(crypt, str):
        return crypt
    if key is None:
        raise KCPUsageError(f"cipher {crypt!r} needs a key (a passphrase str or derived key bytes)")
    material = derive_key(key) if isinstance(key, str) else bytes(key)
    return new_crypt(crypt, material)


class _Endpoint:
    """One UDP socket shared by one session (client) or many (listener)."""

    __slots__ = (
        "closed",
        "counters",
        "dirty",
        "dispatch",
        "flushq",
        "gso",
        "io",
        "loop",
        "mmsg",
        "scheduled",
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
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.counters = counters
        self.mmsg = mmsg
        self.gso = gso
        self.io = DatagramIO(sock, (counters, SNMP), mmsg=mmsg, gso=gso)
        self.timers = TimerHeap.for_loop(loop)
        self.tx: list[tuple[bytes, Address]] = []
        self.flushq: list[KCPSession] = []
        self.dirty: list[KCPSession] = []
        self.scheduled = False
        self.writer_armed = False
        self.closed = False
        self.tx_dropped = 0
        self.dispatch: Callable[[bytes, Address, int], object] = lambda d, a, n: None
        loop.add_reader(sock.fileno(), self._on_readable)

    def replace_socket(self, sock: socket.socket) -> None:
        """Move to a new socket (a client's rebinding): the old one is closed, queued sends stay."""
        old = self.sock
        fd = old.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            if self.writer_armed:
                self.loop.remove_writer(fd)
                self.writer_armed = False
        old.close()
        self.sock = sock
        self.io = DatagramIO(sock, (self.counters, SNMP), mmsg=self.mmsg, gso=self.gso)
        self.loop.add_reader(sock.fileno(), self._on_readable)
        self.kick()

    def kick(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._tick)

    def _on_readable(self) -> None:
        # at most 256 datagrams per callback: acks and reads go out between batches
        self._read(4)

    def poll_input(self) -> None:
        """Read what the socket already holds (called by the timer heap before it fires).

        Bounded (16 batches), non-blocking: returns at once when nothing is pending.
        """
        if not self.closed:
            self._read(16)

    def _read(self, max_batches: int) -> None:
        items = self.io.recv(max_batches)
        if not items:
            return
        now = self.timers.now_ms()
        dispatch = self.dispatch
        for data, addr in items:
            try:
                dispatch(data, addr, now)
            except Exception as exc:  # a bug below must not stop the socket: drop, count, report
                c: Any = self.counters
                c.in_errs += 1
                left_out = _bug_reports.allow("datagram handling failed")
                if left_out is not None:  # a peer that hits the bug must not write a traceback per packet
                    more = f" ({left_out} more not reported)" if left_out else ""
                    self.loop.call_exception_handler(
                        {"message": "KCP datagram handling failed" + more, "exception": exc, "remote": addr}
                    )
        dirty = self.dirty
        if dirty:
            self.dirty = []
            for s in dirty:
                s._after_input(now)
        self.kick()

    def _tick(self) -> None:
        self.scheduled = False
        if self.flushq:
            now = self.timers.now_ms()
            q = self.flushq
            self.flushq = []
            for s in q:
                s._flush(now)
        if self.tx and not self.writer_armed:
            self.send_now()

    def send_now(self) -> None:
        if self.closed:
            self.tx.clear()
            return
        tx = self.tx
        n = self.io.send(tx)
        if n >= len(tx):
            tx.clear()
            return
        del tx[:n]
        if len(tx) > _TX_LIMIT:
            extra = len(tx) - _TX_LIMIT
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
        fd = self.sock.fileno()
        if fd >= 0:
            self.loop.remove_reader(fd)
            if self.writer_armed:
                self.loop.remove_writer(fd)
        self.sock.close()
        self.tx.clear()


class KCPSession:
    """A reliable, ordered byte stream (and unreliable datagrams) to one peer over KCP.

    Created by :func:`dial` or accepted from a :class:`kcp.listener.Listener`; not built directly.
    Reading and writing follow :class:`asyncio.StreamReader`/:class:`asyncio.StreamWriter`, except
    that ``read(-1)`` returns whatever is buffered as soon as there is something (KCP streams
    rarely end, so it does not wait for EOF).
    """

    __slots__ = (
        "__weakref__",
        "_closed_fut",
        "_config",
        "_dgram_waiter",
        "_dgrams",
        "_drain_waiter",
        "_engine",
        "_ep",
        "_event_callbacks",
        "_exc",
        "_flush_marked",
        "_high_water",
        "_idle_ms",
        "_in_dirty",
        "_last_recv",
        "_last_valid",
        "_linger_until",
        "_listener",
        "_loop",
        "_low_water",
        "_overhead",
        "_pipeline",
        "_plain",
        "_rbuf",
        "_read_waiter",
        "_rlimit",
        "_secure",
        "_state",
        "_timer_entry",
        "_timer_input",
        "_timers",
        "ack_nodelay",
        "close_code",
        "close_reason",
        "counters",
        "datagrams_dropped",
        "goaway_received",
        "local_address",
        "remote_address",
    )

    def __init__(
        self,
        ep: _Endpoint,
        conv: int,
        remote: Address,
        config: SessionConfig,
        crypt: PacketCrypt | None,
        data_shards: int,
        parity_shards: int,
        *,
        listener: Listener | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        secure: SecureLink | None = None,
    ) -> None:
        self._ep = ep
        self._loop = ep.loop
        self._timers = ep.timers
        self._timer_input = ep  # the heap reads the socket's pending acks before firing timers
        self._listener = listener
        self._config = config
        self.remote_address: Address = remote
        self.local_address: Address = ep.sock.getsockname()
        self.counters = Counters()
        self._pipeline = Pipeline(crypt, data_shards, parity_shards, self.counters, rng)
        self._plain = crypt is None and not self._pipeline.fec_enabled
        self._secure = secure
        self._overhead = self._pipeline.overhead + (secure.overhead if secure is not None else 0)
        self.close_code: int | None = None
        self.goaway_received: tuple[int, str] | None = None
        self._event_callbacks: list[Callable[[Event], object]] = (
            secure.callbacks if secure is not None else []
        )
        eng = self._engine = KCP(conv, None)
        eng.counters = self.counters
        eng.nodelay(config.nodelay, config.interval, config.resend, config.nc)
        eng.wndsize(config.snd_wnd, config.rcv_wnd)
        # Until the peer's first packet tells its window, assume kcp-go's initial one (32), not
        # ikcp's 128: a new kcp-go session receives only 32 segments until its owner widens the
        # window, so a first flight of 128 loses the rest (seen live against kcptun-server).
        eng.rmt_wnd = _KCPGO_INITIAL_RMT_WND
        if eng.setmtu(config.mtu - self._overhead) < 0:
            raise KCPUsageError("mtu too small for the packet-layer overhead")
        eng.stream = 1 if config.stream else 0
        eng.dead_link = config.dead_link
        eng.output = self._make_output()
        self.ack_nodelay = config.ack_nodelay
        self._rbuf = bytearray()
        self._rlimit = config.read_buffer
        self._dgrams: deque[bytes] = deque()
        self.datagrams_dropped = 0
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._dgram_waiter: asyncio.Future[None] | None = None
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        self._state = _OPEN
        self._exc: BaseException | None = None
        self.close_reason = ""
        self._flush_marked = False
        self._in_dirty = False
        self._timer_entry: tuple[int, int] | None = None
        self._set_water_marks()
        self._idle_ms = int(config.idle_timeout * 1000) if config.idle_timeout else 0
        self._linger_until = 0
        self._last_recv = self._last_valid = self._timers.now_ms()
        _live.add(self)
        _snmp.curr_estab += 1
        if _snmp.curr_estab > _snmp.max_conn:
            _snmp.max_conn = _snmp.curr_estab
        if listener is None:
            _snmp.active_opens += 1
        else:
            _snmp.passive_opens += 1
        if secure is not None:
            secure.session = self
        self._post(self._last_recv)

    # -- wiring ----------------------------------------------------------------------------------
    def _make_output(self) -> Callable[[bytes], None]:
        tx_append = self._ep.tx.append
        if self._secure is not None:
            return self._secure.make_output(
                self._pipeline, self._plain, self.counters, self._timers.now_ms, tx_append
            )
        addr = self.remote_address
        c: Any = self.counters
        if self._plain:

            def output(packet: bytes) -> None:
                tx_append((packet, addr))
                c.out_pkts += 1
                c.bytes_sent += len(packet)

            return output
        seal = self._pipeline.seal
        now_ms = self._timers.now_ms

        def output_sealed(packet: bytes) -> None:
            for datagram in seal(packet, now_ms()):
                tx_append((datagram, addr))
                c.out_pkts += 1
                c.bytes_sent += len(datagram)

        return output_sealed

    def _set_water_marks(self) -> None:
        eng = self._engine
        high = self._config.write_buffer or 2 * eng.snd_wnd
        self._high_water = max(high, 1)
        self._low_water = max(self._high_water // 2, 1)

    # -- properties ------------------------------------------------------------------------------
    @property
    def conv(self) -> int:
        """The KCP conversation id."""
        return self._engine.conv

    @property
    def config(self) -> SessionConfig:
        """The configuration the session was created with."""
        return self._config

    @property
    def closed(self) -> bool:
        """True once the session has fully ended (see :meth:`wait_closed`)."""
        return self._state == _CLOSED

    def is_closing(self) -> bool:
        """True after :meth:`close` or once the session ended for any reason."""
        return self._state != _OPEN

    @property
    def engine(self) -> KCP:
        """The underlying engine (for inspection; do not drive it directly)."""
        return self._engine

    # -- secure mode -----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """``"secure"`` or ``"compat"`` (the wire mode, see docs/security.md)."""
        return "secure" if self._secure is not None else "compat"

    @property
    def secure(self) -> SecureConnection | None:
        """The secure connection (negotiated ``params``, ``counters``, ``peer_static``...), or None."""
        return self._secure.conn if self._secure is not None else None

    def add_event_callback(self, callback: Callable[[Event], object]) -> None:
        """Call ``callback(event)`` for each secure-mode event of this session.

        Events are :mod:`kcp.secure`'s: ``PathChanged(old, new)`` (the peer moved; its
        ``remote_address`` has already changed), ``PathValidated``, ``PathFailed``, ``KeyUpdated``,
        ``GoAwayReceived(code, message)`` and ``ConnectionClosed(code, message, by_peer)``. The
        callback runs inside the receive path: it must not block. Compat sessions have no events.
        """
        self._event_callbacks.append(callback)

    def remove_event_callback(self, callback: Callable[[Event], object]) -> None:
        """Stop calling ``callback`` (no error if it was not registered)."""
        if callback in self._event_callbacks:
            self._event_callbacks.remove(callback)

    def goaway(self, code: int = 9, message: str = "") -> None:
        """Secure mode: tell the peer to open no new streams (an authenticated GOAWAY).

        The session stays open so calls in flight finish; the peer's ``goaway_received`` is set and
        its event callbacks get ``GoAwayReceived``. Acting on it is the mux/RPC layer's job.
        """
        self._check_writable()
        if self._secure is None:
            raise KCPUsageError("goaway() needs a secure-mode session (compat mode has no GOAWAY)")
        conn = self._secure.conn
        self._ep.tx.append((conn.goaway(code, message, self._timers.now_ms()), conn.peer_addr))
        self._ep.kick()

    def rebind(self, local_addr: tuple[str, int] | None = None) -> Address:
        """Secure client sessions: move to a new local UDP socket (a phone changing networks).

        The old socket is closed; an authenticated PING from the new one tells the server, which
        moves the session there once the new path answers its probe. Data in flight is resent by
        KCP. Returns the new local address.
        """
        self._check_writable()
        if self._secure is None or self._listener is not None:
            raise KCPUsageError("rebind() is for secure-mode client sessions (from kcp.dial(mode='secure'))")
        ep = self._ep
        old = ep.sock
        if local_addr is None:
            local_addr = ("::" if old.family == socket.AF_INET6 else "0.0.0.0", 0)
        sock = open_udp_socket(local_addr[0], local_addr[1], family=old.family)
        try:
            sock.connect(self.remote_address)
        except BaseException:
            sock.close()
            raise
        ep.replace_socket(sock)
        self.local_address = sock.getsockname()
        conn = self._secure.conn
        now = self._timers.now_ms()
        ep.tx.append((conn.ping(now), conn.peer_addr))
        self._mark_flush()
        return self.local_address

    @property
    def stats(self) -> dict[str, int]:
        """This session's counters plus the engine's RTT and window state."""
        eng = self._engine
        # the process-wide secure_* fields stay out: secure mode's own counters follow, by their names
        out = {k: v for k, v in self.counters.snapshot().items() if not k.startswith("secure_")}
        if self._secure is not None:
            sec = self._secure
            for k, v in sec.conn.counters.snapshot().items():
                out["secure_" + k] = v
            out["secure_held_back"] = sec.held_back
            out["secure_key_epoch"] = sec.conn.epoch
        out.update(
            srtt=eng.rx_srtt,
            rttvar=eng.rx_rttval,
            rto=eng.rx_rto,
            cwnd=eng.cwnd,
            snd_wnd=eng.snd_wnd,
            rcv_wnd=eng.rcv_wnd,
            rmt_wnd=eng.rmt_wnd,
            waitsnd=eng.waitsnd(),
            read_buffered=len(self._rbuf),
            datagrams_queued=len(self._dgrams),
            datagrams_dropped=self.datagrams_dropped,
            mtu=eng.mtu,
        )
        return out

    # -- tuning ----------------------------------------------------------------------------------
    def set_nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> None:
        """ikcp ``nodelay()``: e.g. ``(1, 10, 2, 1)`` for the fastest retransmission."""
        self._engine.nodelay(nodelay, interval, resend, nc)

    def set_window(self, snd_wnd: int, rcv_wnd: int) -> None:
        """Send and receive windows, in segments (the receive window is at least 128)."""
        self._engine.wndsize(snd_wnd, rcv_wnd)
        self._set_water_marks()

    def set_mtu(self, mtu: int) -> None:
        """UDP payload size; the engine gets ``mtu`` minus the packet-layer overhead."""
        if self._engine.setmtu(mtu - self._overhead) < 0:
            raise KCPUsageError(f"mtu {mtu} is too small")

    def set_stream_mode(self, enable: bool) -> None:
        """KCP stream mode: writes are packed into full segments, message boundaries are lost."""
        self._engine.stream = 1 if enable else 0

    def set_ack_nodelay(self, enable: bool) -> None:
        """Flush acks right after each receive batch instead of at the next interval."""
        self.ack_nodelay = enable

    # -- network input ---------------------------------------------------------------------------
    def _input(self, data: bytes, now: int) -> None:
        """One datagram from the remote address (called by the endpoint)."""
        self._last_recv = now
        c: Any = self.counters
        c.in_pkts += 1
        c.bytes_received += len(data)
        eng = self._engine
        if self._plain and not (len(data) > 5 and 0xF1 <= data[4] <= 0xF3 and data[5] == 0):
            rc = eng.input(data, now)
            if rc == 0:
                self._last_valid = now
            elif rc == -1 and self._listener is not None and len(data) >= IKCP_OVERHEAD:
                self._listener._conv_mismatch(self, data, data, now)
                return
        else:
            for kind, payload in self._pipeline.open(data, now):
                if kind != KIND_OOB:
                    rc = eng.input(payload, now, regular=kind == KIND_KCP)
                    if rc == 0:
                        self._last_valid = now
                    elif (
                        rc == -1
                        and self._listener is not None
                        and len(payload) >= IKCP_OVERHEAD
                        and self._listener._conv_mismatch(self, data, payload, now)
                    ):
                        return
                else:
                    self._on_datagram(payload)
        if not self._in_dirty:
            self._in_dirty = True
            self._ep.dirty.append(self)

    def _probe_peer(self) -> None:
        """Ask the peer for its window now (a KCP WASK, as ikcp sends when the remote window is
        zero): a live ikcp peer answers at its next flush. The listener uses it to tell a live peer
        from one that restarted (kcp.admission)."""
        if self._state == _CLOSED:
            return
        self._engine.probe |= IKCP_ASK_SEND
        self._mark_flush()

    def _on_datagram(self, payload: bytes) -> None:
        if self._state != _OPEN:
            return
        q = self._dgrams
        if len(q) >= self._config.datagram_queue:
            q.popleft()
            self.datagrams_dropped += 1
        q.append(payload)
        w = self._dgram_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _after_input(self, now: int) -> None:
        """After a receive batch: deliver to the reader, flush acks, re-arm the timer."""
        self._in_dirty = False
        if self._state == _CLOSED:
            return
        self._deliver()
        eng = self._engine
        if (self.ack_nodelay or eng.waitsnd()) and not self._flush_marked:
            self._flush_marked = True
            self._ep.flushq.append(self)
        if eng.state != 0:
            self._die(now)
            return
        self._post(now)

    def _deliver(self) -> None:
        eng = self._engine
        if self._state != _OPEN:
            while eng.recv() is not None:  # nobody reads any more: keep the window open
                pass
            return
        rbuf = self._rbuf
        limit = self._rlimit
        got = False
        while len(rbuf) < limit:
            m = eng.recv()
            if m is None:
                break
            if m:
                rbuf += m
                got = True
        if got:
            w = self._read_waiter
            if w is not None and not w.done():
                w.set_result(None)

    # -- timers and flushing ---------------------------------------------------------------------
    def _on_timer(self, now: int) -> None:
        if self._state == _CLOSED:
            return
        if self._secure is not None:
            self._secure.on_timer(now)  # path probes, old-key expiry, their events
            if self._state == _CLOSED:
                return
        eng = self._engine
        if self._idle_ms and now - self._last_recv >= self._idle_ms:
            self._finish(now, None, "idle timeout")
            return
        if self._state == _CLOSING and now >= self._linger_until:
            self._finish(now, None, self.close_reason or "closed")
            return
        eng.update(now)
        if eng.state != 0:
            self._die(now)
            return
        self._ep.kick()
        self._post(now)

    def _flush(self, now: int) -> None:
        self._flush_marked = False
        if self._state == _CLOSED:
            return
        eng = self._engine
        eng.flush(now)
        if eng.state != 0:
            self._die(now)
            return
        self._post(now)

    def _post(self, now: int) -> None:
        """Wake writers, finish a lingering close, and schedule the next wake-up."""
        eng = self._engine
        ws = eng.waitsnd()
        if ws < self._low_water:
            w = self._drain_waiter
            if w is not None and not w.done():
                w.set_result(None)
        if self._state == _CLOSING and ws == 0:
            self._finish(now, None, self.close_reason or "closed")
            return
        if ws or eng.probe:
            due = self._next_wake(now)
            if self._idle_ms and self._last_recv + self._idle_ms < due:
                due = self._last_recv + self._idle_ms
        elif self._idle_ms:
            due = self._last_recv + self._idle_ms
        else:
            due = -1
        if self._state == _CLOSING and (due < 0 or self._linger_until < due):
            due = self._linger_until
        if self._secure is not None:
            t = self._secure.timer()
            if due < 0 or t < due:
                due = t
        if due >= 0:
            self._timers.schedule(self, due)

    def _next_wake(self, now: int) -> int:
        """When the engine next has something to do on its own.

        ikcp's ``check()`` never looks further than one ``interval`` ahead, because its flush also
        carries delayed acks and window probes. With ``ack_nodelay`` the session flushes acks
        (and any data the acks let out) right after each receive batch, so while a few segments
        are merely waiting for their ack the only timed event is the earliest retransmission.
        Waking at that time instead of every interval keeps thousands of sessions with a message
        in flight cheap. Bulk transfers (many segments in flight), window probes and delayed acks
        keep ikcp's cadence.
        """
        eng = self._engine
        buf = eng.snd_buf
        if not self.ack_nodelay or eng.probe or not eng.rmt_wnd or len(buf) > 32 or not buf:
            return eng.check(now)
        current = now & 0xFFFFFFFF
        best = 0x7FFFFFFF
        for seg in buf:
            if not seg.acked:
                d = (seg.resendts - current) & 0xFFFFFFFF
                if d >= 0x80000000:
                    return now  # overdue
                if d < best:
                    best = d
        if best == 0x7FFFFFFF:
            return eng.check(now)
        return now + best

    def _mark_flush(self) -> None:
        if not self._flush_marked:
            self._flush_marked = True
            self._ep.flushq.append(self)
            self._ep.kick()

    def _die(self, now: int) -> None:
        self._finish(
            now,
            DeadLinkError(
                f"KCP session {self.conv} to {self.remote_address}: dead link "
                f"(a segment was sent {self._engine.dead_link} times without an ack)"
            ),
            "dead link",
        )

    def _finish(self, now: int, exc: BaseException | None, reason: str) -> None:
        """End the session now: wake everyone, leave the listener/endpoint, fold counters."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        if exc is not None and self._exc is None:
            self._exc = exc
        self.close_reason = reason
        if self._secure is not None:  # after the state change: callbacks cannot re-enter
            self._secure.finish(self._ep.tx, now, self.close_code, reason)
        self._timers.cancel(self)
        for w in (self._read_waiter, self._drain_waiter, self._dgram_waiter):
            if w is not None and not w.done():
                w.set_result(None)
        _live.discard(self)
        c = self.counters
        for f in _FOLDED:
            v = getattr(c, f)
            if v:
                setattr(SNMP, f, getattr(SNMP, f) + v)
        _snmp.curr_estab -= 1
        _snmp.closed += 1
        if self._listener is not None:
            self._listener._forget(self)
            self._ep.kick()
        else:
            self._ep.close()
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    def _peer_closed(self, now: int, code: int, reason: str) -> None:
        """An authenticated CLOSE from the peer (secure mode): end at once, keep what was received."""
        self.close_code = code
        eng = self._engine
        if self._state == _OPEN:
            while (m := eng.recv()) is not None:  # acknowledged data stays readable
                self._rbuf += m
        self._finish(now, None, reason)

    # -- reading ---------------------------------------------------------------------------------
    async def _wait(self, attr: str) -> None:
        if getattr(self, attr) is not None:
            raise KCPUsageError(f"another coroutine is already waiting in {attr.strip('_')}")
        fut = self._loop.create_future()
        setattr(self, attr, fut)
        try:
            await fut
        finally:
            setattr(self, attr, None)

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``n < 0``: all that is buffered) once any are available.

        Returns ``b""`` after :meth:`close` or an idle timeout; raises
        :class:`kcp.errors.DeadLinkError` once buffered data is consumed after a dead link.
        """
        if n == 0:
            return b""
        rbuf = self._rbuf
        while not rbuf:
            if self._state != _OPEN:
                if self._exc is not None:
                    raise self._exc
                return b""
            await self._wait("_read_waiter")
        if n < 0 or n >= len(rbuf):
            data = bytes(rbuf)
            rbuf.clear()
        else:
            data = bytes(rbuf[:n])
            del rbuf[:n]
        self._refill()
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises :class:`asyncio.IncompleteReadError` if the session ends first."""
        if n < 0:
            raise KCPUsageError("readexactly needs n >= 0")
        rbuf = self._rbuf
        while len(rbuf) < n:
            if self._state != _OPEN:
                if self._exc is not None:
                    raise self._exc
                partial = bytes(rbuf)
                rbuf.clear()
                raise asyncio.IncompleteReadError(partial, n)
            if len(rbuf) >= self._rlimit:
                self._rlimit = n  # let a large readexactly through the bound
                self._refill()
                continue
            await self._wait("_read_waiter")
        data = bytes(rbuf[:n])
        del rbuf[:n]
        self._rlimit = self._config.read_buffer
        self._refill()
        return data

    def _refill(self) -> None:
        """After the app consumed data: pull more from the engine, reopen its window if shut."""
        eng = self._engine
        if not eng.rcv_queue or self._state != _OPEN:
            return
        self._deliver()
        if eng.probe & IKCP_ASK_TELL:
            self._mark_flush()

    # -- writing ---------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._state != _OPEN:
            if self._exc is not None:
                raise self._exc
            raise ConnectionClosedError(
                f"KCP session {self.conv} is closed ({self.close_reason or 'closed'})"
            )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for reliable, ordered delivery; never blocks (use :meth:`drain`)."""
        self._check_writable()
        n = len(data)
        if not n:
            return
        eng = self._engine
        chunk = eng.mss * 120
        if n <= chunk:
            eng.send(data)
        else:
            view = memoryview(data)
            for i in range(0, n, chunk):
                eng.send(view[i : i + chunk])
        self._mark_flush()

    def writelines(self, lines: list[bytes]) -> None:
        """Write each item of ``lines``."""
        for line in lines:
            self.write(line)

    async def drain(self) -> None:
        """Wait until the send queue is below the high-water mark (or raise if the session ended)."""
        self._check_writable()
        if self._engine.waitsnd() < self._high_water:
            return
        while self._engine.waitsnd() >= self._low_water:
            await self._wait("_drain_waiter")
            self._check_writable()

    def write_ready(self) -> bool:
        """True when :meth:`drain` would return at once: open for writing and below high water.

        Lets a layer above (the mux) write synchronously instead of waking a writer task.
        """
        return self._state == _OPEN and self._engine.waitsnd() < self._high_water

    def write_buffer_size(self) -> int:
        """Segments queued or in flight and not yet acknowledged."""
        return self._engine.waitsnd()

    def send_backlog(self) -> int:
        """Bytes written and not yet acknowledged by the peer (queued or in flight), as segments
        times the MSS: exact for the full segments of stream mode, an upper bound otherwise. It
        grows while the peer's receive window is closed (a peer that stops reading)."""
        eng = self._engine
        return eng.waitsnd() * eng.mss

    def send_acked(self) -> int:
        """The engine's ``snd_una`` (u32, wraps): it moves exactly when the peer acknowledges the
        oldest data waiting for it, never because more was written behind it."""
        return self._engine.snd_una

    # -- datagrams -------------------------------------------------------------------------------
    def send_datagram(self, data: bytes) -> None:
        """Send one unreliable out-of-band datagram (kcp-go's OOB packet, flag 0xf3)."""
        self._check_writable()
        limit = self._pipeline.oob_max_size(self._engine.mtu)
        if len(data) > limit:
            raise KCPUsageError(f"datagram of {len(data)} bytes exceeds the limit of {limit}")
        if self._flush_marked:  # keep the order of the caller's write() and send_datagram()
            self._ep.flushq.remove(self)
            self._flush(self._timers.now_ms())
        dgram = self._pipeline.seal_oob(bytes(data), self.conv)
        if self._secure is not None:
            self._secure.send_payload(dgram, self._ep.tx, self._timers.now_ms())
        else:
            self._ep.tx.append((dgram, self.remote_address))
        self._ep.kick()

    def max_datagram_size(self) -> int:
        """Largest payload :meth:`send_datagram` accepts."""
        return self._pipeline.oob_max_size(self._engine.mtu)

    async def recv_datagram(self) -> bytes:
        """The next out-of-band datagram; raises :class:`ConnectionClosedError` once the session ended."""
        while not self._dgrams:
            if self._state != _OPEN:
                if self._exc is not None:
                    raise self._exc
                raise ConnectionClosedError(
                    f"KCP session {self.conv} is closed ({self.close_reason or 'closed'})"
                )
            await self._wait("_dgram_waiter")
        return self._dgrams.popleft()

    # -- closing ---------------------------------------------------------------------------------
    def close(self, code: int = 0, message: str = "") -> None:
        """Stop reading and writing; unacknowledged data gets up to ``close_linger`` to arrive.

        In secure mode the peer then gets an authenticated CLOSE carrying ``code`` (a
        :class:`kcp.secure.Reason` or an application value < 65536) and ``message`` (<= 512
        bytes of UTF-8), and ends at once with that reason. Compat mode has no close on the wire:
        the peer notices by its idle timeout, and ``code``/``message`` are only kept locally.
        """
        if self._state != _OPEN:
            return
        if not 0 <= code <= 0xFFFF:
            raise KCPUsageError("close code must be in 0..65535")
        self._state = _CLOSING
        self.close_code = code
        self.close_reason = message or "closed"
        self._rbuf.clear()
        self._dgrams.clear()
        for w in (self._read_waiter, self._dgram_waiter, self._drain_waiter):
            if w is not None and not w.done():
                w.set_result(None)
        now = self._timers.now_ms()
        eng = self._engine
        if eng.waitsnd() == 0 or self._config.close_linger <= 0:
            eng.flush(now)
            self._ep.kick()
            self._finish(now, None, self.close_reason)
            return
        self._linger_until = now + int(self._config.close_linger * 1000)
        self._mark_flush()
        self._post(now)

    def abort(self, code: int | None = None, message: str = "") -> None:
        """End the session at once, dropping unsent data. In secure mode the peer gets an
        authenticated CLOSE with ``code`` and ``message`` when given (as :meth:`close`)."""
        if code is not None:
            if not 0 <= code <= 0xFFFF:
                raise KCPUsageError("close code must be in 0..65535")
            if self._state != _CLOSED:
                self.close_code = code
        self._finish(self._timers.now_ms(), None, message or "aborted")

    async def wait_closed(self) -> None:
        """Wait until the session has fully ended."""
        await asyncio.shield(self._closed_fut)

    async def __aenter__(self) -> KCPSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = ("open", "closing", "closed")[self._state]
        return f"<KCPSession conv={self.conv} remote={self.remote_address} {state}>"


async def dial(
    host: str,
    port: int,
    wire: Wire | None = None,
    *,
    session: SessionConfig | None = None,
    io: IOOptions | None = None,
    mode: str = "compat",
    crypt: str | PacketCrypt | None = None,
    key: bytes | str | None = None,
    data_shards: int = 0,
    parity_shards: int = 0,
    conv: int | None = None,
    config: SessionConfig | None = None,
    local_addr: tuple[str, int] | None = None,
    mmsg: bool | None = None,
    gso: bool | None = None,
    rng: Callable[[int], bytes] = os.urandom,
    server_public_key: bytes | None = None,
    static_private_key: bytes | None = None,
    psk: bytes | None = None,
    token: bytes | str = b"",
    handshake_timeout: float | None = None,
    secure_options: dict[str, Any] | None = None,
    **options: Any,
) -> KCPSession:
    """Open a KCP session to ``host:port`` on its own UDP socket.

    ``mode="compat"`` (the default at this level) is kcp-go's ``DialWithOptions``: ``crypt`` is a
    kcptun cipher name (``None``/``"null"``: no crypt layer) and ``key`` a passphrase (run through
    :func:`kcp.crypt.derive_key`) or the derived key bytes; ``conv`` defaults to a random 32-bit
    id; there is no handshake, so this returns as soon as the socket is ready.

    ``mode="secure"`` runs kcprpc's authenticated handshake first (docs/security.md):
    ``server_public_key`` pins the server (Noise IKpsk2), ``key`` is a passphrase str or a
    32-byte PSK (``psk=`` also works; with only a key it is Noise NNpsk0), ``token`` goes to the
    server's ``authorize`` hook, ``static_private_key`` is this client's identity (default: a fresh
    one). MTU, windows and FEC shards are proposed from the session options and negotiated;
    ``handshake_timeout`` (seconds, default 5) bounds a silent server. Failures raise
    :class:`kcp.secure.HandshakeError` (``HandshakeTimeout``, ``HandshakeRefused`` with the
    server's reason). ``secure_options`` overrides other :class:`kcp.secure.SecureConfig` fields
    (``rekey_after_packets``, ``suites``, ``fec_strict`` ...).

    FEC is on when both shard counts are positive. Further keyword arguments override fields of
    :class:`SessionConfig` (``nodelay``, ``snd_wnd``, ``mtu``, ``idle_timeout`` ...).
    """
    if wire is not None:  # the new description (skeleton adapter: H-kcp replaces the keywords below)
        kw = _wire_keywords(wire, session, io, client=True)
        return await dial(host, port, conv=conv, rng=rng, **kw)
    loop = asyncio.get_running_loop()
    cfg = (config or SessionConfig()).with_options(**options)
    if mode == "secure":
        if crypt is not None or conv is not None:
            raise KCPUsageError("crypt= and conv= are compat-mode options (secure mode always uses an AEAD)")
        from kcp.secure_io import client_config

        secure_cfg = client_config(
            cfg,
            key=key,
            psk=psk,
            server_public_key=server_public_key,
            static_private_key=static_private_key,
            token=token,
            data_shards=data_shards,
            parity_shards=parity_shards,
            handshake_timeout=handshake_timeout,
            secure_options=secure_options,
        )
        packet_crypt = None
    elif mode == "compat":
        if server_public_key is not None or static_private_key is not None or psk is not None or token:
            raise KCPUsageError(
                "server_public_key/static_private_key/psk/token need mode='secure' (compat mode has no handshake)"
            )
        packet_crypt = _make_crypt(crypt, key)
    else:
        raise KCPUsageError(f"mode must be 'secure' or 'compat', not {mode!r}")
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, remote = infos[0]
    if local_addr is None:
        local_addr = ("::" if family == socket.AF_INET6 else "0.0.0.0", 0)
    sock = open_udp_socket(local_addr[0], local_addr[1], family=family)
    try:
        sock.connect(remote)
        remote = sock.getpeername()
        if conv is None:
            conv = int.from_bytes(rng(4), "little")
        counters = Counters()
        ep = _Endpoint(loop, sock, counters, mmsg=mmsg, gso=gso)
    except BaseException:
        sock.close()
        raise
    if mode == "secure":
        return await _dial_secure(ep, remote, cfg, secure_cfg, rng)
    sess = KCPSession(ep, conv, remote, cfg, packet_crypt, data_shards, parity_shards, rng=rng)
    inp = sess._input
    ep.dispatch = lambda data, addr, now: inp(data, now)
    return sess


async def _dial_secure(
    ep: _Endpoint, remote: Address, cfg: SessionConfig, secure_cfg: Any, rng: Callable[[int], bytes]
) -> KCPSession:
    """The handshake, then a session configured from the negotiated parameters."""
    from kcp.secure import Reason
    from kcp.secure_io import SecureLink, conv_of, secure_handshake

    try:
        conn = await secure_handshake(ep, remote, secure_cfg, rng)
    except BaseException:
        ep.close()
        raise
    p = conn.params
    try:
        cfg = replace(cfg, mtu=p.mtu, snd_wnd=p.snd_wnd, rcv_wnd=p.rcv_wnd)
        link = SecureLink(conn, ep.timers.now_ms())
        session = KCPSession(
            ep, conv_of(conn), remote, cfg, None, p.data_shards, p.parity_shards, rng=rng, secure=link
        )
    except BaseException as exc:  # no session for these parameters: tell the server, free everything
        if conn.state == "open":
            why = f"client could not set up the session: {exc}"[:512]
            ep.tx.append((conn.close(Reason.INTERNAL, why, ep.timers.now_ms()), remote))
        ep.close()
        raise
    ep.dispatch = link.input
    link.on_timer(ep.timers.now_ms())  # the PING that confirms the keys to the server
    return session


def _wire_keywords(
    wire: Wire, session: SessionConfig | None, io: IOOptions | None, *, client: bool
) -> dict[str, Any]:
    """The old keywords of dial/listen from a wire description (temporary, until the glue takes wires)."""
    import dataclasses

    io = io or IOOptions()
    kw: dict[str, Any] = {
        "mode": wire.mode,
        "config": session or SessionConfig(),
        "mmsg": io.mmsg,
        "gso": io.gso,
    }
    if client:
        kw["local_addr"] = io.local_address
    else:
        kw["reuse_port"] = io.reuse_port
    kw["data_shards"], kw["parity_shards"] = wire.fec
    if wire.mode == "compat":
        kw["crypt"] = wire.crypt
        kw["key"] = wire.key
        return kw
    if client:
        wire.check_client()
        kw["server_public_key"] = wire.server_public_key
        kw["token"] = wire.token
    else:
        wire.check_server()
        kw["authorize"] = wire.authorize
    kw["static_private_key"] = wire.static_private_key
    kw["key"] = wire.key
    if wire.config is not None:
        from kcp.secure.config import SecureConfig

        base = SecureConfig()
        changed = {
            f.name: getattr(wire.config, f.name)
            for f in dataclasses.fields(SecureConfig)
            if getattr(wire.config, f.name) != getattr(base, f.name)
        }
        kw["secure_options"] = changed
    return kw
