"""Error types of the ``kcp`` package.

One base, :class:`KCPError`, so callers can catch everything this package raises on purpose.
Misuse by the caller (bad arguments) raises :class:`KCPUsageError`, which is also a ``ValueError``;
an argument of the wrong type raises :class:`KCPTypeError`, a ``KCPUsageError`` that is also a
``TypeError`` (what the compiled build raises for it).
Garbage from the network never raises: it is dropped and counted.
"""

from __future__ import annotations


class KCPError(Exception):
    """Base class of every error raised by the ``kcp`` package."""


class KCPUsageError(KCPError, ValueError):
    """The caller passed an invalid argument or used an object in a state that forbids it."""


class KCPTypeError(KCPUsageError, TypeError):
    """An argument has the wrong type. It is also a ``TypeError``: the compiled build checks the
    annotated argument types of its compiled modules itself and raises a plain ``TypeError`` for
    the same misuse, so ``except TypeError`` covers both builds."""


class ConnectionClosedError(KCPError, ConnectionError):
    """The session is closed; the reason is in the message."""


class DeadLinkError(ConnectionClosedError):
    """A segment was retransmitted ``dead_link`` times without an ack: the peer is gone."""
