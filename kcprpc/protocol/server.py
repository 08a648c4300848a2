"""The server side of the RPC protocol, sans-I/O: connection state, call tables, admission limits.

A :class:`ServerProtocol` is one client connection; :meth:`ServerProtocol.open_stream` gives the
:class:`ServerStream` of each mux stream (the control stream, or a stream per call). A stream's
:meth:`ServerStream.receive` takes one ``(type, call_id, body)`` from the frame decoder, decodes it
(:func:`kcprpc.protocol.frames.decode`) and returns what the pump must do:

* ``None``: nothing (the frame was ignored; bad ones are counted in ``counters["bad_frames"]``);
* ``bytes``: a frame to send back on this stream (a PONG, a TRAILER refusing a call);
* an event (:class:`StartCall`, :class:`CallMessage`, :class:`CallEnd`, :class:`CallCancel`,
  :class:`HelloAccepted`, :class:`HelloRefused`, :class:`StartNotify`, :class:`ClientLeaving`).

The protocol never runs handlers and never waits: it owns the call ids (the table of the open calls
of each stream, with the pump's handle for each), the counts that limits apply to (concurrent calls,
streaming calls, running notifications), and the connection's :class:`~kcprpc.protocol.state.ConnState`.
The pump reports back with :meth:`ServerProtocol.call_ended`, :meth:`ServerProtocol.welcome`,
:meth:`ServerProtocol.goaway` and :meth:`ServerProtocol.notify_done`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sized
from typing import Any, Final, NamedTuple

from kcprpc import codec
from kcprpc.codec import Refused
from kcprpc.errors import shown
from kcprpc.msgpack_size import decoded_size
from kcprpc.protocol.frames import (
    Call,
    Cancel,
    End,
    EventAck,
    GoAway,
    Hello,
    Malformed,
    Msg,
    Notify,
    Ping,
    Rejected,
    decode,
    encode_goaway,
    encode_pong,
    encode_trailer,
)
from kcprpc.protocol.state import ConnState, check_transition
from kcprpc.service import MethodKind, MethodSpec
from kcprpc.status import Status

__all__ = [
    "CallCancel",
    "CallEnd",
    "CallMessage",
    "ClientLeaving",
    "EventsAcked",
    "HelloAccepted",
    "HelloRefused",
    "ServerLimits",
    "ServerProtocol",
    "ServerStream",
    "StartCall",
    "StartNotify",
]

MethodEntry = tuple[MethodSpec, Callable[..., Any]]


METADATA_DECODED_FACTOR: Final = 4
"""HELLO metadata is kept decoded for the session's life (and its resume window): besides its
``max_metadata_size`` packed, its decoded estimate (:func:`kcprpc.msgpack_size.decoded_size`) may
be at most this many times that (strings and small maps fit; 16 KiB of empty lists, a megabyte of
objects, does not)."""


class ServerLimits(NamedTuple):
    """What one connection may hold (from :class:`kcprpc.ServerConfig`)."""

    max_concurrent_calls: int = 1000
    max_subscriptions: int = 1000
    max_metadata_size: int = 16 * 1024
    max_concurrent_notifications: int = 64


# ------------------------------------------------------------------------------- events
class StartCall(NamedTuple):
    """An admitted CALL: the pump starts the handler and registers its handle with
    :meth:`ServerStream.opened`. ``request`` is the CALL's payload when it carries the one request
    (flag END), else None (the requests follow as MSG frames)."""

    call_id: int
    metadata: dict[str, Any] | None
    timeout_ms: int | float | None
    request: Any
    spec: MethodSpec
    handler: Callable[..., Any]


class CallMessage(NamedTuple):
    """A MSG for an open call: ``payload`` is the message, or ``codec.OVERSIZED`` /
    ``codec.UNDECODABLE`` / a ``codec.Refused`` when its body was not decoded."""

    handle: Any
    payload: Any


class CallEnd(NamedTuple):
    """END: the client sent its last request message."""

    handle: Any


class CallCancel(NamedTuple):
    """CANCEL: the client cancels the call."""

    handle: Any


class HelloAccepted(NamedTuple):
    """The control stream's HELLO: the pump runs ``on_connect``/restore, then :meth:`ServerProtocol.welcome`."""

    hello: Hello


class HelloRefused(NamedTuple):
    """A HELLO that cannot be accepted: the pump sends ``goaway`` and closes the connection."""

    code: Status
    message: str
    goaway: bytes


class ClientLeaving(NamedTuple):
    """A GOAWAY from the client on its control stream: it closes on purpose (``client.close()``),
    so its session ends for good when the connection does (it is not kept for a resume)."""

    message: str


