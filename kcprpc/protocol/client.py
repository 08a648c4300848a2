"""The client side of the RPC protocol, sans-I/O: connection state, call ids and the call table.

A :class:`ClientProtocol` is one connection (a link). It writes the HELLO and each CALL (choosing
the call id and refusing a request over ``max_message_size``), and turns every frame received,
on the control stream, on a call's own stream or in an OOB datagram, into what the pump must do:

* ``None``: nothing (ignored; frames that are malformed, of an unknown type, or for a call that
  is not open are counted in ``counters["bad_frames"]`` / ``counters["stale_frames"]``);
* ``bytes``: a frame to send back on the control stream (a PONG);
* an event: for a call (:class:`Replied`, :class:`Streamed`, :class:`Trailed`,
  :class:`HeadersReceived`, :class:`CallAborted`, each with the pump's handle of the call) or for
  the connection (:class:`Welcomed`, :class:`ConnectRefused`, :class:`Draining`,
  :class:`ClosedByServer`, :class:`RoomChanged`, :class:`PongReceived`), a
  :class:`NumberedEvent` (a reliable event sent to this session alone, numbered), or a pushed
  :class:`~kcprpc.protocol.frames.Event` as it is (reliable from :meth:`ClientProtocol.receive`,
  unreliable from :meth:`ClientProtocol.receive_datagram`).

The hot frames (REPLY, EVENT) are decoded straight into what is returned (one object each); the
others go through :func:`kcprpc.protocol.frames.decode`. Both apply the same shape rules.

The state (:class:`~kcprpc.protocol.state.ConnState`) goes ``AWAITING_HELLO`` (HELLO sent) →
``READY`` (WELCOME) → ``DRAINING`` (GOAWAY) → ``CLOSED``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from kcprpc import codec
from kcprpc.codec import Refused, encode_frame
from kcprpc.errors import RpcError
from kcprpc.protocol.frames import (
    Event,
    GoAway,
    Headers,
    Malformed,
    Msg,
    Ping,
    Pong,
    Rejected,
    Reply,
    Rooms,
    Trailer,
    Welcome,
    decode,
    encode_goaway,
    encode_pong,
    hello_frame,
)
from kcprpc.protocol.state import ConnState, check_transition
from kcprpc.status import Status

__all__ = [
    "CallAborted",
    "ClientProtocol",
    "ClosedByServer",
    "ConnectRefused",
    "Draining",
    "HeadersReceived",
    "NumberedEvent",
    "PongReceived",
    "Replied",
    "RoomChanged",
    "Streamed",
    "Trailed",
    "Welcomed",
    "trailer_error",
]


# ----------------------------------------------------------------------------- call events
class Replied(NamedTuple):
    """REPLY: the unary call succeeded."""

    handle: Any
    payload: Any
    initial_metadata: dict[str, Any] | None
    trailing_metadata: dict[str, Any] | None


class Streamed(NamedTuple):
    """MSG: one response message (or ``codec.UNDECODABLE``: the response fails validation)."""

    handle: Any
    payload: Any


class Trailed(NamedTuple):
    """TRAILER: the call ended; ``error`` is None for OK."""

    handle: Any
    error: RpcError | None
    metadata: dict[str, Any] | None


class HeadersReceived(NamedTuple):
    """HEADERS: initial metadata."""

    handle: Any
    metadata: dict[str, Any]


class CallAborted(NamedTuple):
    """The call must end with ``error`` now; ``cancel``: tell the server (CANCEL) too."""

    handle: Any
    error: RpcError
    cancel: bool


# ----------------------------------------------------------------------- connection events
class Welcomed(NamedTuple):
    """WELCOME: the connection is ready."""

    welcome: Welcome


class ConnectRefused(NamedTuple):
    """GOAWAY before WELCOME: the server refused this client (``connect()`` raises ``error``)."""

    error: RpcError


class Draining(NamedTuple):
    """GOAWAY on the control stream: the server drains (no new calls on this connection)."""

    error: RpcError


class ClosedByServer(NamedTuple):
    """GOAWAY in a datagram after WELCOME: the server ended the connection now (calls fail with it)."""

    error: RpcError


class RoomChanged(NamedTuple):
    """ROOMS: the server put this client in (``joined``) or out of ``room``."""

    joined: bool
    room: str


class NumberedEvent(NamedTuple):
    """An EVENT whose call id is a number: a reliable event sent to this client's session alone
    (:mod:`kcprpc.direct_events`); the client acknowledges ``number`` once it handled it."""

    number: int
    event: Event


class PongReceived(NamedTuple):
    """PONG: the answer to the heartbeat's PING ``nonce``."""

    nonce: int


