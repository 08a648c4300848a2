"""A sans-I/O KCP ARQ engine, segment-for-segment compatible with skywind3000's C ``ikcp``.

The engine does no I/O and never reads a clock. The caller passes ``now`` (milliseconds, any
non-negative int; only its low 32 bits go on the wire) to :meth:`KCP.update`, :meth:`KCP.flush`,
:meth:`KCP.input` and :meth:`KCP.check`. Datagrams leave through the ``output`` callback given to
the constructor (one call per datagram, with a ``bytes`` the callee may keep) or, without a
callback, pile up until :meth:`KCP.take_output` collects them.

Behaviour follows ``ikcp.c`` (with ``IKCP_FASTACK_CONSERVE``, as the C file defines it): defaults,
window rules, RTO arithmetic, fast resend, window probing and even the ``sn``/``ts`` that a
window-probe segment inherits from the last ack of the same flush, so the datagrams we emit are
byte-identical to ikcp's for the same calls. Garbage input never raises: :meth:`KCP.input`
returns ikcp's codes (-1 short packet or wrong conv, -2 a length field longer than the data,
-3 an unknown command) and counts the packet in ``counters.kcp_in_errors``.

Implementation notes (all invisible on the wire):

* the send buffer is a list of slotted :class:`_Seg` objects whose ``sn`` run contiguously from
  ``snd_una``; an ack marks a segment instead of unlinking it, so finding it is an index, and
  acknowledged segments are dropped from the front as ``snd_una`` advances, into a pool of objects
  that new segments reuse (no allocation or garbage collection per segment);
* the send and receive queues are :class:`_Queue` objects: ``frg`` and payload in two parallel lists read
  from a head index (no tuple per segment, list primitives when compiled); they read as sequences of
  ``(frg, payload)`` pairs; the receive buffer is a dict keyed by ``sn``;
* :meth:`KCP.flush` remembers the earliest retransmission time, so a flush with nothing due only
  looks at new segments, and it returns at once when there is nothing at all to send.
* a datagram is a list of parts joined once: per-flush header prefixes, ``struct`` packs of the
  per-segment fields, payloads; an ack header reuses the acknowledged segment's own ``ts sn`` bytes,
  which :meth:`KCP.input` keeps in ``_acklist``. In the mypyc-compiled build :meth:`KCP.input`
  reads headers byte by byte in native ints (``_NATIVE``), the interpreted build with ``struct``
  (docs/BENCHMARKS.md, "Compiled engine").
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from kcp.errors import KCPTypeError, KCPUsageError

if TYPE_CHECKING:
    # i64: mypyc's native 64-bit int (C arithmetic in the compiled build); only an annotation, so
    # the pure build does not need mypy_extensions at run time
    from mypy_extensions import i64

    from kcp.stats import Counters

__all__ = [
    "IKCP_ASK_SEND",
    "IKCP_ASK_TELL",
    "IKCP_CMD_ACK",
    "IKCP_CMD_PUSH",
    "IKCP_CMD_REACK",
    "IKCP_CMD_WASK",
    "IKCP_CMD_WINS",
    "IKCP_DEADLINK",
    "IKCP_FASTACK_LIMIT",
    "IKCP_INTERVAL",
    "IKCP_MTU_DEF",
    "IKCP_OVERHEAD",
    "IKCP_PROBE_INIT",
    "IKCP_PROBE_LIMIT",
    "IKCP_RTO_DEF",
    "IKCP_RTO_MAX",
    "IKCP_RTO_MIN",
    "IKCP_RTO_NDL",
    "IKCP_THRESH_INIT",
    "IKCP_THRESH_MIN",
    "IKCP_WND_RCV",
    "IKCP_WND_SND",
    "KCP",
    "SEGMENT_HEADER",
    "acks_segment",
    "getconv",
    "packet_conv",
]

# ikcp constants (same names and values as ikcp.c)
IKCP_RTO_NDL: Final = 30  # minimum RTO in nodelay mode
IKCP_RTO_MIN: Final = 100  # minimum RTO otherwise
IKCP_RTO_DEF: Final = 200
IKCP_RTO_MAX: Final = 60000
IKCP_CMD_PUSH: Final = 81
IKCP_CMD_ACK: Final = 82
IKCP_CMD_WASK: Final = 83  # window probe (ask)
IKCP_CMD_WINS: Final = 84  # window size (tell)
IKCP_CMD_REACK: Final = 85  # not ikcp's: a repeated ACK (secure mode, negotiated; ``KCP.ack_repeat``)
IKCP_ASK_SEND: Final = 1
IKCP_ASK_TELL: Final = 2
IKCP_WND_SND: Final = 32
IKCP_WND_RCV: Final = 128  # must be >= the largest fragment count
IKCP_MTU_DEF: Final = 1400
IKCP_ACK_FAST: Final = 3
IKCP_INTERVAL: Final = 100
IKCP_OVERHEAD: Final = 24
IKCP_DEADLINK: Final = 20
IKCP_THRESH_INIT: Final = 2
IKCP_THRESH_MIN: Final = 2
IKCP_PROBE_INIT: Final = 7000
IKCP_PROBE_LIMIT: Final = 120000
IKCP_FASTACK_LIMIT: Final = 5

_MASK: Final = 0xFFFFFFFF
_HALF: Final = 0x80000000
_BIG: Final = 1 << 26  # RTT arithmetic below this cannot overflow C's 32-bit ints
_HDR: Final = struct.Struct("<IBBHIIII")  # conv cmd frg wnd ts sn una len
_pack: Final = _HDR.pack
_unpack_from: Final = _HDR.unpack_from
_CONV: Final = struct.Struct("<I")
_TS_SN: Final = struct.Struct("<II")
_ACK_HEAD: Final = struct.Struct("<IBBH").pack  # conv cmd frg wnd
_ACK_TAIL: Final = _TS_SN.pack  # una len (after the ack's ts sn)
_PUSH_HEAD: Final = struct.Struct("<IBBHI").pack  # conv cmd frg wnd ts
_PUSH_TAIL: Final = struct.Struct("<III").pack  # sn una len

OutputFn = Callable[[bytes], object]


def _s32(x: int) -> int:
    """Signed 32-bit view of a difference of two u32 values (ikcp's ``_itimediff``)."""
    x &= _MASK
    return x - 0x100000000 if x >= _HALF else x


# True when this module runs compiled (mypyc's functions have no ``__code__``). The compiled build
# then reads segment headers byte by byte (native int arithmetic, no tuple and no boxed fields);
# the interpreter keeps ``struct``, which is faster there. Both give the same values.
_NATIVE: Final[bool] = not hasattr(_s32, "__code__")


def _u32le(b: bytes, i: i64) -> i64:
    """The little-endian u32 at ``b[i : i + 4]``: the compiled build's header read (native code:
    i64 locals, so the shifts are C shifts). The interpreted build unpacks with ``struct``."""
    b0: i64 = b[i]
    b1: i64 = b[i + 1]
    b2: i64 = b[i + 2]
    b3: i64 = b[i + 3]
    return b0 | b1 << 8 | b2 << 16 | b3 << 24


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero) for ``b > 0``."""
    return a // b if a >= 0 else -((-a) // b)


def _rtt_sample_c32(srtt: int, rttval: int, rtt: int) -> tuple[int, int]:
    """ikcp_update_ack's smoothing in C's 32-bit ints, wrap-arounds included.

    Only reached with absurd samples (hours of "RTT", i.e. forged acks); :meth:`KCP.input` does
    the common case inline. Matching C here keeps us byte-identical to ikcp under garbage.
    """
    if srtt == 0:
        return rtt, rtt >> 1
    delta = _s32(rtt - srtt)  # int - int, then widened to long
    if delta < 0:
        delta = -delta
    rttval = _s32(_cdiv(_s32(3 * rttval) + delta, 4))
    srtt = _s32(_cdiv(_s32(7 * srtt + rtt), 8))
    return (srtt if srtt >= 1 else 1), rttval


def _rto_c32(srtt: int, rttval: int, interval: int, minrto: int) -> int:
    """rto = srtt + max(interval, 4 * rttval), bounded to [minrto, 60000], in C's unsigned math."""
    lo = (4 * rttval) & _MASK
    if lo < interval:
        lo = interval
    rto = (srtt + lo) & _MASK
    minrto &= _MASK
    if rto < minrto:
        rto = minrto
    return rto if rto < IKCP_RTO_MAX else IKCP_RTO_MAX


