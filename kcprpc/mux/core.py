"""Sans-I/O smux session: the whole multiplexer state machine, without asyncio, sockets or clocks.

:class:`MuxCore` takes received bytes and ``now`` (milliseconds, int) and hands back
outgoing bytes and events. It owns every per-stream buffer, the session-wide receive token bucket
(versions 1 and 2), the per-stream send windows (version 2), the keepalive clock and the counters.
The asyncio glue (:mod:`kcprpc.mux.session`) only moves bytes and wakes waiters.

Behaviour follows xtaci/smux (v1.5.x), described in our own words in docs/wire-format/smux.md:

* ids: the client opens odd ids 3, 5, 7 ..., the server even ids 2, 4, 6 ... (smux starts its
  counter at 1 or 0 and adds 2 before each use); ids are never reused within a session;
* receive: every PSH payload taken in costs tokens from a bucket of ``max_receive_buffer`` bytes;
  reading returns them. While the bucket is empty the core parses no further frames, so the glue
  stops reading the transport (backpressure onto KCP), exactly as smux's recvLoop blocks;
* version 2: a reader announces ``UPD(consumed, window=max_stream_buffer)`` on its first read and
  then whenever half a stream buffer has been read since the last UPD; a writer keeps
  ``written - peer_consumed < peer_window`` (initially 256 KiB) and waits for UPD otherwise;
* keepalive: a NOP every ``keepalive_interval`` in which no other frame went out (any frame tells
  the peer we live, which is all smux checks); every ``keepalive_timeout`` the session checks
  that something arrived since the previous check, otherwise it dies (unless our own bucket is
  empty, in which case we are the ones not reading);
* FIN is a half-close: sent after all data written before it; the receiving side still drains its
  buffer and then reads EOF. A stream leaves the table once FIN went both ways. Each stream and the
  session keep a named state, moved only through the tables of :mod:`kcprpc.mux.state`.

Hostile-peer policy: wrong version, unknown command or a lying length → the session is closed with a
:class:`MuxProtocolError` reason and the event is counted. A SYN beyond ``max_streams`` is refused
with an immediate FIN (the opener sees EOF) and counted. Data for unknown streams is dropped and
counted, as smux does; so are data and a second FIN after the peer's FIN. Nothing raised by the
decoder escapes :meth:`MuxCore.receive_data`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from .counters import COUNTER_NAMES, MuxCounters
from .errors import (
    MuxClosedError,
    MuxKeepaliveTimeoutError,
    MuxProtocolError,
    MuxStreamClosedError,
    MuxTypeError,
    MuxUsageError,
    fresh,
)
from .frame import (
    CMD_FIN,
    CMD_NOP,
    CMD_PSH,
    CMD_SYN,
    CMD_UPD,
    HEADER_SIZE,
    INITIAL_PEER_WINDOW,
    MAX_PAYLOAD,
    U32_MASK,
    SmuxFrameDecoder,
    pack_header_unchecked,
    pack_upd_unchecked,
    unpack_upd,
)
from .state import (
    FIN_PENDING,
    FIN_UNSENT,
    LIVE,
    PEER_SENDING,
    READ_EOF,
    SESSION_TRANSITIONS,
    WRITABLE,
    SessionEvent,
    SessionState,
    StreamEvent,
    StreamState,
    next_stream_state,
    transitions_on,
)

_MAX_INT32: Final = 0x7FFFFFFF
_SMALL: Final = 4096  # receive pieces below this size are merged
_MAX_CTRL_BACKLOG: Final = 4096  # control frames queued before refusal FINs are skipped

# names bound once: the hot paths compare states by identity, OPEN (the common case) first: an
# identity test is cheaper than a tuple scan that misses
_OPEN: Final = StreamState.OPEN
_CLOSED: Final = StreamState.CLOSED
_RESET: Final = StreamState.RESET
_DEAD: Final = StreamState.DEAD
_S_OPEN: Final = SessionState.OPEN
_S_CLOSED: Final = SessionState.CLOSED
# columns of STREAM_TRANSITIONS, one per event the core applies (a missing state: not allowed)
_ON_CLOSE: Final = transitions_on(StreamEvent.CLOSE)
_ON_ABORT: Final = transitions_on(StreamEvent.ABORT)
_ON_FIN_SENT: Final = transitions_on(StreamEvent.FIN_SENT)
_ON_RECV_FIN: Final = transitions_on(StreamEvent.RECV_FIN)
_ON_SESSION_END: Final = transitions_on(StreamEvent.SESSION_END)


@dataclass(frozen=True, slots=True)
class MuxConfig:
    """Multiplexer settings. Defaults equal smux's ``DefaultConfig()`` where the peer must agree.

    ``version`` must match the peer's. Durations are in seconds. ``max_streams`` and
    ``stream_send_buffer`` are local limits of ours (smux has no equivalent) and need no agreement.
    Validation mirrors smux's ``VerifyConfig`` and raises :class:`MuxUsageError`.
    """

    version: int = 1
    keepalive_interval: float = 10.0
    keepalive_timeout: float = 30.0
    keepalive_disabled: bool = False
    max_frame_size: int = 32768
    max_receive_buffer: int = 4 * 1024 * 1024
    max_stream_buffer: int = 65536
    max_streams: int = 4096
    stream_send_buffer: int = 65536

    def __post_init__(self) -> None:
        def is_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.version) or self.version not in (1, 2):
            raise MuxUsageError(f"unsupported smux protocol version {self.version!r}: use 1 or 2")
        for name in ("keepalive_interval", "keepalive_timeout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise MuxUsageError(f"{name} must be a finite number of seconds, got {v!r}")
        if not self.keepalive_disabled:
            if self.keepalive_interval <= 0:
                raise MuxUsageError("keepalive_interval must be positive")
            if self.keepalive_timeout < self.keepalive_interval:
                raise MuxUsageError("keepalive_timeout must not be smaller than keepalive_interval")
        for name in (
            "max_frame_size",
            "max_receive_buffer",
            "max_stream_buffer",
            "max_streams",
            "stream_send_buffer",
        ):
            v = getattr(self, name)
            if not is_int(v):
                raise MuxTypeError(f"{name} must be a positive int, got {v!r}")
            if v <= 0:
                raise MuxUsageError(f"{name} must be a positive int, got {v!r}")
        if self.max_frame_size > MAX_PAYLOAD:
            raise MuxUsageError(f"max_frame_size must not be larger than {MAX_PAYLOAD}")
        if self.max_receive_buffer > _MAX_INT32:
            raise MuxUsageError("max_receive_buffer must fit in int32")
        if self.max_stream_buffer > self.max_receive_buffer:
            raise MuxUsageError("max_stream_buffer must not be larger than max_receive_buffer")


# ---------------------------------------------------------------------------------------------
# events


class MuxStreamEvent:
    """An event about one stream. A value: equal by its type and fields, hashable, not to be changed
    (mypy checks the ``Final`` attributes). Plain classes, not frozen dataclasses, so that the
    compiled build makes one (a ``DataReceived`` per message received) with a native constructor:
    a frozen dataclass's ``__init__`` is interpreted Python, about 1 µs an event."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id: Final = stream_id

    def _fields(self) -> tuple[int, ...]:
        return (self.stream_id,)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, MuxStreamEvent)
            and self._fields() == other._fields()
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._fields()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self._fields()!r}"


