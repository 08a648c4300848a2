"""Named states and transition tables of the smux state machines (a stream, and the session).

A stream's life is the pair of its two directions, as in smux: SYN opens both; each side's FIN
(sent after its last data) ends its own direction; the stream leaves the session table once FIN
went both ways. Two extra ends come from outside the FIN exchange: an abort (smux's full
``Stream.Close()``: drop everything, send FIN, forget the id) and the death of the whole session.

=====================  =====================================================================
state                  meaning
=====================  =====================================================================
OPEN                   both directions open
CLOSING_LOCAL          we closed; our FIN waits behind our unsent data; the peer still sends
HALF_CLOSED_LOCAL      our FIN is sent; the peer still sends
HALF_CLOSED_REMOTE     the peer's FIN came (reads end with EOF); we still send
CLOSING                the peer's FIN came and our FIN waits behind our unsent data
CLOSED                 nothing more either way and out of the table: FIN went both ways, or the
                       session died after the peer's FIN. Unread data stays readable, then EOF
RESET                  aborted by us: out of the table, data dropped, reads raise
DEAD                   the session died before the peer's FIN: unread data stays readable, then
                       reads raise the session's error
=====================  =====================================================================

:data:`STREAM_TRANSITIONS` maps ``(state, event)`` to the next state; a pair missing from it is an
event the state does not allow. The core never guesses: a peer event that is not allowed (data or a
FIN after the peer's own FIN) is dropped and counted; a local one (a write after close) raises an
error naming the state. The state sets the core tests on its hot paths (:data:`WRITABLE`,
:data:`PEER_SENDING`, ...) are derived from the table, so the table is the one description.

The session has three states (:class:`SessionState`): OPEN, CLOSING (a local close began: every
stream got its FIN queued, no new streams or writes) and CLOSED (dead; the core's ``error`` says
why). Sans-I/O: nothing here imports asyncio, sockets or clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, IntEnum
from types import MappingProxyType
from typing import Final

from .errors import MuxUsageError


class StreamState(IntEnum):
    """Where a stream is in its life (see the module docstring for each state).

    An ``IntEnum`` only so that hashing a state is int hashing, done in C: the core looks up a
    transition on every open, close and FIN (a plain ``Enum`` hashes in Python). Compare states by
    identity, never with ints; :attr:`label` is the name used in messages.
    """

    OPEN = 1
    CLOSING_LOCAL = 2
    HALF_CLOSED_LOCAL = 3
    HALF_CLOSED_REMOTE = 4
    CLOSING = 5
    CLOSED = 6
    RESET = 7
    DEAD = 8

    @property
    def label(self) -> str:
        """The state's name for messages: ``"half-closed-local"``."""
        return self.name.lower().replace("_", "-")


class StreamEvent(Enum):
    """What can happen to a stream. Local events come from the application, peer events from
    frames received, ``FIN_SENT`` from the core's scheduler and ``SESSION_END`` from the session."""

    WRITE = "write"  # local: queue data
    CLOSE = "close"  # local: half-close (FIN after the data written so far); idempotent
    ABORT = "abort"  # local: full close (smux Stream.Close()); idempotent
    FIN_SENT = "fin-sent"  # our FIN was framed, after our last data
    RECV_DATA = "recv-data"  # peer: PSH
    RECV_FIN = "recv-fin"  # peer: FIN
    SESSION_END = "session-end"  # the session died with the stream still in its table


_O = StreamState.OPEN
_CL = StreamState.CLOSING_LOCAL
_HL = StreamState.HALF_CLOSED_LOCAL
_HR = StreamState.HALF_CLOSED_REMOTE
_CG = StreamState.CLOSING
_CD = StreamState.CLOSED
_RS = StreamState.RESET
_DD = StreamState.DEAD

STREAM_TRANSITIONS: Final[Mapping[tuple[StreamState, StreamEvent], StreamState]] = MappingProxyType(
    {
        # the application writes while our direction is open
        (_O, StreamEvent.WRITE): _O,
        (_HR, StreamEvent.WRITE): _HR,
        # the peer sends data while its direction is open
        (_O, StreamEvent.RECV_DATA): _O,
        (_CL, StreamEvent.RECV_DATA): _CL,
        (_HL, StreamEvent.RECV_DATA): _HL,
        # half-close: our FIN is queued behind our data (a repeated close changes nothing)
        (_O, StreamEvent.CLOSE): _CL,
        (_HR, StreamEvent.CLOSE): _CG,
        (_CL, StreamEvent.CLOSE): _CL,
        (_HL, StreamEvent.CLOSE): _HL,
        (_CG, StreamEvent.CLOSE): _CG,
        (_CD, StreamEvent.CLOSE): _CD,
        (_RS, StreamEvent.CLOSE): _RS,
        (_DD, StreamEvent.CLOSE): _DD,
        # our FIN goes out once the data before it is framed
        (_CL, StreamEvent.FIN_SENT): _HL,
        (_CG, StreamEvent.FIN_SENT): _CD,
        # the peer's FIN
        (_O, StreamEvent.RECV_FIN): _HR,
        (_CL, StreamEvent.RECV_FIN): _CG,
        (_HL, StreamEvent.RECV_FIN): _CD,
        # abort, from anywhere (a repeated abort changes nothing)
        **{(s, StreamEvent.ABORT): _RS for s in StreamState},
        # the session dies: what was read of the peer decides between EOF and the session's error
        (_O, StreamEvent.SESSION_END): _DD,
        (_CL, StreamEvent.SESSION_END): _DD,
        (_HL, StreamEvent.SESSION_END): _DD,
        (_HR, StreamEvent.SESSION_END): _CD,
        (_CG, StreamEvent.SESSION_END): _CD,
    }
)


