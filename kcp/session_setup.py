"""Building and tuning a KCP session's engine from its :class:`kcp.config.SessionConfig`.

Used by :class:`kcp.session.KCPSession` at construction and by its ``set_*`` tuning methods.
"""

from __future__ import annotations

from kcp.config import SessionConfig
from kcp.engine import KCP
from kcp.errors import KCPUsageError
from kcp.stats import Counters

__all__ = [
    "AUTO_LEAD_MAX",
    "KCPGO_INITIAL_RMT_WND",
    "WINDOW_PROBE_INIT",
    "WINDOW_PROBE_LIMIT",
    "WINDOW_UPDATE_REPEATS",
    "check_close_code",
    "make_engine",
    "water_marks",
]

KCPGO_INITIAL_RMT_WND = 32  # kcp-go's IKCP_WND_RCV, the peer window assumed before any packet
SPARSE_FLIGHT = 8  # segments unacked at most for the sparse-flight loss recovery (a call, an event)
AUTO_LEAD_MAX = 2  # lead_copies="auto" picks 0..this many copies ahead of any loss
WINDOW_PROBE_INIT = 100
"""ms before the first window probe while the peer's receive window is 0 (``loss_recovery="adaptive"``;
ikcp waits 7 s): the peer's window update is one datagram, and when it is lost the sender learns
the window only from a probe's answer."""
WINDOW_PROBE_LIMIT = 1000
"""ms between window probes at most (``loss_recovery="adaptive"``; ikcp: 120 s)."""
WINDOW_UPDATE_REPEATS = 3
"""How many more times a receiver sends the window update (WINS) that reopened its full receive
window, after an RTO, then two, then four, while no data comes (``loss_recovery="adaptive"``;
ikcp sends it once): a sender that waits for it only because it was lost, which ikcp and kcp-go
would learn from their own probe 7 s later, hears it again instead."""


def make_engine(conv: int, config: SessionConfig, overhead: int, counters: Counters) -> KCP:
    """The engine for conversation ``conv``, configured; ``overhead`` is the packet layers' share
    of each datagram (crypt, crc, FEC, the packet path)."""
    eng = KCP(conv, None)
    eng.counters = counters
    eng.nodelay(config.nodelay, config.interval, config.resend, config.nc)
    eng.wndsize(config.snd_wnd, config.rcv_wnd)
    # Until the peer's first packet tells its window, assume kcp-go's initial one (32), not
    # ikcp's 128: a new kcp-go session receives only 32 segments until its owner widens the
    # window, so a first flight of 128 loses the rest (seen live against kcptun-server).
    eng.rmt_wnd = KCPGO_INITIAL_RMT_WND
    if eng.setmtu(config.mtu - overhead) < 0:
        raise KCPUsageError("mtu too small for the packet-layer overhead")
    eng.stream = 1 if config.stream else 0
    eng.dead_link = config.dead_link
    if config.loss_recovery == "adaptive":
        eng.recovery_flight = SPARSE_FLIGHT
        eng.recovery_adaptive = True
        eng.recovery_max_copies = config.max_copies
        eng.recovery_copies = min(2, config.max_copies)
        eng.recovery_gap = config.copy_gap
        eng.probe_init = WINDOW_PROBE_INIT
        eng.probe_limit = WINDOW_PROBE_LIMIT
        eng.wins_repeat = WINDOW_UPDATE_REPEATS
        if config.lead_copies == "auto":
            eng.recovery_auto_lead = AUTO_LEAD_MAX
        else:
            eng.recovery_lead = config.lead_copies
    return eng


WRITE_BUFFER = 256
"""The default write buffer (segments) of a session with ``congestion="bbr"`` (``write_buffer=0``);
a bulk flow whose controller's window is larger gets twice that window (:func:`water_marks`)."""


def water_marks(config: SessionConfig, eng: KCP, cwnd: int = 0) -> tuple[int, int]:
    """The write buffer's (high, low) marks in segments: ``drain()`` waits above high until below low.

    ``write_buffer=0``: with ``congestion="bbr"``, :data:`WRITE_BUFFER` or twice ``cwnd`` (the
    controller's window, segments) if larger: enough queued to keep a bulk flow's window full,
    and no deeper (a deeper queue only holds more of a stream in memory); with ``"ikcp"``, which
    sends its whole window, twice the send window.
    """
    if config.write_buffer:
        high = config.write_buffer
    elif config.congestion == "bbr":
        high = 2 * cwnd if cwnd > WRITE_BUFFER // 2 else WRITE_BUFFER
    else:
        high = 2 * eng.snd_wnd
    return high, max(high // 2, 1)


def check_close_code(code: int) -> None:
    if not 0 <= code <= 0xFFFF:
        raise KCPUsageError("close code must be in 0..65535")
