"""Errors of secure wire mode.

Misuse of the API raises :class:`SecureUsageError` (also a :class:`kcp.errors.KCPUsageError`).
A handshake that cannot complete ends in a :class:`HandshakeError` kept on the client
(``SecureClient.error``); the session layer raises it to the user. Garbage from the network never
raises out of the public entry points: it is dropped and counted in :class:`SecureCounters`.
"""

from __future__ import annotations

from kcp.errors import ConnectionClosedError, KCPError, KCPUsageError


class SecureError(KCPError):
    """Base class of errors raised by :mod:`kcp.secure`."""


class SecureUsageError(SecureError, KCPUsageError):
    """The caller used the secure API wrongly (bad config, sealing on a closed connection...)."""


class HandshakeError(SecureError):
    """The handshake failed. ``code`` is a :class:`kcp.secure.Reason` value, ``str()`` is for humans."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class HandshakeTimeout(HandshakeError):
    """No authenticated reply arrived in time: datagrams came back but none authenticated (see
    :class:`HandshakeNoAnswer` for silence)."""


class HandshakeNoAnswer(HandshakeTimeout):
    """Not one datagram came back from the server before the timeout: the server is down, the
    address or port is wrong, a firewall drops UDP (or a server that sends no wire hints got the
    wrong key)."""


class HandshakeUnreachable(HandshakeError, ConnectionRefusedError):
    """Nothing listens at the server's address: the host answered the handshake with ICMP "port
    unreachable" (reported at once, instead of a timeout)."""


class HandshakeKeyMismatch(HandshakeError):
    """Wrong key: the server said (in a wire hint, bound to our initiation but unauthenticated) that
    it could not verify our handshake: another passphrase/PSK, another pinned server key, or a
    mode its keys cannot run. Fails at once instead of timing out."""


class HandshakePskMismatch(HandshakeKeyMismatch):
    """The server answered, but its reply did not authenticate with this client's PSK (the client
    pinned the right server key, so only the pre-shared key can be wrong)."""


class HandshakeWireMismatch(HandshakeError):
    """Wrong wire: the server answered (in a wire hint) that it speaks kcp-go's wire (compat), or
    another secure wire version. Fails at once instead of timing out."""


class HandshakeRefused(HandshakeError):
    """The server answered with an authenticated refusal (bad token, version or parameter mismatch)."""


class SecureConnectionClosed(SecureError, ConnectionClosedError):
    """The secure connection was closed (locally or by an authenticated CLOSE from the peer)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class DecodeError(SecureError):
    """Internal: a packet or payload does not parse. Never escapes the public entry points."""
