"""RPC frames: a 9-byte header and a msgpack body (sans-I/O).

Frame layout (all integers big-endian)::

    u32 body_length | u8 type | u32 call_id | body (msgpack, body_length bytes)

The header sits outside msgpack so a receiver can route a frame (and refuse an oversized one
with ``RESOURCE_EXHAUSTED`` for the right call) without decoding the body. The same frames are
used on the shared control stream, on a per-call stream and, one frame per datagram, over OOB
datagrams. See ``docs/wire-format/rpc.md``.
"""

from __future__ import annotations

import gc
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgpack
from pydantic_core import to_jsonable_python

from kcprpc.errors import ProtocolError
from kcprpc.msgpack_size import (
    DECODE_FACTOR,
    DECODE_SLACK,
    SMALL_BODY,
    BodyWalk,
    decoded_size,
    one_value_size,
    small_size,
)

HEADER: Final = struct.Struct(">IBI")
HEADER_SIZE: Final = HEADER.size

# frame types (wire values, never renumber)
HELLO: Final = 1  # client -> server, first frame on the control stream: {"v", "md", "restore"}
WELCOME: Final = 2  # server -> client: {"v", "sid", "hb", "epoch"}
CALL: Final = 3  # client -> server: [method, md|nil, timeout_ms|nil, flags, payload]
MSG: Final = 4  # either way: payload
END: Final = 5  # client -> server: request stream half-closed
HEADERS: Final = 6  # server -> client: initial metadata
TRAILER: Final = 7  # server -> client: [code, message, details, md|nil]; ends the call
REPLY: Final = 8  # server -> client: [payload, initial md|nil, trailing md|nil]; unary OK in one frame
CANCEL: Final = 9  # client -> server: cancel the call's handler
EVENT: Final = 10  # server -> client push: [event, payload, topic|nil, seq|nil, epoch|nil]
NOTIFY: Final = 11  # client -> server fire-and-forget: [method, payload, md|nil]
PING: Final = 12  # either way: [nonce, rtt_us|nil]
PONG: Final = 13  # either way: [nonce]
GOAWAY: Final = 14  # server -> client: [code, message]; no new calls on this connection
ROOMS: Final = 15  # server -> client: [joined: bool, room]; lets a client restore rooms after reconnect
EVENT_ACK: Final = 16  # client -> server: the number of the last numbered direct EVENT it handled

FRAME_NAMES: Final = {
    HELLO: "HELLO",
    WELCOME: "WELCOME",
    CALL: "CALL",
    MSG: "MSG",
    END: "END",
    HEADERS: "HEADERS",
    TRAILER: "TRAILER",
    REPLY: "REPLY",
    CANCEL: "CANCEL",
    EVENT: "EVENT",
    NOTIFY: "NOTIFY",
    PING: "PING",
    PONG: "PONG",
    GOAWAY: "GOAWAY",
    ROOMS: "ROOMS",
    EVENT_ACK: "EVENT_ACK",
}

# CALL flags
FLAG_END: Final = 1  # the request is complete: payload holds the single request message (unary/server-stream)

PROTOCOL_VERSION: Final = 1
DEFAULT_MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024


class _Oversized:
    """Marker body for a frame whose body exceeded the receiver's limit (the body was skipped)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OVERSIZED"


class _Undecodable:
    """Marker body for a frame whose body is not valid msgpack."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECODABLE"