ClientEvent = (
    Replied
    | Streamed
    | Trailed
    | HeadersReceived
    | CallAborted
    | Welcomed
    | ConnectRefused
    | Draining
    | ClosedByServer
    | Event
    | NumberedEvent
    | RoomChanged
    | PongReceived
)
Output = ClientEvent | bytes | None

_RESPONSE_TOO_LARGE: Final = "response larger than max_message_size"
_new: Final = tuple.__new__  # builds a NamedTuple from its fields in C (its own __new__ is Python)


def trailer_error(code: int, message: str, details: Any, md: dict[str, Any] | None) -> RpcError | None:
    """The error a TRAILER (or GOAWAY) carries; None for OK."""
    status = Status.from_wire(code)
    if status is Status.OK:
        return None
    return RpcError(status, message, details, trailing_metadata=md)


def _goaway_error(f: GoAway) -> RpcError:
    return trailer_error(f.code, f.message, None, None) or RpcError(Status.UNAVAILABLE, "refused")


def _live_event(body: list[Any]) -> Event:
    """The :class:`Event` of a live EVENT body of 5 elements (its name checked: a str)."""
    name, payload, key, seq, epoch = body
    return _new(  # Event(...), without its __new__
        Event,
        (
            name,
            payload,
            key if type(key) is str else None,
            seq if type(seq) is int else None,
            epoch if type(epoch) is int else None,
            0,  # a live frame (a replayed or keyed one has more elements: decoded by decode())
            None,
        ),
    )