class StreamOpened(MuxStreamEvent):
    """The peer opened a stream (SYN) and it was admitted; hand it to ``accept``."""

    __slots__ = ()


class DataReceived(MuxStreamEvent):
    """Data arrived on a stream whose receive buffer was empty (edge-triggered; ``length`` is the
    size of that first frame)."""

    __slots__ = ("length",)

    def __init__(self, stream_id: int, length: int) -> None:
        super().__init__(stream_id)
        self.length: Final = length

    def _fields(self) -> tuple[int, ...]:
        return (self.stream_id, self.length)


class StreamEnded(MuxStreamEvent):
    """The peer sent FIN: after the buffered data, the stream reads EOF."""

    __slots__ = ()


class WindowUpdated(MuxStreamEvent):
    """Version 2: the peer sent UPD; the stream may be able to send again."""

    __slots__ = ()


class StreamReleased(MuxStreamEvent):
    """FIN went both ways: the stream left the session table (unread data stays readable)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The session is dead; ``error`` says why. Every stream fails with it (after buffered data)."""

    error: MuxClosedError


MuxEvent = StreamOpened | DataReceived | StreamEnded | WindowUpdated | StreamReleased | ConnectionTerminated


# ---------------------------------------------------------------------------------------------
# streams


@dataclass(eq=False, slots=True)
class StreamRecord:
    """One stream inside :class:`MuxCore`: its :class:`~kcprpc.mux.state.StreamState`, buffers
    and windows (a handle for the glue; read ``state``, change nothing: the core moves it)."""

    stream_id: int
    local: bool
    state: StreamState = _OPEN
    recv: deque[bytes] = field(default_factory=deque)
    recv_bytes: int = 0  # while the state is LIVE, these bytes hold tokens from the session bucket
    recv_off: int = 0  # bytes of recv[0] already read
    send: deque[bytes] = field(default_factory=deque)
    send_bytes: int = 0
    send_off: int = 0  # bytes of send[0] already framed
    scheduled: bool = False  # in the round-robin send queue
    # version 2 flow control (u32 counters, modular arithmetic as smux)
    num_read: int = 0
    incr: int = 0
    num_written: int = 0
    peer_consumed: int = 0
    peer_window: int = INITIAL_PEER_WINDOW
    upd_due: bool = False  # a UPD (with num_read as it is when sent) goes out with the next data

    @property
    def readable(self) -> int:
        """Bytes buffered and not yet read."""
        return self.recv_bytes

    @property
    def at_eof(self) -> bool:
        """FIN received and every byte before it read."""
        return self.recv_bytes == 0 and self.state in READ_EOF

    @property
    def writable(self) -> bool:
        """Our direction is open: neither closed nor aborted, and the session did not die."""
        return self.state in WRITABLE

    @property
    def fin_unsent(self) -> bool:
        """Our FIN has not gone out yet and still will (not sent, not aborted, session alive)."""
        return self.state in FIN_UNSENT

    @property
    def send_buffered(self) -> int:
        """Bytes written by the application and not yet framed."""
        return self.send_bytes

    def send_window(self) -> int:
        """Version 2: bytes the peer still allows in flight (may be <= 0)."""
        inflight = (self.num_written - self.peer_consumed) & U32_MASK
        if inflight > _MAX_INT32:
            return 0
        window = self.peer_window if self.peer_window <= _MAX_INT32 else self.peer_window - (1 << 32)
        return window - inflight