ADAPT_SAMPLES: Final = 32  # recovery rounds between two picks of the copies per round
ADAPT_FAILED: Final = 4  # ... or as soon as this many rounds were lost whole (escalate fast)
SPARSE_RTO_CAP: Final = 4  # a sparse flight's rounds back off to at most this many RTOs apart
ROUND_FAILURE_TARGET: Final = 0.02  # the chance that all copies of a round are lost, aimed for
LEAD_SAMPLES: Final = 32  # segments acknowledged between two picks of the lead copies
LEAD_WINDOW: Final = 256  # ... of which the estimate keeps about this many (halved beyond it)
LEAD_TARGET: Final = 0.004  # the chance that a segment's first round goes unanswered, aimed for
BURSTY_COPIES: Final = 4  # recovery copies from which losses count as bursts: no lead copies then
ACK_HOLD_MAX: Final = 250
"""The longest a held ack may wait (ms), and what a sender adds to its RTO while its peer holds
(:meth:`KCP.set_peer_hold`; docs/wire-format/kcp.md, "Held acks")."""
ACK_HOLD_UNIT: Final = 4  # ms per step of a held ACK's frg byte (frg - 1 steps waited)
ACK_REPEATS: Final = 2
"""How many more times an ACK of a segment that came out of order is sent (``KCP.ack_repeat``)."""


def recovery_copies_for(rounds: int, failed: int, copies: int, max_copies: int) -> int:
    """The copies per recovery round that make losing a whole round unlikely: ``rounds`` rounds
    were sent with ``copies`` copies each and ``failed`` of them were all lost (their segment
    needed another round). The loss of one copy given the previous one was lost is estimated as
    ``q = (failed / rounds) ** (1 / copies)`` (high on a bursty link, near the loss rate on a
    random one), and ``q ** n <= ROUND_FAILURE_TARGET`` solved for ``n``, within ``1..max_copies``."""
    f = (failed + 0.1) / (rounds + 1)
    q = f ** (1.0 / max(1, copies))
    if q >= 0.999:
        return max_copies
    n = math.ceil(math.log(ROUND_FAILURE_TARGET) / math.log(q)) if q > 0 else 1
    return max(1, min(max_copies, n))


def lead_copies_for(samples: int, failed: int, current: int, max_lead: int) -> int:
    """The spaced copies to send right behind each new small flight (``lead_copies="auto"``):
    ``failed`` of the last ``samples`` segments acknowledged were answered only after their first
    transmission (the first acknowledgement echoed a later copy's timestamp). That is the loss of
    a transmission or of its acknowledgement, ``f = 1 - (1 - p) ** 2`` if both ways lose ``p``;
    ``p`` is what delays this side's message (the peer's own recovery covers its answer).

    The lead goes up (one step per pick) to the least ``k`` with ``p ** (k + 1) <= LEAD_TARGET``
    (independent losses), within ``0..max_lead``, ``p`` estimated from ``f = failed / samples``;
    the first copy comes at once, a second one only with ``samples >= LEAD_WINDOW / 2``.
    It comes down only with ``samples >= LEAD_WINDOW / 2`` and once ``p ** (k + 1) <=
    0.75 * LEAD_TARGET``: a few hundred samples, not a lucky few dozen, so a lossy link does not
    flap between paying and not paying."""

    def need(f: float, target: float) -> int:
        p = 1.0 - math.sqrt(1.0 - min(1.0, f))
        k = 0
        while k < max_lead and p ** (k + 1) > target:
            k += 1
        return k

    f = (failed + 0.05) / (samples + 1)
    settled = samples >= LEAD_WINDOW // 2  # enough samples for more than a first copy, or fewer
    if need(f, LEAD_TARGET) > current and (current == 0 or settled):
        return current + 1
    if not settled:
        return current
    down = need(f, 0.75 * LEAD_TARGET)
    return down if down < current else current


def getconv(packet: bytes | bytearray | memoryview) -> int:
    """Return the conversation id of a raw KCP packet, or -1 if it is shorter than 4 bytes."""
    if len(packet) < 4:
        return -1
    return int(_CONV.unpack_from(packet, 0)[0])


SEGMENT_HEADER: Final = _HDR
"""The header of one KCP segment: conv u32, cmd u8, frg u8, wnd u16, ts u32, sn u32, una u32, len u32."""


def packet_conv(packet: bytes | bytearray | memoryview) -> int:
    """The conv of a well-formed KCP packet (every segment parses, same conv, known cmd), else -1."""
    n = len(packet)
    if n < IKCP_OVERHEAD:
        return -1
    off = 0
    conv = -1
    unpack = _HDR.unpack_from
    while n - off >= IKCP_OVERHEAD:
        c, cmd, _frg, _wnd, _ts, _sn, _una, ln = unpack(packet, off)
        if (
            (conv >= 0 and c != conv)
            or cmd < IKCP_CMD_PUSH
            or cmd > IKCP_CMD_WINS
            or n - off - IKCP_OVERHEAD < ln
        ):
            return -1
        conv = c
        off += IKCP_OVERHEAD + ln
    return conv


def acks_segment(packet: bytes | bytearray | memoryview, sn: int, ts: int) -> bool:
    """True if the KCP packet holds an ACK of segment ``sn`` echoing timestamp ``ts``."""
    n = len(packet)
    off = 0
    unpack = _HDR.unpack_from
    while n - off >= IKCP_OVERHEAD:
        _c, cmd, _frg, _wnd, t, s, _una, ln = unpack(packet, off)
        if cmd == IKCP_CMD_ACK and s == sn and t == ts:
            return True
        off += IKCP_OVERHEAD + ln
    return False


class _Seg:
    """A segment in the send buffer (the header fields that vary, plus retransmission state)."""

    __slots__ = ("acked", "copies", "data", "fastack", "frg", "resendts", "rto", "sn", "ts", "ts0", "xmit")

    def __init__(
        self, sn: int, frg: int, data: bytes, ts: int, rto: int, resendts: int, copies: int = 0
    ) -> None:
        self.renew(sn, frg, data, ts, rto, resendts, copies)

    def renew(self, sn: int, frg: int, data: bytes, ts: int, rto: int, resendts: int, copies: int) -> None:
        """Set every field for a new segment (also how a dropped segment object is reused)."""
        self.sn = sn
        self.frg = frg
        self.data = data
        self.ts = ts
        self.ts0 = ts  # the first transmission's time (an ack that echoes it answered that one)
        self.resendts = resendts
        self.rto = rto
        self.fastack = 0
        self.xmit = 1  # created when first sent
        self.acked = False
        self.copies = copies  # sparse recovery: spaced copies still to send in this round


# A _Queue deletes its consumed front once it is this long and at least half the list, so it keeps
# at most this many consumed pairs (or as many as are still queued) alive. (They are not replaced by
# a placeholder: the compiled build would box a new tuple for every store.)
_COMPACT: Final = 16


