"""A small Noise Protocol Framework state machine (revision 34) on ``cryptography`` primitives.

Only what secure mode needs: DH 25519, ciphers ChaChaPoly and AESGCM, hash SHA256, and the
patterns ``IKpsk2`` (the client pins the server's static key) and ``NNpsk0`` (a shared PSK only).
The primitives are X25519, HKDF-SHA256 (``cryptography``'s HKDF equals Noise's HKDF with
``salt = ck`` and empty info) and the AEADs of :mod:`kcp.secure.aead` (the compiled build's native
module on OpenSSL, else ``cryptography``'s). Names follow the specification:
:class:`CipherState`, :class:`SymmetricState`, :class:`HandshakeState`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .aead import AEAD, AESGCM, ChaCha20Poly1305
from .errors import DecodeError

Rng = Callable[[int], bytes]
HASHLEN = 32
DHLEN = 32
TAGLEN = 16
MAX_NONCE = (1 << 64) - 1


class NoiseError(DecodeError):
    """A handshake message failed to decrypt or parse (wrong key, wrong PSK, tampering)."""


# ---------------------------------------------------------------------------------------- ciphers


@dataclass(frozen=True, slots=True)
class CipherSuite:
    """One AEAD as Noise names it, with its nonce encoding."""

    suite_id: int
    noise_name: str
    factory: Callable[[bytes], AEAD]  # kcp.secure.aead's AESGCM or ChaCha20Poly1305
    nonce_byteorder: str  # "little" for ChaChaPoly, "big" for AESGCM (Noise §12)

    def nonce(self, n: int) -> bytes:
        """Noise's 96-bit nonce: 32 zero bits then the 64-bit counter."""
        return b"\x00\x00\x00\x00" + n.to_bytes(8, self.nonce_byteorder)  # type: ignore[arg-type]


CHACHAPOLY = CipherSuite(1, "ChaChaPoly", ChaCha20Poly1305, "little")
AESGCM256 = CipherSuite(2, "AESGCM", AESGCM, "big")
SUITES: dict[int, CipherSuite] = {CHACHAPOLY.suite_id: CHACHAPOLY, AESGCM256.suite_id: AESGCM256}
SUITE_BY_NAME: dict[str, CipherSuite] = {"chachapoly": CHACHAPOLY, "aesgcm": AESGCM256}


def sha256(data: bytes) -> bytes:
    """SHA-256 digest."""
    return hashlib.sha256(data).digest()


def hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    """Noise's HKDF: RFC 5869 with ``salt = chaining_key`` and empty info, cut into 32-byte outputs."""
    okm = HKDF(algorithm=hashes.SHA256(), length=HASHLEN * outputs, salt=chaining_key, info=b"").derive(ikm)
    return [okm[i * HASHLEN : (i + 1) * HASHLEN] for i in range(outputs)]


# ---------------------------------------------------------------------------------------- DH


class KeyPair:
    """An X25519 key pair (private key object and the 32 raw public bytes)."""

    __slots__ = ("private", "public")

    def __init__(self, private: X25519PrivateKey) -> None:
        self.private = private
        self.public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KeyPair:
        """Build from 32 raw private bytes."""
        return cls(X25519PrivateKey.from_private_bytes(data))

    @classmethod
    def generate(cls, rng: Rng) -> KeyPair:
        """A fresh key pair from the injected random source."""
        return cls.from_private_bytes(rng(32))

    def private_bytes_raw(self) -> bytes:
        """The 32 raw private bytes."""
        return self.private.private_bytes_raw()


def dh(kp: KeyPair, public: bytes) -> bytes:
    """X25519; a low-order public key (all-zero result) raises :class:`NoiseError`."""
    try:
        return kp.private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise NoiseError("bad DH public key") from exc


# ---------------------------------------------------------------------------------------- states


