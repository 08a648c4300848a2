"""kcp: a sans-I/O KCP engine, kcp-go's packet layer, and asyncio sessions over UDP."""

from __future__ import annotations

from kcp.errors import ConnectionClosedError, DeadLinkError, KCPError, KCPUsageError, RemoteProtocolError
from kcp.listener import Listener, listen
from kcp.session import KCPSession, SessionConfig, dial, run, snmp
from kcp.stats import SNMP, Counters

__all__ = [
    "SNMP",
    "ConnectionClosedError",
    "Counters",
    "DeadLinkError",
    "KCPError",
    "KCPSession",
    "KCPUsageError",
    "Listener",
    "RemoteProtocolError",
    "SessionConfig",
    "dial",
    "listen",
    "run",
    "snmp",
]
