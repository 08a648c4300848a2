"""Stateless retry cookies bound to the source address (WireGuard's cookie reply, QUIC's Retry).

The server keeps one random secret, replaced every ``rotate_ms`` (the previous one stays valid
for one more period). A cookie is ``HMAC(secret, address)[:16]``: the server can recompute it
from the datagram alone, so it keeps no state for initiations it has not verified. The client
proves that it receives packets at its claimed address by putting ``mac2 = HMAC(cookie, msg)``
in its next initiation. The cookie travels encrypted (ChaCha20-Poly1305, key from the server's
public key or the PSK) with the initiation's mac1 as associated data, so only the sender of
that initiation can use it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAC_LEN = 16
COOKIE_LEN = 16
NONCE_LEN = 12
SEALED_COOKIE_LEN = NONCE_LEN + COOKIE_LEN + 16


def mac16(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 truncated to 16 bytes."""
    return hmac.new(key, data, hashlib.sha256).digest()[:MAC_LEN]


def address_bytes(addr: Any) -> bytes:
    """A canonical byte string for a socket address (host and port)."""
    try:
        return f"{addr[0]}|{addr[1]}".encode()
    except (TypeError, IndexError, KeyError):
        return repr(addr).encode()


class CookieJar:
    """The server's rotating cookie secret."""

    __slots__ = ("_prev", "_rng", "_secret", "_since", "rotate_ms")

    def __init__(self, rng: Callable[[int], bytes], rotate_ms: int, now: int = 0) -> None:
        self._rng = rng
        self.rotate_ms = rotate_ms
        self._secret = rng(32)
        self._prev: bytes | None = None
        self._since = now

    def rotate_if_due(self, now: int) -> None:
        """Replace the secret once it is ``rotate_ms`` old; cookies under the old one live one period more."""
        if now - self._since >= self.rotate_ms:
            self._prev = self._secret if now - self._since < 2 * self.rotate_ms else None
            self._secret = self._rng(32)
            self._since = now

    def cookie(self, addr: Any) -> bytes:
        """The current cookie for ``addr``."""
        return mac16(self._secret, address_bytes(addr))

    def check_mac2(self, addr: Any, covered: bytes, mac2: bytes) -> bool:
        """True if ``mac2`` was made with a current or previous cookie for ``addr``."""
        a = address_bytes(addr)
        if hmac.compare_digest(mac16(mac16(self._secret, a), covered), mac2):
            return True
        return self._prev is not None and hmac.compare_digest(mac16(mac16(self._prev, a), covered), mac2)


def seal_cookie(key: bytes, nonce: bytes, cookie: bytes, mac1: bytes) -> bytes:
    """Encrypt a cookie for the client: nonce || ciphertext || tag."""
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, cookie, mac1)


def open_cookie(key: bytes, sealed: bytes, mac1: bytes) -> bytes | None:
    """Decrypt a sealed cookie; None if it does not authenticate."""
    if len(sealed) != SEALED_COOKIE_LEN:
        return None
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], mac1)
    except InvalidTag:
        return None