class CipherState:
    """Noise CipherState: a key (or none) and a 64-bit nonce counter."""

    __slots__ = ("_aead", "k", "n", "suite")

    def __init__(self, suite: CipherSuite, key: bytes | None = None) -> None:
        self.suite = suite
        self.k: bytes | None = None
        self._aead: AEAD | None = None
        self.n = 0
        if key is not None:
            self.initialize_key(key)

    def initialize_key(self, key: bytes) -> None:
        self.k = key
        self._aead = self.suite.factory(key)
        self.n = 0

    def has_key(self) -> bool:
        return self.k is not None

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        out = self._aead.encrypt(self.suite.nonce(self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise NoiseError("nonce exhausted")
        try:
            out = self._aead.decrypt(self.suite.nonce(self.n), ciphertext, ad)
        except InvalidTag as exc:
            raise NoiseError("decryption failed") from exc
        self.n += 1
        return out


class SymmetricState:
    """Noise SymmetricState: chaining key ``ck``, handshake hash ``h`` and a CipherState."""

    __slots__ = ("ck", "cs", "h")

    def __init__(self, protocol_name: bytes, suite: CipherSuite) -> None:
        self.h = (
            protocol_name.ljust(HASHLEN, b"\x00") if len(protocol_name) <= HASHLEN else sha256(protocol_name)
        )
        self.ck = self.h
        self.cs = CipherState(suite)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, ikm, 2)
        self.cs.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        self.h = sha256(self.h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.cs.initialize_key(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ct = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        pt = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[bytes, bytes]:
        """The two transport keys: (initiator→responder, responder→initiator)."""
        k1, k2 = hkdf(self.ck, b"", 2)
        return k1, k2


@dataclass(frozen=True, slots=True)
class Pattern:
    """A handshake pattern: pre-message tokens of the responder and the message token lists."""

    name: str
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]

    @property
    def has_psk(self) -> bool:
        return "psk" in self.name


IKPSK2 = Pattern("IKpsk2", ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se", "psk")))
NNPSK0 = Pattern("NNpsk0", (), (("psk", "e"), ("e", "ee")))
PATTERNS: dict[str, Pattern] = {"IKpsk2": IKPSK2, "NNpsk0": NNPSK0}


def protocol_name(pattern: Pattern, suite: CipherSuite) -> str:
    """The full Noise protocol name, e.g. ``Noise_IKpsk2_25519_ChaChaPoly_SHA256``."""
    return f"Noise_{pattern.name}_25519_{suite.noise_name}_SHA256"


class HandshakeState:
    """Noise HandshakeState for one side of a one-round-trip pattern."""

    __slots__ = ("_msg", "e", "initiator", "pattern", "psk", "re", "rng", "rs", "s", "ss")

    def __init__(
        self,
        pattern: Pattern,
        suite: CipherSuite,
        *,
        initiator: bool,
        prologue: bytes,
        rng: Rng,
        s: KeyPair | None = None,
        rs: bytes | None = None,
        psk: bytes | None = None,
        e: KeyPair | None = None,
    ) -> None:
        self.pattern = pattern
        self.initiator = initiator
        self.rng = rng
        self.s = s
        self.rs = rs
        self.e = e
        self.re: bytes | None = None
        self.psk = psk
        if pattern.has_psk and (psk is None or len(psk) != 32):
            raise ValueError("this pattern needs a 32-byte PSK")
        self.ss = SymmetricState(protocol_name(pattern, suite).encode(), suite)
        self.ss.mix_hash(prologue)
        for token in pattern.responder_pre:
            assert token == "s"
            key = self.s.public if not initiator and self.s is not None else self.rs
            if key is None:
                raise ValueError("the responder's static key is needed for this pattern")
            self.ss.mix_hash(key)
        self._msg = 0

    @property
    def handshake_hash(self) -> bytes:
        return self.ss.h

    def _dh_token(self, token: str) -> bytes:
        local, remote = token[0], token[1]
        if not self.initiator:
            local, remote = remote, local
        kp = self.e if local == "e" else self.s
        pub = self.re if remote == "e" else self.rs
        if kp is None or pub is None:
            raise NoiseError(f"missing key for {token}")
        return dh(kp, pub)

    def write_message(self, payload: bytes) -> bytes:
        """Process the next message's tokens as the writer; returns the message bytes."""
        tokens = self.pattern.messages[self._msg]
        self._msg += 1
        out = bytearray()
        for token in tokens:
            if token == "e":
                if self.e is None:
                    self.e = KeyPair.generate(self.rng)
                out += self.e.public
                self.ss.mix_hash(self.e.public)
                if self.pattern.has_psk:
                    self.ss.mix_key(self.e.public)
            elif token == "s":
                assert self.s is not None
                out += self.ss.encrypt_and_hash(self.s.public)
            elif token == "psk":
                assert self.psk is not None
                self.ss.mix_key_and_hash(self.psk)
            else:
                self.ss.mix_key(self._dh_token(token))
        out += self.ss.encrypt_and_hash(payload)
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Process the next message's tokens as the reader; returns the payload or raises NoiseError."""
        tokens = self.pattern.messages[self._msg]
        self._msg += 1
        pos = 0
        for token in tokens:
            if token == "e":
                if len(message) < pos + DHLEN:
                    raise NoiseError("message too short")
                self.re = bytes(message[pos : pos + DHLEN])
                pos += DHLEN
                self.ss.mix_hash(self.re)
                if self.pattern.has_psk:
                    self.ss.mix_key(self.re)
            elif token == "s":
                size = DHLEN + (TAGLEN if self.ss.cs.has_key() else 0)
                if len(message) < pos + size:
                    raise NoiseError("message too short")
                self.rs = self.ss.decrypt_and_hash(bytes(message[pos : pos + size]))
                pos += size
            elif token == "psk":
                assert self.psk is not None
                self.ss.mix_key_and_hash(self.psk)
            else:
                self.ss.mix_key(self._dh_token(token))
        rest = bytes(message[pos:])
        if self.ss.cs.has_key() and len(rest) < TAGLEN:
            raise NoiseError("message too short")
        return self.ss.decrypt_and_hash(rest)

    def split(self) -> tuple[bytes, bytes]:
        """Transport keys after the last message: (initiator→responder, responder→initiator)."""
        return self.ss.split()


def message_overhead(pattern: Pattern, index: int) -> int:
    """Bytes a message adds around its payload (keys and tags), for size planning."""
    size = 0
    has_key = False
    for token in pattern.messages[index]:
        if token == "e":
            size += DHLEN
            has_key = has_key or pattern.has_psk
        elif token == "s":
            size += DHLEN + (TAGLEN if has_key else 0)
        else:
            has_key = True
    # earlier messages may already have set a key
    if index > 0 or any(t in ("psk", "ee", "es", "se", "ss") for t in pattern.messages[index]):
        has_key = True
    return size + (TAGLEN if has_key else 0)


def public_key_of(private: bytes) -> bytes:
    """The X25519 public key (32 bytes) of 32 raw private bytes."""
    return KeyPair.from_private_bytes(private).public


def all_suites() -> Sequence[CipherSuite]:
    """Every supported suite, in default preference order."""
    return (CHACHAPOLY, AESGCM256)