class _Queue:
    """A FIFO of ``(frg, payload)`` pairs (the send and receive queues), kept as two parallel lists
    (``frgs``, ``data``: no tuple per segment) read from ``head`` on, the consumed front deleted in
    batches (amortised O(1)). Unlike ``deque``'s methods, list operations are primitives in the
    compiled build; the engine's hot paths use the lists and ``head`` directly. Reads as a sequence
    of the ``(frg, payload)`` pairs still queued (``len``, truth, index, iteration)."""

    __slots__ = ("data", "frgs", "head")

    def __init__(self) -> None:
        self.frgs: list[int] = []
        self.data: list[bytes] = []
        self.head = 0  # [:head] of both lists are consumed

    def __len__(self) -> int:
        return len(self.data) - self.head

    def __bool__(self) -> bool:
        return len(self.data) > self.head

    def __getitem__(self, i: int) -> tuple[int, bytes]:
        n = len(self.data) - self.head
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("queue index out of range")
        i += self.head
        return self.frgs[i], self.data[i]

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        h = self.head
        return zip(self.frgs[h:], self.data[h:], strict=True)

    def __repr__(self) -> str:
        return f"_Queue({list(self)!r})"

    def consumed(self, head: int) -> None:
        """Mark the pairs before ``head`` consumed (deleted once enough have gathered)."""
        data = self.data
        if head >= len(data):
            data.clear()
            self.frgs.clear()
            head = 0
        elif head >= _COMPACT and 2 * head >= len(data):
            del data[:head]
            del self.frgs[:head]
            head = 0
        self.head = head

    def clear(self) -> None:
        """Empty the queue."""
        self.frgs.clear()
        self.data.clear()
        self.head = 0


