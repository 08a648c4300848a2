"""The AEADs that seal packets: the native module :mod:`kcp.secure._aead` when the build has it,
``cryptography``'s otherwise.

:data:`AESGCM` and :data:`ChaCha20Poly1305` build an :class:`AEAD` from a key, the way
``cryptography``'s classes of those names do (AES-GCM takes a 16, 24 or 32-byte key,
ChaCha20-Poly1305 a 32-byte one; nonces are 12 bytes, tags 16). Secure mode's suites
(:mod:`kcp.secure.noise`) and compat mode's ``aes-128-gcm`` (:class:`kcp.crypt.AESGCMCrypt`) use them.

The native module is part of the compiled build (setup.py builds it next to mypyc's modules, on
Linux, linked to the system's libcrypto, the one Python's ``ssl`` module loads). It keeps one
initialised OpenSSL context per key and direction and only sets the nonce per call, where
``cryptography`` prepares a context on every call: about half the cost of sealing or opening a
small packet. Both compute the same bytes (same algorithms, tag checked by OpenSSL in both).
The pure build, a build where the module did not compile, and ``KCPRPC_NATIVE_AEAD=0`` in the
environment use ``cryptography``'s classes (wrapped to add :meth:`AEAD.seal` and
:meth:`AEAD.open`). Before it is used, the native module must reproduce ``cryptography``'s output
for both ciphers; if it does not, ``cryptography``'s are used and :data:`AEAD_BACKEND` says why.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, Union

import cryptography
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import aead as _crypto

__all__ = [
    "AEAD",
    "AEAD_BACKEND",
    "AESGCM",
    "NATIVE_AEAD",
    "Buffer",
    "ChaCha20Poly1305",
    "CryptographyAESGCM",
    "CryptographyChaCha20Poly1305",
    "pn_nonce",
]

Buffer = Union[bytes, bytearray, memoryview]  # noqa: UP007  (a runtime alias on Python 3.10 too)
"""The bytes-like arguments the AEADs accept (``cryptography``'s ``Buffer``)."""

DISABLE_ENV = "KCPRPC_NATIVE_AEAD"


class AEAD(Protocol):
    """An AEAD with a fixed key: ``cryptography``'s interface plus the packet-shaped ``seal``/``open``."""

    def encrypt(self, nonce: Buffer, data: Buffer, associated_data: Buffer | None, /) -> bytes:
        """``data`` encrypted, followed by the 16-byte tag over it and ``associated_data``."""
        ...

    def decrypt(self, nonce: Buffer, data: Buffer, associated_data: Buffer | None, /) -> bytes:
        """The plaintext of ``data`` (ciphertext + tag); raises ``InvalidTag`` if it does not authenticate."""
        ...

    def seal(self, header: bytes, nonce: Buffer, plaintext: Buffer, /) -> bytes:
        """``header + encrypt(nonce, plaintext, header)``: a packet whose header is the associated data."""
        ...

    def open(self, packet: Buffer, header_len: int, nonce: Buffer, /) -> bytes:
        """``decrypt(nonce, packet[header_len:], packet[:header_len])``: the inverse of :meth:`seal`."""
        ...

    def seal_pn(self, prefix: bytes, pn: int, iv: bytes, plaintext: Buffer, /) -> bytes:
        """:meth:`seal` of a numbered packet: the header is ``prefix + pn`` (8 bytes, big-endian),
        the nonce ``iv`` XOR ``pn`` (:func:`pn_nonce`)."""
        ...

    def open_pn(self, packet: Buffer, header_len: int, pn: int, iv: bytes, /) -> bytes:
        """:meth:`open` of a numbered packet, the nonce ``iv`` XOR ``pn``: the inverse of :meth:`seal_pn`."""
        ...


def pn_nonce(iv: bytes, pn: int) -> bytes:
    """The 12-byte nonce of packet number ``pn`` (0 <= pn < 2**64): ``iv`` XOR ``pn`` as 12 bytes, big-endian."""
    return (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")


class _CryptographyAEAD:
    """One of ``cryptography``'s AEADs, with :meth:`seal` and :meth:`open` (the fallback)."""

    __slots__ = ("decrypt", "encrypt")

    def __init__(self, aead: _crypto.AESGCM | _crypto.ChaCha20Poly1305) -> None:
        # the bound methods themselves: encrypt and decrypt cost what cryptography's do
        self.encrypt: Callable[[Buffer, Buffer, Buffer | None], bytes] = aead.encrypt
        self.decrypt: Callable[[Buffer, Buffer, Buffer | None], bytes] = aead.decrypt

    def seal(self, header: bytes, nonce: Buffer, plaintext: Buffer, /) -> bytes:
        return header + self.encrypt(nonce, plaintext, header)

    def open(self, packet: Buffer, header_len: int, nonce: Buffer, /) -> bytes:
        view = memoryview(packet)
        if not 0 <= header_len <= len(view):
            raise ValueError("header_len must be within the packet")
        return self.decrypt(nonce, view[header_len:], view[:header_len])

    def seal_pn(self, prefix: bytes, pn: int, iv: bytes, plaintext: Buffer, /) -> bytes:
        _check_pn(prefix, pn, iv)
        return self.seal(prefix + pn.to_bytes(8, "big"), pn_nonce(iv, pn), plaintext)

    def open_pn(self, packet: Buffer, header_len: int, pn: int, iv: bytes, /) -> bytes:
        _check_pn(b"", pn, iv)
        return self.open(packet, header_len, pn_nonce(iv, pn))


def _check_pn(prefix: bytes, pn: int, iv: bytes) -> None:
    """What the native module refuses, refused the same way."""
    if len(iv) != 12:
        raise ValueError("IV must be 12 bytes")
    if len(prefix) > 64:
        raise ValueError("prefix longer than 64 bytes")
    if not 0 <= pn < 1 << 64:
        raise OverflowError("packet number out of range")


class CryptographyAESGCM(_CryptographyAEAD):
    """``cryptography``'s ``AESGCM(key)`` as an :class:`AEAD`."""

    __slots__ = ()

    def __init__(self, key: Buffer) -> None:
        super().__init__(_crypto.AESGCM(key))


class CryptographyChaCha20Poly1305(_CryptographyAEAD):
    """``cryptography``'s ``ChaCha20Poly1305(key)`` as an :class:`AEAD`."""

    __slots__ = ()

    def __init__(self, key: Buffer) -> None:
        super().__init__(_crypto.ChaCha20Poly1305(key))


AEADFactory = Callable[[Buffer], AEAD]


def self_test(aesgcm: AEADFactory, chacha: AEADFactory) -> None:
    """Raise unless ``aesgcm`` and ``chacha`` seal, open and reject as ``cryptography``'s classes do."""
    key = bytes(range(32))
    nonce = bytes(range(100, 112))
    header = b"kcprpc aead self-test"
    data = bytes(range(41))
    cases = (
        (aesgcm(key[:16]), _crypto.AESGCM(key[:16])),
        (aesgcm(key), _crypto.AESGCM(key)),
        (chacha(key), _crypto.ChaCha20Poly1305(key)),
    )
    for ours, ref in cases:
        sealed = ref.encrypt(nonce, data, header)
        if ours.encrypt(nonce, data, header) != sealed or ours.encrypt(nonce, b"", None) != ref.encrypt(
            nonce, b"", None
        ):
            raise RuntimeError("encryption differs from cryptography's")
        if ours.decrypt(nonce, sealed, header) != data or ours.seal(header, nonce, data) != header + sealed:
            raise RuntimeError("decryption differs from cryptography's")
        if ours.open(header + sealed, len(header), nonce) != data:
            raise RuntimeError("open differs from decrypt")
        pn = 0x0123456789ABCDEF
        numbered = header + pn.to_bytes(8, "big")
        packet = numbered + ref.encrypt(pn_nonce(nonce, pn), data, numbered)
        if (
            ours.seal_pn(header, pn, nonce, data) != packet
            or ours.open_pn(packet, len(numbered), pn, nonce) != data
        ):
            raise RuntimeError("seal_pn or open_pn differs from cryptography's")
        try:
            ours.decrypt(nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), header)
        except InvalidTag:
            pass
        else:
            raise RuntimeError("a forged tag was accepted")


def _load_native() -> tuple[tuple[AEADFactory, AEADFactory] | None, str]:
    """The native classes (AES-GCM, ChaCha20-Poly1305) and what they are, or None and why not."""
    if os.environ.get(DISABLE_ENV, "") == "0":
        return None, f"{DISABLE_ENV}=0"
    try:
        import kcp.secure._aead as native
    except ImportError as e:  # the pure build, or a compiled one whose module did not build or load
        return None, "kcp.secure._aead " + (
            "not built" if isinstance(e, ModuleNotFoundError) else f"not loadable: {e}"
        )
    try:
        self_test(native.AESGCM, native.ChaCha20Poly1305)
    except Exception as e:
        return None, f"kcp.secure._aead failed its self-test: {e!r}"
    return (native.AESGCM, native.ChaCha20Poly1305), f"kcp.secure._aead on {native.openssl_version()}"


_native, _about = _load_native()
NATIVE_AEAD: bool = _native is not None
"""True when :data:`AESGCM` and :data:`ChaCha20Poly1305` are the native module's classes."""
AESGCM: AEADFactory
ChaCha20Poly1305: AEADFactory
AESGCM, ChaCha20Poly1305 = _native or (CryptographyAESGCM, CryptographyChaCha20Poly1305)
"""``AESGCM(key)`` and ``ChaCha20Poly1305(key)``: the AEADs in use."""
AEAD_BACKEND: str = _about if _native is not None else f"cryptography {cryptography.__version__} ({_about})"
"""What :data:`AESGCM` and :data:`ChaCha20Poly1305` are: ``kcp.secure._aead on <libcrypto version>``,
or ``cryptography <version> (<why not the native module>)``."""
