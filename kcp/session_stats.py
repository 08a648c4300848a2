"""A KCP session's ``stats`` dict: its counters, its packet path's, and the engine's state."""

from __future__ import annotations

from collections.abc import Callable

from kcp.engine import KCP
from kcp.stats import Counters

__all__ = ["session_stats"]


def session_stats(
    counters: Counters,
    eng: KCP,
    add_path_stats: Callable[[dict[str, int]], None],
    *,
    read_buffered: int,
    datagrams_queued: int,
    datagrams_dropped: int,
) -> dict[str, int]:
    """``counters`` plus the packet path's fields (``add_path_stats``) and the engine's RTT, windows
    and loss recovery (the copies per recovery round and the lead copies it picked)."""
    # the process-wide secure_* fields stay out: secure mode's own counters follow, by their names
    out = {k: v for k, v in counters.snapshot().items() if not k.startswith("secure_")}
    add_path_stats(out)
    out.update(
        srtt=eng.rx_srtt,
        rttvar=eng.rx_rttval,
        rto=eng.rx_rto,
        cwnd=eng.cwnd,
        snd_wnd=eng.snd_wnd,
        rcv_wnd=eng.rcv_wnd,
        rmt_wnd=eng.rmt_wnd,
        waitsnd=eng.waitsnd(),
        read_buffered=read_buffered,
        datagrams_queued=datagrams_queued,
        datagrams_dropped=datagrams_dropped,
        mtu=eng.mtu,
        recovery_copies=eng.recovery_copies,
        lead_copies=eng.recovery_lead,
    )
    return out
