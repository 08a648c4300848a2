"""kcp: a sans-I/O KCP engine, kcp-go's packet layer, and asyncio sessions over UDP.

The names here are the public transport API: :func:`dial`, :func:`listen` and :func:`run` with
:class:`KCPSession`, :class:`Listener` and :class:`SessionConfig`; the sans-I/O engine
:class:`KCP` and :func:`getconv`; kcptun's key derivation and ciphers (:func:`derive_key`,
:func:`new_crypt`); the counters (:class:`Counters`, :data:`SNMP`, :func:`snmp`) and the errors.
Secure mode's key helpers live in :mod:`kcp.secure` (``dial``/``listen`` take ``mode="secure"``);
:mod:`kcp.relay` and :mod:`kcp.simlink` are test and benchmark tools.
"""

from __future__ import annotations

from kcp.config import CompatWire, IOOptions, SecureWire, SessionConfig, Wire
from kcp.crypt import derive_key, new_crypt
from kcp.engine import KCP, getconv
from kcp.errors import ConnectionClosedError, DeadLinkError, KCPError, KCPUsageError, RemoteProtocolError
from kcp.listener import Listener, listen
from kcp.session import KCPSession, dial, run, snmp
from kcp.stats import SNMP, Counters

__all__ = [
    "KCP",
    "SNMP",
    "CompatWire",
    "ConnectionClosedError",
    "Counters",
    "DeadLinkError",
    "IOOptions",
    "KCPError",
    "KCPSession",
    "KCPUsageError",
    "Listener",
    "RemoteProtocolError",
    "SecureWire",
    "SessionConfig",
    "Wire",
    "derive_key",
    "dial",
    "getconv",
    "listen",
    "new_crypt",
    "run",
    "snmp",
]