class Refused:
    """Marker body for a frame refused by a per-connection receive budget (its body was not decoded).

    ``reason`` says which budget: :data:`DECODE_REFUSED` (the body would decode into more than the
    connection's decoded-memory budget has left) or :data:`BUFFER_REFUSED` (no room to buffer the
    frame, or it stalled: see ``docs/rpc.md``, "Flow control and memory per connection")."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"REFUSED({self.reason!r})"


OVERSIZED: Final = _Oversized()
UNDECODABLE: Final = _Undecodable()
DECODE_REFUSED: Final = Refused(
    "message refused: it would decode into more than the connection's max_decoded_bytes"
)
BUFFER_REFUSED: Final = Refused(
    "message refused: no room to buffer it on this connection (max_partial_frame_bytes)"
)
STALLED: Final = Refused("message dropped: no byte of it arrived for partial_frame_timeout")


def _default(obj: Any) -> Any:
    """msgpack fallback for values pydantic dumps in python mode (datetime, UUID, Decimal, sets...)."""
    return to_jsonable_python(obj)


_packer_default: Callable[[Any], Any] = _default


_local = threading.local()  # one msgpack Packer per thread: .pack() is a quarter of packb()'s cost,
# which builds a Packer per call (a Packer holds its buffer between calls: threads must not share one)
PACKER_KEEP: Final = 256 * 1024
"""A thread's Packer is let go after a message larger than this (or a failed pack): its buffer has
grown to the message's size and would stay that large."""


def _new_packer() -> Any:
    packer = _local.packer = msgpack.Packer(default=_packer_default, use_bin_type=True)
    return packer