class ClientProtocol:
    """One connection, client side (sans-I/O; see the module docstring)."""

    __slots__ = ("_next", "calls", "counters", "max_message_size", "state")

    def __init__(self, max_message_size: int, counters: dict[str, int]) -> None:
        self.max_message_size = max_message_size
        self.counters = counters
        for k in ("bad_frames", "stale_frames"):
            counters.setdefault(k, 0)
        self.state = ConnState.AWAITING_HELLO
        self.calls: dict[int, Any] = {}  # call id -> the pump's handle of the open call
        self._next = 0

    # ------------------------------------------------------------------ state
    def _to(self, new: ConnState) -> None:
        if new is not self.state:
            self.state = check_transition(self.state, new)

    def close(self) -> None:
        """The connection is gone (idempotent)."""
        if self.state is not ConnState.CLOSED:
            self._to(ConnState.CLOSED)

    # ------------------------------------------------------------------ sending
    def hello(
        self,
        metadata: dict[str, Any],
        restore: dict[str, Any] | None,
        resume: dict[str, Any] | None = None,
        transport_ping: bool = True,
        numbered: bool = True,
    ) -> bytes:
        """The HELLO frame that opens the control stream (``resume``: ``{"sid", "proof", "last"}``;
        ``transport_ping``, ``numbered``: see :class:`~kcprpc.protocol.frames.Hello`)."""
        return hello_frame(metadata, restore, resume, transport_ping, numbered=numbered)

    def leaving(self) -> bytes:
        """The GOAWAY a client sends on its control stream before it closes on purpose: its
        session ends for good (the server keeps nothing for a resume)."""
        return encode_goaway(int(Status.OK), "client closed")

    def next_id(self) -> int:
        """The next call id: 1, 2, 3 … wrapping at 2³², never 0, and never one a call in flight
        still holds (after the wrap, a subscription opened 2³² calls ago may still run)."""
        nid = (self._next + 1) & 0xFFFFFFFF or 1
        calls = self.calls
        while nid in calls:  # bounded: at most as many calls as the server lets run at once
            nid = (nid + 1) & 0xFFFFFFFF or 1
        self._next = nid
        return nid

    def call(
        self,
        handle: Any,
        call_id: int,
        method: str,
        metadata: dict[str, Any] | None,
        timeout_ms: int | None,
        end: bool,
        payload: Any,
    ) -> bytes:
        """Open call ``call_id`` (its frames go to ``handle`` from now on) and return its CALL frame;
        raises RESOURCE_EXHAUSTED over ``max_message_size`` (the call is not opened then)."""
        frame = encode_frame(
            codec.CALL, call_id, [method, metadata, timeout_ms, codec.FLAG_END if end else 0, payload]
        )
        if len(frame) - codec.HEADER_SIZE > self.max_message_size:
            raise RpcError(Status.RESOURCE_EXHAUSTED, "request larger than max_message_size")
        self.calls[call_id] = handle
        return frame

    def done(self, call_id: int) -> None:
        """The call ended (its frames are ignored from now on)."""
        self.calls.pop(call_id, None)

    # ------------------------------------------------------------------ receiving
    def receive(self, ftype: int, call_id: int, body: Any) -> Output:
        """One frame read from a stream (see the module docstring)."""
        if call_id:
            handle = self.calls.get(call_id)
            if ftype == 8 and handle is not None and type(body) is list and len(body) == 3:  # REPLY
                imd, tmd = body[1], body[2]
                if (imd is None or type(imd) is dict) and (tmd is None or type(tmd) is dict):
                    return _new(Replied, (handle, body[0], imd, tmd))  # Replied(...), without its __new__
            if ftype == 10 and type(body) is list and len(body) == 5 and type(body[0]) is str:
                return _new(NumberedEvent, (call_id, _live_event(body)))  # a numbered EVENT
        elif ftype == 10 and type(body) is list and len(body) == 5 and type(body[0]) is str:  # EVENT
            return _live_event(body)
        frame = decode(ftype, call_id, body)
        if call_id:
            if type(frame) is Event:  # numbered: sent to this session alone
                return NumberedEvent(call_id, frame)
            on_call = _CALL_FRAMES.get(type(frame))
            if on_call is None:
                return self._bad(frame)
            if handle is None:  # a call that ended (a late frame) or never was
                self.counters["stale_frames"] += 1
                return None
            return on_call(self, handle, frame)
        on_conn = _CONN_FRAMES.get(type(frame))
        if on_conn is None:
            return self._bad(frame)
        return on_conn(self, frame, False)

    def receive_datagram(self, ftype: int, call_id: int, body: Any) -> Output:
        """One frame of an OOB datagram: an unreliable EVENT, or a GOAWAY that ends the connection."""
        frame = decode(ftype, call_id, body)
        if type(frame) is Event:
            return frame
        if type(frame) is GoAway:
            if self.state is ConnState.AWAITING_HELLO or self.state is ConnState.CLOSED:
                return None
            # the server ends the connection now, with a status (a slow consumer: its stream is
            # backed up, so this comes as a datagram): calls in flight fail with it
            err = trailer_error(frame.code, frame.message, None, None)
            return None if err is None else ClosedByServer(err)
        return self._bad(frame)

    def _bad(self, frame: Any) -> Output:
        self.counters["bad_frames"] += 1
        return None

    # -- a call's frames
    def _reply(self, handle: Any, f: Reply) -> Output:
        return Replied(handle, f.payload, f.initial_metadata, f.trailing_metadata)

    def _msg(self, handle: Any, f: Msg) -> Output:
        return Streamed(handle, f.payload)

    def _trailer(self, handle: Any, f: Trailer) -> Output:
        return Trailed(handle, trailer_error(f.code, f.message, f.details, f.metadata), f.metadata)

    def _headers(self, handle: Any, f: Headers) -> Output:
        return HeadersReceived(handle, f.metadata)

    def _rejected(self, handle: Any, f: Rejected) -> Output:
        marker = f.marker
        if marker is codec.OVERSIZED:
            return CallAborted(handle, RpcError(Status.RESOURCE_EXHAUSTED, _RESPONSE_TOO_LARGE), True)
        if type(marker) is Refused:  # a receive budget refused it (not decoded)
            return CallAborted(handle, RpcError(Status.RESOURCE_EXHAUSTED, marker.reason), True)
        if f.ftype == codec.MSG:  # undecodable message: it fails the response's validation
            return Streamed(handle, marker)
        what = "reply" if f.ftype == codec.REPLY else "trailer" if f.ftype == codec.TRAILER else "frame"
        self.counters["bad_frames"] += 1
        return CallAborted(handle, RpcError(Status.INTERNAL, f"malformed {what}"), False)

    def _malformed(self, handle: Any, f: Malformed) -> Output:
        self.counters["bad_frames"] += 1
        if f.ftype == codec.REPLY:
            return CallAborted(handle, RpcError(Status.INTERNAL, "malformed reply"), False)
        if f.ftype == codec.TRAILER:
            return CallAborted(handle, RpcError(Status.INTERNAL, "malformed trailer"), False)
        return None  # a HEADERS that is not a map: ignored

    # -- the connection's frames
    def _malformed_conn(self, f: Malformed, unreliable: bool) -> Output:
        if f.ftype == codec.GOAWAY and not unreliable:  # still a GOAWAY: the reason is lost
            self.counters["bad_frames"] += 1
            return self._goaway(GoAway(int(Status.UNKNOWN), "malformed GOAWAY"), unreliable)
        return self._bad(f)

    def _event(self, f: Event, unreliable: bool) -> Output:
        return f

    def _pong(self, f: Pong, _: bool) -> Output:
        return PongReceived(f.nonce)

    def _ping(self, f: Ping, _: bool) -> Output:
        return encode_pong(f.nonce)

    def _rooms(self, f: Rooms, _: bool) -> Output:
        return RoomChanged(f.joined, f.room)

    def _welcome(self, f: Welcome, _: bool) -> Output:
        if self.state is not ConnState.AWAITING_HELLO:
            self.counters["bad_frames"] += 1  # a second WELCOME
            return None
        self._to(ConnState.READY)
        return Welcomed(f)

    def _goaway(self, f: GoAway, _: bool) -> Output:
        state = self.state
        if state is ConnState.AWAITING_HELLO:  # refused during the handshake
            self._to(ConnState.DRAINING)
            return ConnectRefused(_goaway_error(f))
        if state is ConnState.READY:
            self._to(ConnState.DRAINING)
            return Draining(_goaway_error(f))
        return None  # already draining or closed


_CALL_FRAMES: Final[dict[type, Callable[[ClientProtocol, Any, Any], Output]]] = {
    Reply: ClientProtocol._reply,
    Msg: ClientProtocol._msg,
    Trailer: ClientProtocol._trailer,
    Headers: ClientProtocol._headers,
    Rejected: ClientProtocol._rejected,
    Malformed: ClientProtocol._malformed,
}
"""What a call's frame becomes (one table for all connections)."""
_CONN_FRAMES: Final[dict[type, Callable[[ClientProtocol, Any, bool], Output]]] = {
    Event: ClientProtocol._event,
    Pong: ClientProtocol._pong,
    Ping: ClientProtocol._ping,
    Rooms: ClientProtocol._rooms,
    Welcome: ClientProtocol._welcome,
    GoAway: ClientProtocol._goaway,
    Malformed: ClientProtocol._malformed_conn,
}
"""What a connection frame becomes."""
