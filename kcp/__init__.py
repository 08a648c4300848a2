"""kcp: a sans-I/O KCP engine, kcp-go's packet layer, and asyncio sessions over UDP.

The names here are the public transport API: :func:`dial`, :func:`listen` and :func:`run` with
:class:`KCPSession`, :class:`Listener` and :class:`SessionConfig`; the sans-I/O engine
:class:`KCP` and :func:`getconv`; kcptun's key derivation and ciphers (:func:`derive_key`,
:func:`new_crypt`); the counters (:class:`Counters`, :data:`SNMP`, :func:`snmp`) and the errors.
The wire is described once: :class:`CompatWire` (kcp-go's format) or :class:`SecureWire` (kcprpc's
authenticated one; key helpers in :mod:`kcp.secure`), the socket by :class:`IOOptions`;
:mod:`kcp.relay` and :mod:`kcp.simlink` are test and benchmark tools. :data:`compiled` says whether
the protocol cores running are the mypyc-compiled ones (:mod:`kcp.buildinfo`).
"""

from __future__ import annotations

from kcp.buildinfo import is_compiled
from kcp.client import dial, run
from kcp.config import CompatWire, IOOptions, SecureWire, SessionConfig, Wire
from kcp.crypt import derive_key, new_crypt
from kcp.engine import KCP, getconv
from kcp.errors import ConnectionClosedError, DeadLinkError, KCPError, KCPTypeError, KCPUsageError
from kcp.gcpolicy import GcPolicy
from kcp.listener import Listener, listen
from kcp.session import KCPSession, SessionState
from kcp.snmp import snmp
from kcp.stats import SNMP, Counters

__all__ = [
    "KCP",
    "SNMP",
    "CompatWire",
    "ConnectionClosedError",
    "Counters",
    "DeadLinkError",
    "GcPolicy",
    "IOOptions",
    "KCPError",
    "KCPSession",
    "KCPTypeError",
    "KCPUsageError",
    "Listener",
    "SecureWire",
    "SessionConfig",
    "SessionState",
    "Wire",
    "compiled",
    "derive_key",
    "dial",
    "getconv",
    "listen",
    "new_crypt",
    "run",
    "snmp",
]

compiled: bool = is_compiled()
"""True when kcp's protocol cores (:data:`kcp.buildinfo.MODULES`) are the compiled ones."""
