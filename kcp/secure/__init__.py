"""Secure wire mode: Noise handshake, connection IDs, AEAD packets, replay window, key update,
path validation (migration), CLOSE and GOAWAY — a sans-I/O core (see docs/security.md).

Typical use by the session layer::

    client = SecureClient(HandshakeConfig(server_public_key=pub), rng)
    send(client.initiate(now))                    # then feed replies to client.receive(...)
    conn = client.connection                      # once established
    send(conn.seal(kcp_packet, now)); payload = conn.open(datagram, addr, now)

    server = SecureServer(HandshakeConfig(static_key=priv), rng, authorize=hook)
    r = server.receive(datagram, addr, now)       # r.replies, r.connection, r.payload, r.accepted

:data:`NATIVE_AEAD` is True when packets are sealed by the compiled build's native AEAD module
(OpenSSL, kept contexts) rather than ``cryptography``'s classes; :data:`AEAD_BACKEND` names the one
in use (:mod:`kcp.secure.aead`).
"""

from __future__ import annotations

from .aead import AEAD_BACKEND, NATIVE_AEAD
from .config import Authorizer, ClientHello, HandshakeConfig, SecureConfig, SessionParams, derive_psk
from .connection import SecureConnection
from .errors import (
    HandshakeError,
    HandshakeKeyMismatch,
    HandshakeNoAnswer,
    HandshakePskMismatch,
    HandshakeRefused,
    HandshakeTimeout,
    HandshakeUnreachable,
    HandshakeWireMismatch,
    SecureConnectionClosed,
    SecureError,
    SecureUsageError,
)
from .events import (
    ConnectionClosed,
    Event,
    GoAwayReceived,
    KeyUpdated,
    PathChanged,
    PathFailed,
    PathValidated,
    PingAnswered,
)
from .handshake import Received, SecureClient, SecureServer, generate_keypair
from .packet import Reason, peek_cid
from .replay import ReplayWindow
from .stats import SecureCounters

__all__ = [
    "AEAD_BACKEND",
    "NATIVE_AEAD",
    "Authorizer",
    "ClientHello",
    "ConnectionClosed",
    "Event",
    "GoAwayReceived",
    "HandshakeConfig",
    "HandshakeError",
    "HandshakeKeyMismatch",
    "HandshakeNoAnswer",
    "HandshakePskMismatch",
    "HandshakeRefused",
    "HandshakeTimeout",
    "HandshakeUnreachable",
    "HandshakeWireMismatch",
    "KeyUpdated",
    "PathChanged",
    "PathFailed",
    "PathValidated",
    "PingAnswered",
    "Reason",
    "Received",
    "ReplayWindow",
    "SecureClient",
    "SecureConfig",
    "SecureConnection",
    "SecureConnectionClosed",
    "SecureCounters",
    "SecureError",
    "SecureServer",
    "SecureUsageError",
    "SessionParams",
    "derive_psk",
    "generate_keypair",
    "peek_cid",
]
