"""Types of the native AEAD module (kcp/secure/_aead.c), built with the compiled build only.

Both classes raise ``cryptography.exceptions.InvalidTag`` when a packet does not authenticate,
``ValueError`` for a key or nonce of the wrong length and ``OverflowError`` above 2**31 - 1 bytes.
"""

from typing import Union

_Buffer = Union[bytes, bytearray, memoryview]  # noqa: UP007

class _AEAD:
    def __init__(self, key: _Buffer) -> None: ...
    def encrypt(self, nonce: _Buffer, data: _Buffer, associated_data: _Buffer | None) -> bytes: ...
    def decrypt(self, nonce: _Buffer, data: _Buffer, associated_data: _Buffer | None) -> bytes: ...
    def seal(self, header: _Buffer, nonce: _Buffer, plaintext: _Buffer) -> bytes: ...
    def open(self, packet: _Buffer, header_len: int, nonce: _Buffer) -> bytes: ...
    def seal_pn(self, prefix: _Buffer, pn: int, iv: _Buffer, plaintext: _Buffer, /) -> bytes: ...
    def open_pn(self, packet: _Buffer, header_len: int, pn: int, iv: _Buffer, /) -> bytes: ...

class AESGCM(_AEAD):
    """AES-GCM with a 16, 24 or 32-byte key; nonces are 12 bytes, tags 16."""

class ChaCha20Poly1305(_AEAD):
    """ChaCha20-Poly1305 (RFC 8439) with a 32-byte key; nonces are 12 bytes, tags 16."""

def openssl_version() -> str:
    """The version text of the libcrypto the module runs on."""