class EventsAcked(NamedTuple):
    """An EVENT_ACK on the control stream: the client handled every numbered direct event up to
    ``number`` (:mod:`kcprpc.direct_events`)."""

    number: int


class StartNotify(NamedTuple):
    """An admitted NOTIFY (the pump validates its payload and runs the handler, then
    :meth:`ServerProtocol.notify_done`)."""

    frame: Notify
    spec: MethodSpec
    handler: Callable[..., Any]


ServerEvent = (
    StartCall
    | CallMessage
    | CallEnd
    | CallCancel
    | HelloAccepted
    | HelloRefused
    | StartNotify
    | ClientLeaving
    | EventsAcked
)
Output = ServerEvent | bytes | None

_OVERSIZED_CALL: Final = "message larger than max_message_size"
_new: Final = tuple.__new__  # builds a NamedTuple from its fields in C (its own __new__ is Python)


class ServerProtocol:
    """One client connection, server side (sans-I/O; see the module docstring)."""

    __slots__ = (
        "active_calls",
        "counters",
        "has_control",
        "limits",
        "methods",
        "notify_running",
        "rtt_ms",
        "state",
        "streaming_calls",
        "topics",
    )

    def __init__(
        self,
        methods: Mapping[str, MethodEntry],
        limits: ServerLimits,
        counters: dict[str, int],
        topics: Sized = (),
    ) -> None:
        self.methods = methods
        self.limits = limits
        self.counters = counters
        for k in ("bad_frames", "stale_frames", "hellos_refused", "notifications_dropped", "calls_refused"):
            counters.setdefault(k, 0)
        self.topics = topics  # the session's topics: they count against max_subscriptions
        self.state = ConnState.AWAITING_HELLO
        self.has_control = False
        self.active_calls = 0
        self.streaming_calls = 0
        self.notify_running = 0
        self.rtt_ms: float | None = None  # as reported by the client in its PINGs

    # ------------------------------------------------------------------ state
    def _to(self, new: ConnState) -> None:
        if new is not self.state:
            self.state = check_transition(self.state, new)

    def welcome(self, body: dict[str, Any]) -> bytes:
        """The handshake is done: the WELCOME frame to send (``body``, docs/wire-format/rpc.md);
        calls are admitted from now on (unless draining)."""
        if self.state is ConnState.AWAITING_HELLO or self.state is ConnState.HANDSHAKE:
            self._to(ConnState.READY)
        return codec.encode_frame(codec.WELCOME, 0, body)

    def goaway(self, code: Status, message: str) -> bytes:
        """The server drains: the GOAWAY frame to send; new calls get UNAVAILABLE from now on."""
        if self.state is not ConnState.CLOSED:
            self._to(ConnState.DRAINING)
        return encode_goaway(int(code), message)

    def close(self) -> None:
        """The connection is gone (idempotent)."""
        if self.state is not ConnState.CLOSED:
            self._to(ConnState.CLOSED)

    @property
    def ready(self) -> bool:
        """True once WELCOME was sent (and until the connection closes or drains)."""
        return self.state is ConnState.READY

    # ------------------------------------------------------------------ streams
    def open_stream(self) -> ServerStream:
        """The protocol state of a new mux stream of this connection."""
        return ServerStream(self)

    def call_ended(self, streaming: bool) -> None:
        """A call admitted by :class:`StartCall` ended (after :meth:`ServerStream.closed`)."""
        self.active_calls -= 1
        if streaming:
            self.streaming_calls -= 1

    # ------------------------------------------------------------------ notify
    def receive_datagram(self, ftype: int, call_id: int, body: Any) -> StartNotify | None:
        """One frame of an OOB datagram (only NOTIFY is valid there)."""
        frame = decode(ftype, call_id, body)
        if type(frame) is Notify:
            return self.notify(frame)
        if frame[0] == codec.NOTIFY:  # a rejected or malformed notify: dropped
            self.counters["notifications_dropped"] += 1
        else:
            self.counters["bad_frames"] += 1
        return None

    def notify(self, frame: Notify) -> StartNotify | None:
        """Admit a NOTIFY (a known notify method, under max_concurrent_notifications) or drop it
        (counted in ``notifications_dropped``: unreliable by contract, never queued)."""
        entry = self.methods.get(frame.method)
        if (
            entry is None
            or entry[0].kind is not MethodKind.NOTIFY
            or self.notify_running >= self.limits.max_concurrent_notifications
            or self.state is ConnState.CLOSED
        ):
            self.counters["notifications_dropped"] += 1
            return None
        self.notify_running += 1
        return StartNotify(frame, entry[0], entry[1])

    def notify_done(self) -> None:
        """A notify handler admitted by :meth:`notify` finished."""
        self.notify_running -= 1