def _pull(q: deque[bytes], off: int, limit: int) -> tuple[bytes, int]:
    """Take up to ``limit`` (> 0) bytes from a non-empty queue whose head is consumed up to ``off``.

    Returns the bytes and the new head offset. Big buffers are never re-sliced as a whole: the
    offset walks through them, so framing a large write costs one copy per frame.
    """
    first = q[0]
    avail = len(first) - off
    if avail > limit:
        return first[off : off + limit], off + limit
    q.popleft()
    head = first[off:] if off else first
    if avail == limit or not q:
        return head, 0
    parts = [head]
    size = avail
    while q and size < limit:
        nxt = q[0]
        room = limit - size
        if len(nxt) > room:
            parts.append(nxt[:room])
            return b"".join(parts), room
        parts.append(q.popleft())
        size += len(nxt)
    return b"".join(parts), 0


class MuxCore:
    """One smux session endpoint as a pure state machine (sans-I/O).

    Inputs: :meth:`receive_data`, :meth:`handle_timer`, :meth:`connection_lost` and the stream
    operations (:meth:`open_stream`, :meth:`send`, :meth:`read`, :meth:`close_stream`,
    :meth:`close`). Outputs: :meth:`data_to_send`, :meth:`events` and :meth:`next_timer`.
    """

    def __init__(self, config: MuxConfig | None = None, *, client: bool, now: int = 0) -> None:
        self.config = cfg = config if config is not None else MuxConfig()
        if not isinstance(cfg, MuxConfig):
            raise MuxUsageError("config must be a MuxConfig")
        self.client = bool(client)
        self.version = cfg.version
        self._v2 = cfg.version == 2
        self._frame_size = cfg.max_frame_size
        self._stream_buffer = cfg.max_stream_buffer
        self._half_buffer = cfg.max_stream_buffer // 2
        self._decoder = SmuxFrameDecoder(cfg.version)
        self._streams: dict[int, StreamRecord] = {}  # the table: streams in a LIVE state
        self._next_id = 1 if self.client else 0
        self._bucket = cfg.max_receive_buffer
        self._events: list[MuxEvent] = []
        self._ctrl: list[bytes] = []
        self._upd: list[StreamRecord] = []  # streams owing the peer a UPD (built when sent)
        self._rr: deque[StreamRecord] = deque()
        self._send_buffered = 0  # sum of every stream's send_bytes
        self._state = _S_OPEN
        self._error: MuxClosedError | None = None  # set with the CLOSED state: why it died
        self.counters = MuxCounters()
        # keepalive (milliseconds)
        self._ka = not cfg.keepalive_disabled
        self._ka_interval = max(1, round(cfg.keepalive_interval * 1000))
        self._ka_timeout = max(1, round(cfg.keepalive_timeout * 1000))
        self._next_ping = now + self._ka_interval
        self._next_check = now + self._ka_timeout
        self._data_ready = False
        self._frames_at_ping = 0  # frames_out when the last keepalive fell due

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """OPEN, CLOSING (a local close began) or CLOSED (dead: see :attr:`error`)."""
        return self._state

    def _session_event(self, event: SessionEvent) -> None:
        self._state = SESSION_TRANSITIONS[(self._state, event)]  # the table is total

    @property
    def closed(self) -> bool:
        """True once the session is dead (see :attr:`error`)."""
        return self._state is _S_CLOSED

    @property
    def error(self) -> MuxClosedError | None:
        """Why the session died, or None while it is alive."""
        return self._error

    @property
    def wants_read(self) -> bool:
        """False while the receive token bucket is empty (stop reading the transport) or dead."""
        return self._bucket > 0 and self._state is not _S_CLOSED

    @property
    def bucket(self) -> int:
        """Receive tokens left (bytes the peer may still push before we stop reading)."""
        return self._bucket

    @property
    def send_buffered(self) -> int:
        """Bytes written to any stream and not framed yet (O(1): kept as a running sum). In version
        2 this is what waits behind closed peer windows, plus what waits for the transport."""
        return self._send_buffered

    @property
    def buffered_input(self) -> int:
        """Received bytes not parsed yet (held back while the bucket is empty)."""
        return self._decoder.buffered

    @property
    def num_streams(self) -> int:
        """Streams in the table (not yet closed both ways)."""
        return len(self._streams)

    def get_stream(self, stream_id: int) -> StreamRecord | None:
        """The live stream with this id, or None."""
        return self._streams.get(stream_id)

    def events(self) -> list[MuxEvent]:
        """Return and clear the events produced so far."""
        ev = self._events
        if ev:
            self._events = []
        return ev

    def has_data_to_send(self) -> bool:
        """True if :meth:`data_to_send` may return bytes now (O(1); may be a false positive when
        every queued stream waits for a version 2 window)."""
        if self._state is _S_CLOSED:
            return False
        return bool(self._ctrl) or bool(self._rr) or bool(self._upd)

    # -- opening and closing streams -------------------------------------------------------------

    def _refuse(self, event: SessionEvent) -> None:
        """Raise if the session's state does not allow ``event`` (a local operation)."""
        if (self._state, event) not in SESSION_TRANSITIONS:
            if self._error is not None:
                raise fresh(self._error)
            raise MuxClosedError(f"session is {self._state.value}")

    def open_stream(self) -> StreamRecord:
        """Open a stream: allocate the next id of our parity and queue its SYN."""
        if self._state is not _S_OPEN:
            self._refuse(SessionEvent.OPEN_STREAM)
        if len(self._streams) >= self.config.max_streams:
            raise MuxUsageError(f"too many open streams (max_streams={self.config.max_streams})")
        sid = self._next_id
        while True:
            sid += 2
            if sid > U32_MASK:
                raise MuxClosedError("stream ids exhausted: start a new session (smux ErrGoAway)")
            if sid not in self._streams:  # a peer squatting our parity cannot make us collide
                break
        self._next_id = sid
        st = StreamRecord(sid, True)
        self._streams[sid] = st
        self._ctrl.append(pack_header_unchecked(self.version, CMD_SYN, sid, 0))
        c = self.counters
        c.syn_out += 1
        c.frames_out += 1
        c.streams_opened += 1
        return st

    def close_stream(self, st: StreamRecord) -> None:
        """Half-close: FIN goes out after every byte already written. Idempotent."""
        old = st.state
        st.state = new = _ON_CLOSE[old]  # allowed in every state
        if new is not old and not st.send_bytes and not st.scheduled:
            self._send_fin(st, self._ctrl)
        # otherwise the scheduler sends FIN right after the stream's last data

    def abort_stream(self, st: StreamRecord) -> None:
        """Full close, as smux's ``Stream.Close()``: drop unsent and unread data, send FIN (if not
        sent yet) and leave the table at once; later data for this id is dropped. Idempotent."""
        old = st.state
        if old is _RESET:
            return
        st.state = _ON_ABORT[old]  # allowed in every state
        st.send.clear()
        self._send_buffered -= st.send_bytes
        st.send_bytes = 0
        st.send_off = 0
        if old in FIN_UNSENT:
            self._emit_fin(st.stream_id, self._ctrl)
        unread = st.recv_bytes
        st.recv.clear()
        st.recv_bytes = 0
        st.recv_off = 0
        if old in LIVE:
            self._release(st, unread)

    def _emit_fin(self, stream_id: int, out: list[bytes] | list[bytes | memoryview]) -> None:
        out.append(pack_header_unchecked(self.version, CMD_FIN, stream_id, 0))
        self.counters.fin_out += 1
        self.counters.frames_out += 1

    def _send_fin(self, st: StreamRecord, out: list[bytes] | list[bytes | memoryview]) -> None:
        """Our FIN, after the stream's last data: the stream leaves the table if the peer's came."""
        self._emit_fin(st.stream_id, out)
        new = _ON_FIN_SENT.get(st.state)
        if new is None:  # a bug of ours: raise naming the state
            new = next_stream_state(st.state, StreamEvent.FIN_SENT, st.stream_id)
        st.state = new
        if new is _CLOSED:
            self._release(st, st.recv_bytes)

    def _release(self, st: StreamRecord, tokens: int) -> None:
        """The stream has left its LIVE states: out of the table; ``tokens`` (its unread bytes,
        which stay readable unless it was aborted) go back to the bucket, last, since that may
        parse held-back input."""
        self._streams.pop(st.stream_id, None)
        self.counters.streams_released += 1
        self._events.append(StreamReleased(st.stream_id))
        self._return_tokens(tokens)

    # -- sending ----------------------------------------------------------------------------------

    def send(self, st: StreamRecord, data: bytes | bytearray | memoryview) -> None:
        """Queue stream data; it is framed (split at ``max_frame_size``) by :meth:`data_to_send`."""
        if self._state is not _S_OPEN or (st.state is not _OPEN and st.state not in WRITABLE):
            self._refuse_write(st)
        n = len(data)
        if not n:
            return
        st.send.append(bytes(data))
        st.send_bytes += n
        self._send_buffered += n
        if not st.scheduled:
            st.scheduled = True
            self._rr.append(st)

    def frame_now(self, st: StreamRecord, data: bytes) -> bytes | None:
        """The PSH frame of ``data`` when it can leave at once, as :meth:`data_to_send` would send
        it right after :meth:`send`: nothing else is queued (no control frame, window update or
        stream data), the stream is open, ``data`` fits one frame and, in version 2, the peer's
        window. It is counted as sent. None: it cannot; queue it with :meth:`send`.

        A small write on an idle session (a push to a thousand sessions) then costs no queue."""
        n = len(data)
        if (
            self._state is not _S_OPEN
            or st.state is not _OPEN
            or st.send_bytes
            or not n
            or n > self._frame_size
            or self._ctrl
            or self._rr
            or self._upd
        ):
            return None
        if self._v2:
            if st.send_window() < n:
                return None
            st.num_written = (st.num_written + n) & U32_MASK
        c = self.counters
        c.frames_out += 1
        c.bytes_out += n
        return pack_header_unchecked(self.version, CMD_PSH, st.stream_id, n) + data

    def _refuse_write(self, st: StreamRecord) -> None:
        """Raise why ``st`` cannot be written: the session died, the stream was closed for writing
        (or aborted), or a local close of the session began."""
        if self._error is not None:
            raise fresh(self._error)
        if st.state not in WRITABLE:
            raise MuxStreamClosedError(
                f"stream {st.stream_id} was closed for writing (it is {st.state.label})"
            )
        self._refuse(SessionEvent.WRITE)

    def _take(self, st: StreamRecord, limit: int, out: list[bytes | memoryview]) -> int:
        """Append up to ``limit`` bytes of the stream's queue to ``out`` as views (no copy: the
        caller's final join is the only copy); return how many."""
        q = st.send
        off = st.send_off
        n = 0
        while q and n < limit:
            first = q[0]
            room = limit - n
            avail = len(first) - off
            if avail > room:
                out.append(memoryview(first)[off : off + room])
                off += room
                n = limit
                break
            out.append(memoryview(first)[off:] if off else first)
            q.popleft()
            off = 0
            n += avail
        st.send_off = off
        st.send_bytes -= n
        self._send_buffered -= n
        return n

    def data_to_send(self, max_bytes: int = 1 << 20) -> bytes:
        """Return the next outgoing bytes (control frames first, then round-robin stream data).

        Stops after about ``max_bytes`` (at least one frame). Data frames never exceed
        ``max_frame_size``; in version 2 a stream sends only within its peer window.
        """
        if self._state is _S_CLOSED:
            return b""
        out: list[bytes | memoryview] = []
        size = 0
        c = self.counters
        if self._ctrl:
            out.extend(self._ctrl)
            size = len(self._ctrl) * HEADER_SIZE  # control frames are 8 or 16 bytes; close enough
            self._ctrl = []
        if self._upd:
            # built now, not at read time: bytes given back with unread() are not granted again
            for st in self._upd:
                if st.upd_due:
                    st.upd_due = False
                    if st.state in PEER_SENDING:  # no window for a peer that is done
                        out.append(
                            pack_upd_unchecked(self.version, st.stream_id, st.num_read, self._stream_buffer)
                        )
                        size += 16
                        c.upd_out += 1
                        c.frames_out += 1
            self._upd = []
        rr = self._rr
        v2 = self._v2
        frame_size = self._frame_size
        version = self.version
        frames = 0
        payload = 0
        while rr and size < max_bytes:
            st = rr.popleft()
            st.scheduled = False
            if st.state is not _OPEN and st.state not in FIN_UNSENT:  # aborted, or FIN already out
                continue
            if st.send_bytes:
                limit = frame_size
                if v2:
                    win = st.send_window()
                    if win <= 0:
                        continue  # parked until UPD reschedules it
                    if win < limit:
                        limit = win
                hdr = len(out)
                out.append(b"")  # the header, once the length is known
                n = self._take(st, limit, out)
                out[hdr] = pack_header_unchecked(version, CMD_PSH, st.stream_id, n)
                size += HEADER_SIZE + n
                frames += 1
                payload += n
                if v2:
                    st.num_written = (st.num_written + n) & U32_MASK
                if st.send_bytes:
                    st.scheduled = True
                    rr.append(st)
                    continue
            if not st.send_bytes and st.state is not _OPEN and st.state in FIN_PENDING:  # OPEN: one test
                self._send_fin(st, out)
        c.frames_out += frames
        c.bytes_out += payload
        return b"".join(out)

    # -- receiving --------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, now: int) -> None:
        """Take bytes from the transport. Never raises on garbage: a bad frame kills the session."""
        if self._state is _S_CLOSED or not data:
            return
        self._data_ready = True
        self._decoder.feed(data)
        self._parse()

    def _parse(self) -> None:
        dec = self._decoder
        streams = self._streams
        c = self.counters
        events = self._events
        while self._bucket > 0 and self._state is not _S_CLOSED:
            try:
                frame = dec.next_frame()
            except MuxProtocolError as exc:
                self._protocol_error(exc)
                return
            if frame is None:
                return
            c.frames_in += 1
            cmd = frame.cmd
            sid = frame.stream_id
            if cmd == CMD_PSH:
                n = len(frame.data)
                if not n:
                    continue
                st = streams.get(sid)
                if st is None:
                    c.dropped_unknown_stream += 1
                    continue
                if st.state is not _OPEN and st.state not in PEER_SENDING:  # after the peer's FIN
                    c.dropped_after_fin += 1
                    continue
                q = st.recv
                if q and n < _SMALL and len(q[-1]) < _SMALL:
                    # tiny frames are merged so a flood of 1-byte PSH cannot cost a deque entry
                    # (~100 bytes of overhead) per byte of bucket
                    q[-1] += frame.data
                else:
                    q.append(frame.data)
                was_empty = not st.recv_bytes
                st.recv_bytes += n
                self._bucket -= n
                c.bytes_in += n
                if was_empty:  # edge-triggered: a reader only waits on an empty buffer
                    events.append(DataReceived(sid, n))
                if self._bucket <= 0:
                    c.recv_paused += 1
            elif cmd == CMD_UPD:
                c.upd_in += 1
                st = streams.get(sid)
                if st is None:
                    continue
                consumed, window = unpack_upd(frame.data)
                inflight = (st.num_written - consumed) & U32_MASK
                if inflight > _MAX_INT32:
                    c.bad_upd += 1
                    self._protocol_error(
                        MuxProtocolError(f"stream {sid}: peer consumed more than was sent", "bad_upd"),
                        counted=True,
                    )
                    return
                st.peer_consumed = consumed
                st.peer_window = window
                if st.send_bytes and not st.scheduled and st.send_window() > 0:
                    st.scheduled = True
                    self._rr.append(st)
                events.append(WindowUpdated(sid))
            elif cmd == CMD_NOP:
                c.nop_in += 1
            elif cmd == CMD_SYN:
                c.syn_in += 1
                if sid in streams:
                    c.duplicate_syn += 1
                    continue
                if len(streams) >= self.config.max_streams:
                    c.streams_refused += 1
                    if len(self._ctrl) < _MAX_CTRL_BACKLOG:  # a SYN flood must not grow our queue
                        self._ctrl.append(pack_header_unchecked(self.version, CMD_FIN, sid, 0))
                        c.fin_out += 1
                        c.frames_out += 1
                    continue
                streams[sid] = StreamRecord(sid, False)
                c.streams_accepted += 1
                events.append(StreamOpened(sid))
            else:  # CMD_FIN (the decoder admits nothing else)
                c.fin_in += 1
                st = streams.get(sid)
                if st is None:
                    continue
                new = _ON_RECV_FIN.get(st.state)
                if new is None:  # a second FIN
                    c.duplicate_fin += 1
                    continue
                st.state = new
                events.append(StreamEnded(sid))
                if new is _CLOSED:
                    self._release(st, st.recv_bytes)

    def _protocol_error(self, exc: MuxProtocolError, counted: bool = False) -> None:
        c = self.counters
        if not counted and exc.kind in c:
            setattr(c, exc.kind, getattr(c, exc.kind) + 1)
        c.protocol_errors += 1
        err = MuxClosedError(f"session closed: protocol error from peer: {exc}")
        err.__cause__ = exc.with_traceback(None)  # no frames pinned by the stored error (see fresh)
        self._terminate(err)

    def _return_tokens(self, n: int) -> None:
        if n <= 0:
            return
        was_empty = self._bucket <= 0
        self._bucket += n
        if was_empty and self._bucket > 0 and self._state is not _S_CLOSED:
            self._parse()

    def read(self, st: StreamRecord, n: int = -1) -> bytes:
        """Take up to ``n`` buffered bytes (all of them if ``n < 0``) from a stream.

        Returns ``b""`` when nothing is buffered (check :attr:`StreamRecord.at_eof`); raises the
        session's error when nothing is buffered, no FIN came and the session is dead (DEAD).
        Returning tokens may let held-back input be parsed, so check :meth:`events` afterwards.
        """
        state = st.state
        if state is _RESET:
            raise MuxStreamClosedError(f"stream {st.stream_id} was aborted")
        if n == 0:
            return b""
        if not st.recv_bytes:
            if state is _DEAD and self._error is not None:
                raise fresh(self._error)
            return b""
        if n < 0 or n >= st.recv_bytes:
            n = st.recv_bytes
        data, st.recv_off = _pull(st.recv, st.recv_off, n)
        got = len(data)
        st.recv_bytes -= got
        if self._v2 and (state is _OPEN or state in PEER_SENDING):
            st.num_read = (st.num_read + got) & U32_MASK
            st.incr += got
            if st.incr >= self._half_buffer or st.num_read == got:
                st.incr = 0
                if not st.upd_due:
                    st.upd_due = True
                    self._upd.append(st)
        if state is _OPEN or state in LIVE:
            self._return_tokens(got)
        return data

    def unread(self, st: StreamRecord, data: bytes | bytearray | memoryview) -> None:
        """Give back bytes just taken by :meth:`read` from ``st``: they are unread again (at the
        front of its buffer), hold their receive tokens again, and no longer count as consumed for
        version 2 (a UPD not sent yet carries the lowered count: the peer is granted window only for
        bytes the application kept). For a reader that took more than it may hold."""
        n = len(data)
        state = st.state
        if not n or state is _RESET:
            return
        if st.recv_off:
            st.recv[0] = st.recv[0][st.recv_off :]
            st.recv_off = 0
        st.recv.appendleft(bytes(data))
        st.recv_bytes += n
        if self._v2 and state in PEER_SENDING:
            st.num_read = (st.num_read - n) & U32_MASK
            st.incr -= n
        if state in LIVE:
            self._bucket -= n

    # -- keepalive --------------------------------------------------------------------------------

    def stop_keepalive(self) -> None:
        """No more NOPs, and no more closing on silence: the layer above keeps the connection alive
        (an RPC connection whose heartbeats ride on the transport's keepalives). Only for a peer that
        agreed to it: an smux peer closes a session it hears nothing from for its keepalive timeout."""
        self._ka = False

    def next_timer(self) -> int | None:
        """When :meth:`handle_timer` wants to run next (ms), or None (keepalive off or dead)."""
        if not self._ka or self._state is _S_CLOSED:
            return None
        return min(self._next_ping, self._next_check)

    def handle_timer(self, now: int) -> None:
        """Send a NOP if the interval passed; close the session if the timeout passed in silence."""
        if not self._ka or self._state is _S_CLOSED:
            return
        if now >= self._next_ping:
            c = self.counters
            if c.frames_out == self._frames_at_ping:  # other frames already told the peer we live
                self._ctrl.append(pack_header_unchecked(self.version, CMD_NOP, 0, 0))
                c.nop_out += 1
                c.frames_out += 1
            self._frames_at_ping = c.frames_out
            self._next_ping += self._ka_interval
            if self._next_ping <= now:
                self._next_ping = now + self._ka_interval
        if now >= self._next_check:
            self._next_check += self._ka_timeout
            if self._next_check <= now:
                self._next_check = now + self._ka_timeout
            if self._data_ready:
                self._data_ready = False
            elif self._bucket > 0:  # if our bucket is empty, we are the ones not reading
                self.counters.keepalive_timeouts += 1
                self._terminate(
                    MuxKeepaliveTimeoutError(
                        f"session closed: nothing received for {self.config.keepalive_timeout:g} s (keepalive timeout)"
                    )
                )

    # -- session end ------------------------------------------------------------------------------

    def close(self) -> None:
        """Begin a local close: queue FIN (after pending data) on every stream not closed yet.

        The caller should flush :meth:`data_to_send` and then call :meth:`terminate`.
        """
        if self._state is not _S_OPEN:
            return
        for st in list(self._streams.values()):
            self.close_stream(st)
        self._session_event(SessionEvent.CLOSE)

    def connection_lost(self, exc: BaseException | None = None, reason: str = "") -> None:
        """The transport ended (EOF if ``exc`` is None; ``reason``: why, when the transport says) or
        failed."""
        if self._state is _S_CLOSED:
            return
        if exc is None:
            err = MuxClosedError(f"session closed: {reason or 'the transport reached EOF'}")
        else:
            err = MuxClosedError(f"session closed: transport failed: {exc}")
            err.__cause__ = exc.with_traceback(None)  # no frames pinned by the stored error (see fresh)
        self._terminate(err)

    def terminate(self, error: MuxClosedError | str = "session closed locally") -> None:
        """Kill the session now with ``error`` (a message or a :class:`MuxClosedError`)."""
        if self._state is _S_CLOSED:
            return
        self._terminate(error if isinstance(error, MuxClosedError) else MuxClosedError(error))

    def _terminate(self, err: MuxClosedError) -> None:
        self._session_event(SessionEvent.TERMINATE)
        self._error = err
        self._ctrl = []
        self._upd = []
        for st in self._rr:
            st.scheduled = False
        self._rr.clear()
        for st in self._streams.values():
            st.state = _ON_SESSION_END[st.state]  # DEAD, or CLOSED after the peer's FIN
            st.send.clear()
            st.send_off = 0
            st.send_bytes = 0
        self._send_buffered = 0
        self._streams.clear()
        self._events.append(ConnectionTerminated(err))


__all__ = [
    "COUNTER_NAMES",
    "ConnectionTerminated",
    "DataReceived",
    "MuxConfig",
    "MuxCore",
    "MuxEvent",
    "MuxStreamEvent",
    "StreamEnded",
    "StreamOpened",
    "StreamRecord",
    "StreamReleased",
    "WindowUpdated",
]