def _allowing(event: StreamEvent) -> tuple[StreamState, ...]:
    return tuple(s for s in StreamState if (s, event) in STREAM_TRANSITIONS)


def transitions_on(event: StreamEvent) -> dict[StreamState, StreamState]:
    """The table's column for one event, as a new dict ``{state: next state}`` over the states
    allowing it: the core's paths look a transition up with one hash of the state."""
    return {s: n for (s, e), n in STREAM_TRANSITIONS.items() if e is event}


# State sets the core tests on its hot paths, as tuples ("in" on a short tuple of enum members is
# an identity scan: no hashing per frame). All derived from the table above.
WRITABLE: Final = _allowing(StreamEvent.WRITE)
"""Our direction is open: the application may write (OPEN, HALF_CLOSED_REMOTE)."""
PEER_SENDING: Final = _allowing(StreamEvent.RECV_DATA)
"""The peer's direction is open: its data is taken and version 2 grants it window."""
FIN_PENDING: Final = _allowing(StreamEvent.FIN_SENT)
"""Closed by us with our FIN still queued behind data (CLOSING_LOCAL, CLOSING)."""
FIN_UNSENT: Final = WRITABLE + FIN_PENDING
"""Our FIN has not gone out yet and still will (unless the stream is aborted or the session dies)."""
LIVE: Final = _allowing(StreamEvent.SESSION_END)
"""In the session table: the stream's unread data holds receive tokens."""
READ_EOF: Final = tuple(s for s in StreamState if s not in PEER_SENDING and s not in (_RS, _DD))
"""Reads end with EOF (the peer's FIN came) rather than an error (HALF_CLOSED_REMOTE, CLOSING, CLOSED)."""


def next_stream_state(state: StreamState, event: StreamEvent, stream_id: int) -> StreamState:
    """The state after a local or internal ``event``; raise :class:`MuxUsageError` naming the
    stream, its state and the event if the table does not allow it (peer events are looked up by
    the core directly, which drops and counts the ones not allowed)."""
    new = STREAM_TRANSITIONS.get((state, event))
    if new is None:
        raise MuxUsageError(f"stream {stream_id} is {state.label}: {event.value} is not allowed")
    return new


class SessionState(Enum):
    """Where a session is in its life."""

    OPEN = "open"
    CLOSING = "closing"  # a local close began: FINs queued, no new streams or writes
    CLOSED = "closed"  # dead: the core's error says why


class SessionEvent(Enum):
    """What can happen to a session."""

    OPEN_STREAM = "open-stream"  # local: open a stream
    WRITE = "write"  # local: queue data on a writable stream
    CLOSE = "close"  # local: begin a graceful close (idempotent)
    TERMINATE = "terminate"  # local close done, transport EOF or failure, keepalive, protocol error


SESSION_TRANSITIONS: Final[Mapping[tuple[SessionState, SessionEvent], SessionState]] = MappingProxyType(
    {
        # new streams and writes only while open (closing refuses them: "session is closing")
        (SessionState.OPEN, SessionEvent.OPEN_STREAM): SessionState.OPEN,
        (SessionState.OPEN, SessionEvent.WRITE): SessionState.OPEN,
        (SessionState.OPEN, SessionEvent.CLOSE): SessionState.CLOSING,
        (SessionState.CLOSING, SessionEvent.CLOSE): SessionState.CLOSING,
        (SessionState.OPEN, SessionEvent.TERMINATE): SessionState.CLOSED,
        (SessionState.CLOSING, SessionEvent.TERMINATE): SessionState.CLOSED,
        # once dead, nothing changes: a close or a second cause of death is ignored
        (SessionState.CLOSED, SessionEvent.CLOSE): SessionState.CLOSED,
        (SessionState.CLOSED, SessionEvent.TERMINATE): SessionState.CLOSED,
    }
)


__all__ = [
    "FIN_PENDING",
    "FIN_UNSENT",
    "LIVE",
    "PEER_SENDING",
    "READ_EOF",
    "SESSION_TRANSITIONS",
    "STREAM_TRANSITIONS",
    "WRITABLE",
    "SessionEvent",
    "SessionState",
    "StreamEvent",
    "StreamState",
    "next_stream_state",
    "transitions_on",
]