class ServerStream:
    """One mux stream of a :class:`ServerProtocol`: the control stream (after its HELLO) or a call
    stream. Owns the table of its open calls: call id → the pump's handle."""

    __slots__ = ("calls", "conn", "counters", "is_control")

    def __init__(self, conn: ServerProtocol) -> None:
        self.conn = conn
        self.counters = conn.counters
        self.calls: dict[int, Any] = {}
        self.is_control = False

    def receive(self, ftype: int, call_id: int, body: Any) -> Output:
        """One frame from the decoder (see the module docstring for what comes back)."""
        if ftype == 3 and type(body) is list and len(body) == 5:  # CALL, the hot path: no Call object
            method, md, timeout, flags, payload = body
            if type(method) is str and type(flags) is int:
                return self._admit(call_id, method, md, timeout, flags, payload)
        frame = decode(ftype, call_id, body)
        handler = _STREAM_FRAMES.get(type(frame))
        if handler is None:  # Unknown, Malformed, a frame only a server sends, a PONG
            if type(frame) is Malformed and frame.ftype == codec.CALL:
                self.counters["bad_frames"] += 1
                return encode_trailer(call_id, Status.INVALID_ARGUMENT, "malformed call frame")
            if type(frame) is Malformed and frame.ftype == codec.HELLO:
                return self._bad_hello(Status.INVALID_ARGUMENT, "malformed HELLO")
            if ftype != codec.PONG:
                self.counters["bad_frames"] += 1
            return None
        return handler(self, frame)

    # ------------------------------------------------------------------ the pump reports
    def opened(self, call_id: int, handle: Any) -> None:
        """The pump started the call of a :class:`StartCall` and gives its handle."""
        self.calls[call_id] = handle

    def closed(self, call_id: int, streaming: bool) -> None:
        """The call ended (its TRAILER or REPLY was sent, or it was cancelled)."""
        self.calls.pop(call_id, None)
        conn = self.conn
        conn.active_calls -= 1
        if streaming:
            conn.streaming_calls -= 1

    # ------------------------------------------------------------------ frames
    def _call(self, f: Call) -> Output:
        return self._admit(f.call_id, f.method, f.metadata, f.timeout_ms, f.flags, f.payload)

    def _admit(self, cid: int, method: str, md: Any, timeout: Any, flags: int, payload: Any) -> Output:
        """Admit or refuse a CALL (its shape already checked: ``method`` str, ``flags`` int)."""
        conn = self.conn
        entry = conn.methods.get(method)
        if entry is None:
            return encode_trailer(cid, Status.UNIMPLEMENTED, f"unknown method {shown(method)}")
        if cid in self.calls:
            self.counters["bad_frames"] += 1
            return None
        spec = entry[0]
        state = conn.state
        if state is not ConnState.READY:
            if state is ConnState.DRAINING or state is ConnState.CLOSED:
                return encode_trailer(cid, Status.UNAVAILABLE, "server shutting down")
            return encode_trailer(cid, Status.UNAVAILABLE, "no handshake")
        limits = conn.limits
        if conn.active_calls >= limits.max_concurrent_calls:
            self.counters["calls_refused"] += 1
            return encode_trailer(cid, Status.RESOURCE_EXHAUSTED, "too many concurrent calls")
        streaming = spec.streams_responses
        if streaming and len(conn.topics) + conn.streaming_calls >= limits.max_subscriptions:
            self.counters["calls_refused"] += 1
            return encode_trailer(cid, Status.RESOURCE_EXHAUSTED, "too many subscriptions")
        if spec.kind is MethodKind.NOTIFY:
            return encode_trailer(cid, Status.UNIMPLEMENTED, "notify methods take no calls")
        conn.active_calls += 1
        if streaming:
            conn.streaming_calls += 1
        if not (type(timeout) is int or type(timeout) is float) or timeout < 0:
            timeout = None  # nil (or not a duration): no deadline
        return _new(  # StartCall(...), without its __new__
            StartCall,
            (
                cid,
                md if type(md) is dict else None,
                timeout,
                payload if flags & codec.FLAG_END else None,
                spec,
                entry[1],
            ),
        )

    def _stale(self) -> Output:
        self.counters["stale_frames"] += 1  # a call that ended (a late frame) or never was
        return None

    def _msg(self, f: Msg) -> Output:
        handle = self.calls.get(f.call_id)
        return self._stale() if handle is None else CallMessage(handle, f.payload)

    def _end(self, f: End) -> Output:
        handle = self.calls.get(f.call_id)
        return self._stale() if handle is None else CallEnd(handle)

    def _cancel(self, f: Cancel) -> Output:
        handle = self.calls.get(f.call_id)
        return self._stale() if handle is None else CallCancel(handle)

    def _notify(self, f: Notify) -> Output:
        return self.conn.notify(f)

    def _ping(self, f: Ping) -> Output:
        if f.rtt_us is not None:
            self.conn.rtt_ms = f.rtt_us / 1000.0
        return encode_pong(f.nonce)

    def _claim_control(self) -> bool:
        conn = self.conn
        if self.is_control or conn.has_control:
            self.counters["bad_frames"] += 1  # a second HELLO
            return False
        self.is_control = conn.has_control = True
        if conn.state is ConnState.AWAITING_HELLO:
            conn._to(ConnState.HANDSHAKE)
        return True

    def _hello(self, f: Hello) -> Output:
        if not self._claim_control():
            return None
        limit = self.conn.limits.max_metadata_size
        if f.metadata:
            packed = codec.pack(f.metadata)
            if len(packed) > limit:
                message = f"HELLO metadata larger than {limit} bytes"
            elif decoded_size(packed, METADATA_DECODED_FACTOR * limit) < 0:
                # the session keeps it decoded: 16 KiB of empty lists is a megabyte of objects
                message = f"HELLO metadata takes more than {METADATA_DECODED_FACTOR} x {limit} bytes decoded"
            else:
                return HelloAccepted(f)
            self.counters["hellos_refused"] += 1
            return HelloRefused(
                Status.RESOURCE_EXHAUSTED, message, encode_goaway(Status.RESOURCE_EXHAUSTED, message)
            )
        return HelloAccepted(f)

    def _goaway(self, f: GoAway) -> Output:
        if not self.is_control:  # only the control stream says the client leaves
            self.counters["bad_frames"] += 1
            return None
        return ClientLeaving(f.message)

    def _event_ack(self, f: EventAck) -> Output:
        if not self.is_control:  # numbered events come on the control stream only
            self.counters["bad_frames"] += 1
            return None
        return EventsAcked(f.number)

    def _bad_hello(self, code: Status, message: str) -> Output:
        if not self._claim_control():
            return None
        self.counters["bad_frames"] += 1
        return HelloRefused(code, message, encode_goaway(code, message))

    def _rejected(self, f: Rejected) -> Output:
        """A frame whose body was not decoded (over max_message_size, not msgpack, refused by a
        receive budget): its call is answered; anything else is dropped and counted."""
        ftype, cid, marker = f
        if ftype == codec.CALL:
            if marker is codec.OVERSIZED:
                return encode_trailer(cid, Status.RESOURCE_EXHAUSTED, _OVERSIZED_CALL)
            if type(marker) is Refused:
                return encode_trailer(cid, Status.RESOURCE_EXHAUSTED, marker.reason)
            self.counters["bad_frames"] += 1
            return encode_trailer(cid, Status.INVALID_ARGUMENT, "malformed call frame")
        if ftype == codec.MSG:
            handle = self.calls.get(cid)
            return self._stale() if handle is None else CallMessage(handle, marker)
        if ftype == codec.END:  # END and CANCEL carry nil: their body does not matter
            return self._end(End(cid))
        if ftype == codec.CANCEL:
            return self._cancel(Cancel(cid))
        if ftype == codec.HELLO:
            if type(marker) is Refused or marker is codec.OVERSIZED:
                return self._bad_hello(Status.RESOURCE_EXHAUSTED, "HELLO too large")
            return self._bad_hello(Status.INVALID_ARGUMENT, "malformed HELLO")
        if ftype == codec.NOTIFY:
            self.counters["notifications_dropped"] += 1
            return None
        self.counters["bad_frames"] += 1
        return None


_STREAM_FRAMES: Final[dict[type, Callable[[ServerStream, Any], Output]]] = {
    Call: ServerStream._call,
    Msg: ServerStream._msg,
    End: ServerStream._end,
    Cancel: ServerStream._cancel,
    Ping: ServerStream._ping,
    Notify: ServerStream._notify,
    Hello: ServerStream._hello,
    GoAway: ServerStream._goaway,
    EventAck: ServerStream._event_ack,
    Rejected: ServerStream._rejected,
}
"""What a stream does with each frame class (one table for all streams: no per-stream cycle)."""