class KCP:
    """One KCP control block (ikcp's ``ikcpcb``), without I/O.

    ``KCP(conv, output)``: ``conv`` must match on both ends; ``output(datagram)`` is called once per
    datagram a flush produces. Attribute names and defaults are ikcp's.
    """

    __slots__ = (
        "_ack_first_frg",
        "_acklist",
        "_buf",
        "_fast_pending",
        "_nacked",
        "_next_resend",
        "_outbox",
        "_pool",
        "_reack_pending",
        "_reacks",
        "_wins_due",
        "_wins_gap",
        "_wins_left",
        "_wins_mark",
        "ack_frg",
        "ack_repeat",
        "conv",
        "counters",
        "current",
        "cwnd",
        "dead_link",
        "disorder",
        "fastlimit",
        "fastresend",
        "hold_aware",
        "incr",
        "interval",
        "mss",
        "mtu",
        "nocwnd",
        "nodelay_",
        "output",
        "probe",
        "probe_init",
        "probe_limit",
        "probe_wait",
        "rcv_buf",
        "rcv_nxt",
        "rcv_queue",
        "rcv_wnd",
        "recovery_adaptive",
        "recovery_auto_lead",
        "recovery_copies",
        "recovery_flight",
        "recovery_gap",
        "recovery_lead",
        "recovery_max_copies",
        "recovery_rounds",
        "recovery_samples",
        "rmt_wnd",
        "rto_extra",
        "rx_minrto",
        "rx_rto",
        "rx_rttval",
        "rx_srtt",
        "snd_buf",
        "snd_nxt",
        "snd_queue",
        "snd_una",
        "snd_wnd",
        "ssthresh",
        "state",
        "stream",
        "ts_flush",
        "ts_probe",
        "updated",
        "wins_repeat",
        "xmit",
    )

    def __init__(self, conv: int, output: OutputFn | None = None) -> None:
        if not 0 <= conv <= _MASK:
            raise KCPUsageError(f"conv must be a 32-bit unsigned integer, got {conv!r}")
        self.conv = conv
        self.output: OutputFn | None = output
        self.counters: Counters | None = None
        self.snd_una = 0
        self.snd_nxt = 0
        self.rcv_nxt = 0
        self.ts_probe = 0
        self.probe_wait = 0
        # the wait before the first window probe (WASK) while the peer's window is 0, and the
        # floor of the waits after it, which grow by half each time up to probe_limit; ikcp's
        # constants (7 s, 120 s) unless a session asks for quicker probes
        self.probe_init = IKCP_PROBE_INIT
        self.probe_limit = IKCP_PROBE_LIMIT
        # The receiver's side of it: the window update (WINS) sent when reading reopens a full
        # window is one datagram. ikcp sends it once; when it is lost the sender learns the window
        # only from its own probe (ikcp and kcp-go: 7 s later). With wins_repeat > 0 it goes again
        # after an RTO, then twice that ..., at most wins_repeat more times, until a data segment
        # comes (the sender heard it) or the window is full again. Off (0) by default: ikcp's.
        self.wins_repeat = 0
        self._wins_left = 0  # repeats still to send of the last window update
        self._wins_due = 0  # when the next one goes
        self._wins_gap = 0  # ms until it, doubling
        self._wins_mark = (0, 0)  # (rcv_nxt, segments held out of order) when the update went
        self.snd_wnd = IKCP_WND_SND
        self.rcv_wnd = IKCP_WND_RCV
        self.rmt_wnd = IKCP_WND_RCV
        self.cwnd = 0
        self.incr = 0
        self.probe = 0
        self.mtu = IKCP_MTU_DEF
        self.mss = self.mtu - IKCP_OVERHEAD
        self.stream = 0
        self.state = 0
        self.rx_srtt = 0
        self.rx_rttval = 0
        self.rx_rto = IKCP_RTO_DEF
        self.rx_minrto = IKCP_RTO_MIN
        self.current = 0
        self.interval = IKCP_INTERVAL
        self.ts_flush = IKCP_INTERVAL
        self.nodelay_ = 0
        self.updated = 0
        self.ssthresh = IKCP_THRESH_INIT
        self.fastresend = 0
        self.fastlimit = IKCP_FASTACK_LIMIT
        self.nocwnd = 0
        self.xmit = 0
        self.dead_link = IKCP_DEADLINK
        # Sparse-flight loss recovery (not in ikcp; off by default: recovery_flight 0). See flush.
        self.recovery_flight = 0  # applies while at most this many segments are unacked
        self.recovery_copies = 1  # transmissions per recovery round (1: a plain retransmission)
        self.recovery_lead = 0  # spaced copies sent after a new segment's first transmission
        self.recovery_gap = 10  # ms between the copies of a round
        self.recovery_rounds = [0, 0, 0, 0]  # segments that needed >= 1, 2, 3, 4 recovery rounds
        self.recovery_adaptive = False  # pick recovery_copies from the loss seen (recovery_copies_for)
        self.recovery_max_copies = 6  # ... at most this many (the bandwidth budget of a round)
        self.recovery_auto_lead = 0  # > 0: pick recovery_lead in 0..this from the loss seen
        self.recovery_samples = [0, 0, 0, 0, 0]  # lead_copies="auto"'s estimate (_sample_first_ack)
        # queues and buffers
        self.snd_queue = _Queue()  # (frg, payload) waiting for the window
        self.snd_buf: list[_Seg] = []  # in flight, sn contiguous from snd_una (acked ones marked)
        self.rcv_buf: dict[int, tuple[int, bytes]] = {}  # sn -> (frg, payload), out of order
        self.rcv_queue = _Queue()  # (frg, payload) in order, ready for recv()
        self._buf = self.snd_buf
        self._nacked = 0  # acked segments still sitting in snd_buf
        # one entry per pending ack: the acknowledged segment's ``ts sn`` header bytes as they came
        # (8 bytes, the same two fields in the same order as in the ack's header), so a flush joins
        # them between its per-flush header parts instead of packing a header per ack
        self._acklist: list[bytes] = []
        self._next_resend = 0  # no segment needs a retransmission before this time
        self._fast_pending = False  # some segment may be due for a fast retransmission
        self._outbox: list[bytes] = []
        # _Seg objects dropped from snd_buf, reused for new segments (their data released): no
        # allocation, freeing and young-generation garbage collection per segment. At most snd_wnd
        # of them (as many as one window in flight, which is how many a round of acks can free)
        self._pool: list[_Seg] = []
        # Held acks (not in ikcp; docs/wire-format/kcp.md "Held acks"). All 0/False: ikcp's wire.
        self.hold_aware = False  # the peer agreed to held acks: its ACKs' frg says when it holds
        self.rto_extra = 0  # ms added to every RTO while the peer holds its acks (set_peer_hold)
        self.ack_frg = 0  # the frg byte of this end's ACKs: 0, or 1 while this end holds acks
        self._ack_first_frg = 0  # the frg of the next flush's first ACK (hold_first_ack), 0: ack_frg
        self.disorder = 0  # PUSH segments that came out of order or again (a loss shows as these)
        # Repeated acks (not in ikcp; docs/wire-format/kcp.md "Repeated acks"). Off: ikcp's wire.
        self.ack_repeat = False  # both ends agreed: send and take REACK segments
        # the ``ts sn`` of the ACKs to repeat, a list per ACK-sending flush: [ACK_REPEATS] gathers
        # those of the segments input stores above a hole (their ACKs go with the next such flush),
        # and each flush repeats lists [0, ACK_REPEATS) and moves every list one place down
        self._reacks: list[list[bytes]] = [[] for _ in range(ACK_REPEATS + 1)]
        self._reack_pending = 0  # entries in those lists (0: a flush has no REACK to look for)

    # ------------------------------------------------------------------ configuration

    def nodelay(self, nodelay: int, interval: int, resend: int, nc: int) -> int:
        """ikcp_nodelay: negative arguments leave a setting unchanged. Returns 0."""
        if nodelay >= 0:
            self.nodelay_ = nodelay
            self.rx_minrto = IKCP_RTO_NDL if nodelay else IKCP_RTO_MIN
        if interval >= 0:
            self.interval = min(max(interval, 10), 5000)
        if resend >= 0:
            self.fastresend = resend
            self._fast_pending = True
        if nc >= 0:
            self.nocwnd = nc
        return 0

    def set_interval(self, interval: int) -> int:
        """ikcp_interval: set the flush interval, clamped to 10..5000 ms. Returns 0."""
        self.interval = min(max(interval, 10), 5000)
        return 0

    def wndsize(self, sndwnd: int, rcvwnd: int) -> int:
        """ikcp_wndsize: non-positive values are ignored; rcv_wnd is at least 128. Returns 0."""
        if sndwnd > 0:
            self.snd_wnd = sndwnd
        if rcvwnd > 0:
            self.rcv_wnd = max(rcvwnd, IKCP_WND_RCV)
        return 0

    def setmtu(self, mtu: int) -> int:
        """ikcp_setmtu: returns -1 if ``mtu`` < 50, else 0 (mss becomes mtu - 24)."""
        if mtu < 50 or mtu < IKCP_OVERHEAD:
            return -1
        self.mtu = mtu
        self.mss = mtu - IKCP_OVERHEAD
        return 0

    def drop_unsent(self) -> None:
        """Forget every segment queued or in flight, and pending acks (the session has ended and will
        send nothing again): their memory goes now, as ``ikcp_release`` frees it, not whenever the
        session object itself is collected."""
        self.snd_queue.clear()
        self.snd_buf.clear()
        self._pool.clear()
        self._nacked = 0
        self._acklist.clear()
        for r in self._reacks:
            r.clear()
        self._reack_pending = 0
        self._outbox.clear()

    def set_peer_hold(self, holding: bool) -> None:
        """The peer started (``holding``) or stopped holding its lone acks (an ACK's ``frg``, read by
        :meth:`input` when :attr:`hold_aware`): every RTO gets :data:`ACK_HOLD_MAX` more, or loses
        it, and the segments in flight move their retransmission times by as much, so a held ack
        never looks lost and a loss found by an ack that came at once is resent at once."""
        extra = ACK_HOLD_MAX if holding else 0
        delta = extra - self.rto_extra
        if not delta:
            return
        self.rto_extra = extra
        for seg in self.snd_buf:
            if not seg.acked:
                seg.resendts = (seg.resendts + delta) & _MASK
        self._next_resend = (self._next_resend + delta) & _MASK

    def hold_first_ack(self, held: int) -> None:
        """The first pending ack waited ``held`` ms (held acks): the next flush writes that into its
        ``frg`` (:data:`ACK_HOLD_UNIT` ms steps, plus 1), so the sender's RTT sample leaves it out."""
        self._ack_first_frg = 1 + min(max(held, 0) // ACK_HOLD_UNIT, 254)

    def waitsnd(self) -> int:
        """Segments queued or in flight and not yet acknowledged (ikcp_waitsnd)."""
        q = self.snd_queue
        return len(self.snd_buf) - self._nacked + len(q.data) - q.head

    def acks_pending(self) -> int:
        """Acks waiting for the next flush (ikcp's ``ackcount``): a host may skip a flush when this,
        :attr:`probe` and :meth:`waitsnd` are all zero, since it would send nothing."""
        return len(self._acklist)

    @property
    def nsnd_buf(self) -> int:
        """Unacknowledged segments in flight."""
        return len(self.snd_buf) - self._nacked

    @property
    def nsnd_que(self) -> int:
        """Segments waiting for the send window."""
        return len(self.snd_queue)

    @property
    def nrcv_buf(self) -> int:
        """Out-of-order segments held for reassembly."""
        return len(self.rcv_buf)

    @property
    def nrcv_que(self) -> int:
        """In-order segments waiting for :meth:`recv`."""
        return len(self.rcv_queue)

    def take_output(self) -> list[bytes]:
        """Return and clear the datagrams produced while no ``output`` callback was set."""
        out = self._outbox
        self._outbox = []
        return out

    # ------------------------------------------------------------------ user side

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data``; returns the bytes queued (>= 0) or -2 if it needs >= 128 fragments.

        As in ikcp: in message mode an empty ``data`` becomes one empty message; in stream mode
        data first tops up the last queued segment, and a partial count may be returned.
        """
        if not isinstance(data, bytes):
            if not isinstance(data, (bytearray, memoryview)):
                raise KCPTypeError(f"send() needs a bytes-like object, got {type(data).__name__}")
            data = bytes(data)
        n = len(data)
        mss = self.mss
        queue = self.snd_queue
        sent = 0
        q_frgs = queue.frgs
        q_data = queue.data
        if self.stream:
            if len(q_data) > queue.head:
                old = q_data[-1]
                if len(old) < mss:
                    extend = min(n, mss - len(old))
                    q_frgs[-1] = 0
                    q_data[-1] = old + data[:extend]
                    sent = extend
                    data = data[extend:]
                    n -= extend
            if n <= 0:
                return sent
        count = 1 if n <= mss else (n + mss - 1) // mss
        if count >= IKCP_WND_RCV:
            if self.stream and sent > 0:
                return sent
            return -2
        if count == 1:
            q_frgs.append(0)
            q_data.append(data)
            return sent + n
        stream = self.stream
        for i in range(count):
            q_frgs.append(0 if stream else count - i - 1)
            q_data.append(data[i * mss : (i + 1) * mss])
        return sent + n

    def peeksize(self) -> int:
        """Size of the next complete message (message mode) or of the queued bytes (stream
        mode); -1 if nothing is complete."""
        q = self.rcv_queue
        if not q:
            return -1
        frg, data = q[0]
        if self.stream:
            return sum(len(d) for _, d in q)
        if frg == 0:
            return len(data)
        if len(q) < frg + 1:
            return -1
        length = 0
        for frg, data in q:
            length += len(data)
            if frg == 0:
                break
        return length

    def recv(self) -> bytes | None:
        """Return the next message (message mode) or everything deliverable (stream mode).

        ``None`` when nothing is ready. An empty message (``b""``) is possible in message mode if
        the peer sent one.
        """
        q = self.rcv_queue
        q_data = q.data
        h = q.head
        n = len(q_data)
        if h >= n:
            return None
        rcv_wnd = self.rcv_wnd
        recover = n - h >= rcv_wnd
        if self.stream:
            parts: list[bytes] = []
            while h < n:
                parts += q_data[h:n]
                q.consumed(n)
                self._move_rcv_buf()
                h = q.head
                n = len(q_data)
            result = parts[0] if len(parts) == 1 else b"".join(parts)
        else:
            q_frgs = q.frgs
            frg = q_frgs[h]
            if frg == 0:  # a whole message (q.consumed(h + 1), inline)
                result = q_data[h]
                h += 1
                if h >= n:
                    q_data.clear()
                    q_frgs.clear()
                    h = 0
                elif h >= _COMPACT and 2 * h >= n:
                    del q_data[:h]
                    del q_frgs[:h]
                    h = 0
                q.head = h
            else:
                if n - h < frg + 1:  # the message's other fragments have not all come yet
                    return None
                parts = []
                while h < n:  # garbage frg values may never reach 0: ikcp then takes the whole queue
                    parts.append(q_data[h])
                    frg = q_frgs[h]
                    h += 1
                    if frg == 0:
                        break
                q.consumed(h)
                result = b"".join(parts)
            rcv_buf = self.rcv_buf
            if rcv_buf and self.rcv_nxt in rcv_buf:
                self._move_rcv_buf()
        if recover and len(q_data) - q.head < rcv_wnd:
            self.probe |= IKCP_ASK_TELL
            if self.wins_repeat:
                self._wins_left = self.wins_repeat
                self._wins_gap = 0
        return result

    def _move_rcv_buf(self) -> None:
        rcv_buf = self.rcv_buf
        q = self.rcv_queue
        q_frgs = q.frgs
        q_data = q.data
        nxt = self.rcv_nxt
        wnd = self.rcv_wnd + q.head  # (len(q_data) - head < rcv_wnd)
        while rcv_buf and len(q_data) < wnd:
            item = rcv_buf.pop(nxt, None)
            if item is None:
                break
            q_frgs.append(item[0])
            q_data.append(item[1])
            nxt = (nxt + 1) & _MASK
        self.rcv_nxt = nxt

    # ------------------------------------------------------------------ network side

    def _drop_front(self, k: int) -> None:
        """Remove the first ``k`` segments of snd_buf, then any acked ones that follow."""
        buf = self.snd_buf
        pool = self._pool
        if k:
            nacked = self._nacked
            keep = self.snd_wnd - len(pool)  # objects kept for reuse: at most a send window's
            for i in range(k):
                seg = buf[i]
                if seg.acked:
                    nacked -= 1
                if i < keep:
                    seg.data = b""
                    pool.append(seg)
            self._nacked = nacked
            del buf[:k]
        if self._nacked and buf and buf[0].acked:
            i = 1
            n = len(buf)
            while i < n and buf[i].acked:
                i += 1
            self._nacked -= i
            keep = self.snd_wnd - len(pool)
            for j in range(i if i < keep else keep):
                seg = buf[j]
                seg.data = b""
                pool.append(seg)
            del buf[:i]
        self.snd_una = buf[0].sn if buf else self.snd_nxt

    def input(
        self, data: bytes | bytearray | memoryview, now: int | None = None, *, regular: bool = True
    ) -> int:
        """Feed one datagram from the network (ikcp_input). Returns 0 or a negative ikcp code.

        ``now``, if given, becomes the engine's current time (used for RTT samples); otherwise the
        time of the last :meth:`update`/:meth:`flush` is used, as in ikcp.

        ``regular=False`` marks a packet rebuilt by FEC (kcp-go's rule): it is an old copy, so its
        window does not update ``rmt_wnd``, its acks give no RTT sample and its duplicates are not
        counted in ``repeat_segs``. The default is ikcp's behaviour.
        """
        if now is not None:
            self.current = now & _MASK
        pkt: bytes
        if type(data) is bytes:
            pkt = data
        else:
            if not isinstance(data, (bytearray, memoryview)):
                if data is None:
                    return self._in_error(-1)
                raise KCPTypeError(f"input() needs a bytes-like object, got {type(data).__name__}")
            pkt = bytes(data)
        size = len(pkt)
        if size < 24:
            return self._in_error(-1)
        native = _NATIVE
        # typed locals: the header fields and the counters are native 64-bit ints in the compiled
        # build (C arithmetic on them, no boxing); plain ints when interpreted
        conv_self: i64 = self.conv
        prev_una: i64 = self.snd_una
        flag = False
        maxack: i64 = 0
        latest_ts: i64 = 0
        off: i64 = 0
        size_: i64 = size
        nsegs: i64 = 0
        in_bytes: i64 = 0
        repeat: i64 = 0
        current: i64 = self.current
        buf = self.snd_buf
        acklist = self._acklist
        rcv_buf = self.rcv_buf
        rq_frgs = self.rcv_queue.frgs  # (input only appends: the queue's head stays)
        rq_data = self.rcv_queue.data
        rq_limit = self.rcv_wnd + self.rcv_queue.head  # len(rq_data) below it: the queue has room
        rcv_nxt: i64 = self.rcv_nxt
        rcv_wnd: i64 = self.rcv_wnd
        hold_aware = self.hold_aware
        peer_hold: i64 = -1  # the last ACK's frg, or 0 after a PUSH (held acks); -1: neither seen
        disorder: i64 = 0
        srtt: i64 = self.rx_srtt
        rttval: i64 = self.rx_rttval
        sampled = False
        rc = 0
        last_wnd: i64 = -1
        d: i64
        rtt: i64
        conv: i64
        cmd: i64
        frg: i64
        wnd: i64
        ts: i64
        sn: i64
        una: i64
        ln: i64
        while size_ - off >= 24:
            if native:  # compiled: native byte reads, same values as the struct below
                conv = _u32le(pkt, off)
                cmd = pkt[off + 4]
                frg = pkt[off + 5]
                wnd = pkt[off + 6] | pkt[off + 7] << 8
                ts = _u32le(pkt, off + 8)
                sn = _u32le(pkt, off + 12)
                una = _u32le(pkt, off + 16)
                ln = _u32le(pkt, off + 20)
            else:
                conv, cmd, frg, wnd, ts, sn, una, ln = _unpack_from(pkt, off)
            if conv != conv_self:
                rc = -1
                break
            off += 24
            if size - off < ln:
                rc = -2
                break
            if (cmd < 81 or cmd > 84) and (cmd != IKCP_CMD_REACK or not self.ack_repeat):
                rc = -3
                break
            nsegs += 1
            if regular:
                last_wnd = wnd  # rmt_wnd: the last good segment's window (stored after the loop)
                if (cmd == 82 or cmd == 85) and self.recovery_auto_lead:
                    self._sample_first_ack(sn, ts)
            # parse_una + shrink_buf
            d = (una - self.snd_una) & _MASK
            if 0 < d < _HALF and buf:
                self._drop_front(d if d < len(buf) else len(buf))
            if cmd == 82:  # ACK
                rtt = (current - ts) & _MASK
                if hold_aware:  # held acks: frg - 1 steps of the wait are not the path's
                    peer_hold = frg
                    if frg > 1 and rtt < _HALF:
                        waited = (frg - 1) * ACK_HOLD_UNIT
                        rtt = rtt - waited if rtt > waited else 0
                if rtt < _HALF and regular:  # RTT sample (ikcp_update_ack; rto derived after the loop)
                    sampled = True
                    if srtt == 0 and rtt < _BIG:
                        srtt = rtt
                        rttval = rtt >> 1
                    elif rtt < _BIG and srtt < _BIG and 0 <= rttval < _BIG:  # no C overflow
                        rttval = (3 * rttval + (rtt - srtt if rtt > srtt else srtt - rtt)) >> 2
                        srtt = (7 * srtt + rtt) >> 3
                        if srtt < 1:
                            srtt = 1
                    else:
                        srtt, rttval = _rtt_sample_c32(srtt, rttval, rtt)
                d = (sn - self.snd_una) & _MASK
                if d < len(buf):
                    seg = buf[d]
                    if not seg.acked:
                        seg.acked = True
                        self._nacked += 1
                        if d == 0:
                            self._drop_front(0)
                if not flag:
                    flag = True
                    maxack = sn
                    latest_ts = ts
                elif 0 < ((sn - maxack) & _MASK) < _HALF and 0 < ((ts - latest_ts) & _MASK) < _HALF:
                    maxack = sn
                    latest_ts = ts
            elif cmd == 81:  # PUSH
                if hold_aware:  # a peer that sends data holds no acks (docs/wire-format/kcp.md)
                    peer_hold = 0
                d = (sn - rcv_nxt) & _MASK
                if d < rcv_wnd:  # inside the receive window: ack it and keep it (parse_data)
                    acklist.append(pkt[off - 16 : off - 8])  # ts sn, as the ack header wants them
                    if d == 0 and not rcv_buf and len(rq_data) < rq_limit:
                        rq_frgs.append(frg)
                        rq_data.append(pkt[off : off + ln])
                        rcv_nxt = self.rcv_nxt = (rcv_nxt + 1) & _MASK
                        in_bytes += ln
                    else:  # out of order, or the hole at rcv_nxt with more held: keep it unless held
                        if d:
                            disorder += 1
                        held = len(rcv_buf)
                        rcv_buf.setdefault(sn, (frg, pkt[off : off + ln]))  # (one lookup, not two)
                        if len(rcv_buf) == held:  # it was there already
                            repeat += 1
                        else:
                            in_bytes += ln
                            if d and self.ack_repeat:  # above a hole: its ack is repeated
                                self._reacks[ACK_REPEATS].append(pkt[off - 16 : off - 8])
                                self._reack_pending += 1
                            if d == 0:  # it fills the hole at rcv_nxt: move what is now in order
                                self._move_rcv_buf()
                                rcv_nxt = self.rcv_nxt
                elif ((d - rcv_wnd) & _MASK) >= _HALF:  # already received: ack again, drop
                    acklist.append(pkt[off - 16 : off - 8])
                    repeat += 1
                    disorder += 1
                else:  # beyond the window: dropped without an ack, as ikcp does
                    repeat += 1
            elif cmd == 83:  # WASK
                self.probe |= IKCP_ASK_TELL
            elif cmd == 85:  # REACK (ack_repeat): an ACK again, without an RTT sample or a fast-ack count
                self._reacked(sn)
            # WINS: nothing beyond the window update above
            off += ln

        if last_wnd >= 0:
            self.rmt_wnd = last_wnd
        if disorder:
            self.disorder += disorder
        if peer_hold >= 0 and (peer_hold > 0) != (self.rto_extra > 0):
            self.set_peer_hold(peer_hold > 0)
        if sampled:
            self.rx_srtt = srtt
            self.rx_rttval = rttval
            self.rx_rto = _rto_c32(srtt, rttval, self.interval, self.rx_minrto)
        c = self.counters
        if c is not None:
            c.in_segs += nsegs
            c.in_bytes += in_bytes
            if regular:
                c.repeat_segs += repeat
            if rc:
                c.kcp_in_errors += 1
        if rc:
            return rc

        if flag:
            self._parse_fastack(maxack, latest_ts)

        if 0 < ((self.snd_una - prev_una) & _MASK) < _HALF and self.cwnd < self.rmt_wnd:
            mss = self.mss
            if self.cwnd < self.ssthresh:
                self.cwnd += 1
                self.incr += mss
            else:
                if self.incr < mss:
                    self.incr = mss
                self.incr += (mss * mss) // self.incr + (mss // 16)
                if (self.cwnd + 1) * mss <= self.incr:
                    self.cwnd = (self.incr + mss - 1) // (mss if mss > 0 else 1)
            if self.cwnd > self.rmt_wnd:
                self.cwnd = self.rmt_wnd
                self.incr = self.rmt_wnd * mss
        return 0

    def _sample_first_ack(self, sn: int, ts: int) -> None:
        """``lead_copies="auto"``: the first acknowledgement of segment ``sn`` (called before the
        packet's ``una`` removes it) tells whether its first transmission was answered."""
        seg = self._in_flight(sn)
        if seg is None:
            return
        samples = self.recovery_samples  # [acked, first lost, first lost under a lead, rescued, hold]
        samples[0] += 1
        lead = self.recovery_lead
        lost = ts != seg.ts0
        if lost:
            samples[1] += 1
            if lead:
                samples[2] += 1
                if seg.xmit == 1:  # no recovery round yet: a lead copy got through
                    samples[3] += 1
        if samples[4]:
            samples[4] -= 1
        if samples[0] % LEAD_SAMPLES and not (lost and not lead):  # picks: every 32, or a first loss
            return
        if lead and samples[2] >= 4 and 2 * samples[3] < samples[2]:
            # The lead copies were lost with their originals more often than not: the losses come
            # in bursts, and a copy sent right behind falls into the same one. The recovery rounds'
            # copies, an RTO apart, do the work then; no lead copies for a while.
            self.recovery_lead = 0
            samples[2] = samples[3] = 0
            samples[4] = LEAD_WINDOW
        elif samples[4] or self.recovery_copies >= BURSTY_COPIES:  # bursts (seen either way)
            self.recovery_lead = 0
        else:
            self.recovery_lead = lead_copies_for(samples[0], samples[1], lead, self.recovery_auto_lead)
        if samples[0] >= LEAD_WINDOW:
            for i in range(4):
                samples[i] //= 2

    def _in_flight(self, sn: int) -> _Seg | None:
        """Segment ``sn`` if it is in flight and not yet acknowledged."""
        buf = self.snd_buf
        d = (sn - self.snd_una) & _MASK
        if d >= len(buf):
            return None
        seg = buf[d]
        return None if seg.acked else seg

    def _reacked(self, sn: int) -> None:
        """A REACK for ``sn``: the segment is acknowledged, as by its ACK, whose packet may have been
        lost (then this saves a fast resend of a segment that arrived: ``counters.reacks_useful``)."""
        seg = self._in_flight(sn)
        if seg is None:
            return
        seg.acked = True
        self._nacked += 1
        if sn == self.snd_una:
            self._drop_front(0)
        c = self.counters
        if c is not None:
            c.reacks_useful += 1

    def _in_error(self, rc: int) -> int:
        c = self.counters
        if c is not None:
            c.kcp_in_errors += 1
        return rc

    def _parse_fastack(self, sn: int, ts: int) -> None:
        buf = self.snd_buf
        d = (sn - self.snd_una) & _MASK
        if d >= len(buf):  # outside [snd_una, snd_nxt)
            return
        resent = self.fastresend
        fastlimit = self.fastlimit
        pending = False
        for i in range(d):
            seg = buf[i]
            if not seg.acked and ((ts - seg.ts) & _MASK) < _HALF:
                seg.fastack += 1
                if 0 < resent <= seg.fastack and (seg.xmit <= fastlimit or fastlimit <= 0):
                    pending = True
        if pending:
            self._fast_pending = True

    def _repeat_acks(
        self, parts: list[bytes], ptr: i64, mtu: i64, head: bytes, tail: bytes, out: OutputFn
    ) -> tuple[i64, i64]:
        """Append this flush's REACKs to the datagram being built (``parts``, ``ptr`` bytes so far):
        the ACKs of segments that came above a hole in the last :data:`ACK_REPEATS` ACK-sending
        flushes, unless ``rcv_nxt`` has passed them (the ``una`` of every segment acks those).
        Returns the new ``ptr`` and how many were added."""
        lists = self._reacks
        nxt = self.rcv_nxt
        wnd = self.rcv_wnd
        n: i64 = 0
        for i in range(ACK_REPEATS):
            for tssn in lists[i]:
                if ((_u32le(tssn, 4) - nxt) & _MASK) >= wnd:
                    continue
                if ptr + 24 > mtu:
                    out(b"".join(parts))
                    parts.clear()
                    ptr = 0
                parts.append(head)
                parts.append(tssn)
                parts.append(tail)
                ptr += 24
                n += 1
        # each list moves one flush on (the newest, whose ACKs this flush sent, will be repeated
        # next); the oldest has had all its repeats and is reused, empty, as the newest
        oldest = lists.pop(0)
        self._reack_pending -= len(oldest)
        oldest.clear()
        lists.append(oldest)
        if n:
            c = self.counters
            if c is not None:
                c.reacks_sent += n
        return ptr, n

    # ------------------------------------------------------------------ timers

    def update(self, now: int) -> None:
        """ikcp_update: call every ``interval`` ms (or when :meth:`check` says); flushes when due."""
        current = self.current = now & _MASK
        if not self.updated:
            self.updated = 1
            self.ts_flush = current
        slap = _s32(current - self.ts_flush)
        if slap >= 10000 or slap < -10000:
            self.ts_flush = current
            slap = 0
        if slap >= 0:
            ts_flush = (self.ts_flush + self.interval) & _MASK
            if _s32(current - ts_flush) >= 0:
                ts_flush = (current + self.interval) & _MASK
            self.ts_flush = ts_flush
            self.flush()

    def _repeat_wins(self, current: int) -> None:
        """Repeat the window update that reopened a full window (``wins_repeat``), or stop: once
        data came after it (the sender heard) or the window is full again (nothing to tell)."""
        mark = (self.rcv_nxt, len(self.rcv_buf))
        if (self._wins_gap and mark != self._wins_mark) or len(self.rcv_queue) >= self.rcv_wnd:
            self._wins_left = 0
            return
        if self.probe & IKCP_ASK_TELL:  # the update itself goes in this flush: the first wait starts
            gap = self.rx_rto if self.rx_rto > self.interval else self.interval
        elif _s32(current - self._wins_due) >= 0:
            self.probe |= IKCP_ASK_TELL
            self._wins_left -= 1
            gap = 2 * self._wins_gap
            if self.counters is not None:
                self.counters.wins_repeated += 1
        else:
            return
        self._wins_gap = gap
        self._wins_due = (current + gap) & _MASK
        self._wins_mark = mark

    def wins_pending(self) -> bool:
        """A window update may still be repeated (``wins_repeat``): the session keeps flushing."""
        return self._wins_left > 0

    def check(self, now: int) -> int:
        """ikcp_check: when :meth:`update` should next be called, in the caller's clock.

        Returns ``now`` if it is due already, else ``now + delta`` with ``delta <= interval``.
        """
        if not self.updated:
            return now
        current = now & _MASK
        ts_flush = self.ts_flush
        d = _s32(current - ts_flush)
        if d >= 10000 or d < -10000:
            return now
        if d >= 0:
            return now
        tm_flush = -d
        buf = self.snd_buf
        if buf and _s32(self._next_resend - current) < tm_flush:
            tm_packet = 0x7FFFFFFF
            for seg in buf:
                if seg.acked:
                    continue
                diff = _s32(seg.resendts - current)
                if diff <= 0:
                    return now
                if diff < tm_packet:
                    tm_packet = diff
            minimal = tm_packet if tm_packet < tm_flush else tm_flush
        else:
            minimal = tm_flush
        if minimal >= self.interval:
            minimal = self.interval
        return now + minimal

    def _adapt(self) -> None:
        """Re-pick ``recovery_copies`` from the recovery rounds seen since the last pick, then
        forget half of them (a moving window)."""
        rounds = self.recovery_rounds
        self.recovery_copies = recovery_copies_for(
            rounds[0], rounds[1], self.recovery_copies, self.recovery_max_copies
        )
        for i in range(4):
            rounds[i] //= 2

    # ------------------------------------------------------------------ flush

    def flush(self, now: int | None = None) -> None:
        """ikcp_flush: send pending acks, probes and data that the windows allow.

        Does nothing before the first :meth:`update` unless ``now`` is given (which then also
        becomes the engine's current time). Cheap when there is nothing to send.
        """
        if now is not None:
            self.current = now & _MASK
            if not self.updated:
                self.updated = 1
                self.ts_flush = self.current
        elif not self.updated:
            return
        current = self.current
        acklist = self._acklist
        buf = self.snd_buf
        # fast exit: nothing to ack, probe, move or resend
        if (
            not acklist
            and not self.probe
            and self.rmt_wnd
            and self.cwnd >= 1
            and not self._fast_pending
            and (not buf or _s32(current - self._next_resend) < 0)
        ):
            self.ts_probe = 0
            self.probe_wait = 0
            sq = self.snd_queue
            if len(sq.data) <= sq.head:
                return
            cwnd = min(self.snd_wnd, self.rmt_wnd)
            if not self.nocwnd:
                cwnd = min(self.cwnd, cwnd)
            if _s32(self.snd_nxt - self.snd_una - cwnd) >= 0:
                return

        out = self.output
        if out is None:
            out = self._outbox.append
        # a datagram is built as a list of parts (headers from struct, payloads as they are), joined
        # once: cheaper than packing into a buffer and copying it out, in both builds
        parts: list[bytes] = []
        mtu: i64 = self.mtu
        # the header fields that are the same for every segment of this flush, typed object: the
        # compiled build boxes them once here instead of once per header (a no-op when interpreted)
        conv: object = self.conv
        rq = self.rcv_queue
        nq = len(rq.data) - rq.head
        wnd: object = (self.rcv_wnd - nq if nq < self.rcv_wnd else 0) & 0xFFFF  # a 16-bit field, as in C
        una: object = self.rcv_nxt
        ts_now: object = current
        # the datagram's size so far and the counters: native ints when compiled
        ptr: i64 = 0
        nout: i64 = 0
        ln: i64
        last_ack = b""
        sending: list[_Seg] = []  # the data segments this flush sends (output after the acks)

        # acknowledgements: each header is the per-flush conv/cmd/frg/wnd, the acked segment's own
        # ``ts sn`` bytes (kept by input) and the per-flush una/len
        if acklist:
            nout += len(acklist)
            ack_head = _ACK_HEAD(conv, 82, self.ack_frg, wnd)
            ack_tail = _ACK_TAIL(una, 0)
            first_frg = self._ack_first_frg  # a held first ack: its wait, for the sender's RTT sample
            self._ack_first_frg = 0
            for tssn in acklist:
                if ptr + 24 > mtu:
                    out(b"".join(parts))
                    parts.clear()
                    ptr = 0
                if first_frg:
                    parts.append(_ACK_HEAD(conv, 82, first_frg, wnd))
                    first_frg = 0
                else:
                    parts.append(ack_head)
                parts.append(tssn)
                parts.append(ack_tail)
                ptr += 24
            last_ack = acklist[-1]
            acklist.clear()
            if self._reack_pending:  # (only with ack_repeat)
                ptr, nrep = self._repeat_acks(
                    parts, ptr, mtu, _ACK_HEAD(conv, IKCP_CMD_REACK, 0, wnd), ack_tail, out
                )
                nout += nrep

        # remote window probing
        if self.rmt_wnd == 0:
            if self.probe_wait == 0:
                self.probe_wait = self.probe_init
                self.ts_probe = (current + self.probe_wait) & _MASK
            elif _s32(current - self.ts_probe) >= 0:
                if self.probe_wait < self.probe_init:
                    self.probe_wait = self.probe_init
                self.probe_wait += self.probe_wait // 2
                if self.probe_wait > self.probe_limit:
                    self.probe_wait = self.probe_limit
                self.ts_probe = (current + self.probe_wait) & _MASK
                self.probe |= IKCP_ASK_SEND
        else:
            self.ts_probe = 0
            self.probe_wait = 0

        if self._wins_left:
            self._repeat_wins(current)
        probe = self.probe
        if probe:
            # a probe inherits ts and sn from the last ack of this flush (0 without one), as in ikcp
            ack_ts, ack_sn = _TS_SN.unpack(last_ack) if last_ack else (0, 0)
            for flag, cmd in ((IKCP_ASK_SEND, IKCP_CMD_WASK), (IKCP_ASK_TELL, IKCP_CMD_WINS)):
                if probe & flag:
                    if ptr + 24 > mtu:
                        out(b"".join(parts))
                        parts.clear()
                        ptr = 0
                    parts.append(_pack(conv, cmd, 0, wnd, ack_ts, ack_sn, una, 0))
                    ptr += 24
                    nout += 1
            self.probe = 0

        resent = self.fastresend if self.fastresend > 0 else 0xFFFFFFFF
        nodelay = self.nodelay_
        rx_rto = self.rx_rto + self.rto_extra  # (extra: while the peer holds its acks)
        rtomin = (rx_rto >> 3) if nodelay == 0 else 0
        change = 0
        lost = False
        nlost = 0
        nfast = 0
        ncopies = 0
        out_bytes: i64 = 0
        nbuf_old = len(buf)
        # Retransmissions. ikcp walks the whole send buffer on every flush; we only do when the
        # earliest retransmission time has come or a fast resend may be due. Segments moved in
        # below are sent after these, exactly as in ikcp's single walk.
        if nbuf_old and (self._fast_pending or ((current - self._next_resend) & _MASK) < _HALF):
            fastlimit = self.fastlimit
            dead_link = self.dead_link
            next_diff = 0x7FFFFFFF
            fast_pending = False
            sparse = 0 < len(buf) - self._nacked <= self.recovery_flight
            for seg in buf:
                if seg.acked:
                    continue
                d = (current - seg.resendts) & _MASK
                if d < _HALF and (sparse or seg.copies):  # sparse flight: spaced copies, capped backoff
                    if seg.copies > 0:  # the next copy of this round (not a loss)
                        seg.copies -= 1
                        ncopies += 1
                    else:  # the round's copies all went unanswered: a new round
                        seg.xmit += 1
                        self.xmit += 1
                        rounds = self.recovery_rounds
                        k = seg.xmit - 2
                        if k < 4:
                            rounds[k] += 1
                        if seg.xmit > 4:  # past 3 quick rounds: backoff, capped
                            seg.rto = min(seg.rto + seg.rto // 2, SPARSE_RTO_CAP * rx_rto)
                        else:
                            seg.rto = rx_rto
                        if self.recovery_adaptive and (
                            rounds[0] >= ADAPT_SAMPLES or rounds[1] >= ADAPT_FAILED
                        ):
                            self._adapt()
                        seg.copies = self.recovery_copies - 1
                        lost = True
                        nlost += 1
                    gap = self.recovery_gap
                    seg.resendts = (current + (gap if seg.copies > 0 else seg.rto)) & _MASK
                elif d < _HALF:  # RTO expired
                    seg.xmit += 1
                    self.xmit += 1
                    if nodelay == 0:
                        seg.rto += seg.rto if seg.rto > rx_rto else rx_rto
                    else:
                        seg.rto += (seg.rto if nodelay < 2 else rx_rto) // 2
                    seg.resendts = (current + seg.rto) & _MASK
                    lost = True
                    nlost += 1
                    if seg.fastack >= resent and (seg.xmit <= fastlimit or fastlimit <= 0):
                        fast_pending = True
                elif seg.fastack >= resent and (seg.xmit <= fastlimit or fastlimit <= 0):
                    seg.xmit += 1
                    seg.fastack = 0
                    seg.resendts = (current + seg.rto) & _MASK
                    change += 1
                    nfast += 1
                else:
                    d = 0x100000000 - d  # resendts - current, > 0
                    if d < next_diff:
                        next_diff = d
                    continue
                seg.ts = current
                sending.append(seg)
                if seg.xmit >= dead_link:
                    self.state = -1
                d = (seg.resendts - current) & _MASK
                if d >= _HALF:
                    d -= 0x100000000
                if d < next_diff:
                    next_diff = d
            self._next_resend = (current + next_diff) & _MASK
            self._fast_pending = fast_pending

        # New segments, as far as the send window, the remote window and cwnd allow.
        cwnd = self.snd_wnd if self.snd_wnd < self.rmt_wnd else self.rmt_wnd
        if not self.nocwnd and self.cwnd < cwnd:
            cwnd = self.cwnd
        queue = self.snd_queue
        q_frgs = queue.frgs
        q_data = queue.data
        if len(q_data) > queue.head:
            snd_nxt: i64 = self.snd_nxt
            limit: i64 = (self.snd_una + cwnd) & _MASK
            if ((snd_nxt - limit) & _MASK) >= _HALF:
                resendts = (current + rx_rto + rtomin) & _MASK
                lead = 0
                if (
                    self.recovery_lead
                    and len(buf) - self._nacked + len(q_data) - queue.head <= self.recovery_flight
                ):
                    lead = self.recovery_lead
                    resendts = (current + self.recovery_gap) & _MASK
                pool = self._pool
                taken = queue.head  # the queue's new head (consumed once, at the end)
                while taken < len(q_data) and ((snd_nxt - limit) & _MASK) >= _HALF:
                    if pool:
                        seg = pool.pop()
                        seg.renew(snd_nxt, q_frgs[taken], q_data[taken], current, rx_rto, resendts, lead)
                    else:
                        seg = _Seg(snd_nxt, q_frgs[taken], q_data[taken], current, rx_rto, resendts, lead)
                    buf.append(seg)
                    sending.append(seg)
                    taken += 1
                    snd_nxt = (snd_nxt + 1) & _MASK
                queue.consumed(taken)
                self.snd_nxt = snd_nxt
                if self.dead_link <= 1:
                    self.state = -1
                if not nbuf_old or ((resendts - self._next_resend) & _MASK) >= _HALF:
                    self._next_resend = resendts

        # The data segments of this flush, retransmissions first, after the acks and probes. A
        # segment's header: conv cmd frg wnd ts, the same for every frg 0 segment of the flush (so
        # packed once), then its own sn, una and len.
        if sending:
            push_head = _PUSH_HEAD(conv, 81, 0, wnd, ts_now)
            for seg in sending:
                data = seg.data
                ln = len(data)
                if ptr + 24 + ln > mtu:  # (a segment queued before setmtu shrank the mtu goes alone)
                    if ptr:
                        out(b"".join(parts))
                        parts.clear()
                    ptr = 0
                frg = seg.frg
                parts.append(_PUSH_HEAD(conv, 81, frg, wnd, ts_now) if frg else push_head)
                parts.append(_PUSH_TAIL(seg.sn, una, ln))
                ptr += 24
                if ln:
                    parts.append(data)
                    ptr += ln
                out_bytes += ln
            nout += len(sending)

        if ptr:
            out(b"".join(parts))

        c = self.counters
        if c is not None:
            c.out_segs += nout
            c.out_bytes += out_bytes
            if nlost or nfast or ncopies:
                c.lost_segs += nlost
                c.fast_retrans_segs += nfast
                c.retrans_segs += nlost + nfast
                c.copy_segs += ncopies

        if change:
            inflight = (self.snd_nxt - self.snd_una) & _MASK
            self.ssthresh = max(inflight // 2, IKCP_THRESH_MIN)
            self.cwnd = (self.ssthresh + resent) & _MASK
            self.incr = (self.cwnd * self.mss) & _MASK
        if lost:
            self.ssthresh = max(cwnd // 2, IKCP_THRESH_MIN)
            self.cwnd = 1
            self.incr = self.mss
        if self.cwnd < 1:
            self.cwnd = 1
            self.incr = self.mss