def pack(obj: Any) -> bytes:
    """Encode one msgpack value (bytes stay bin, str stays str, other types via pydantic's jsonable)."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _new_packer()
    try:
        data: bytes = packer.pack(obj)
    except BaseException:
        del _local.packer
        raise
    if len(data) > PACKER_KEEP:
        del _local.packer
    return data


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """Decode one msgpack value; raises ``ValueError`` subclasses on garbage (ext types included:
    kcprpc never sends them, see docs/wire-format/rpc.md)."""
    if len(data) > SMALL_BODY:
        return unpack_large(data)
    return msgpack.unpackb(data, raw=False, strict_map_key=False, max_ext_len=0)


def unpack_large(data: bytes | bytearray | memoryview) -> Any:
    """:func:`unpack` with the garbage collector paused while msgpack builds the value (msgpack's
    own advice for large messages): each container it makes counts towards a collection, and the
    collections it would trigger traverse the value being built again and again, 3-5 times the
    decode's own cost for a body dense in arrays or maps (docs/rpc.md, "Decoded bodies"). The
    decode holds the GIL and runs no Python code, so the pause covers it alone; a collector that
    was off stays off."""
    if not gc.isenabled():
        return msgpack.unpackb(data, raw=False, strict_map_key=False, max_ext_len=0)
    gc.disable()
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, max_ext_len=0)
    finally:
        gc.enable()


class DecodeBudget:
    """The estimated bytes of decoded bodies one connection holds, and its limit (sans-I/O).

    A :class:`FrameDecoder` given a budget checks every body before decoding it. Bodies of the
    ``held_types`` (the frames whose decoded body outlives the batch: a server's ``CALL`` and
    ``MSG``, a client's ``MSG``) are charged their estimate (:attr:`held`) until the owner calls
    :meth:`release`; one that would take :attr:`held` past :attr:`limit` is refused (not decoded).
    Other bodies are only checked against :attr:`limit` alone (they are dropped with the batch).

    The estimate is ``DECODE_FACTOR * length`` (no look at the body: the hot path) while the charge
    leaves at least half the budget free, and :func:`decoded_size` (a walk of the headers)
    otherwise. Counters (in ``counters``): ``recv_decode_scanned`` (bodies walked),
    ``recv_decode_refused`` (bodies refused).
    """

    __slots__ = ("_half", "counters", "held", "held_types", "limit")

    def __init__(
        self, limit: int, held_types: Iterable[int] = (), counters: dict[str, int] | None = None
    ) -> None:
        if limit <= 0:
            raise ValueError("the decode budget must be positive")
        self.limit = limit
        self._half = limit // 2
        self.held = 0
        self.held_types = frozenset(held_types)
        self.counters: dict[str, int] = counters if counters is not None else {}
        for k in ("recv_decode_scanned", "recv_decode_refused"):
            self.counters.setdefault(k, 0)

    def release(self, n: int) -> None:
        """Give back ``n`` bytes charged for a body (its call ended, its message was taken)."""
        self.held -= n

    def decode(
        self, ftype: int, data: bytes | bytearray | memoryview, walk: BodyWalk | None = None
    ) -> tuple[Any, int]:
        """Check and decode one body: ``(body, charge)``; ``charge`` is 0 unless ``ftype`` is held.
        ``body`` is :data:`DECODE_REFUSED` or :data:`UNDECODABLE` instead when it must be. ``walk``
        is the walk of the body begun while it arrived, if any (:meth:`FrameDecoder.feed`)."""
        held = ftype in self.held_types
        room = self.limit - self.held if held else self.limit
        est = DECODE_FACTOR * len(data) + DECODE_SLACK
        if walk is not None or est > (self._half - self.held if held else self._half):
            if walk is None:
                self.counters["recv_decode_scanned"] += 1
            if walk is None and type(data) is not memoryview and len(data) <= SMALL_BODY:
                est = small_size(data, room)
            elif walk is None and (est := one_value_size(data)) >= 0:
                if est > room:
                    est = -1
            else:
                if walk is None:
                    walk = BodyWalk()
                est = walk.advance(data, 0, len(data), len(data), room)
                if est >= 0 and walk.need:
                    est = -2
            if est == -2:
                return UNDECODABLE, 0
            if est < 0 or est > room:
                self.counters["recv_decode_refused"] += 1
                return DECODE_REFUSED, 0
        try:
            body = unpack(data)
        except Exception:
            return UNDECODABLE, 0
        if held:
            self.held += est
            return body, est
        return body, 0


_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from
_unpackb = msgpack.unpackb


def encode_frame(ftype: int, call_id: int, body: Any) -> bytes:
    """Encode one frame."""
    data = pack(body)
    return _pack_header(len(data), ftype, call_id) + data


def encode_frame_raw(ftype: int, call_id: int, packed_body: bytes) -> bytes:
    """Encode one frame around a body that is already msgpack (used to encode a push once for many)."""
    return _pack_header(len(packed_body), ftype, call_id) + packed_body


Frame = tuple[int, int, Any]
"""(type, call_id, body). ``body`` is the decoded msgpack value, :data:`OVERSIZED` or :data:`UNDECODABLE`."""


def decode_datagram(data: bytes) -> Frame:
    """Decode a frame that fills one datagram exactly; raises :class:`ProtocolError` otherwise."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError("datagram shorter than a frame header")
    n, ftype, call_id = _unpack_header(data)
    if n != len(data) - HEADER_SIZE:
        raise ProtocolError("datagram length does not match its frame header")
    try:
        body = unpack(memoryview(data)[HEADER_SIZE:])
    except Exception:
        body = UNDECODABLE
    return ftype, call_id, body


_VIEW_ABOVE: Final = 64 * 1024


def _decode_fast(data: memoryview, cost: int) -> tuple[Any, int]:
    """A body over ``_VIEW_ABOVE``, decoded in place (always a large one: the collector paused)."""
    try:
        return unpack_large(data), cost
    except Exception:
        return UNDECODABLE, 0


class FrameDecoder:
    """Incremental frame decoder for a byte stream.

    ``feed(data)`` returns the frames completed by ``data``. Bodies longer than ``max_body`` are
    skipped without being buffered and reported with the :data:`OVERSIZED` body, so the caller can
    fail just that call. It never raises on input.

    With a :class:`DecodeBudget`, each body is checked before it is decoded (a refused one is
    reported with :data:`DECODE_REFUSED`). :attr:`costs` lists, for the frames of the last ``feed``,
    what each one was charged (0 for the frames that are not held, and all 0 without a budget);
    the caller releases what it does not keep. It stays empty with a budget that holds no frame
    type (a client's). The reader that owns the decoder may reserve buffer space for the
    frame in progress (:attr:`reserved`, see :func:`kcprpc.receive.read_frames`): when that frame
    completes, its reservation moves to :attr:`released` for the reader to give back.
    """

    __slots__ = (
        "_budget",
        "_buf",
        "_setup",
        "_skip",
        "_walk",
        "attention",
        "charged",
        "costs",
        "max_body",
        "partial",
        "refused",
        "released",
        "reserved",
    )

    def __init__(self, max_body: int = DEFAULT_MAX_MESSAGE_SIZE, budget: DecodeBudget | None = None) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._skip = 0
        self._budget = budget
        self._walk: BodyWalk | None = None  # the decoded-size walk of the large frame being buffered
        self.costs: list[int] = []
        self.reserved = 0  # buffer bytes reserved for the frame at the head of the buffer
        self.released = 0  # reservations of frames completed since the reader last looked
        self.partial = 0  # after feed: pending(), the size of the frame whose start is buffered
        self.charged = 0  # after feed: the sum of costs
        self.refused = False  # set when a body was refused by the budget (the reader resets it)
        self.attention = False  # set when refused, released or partial may need the reader
        # what feed() needs, in one load: the budget, the held types, half the budget, the longest
        # body not held decoded without a look, the limit, whether costs are listed, max_body
        self._setup: tuple[DecodeBudget | None, frozenset[int], int, int, int, bool, int] = (
            (
                budget,
                budget.held_types,
                budget._half,
                (budget._half - DECODE_SLACK) // DECODE_FACTOR,
                budget.limit,
                bool(budget.held_types),
                max_body,
            )
            if budget is not None
            else (None, frozenset(), 0, 0, 0, True, max_body)
        )

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def pending(self) -> int:
        """Size (header included) of the frame whose start is buffered, once its header is in;
        else 0."""
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return 0
        return HEADER_SIZE + int(_unpack_header(buf)[0])

    def take_tail(self) -> bytes:
        """Remove and return the buffered start of the next frame (to give it back to the stream)."""
        tail = bytes(self._buf)
        self._buf.clear()
        self._walk = None
        self.partial = 0
        return tail

    def refuse_pending(self, marker: Refused | _Undecodable) -> Frame:
        """Give up the frame whose start is buffered: skip the rest of it as it arrives and return
        it as ``(type, call_id, marker)`` (its reservation, if any, moves to :attr:`released`)."""
        buf = self._buf
        n, ftype, call_id = _unpack_header(buf)
        self._skip = HEADER_SIZE + n - len(buf)
        buf.clear()
        self._walk = None
        self.partial = 0
        if self.reserved:
            self.released += self.reserved
            self.reserved = 0
            self.attention = True
        return ftype, call_id, marker

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame now complete."""
        out: list[Frame] = []
        costs: list[int] = []
        self.costs = costs
        if self._skip:
            self.charged = 0
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip :]
            self._skip = 0
        budget, held, half, small, limit, track, max_body = self._setup
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
            walk = self._walk
        else:
            view = data
            walk = None
        pos = 0
        end = len(view)
        charged = start = budget.held if budget is not None else 0  # budget.held, in a local meanwhile
        while end - pos >= 9:  # HEADER_SIZE
            n, ftype, call_id = _unpack_header(view, pos)
            if n > max_body:
                out.append((ftype, call_id, OVERSIZED))
                if track:
                    costs.append(0)
                avail = end - pos - 9
                if avail >= n:
                    pos += 9 + n
                    continue
                self._skip = n - avail
                pos = end
                break
            stop = pos + 9 + n
            if stop > end:
                break
            if walk is None and n <= 65536:  # the hot path (65536: _VIEW_ABOVE)
                chunk = view[pos + 9 : stop]
                if budget is None:
                    cost = 0
                elif ftype in held:
                    if n <= 1024:  # charged the densest decoding while that leaves half the budget
                        cost = 120 * n + 64  # DECODE_FACTOR, DECODE_SLACK
                        if charged + cost > half:
                            budget.counters["recv_decode_scanned"] += 1
                            cost = small_size(chunk, limit - charged)
                    else:  # walked: one string or binary value at once, else a short walk
                        cost = one_value_size(chunk)
                        if cost < 0:
                            budget.counters["recv_decode_scanned"] += 1
                            cost = (
                                small_size(chunk, limit - charged)
                                if n <= 4096
                                else decoded_size(chunk, limit - charged)
                            )
                        elif cost > limit - charged:
                            cost = -1
                elif n <= small:
                    cost = 0
                else:
                    budget.held = charged
                    budget.counters["recv_decode_scanned"] += 1
                    cost = decoded_size(chunk, limit)  # not held: only the limit applies
                    if cost > 0:
                        cost = 0
                if cost >= 0:
                    try:
                        if n > 4096:  # SMALL_BODY
                            body = unpack_large(chunk)
                        else:
                            body = _unpackb(chunk, raw=False, strict_map_key=False, max_ext_len=0)
                    except Exception:
                        body = UNDECODABLE
                        cost = 0
                    charged += cost
                elif cost == -1:
                    body = DECODE_REFUSED
                    cost = 0
                    budget.counters["recv_decode_refused"] += 1  # type: ignore[union-attr]
                    self.refused = self.attention = True
                else:
                    body = UNDECODABLE
                    cost = 0
            elif walk is not None:  # the large frame buffered before: its walk goes on from there
                budget.held = charged  # type: ignore[union-attr]
                with memoryview(view) as mv, mv[pos + 9 : stop] as part:
                    body, cost = budget.decode(ftype, part, walk)  # type: ignore[union-attr]
                charged = budget.held  # type: ignore[union-attr]
                walk = self._walk = None
                if body is DECODE_REFUSED:
                    self.refused = self.attention = True
            else:  # a large body is read in place, not copied out first
                if budget is None:
                    cost, fast = 0, True
                elif ftype in held:
                    cost = 120 * n + 64
                    fast = charged + cost <= half
                else:
                    cost, fast = 0, n <= small
                budget_held = charged
                if budget is not None:
                    budget.held = charged
                with memoryview(view) as mv, mv[pos + 9 : stop] as part:
                    if fast:
                        body, cost = _decode_fast(part, cost)
                        budget_held += cost
                    else:
                        body, cost = budget.decode(ftype, part)  # type: ignore[union-attr]
                        budget_held = budget.held  # type: ignore[union-attr]
                        if body is DECODE_REFUSED:
                            self.refused = self.attention = True
                charged = budget_held
            if track:
                costs.append(cost)
            out.append((ftype, call_id, body))
            pos = stop
        if budget is not None:
            self.charged = charged - start
            budget.held = charged
        if self.reserved and out:  # the frame at the head, the reserved one, is complete
            self.released += self.reserved
            self.reserved = 0
            self.attention = True
        if buf:
            del buf[:pos]
            rest = len(buf)
        elif pos < end:
            self._buf = bytearray(view[pos:])
            rest = end - pos
        else:
            rest = 0
        if rest >= 9:  # HEADER_SIZE
            self.partial = 9 + int(_unpack_header(self._buf)[0])
            self.attention = True
            if budget is not None:
                self._walk_partial(budget, out, costs)
        elif self.partial:
            self.partial = 0
        return out

    def _walk_partial(self, budget: DecodeBudget, out: list[Frame], costs: list[int]) -> None:
        """Walk what has arrived of a large frame: one whose body already cannot fit the budget is
        refused now, and the rest of it skipped as it comes, not buffered."""
        buf = self._buf
        n = int(_unpack_header(buf)[0])
        walk = self._walk
        if walk is None:
            if n <= _VIEW_ABOVE or DECODE_FACTOR * n + DECODE_SLACK <= budget._half:
                return  # small, or sure to fit: checked once complete, if at all
            walk = self._walk = BodyWalk()
            budget.counters["recv_decode_scanned"] += 1
        with memoryview(buf) as mv:
            r = walk.advance(mv, HEADER_SIZE, len(buf), n, budget.limit)
        if r >= 0:
            return
        if r == -1:
            budget.counters["recv_decode_refused"] += 1
            self.refused = self.attention = True
        out.append(self.refuse_pending(DECODE_REFUSED if r == -1 else UNDECODABLE))
        if budget.held_types:
            costs.append(0)
