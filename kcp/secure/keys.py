"""Traffic keys and their rotation.

The Noise handshake's ``Split()`` gives one 32-byte secret per direction (epoch 0). Each epoch's
AEAD key and IV come from its secret through HKDF-Expand (SHA-256) with distinct labels, and the
next epoch's secret is ``HKDF-Expand(secret, "kcprpc ku")`` — the same shape as QUIC's key update.
The per-packet nonce is ``IV xor packet_number`` (12 bytes, big-endian), so a nonce never repeats
under one key while packet numbers only grow.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from .aead import AEAD
from .noise import CipherSuite

LABEL_KEY: Final = b"kcprpc key"
LABEL_IV: Final = b"kcprpc iv"
LABEL_UPDATE: Final = b"kcprpc ku"


def expand(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-SHA256(secret, label, length)."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=label).derive(secret)


class EpochKeys:
    """The AEAD and IV of one direction in one epoch. The AEAD seals and opens whole numbered
    packets, the header as associated data and the nonce ``iv`` XOR the packet number
    (:meth:`kcp.secure.aead.AEAD.seal_pn` and :meth:`~kcp.secure.aead.AEAD.open_pn`)."""

    __slots__ = ("aead", "epoch", "iv", "secret")

    def __init__(self, suite: CipherSuite, secret: bytes, epoch: int) -> None:
        self.secret = secret
        self.epoch = epoch
        self.aead: AEAD = suite.factory(expand(secret, LABEL_KEY, 32))
        self.iv = expand(secret, LABEL_IV, 12)

    def next(self, suite: CipherSuite) -> EpochKeys:
        """The keys of the following epoch."""
        return EpochKeys(suite, expand(self.secret, LABEL_UPDATE, 32), self.epoch + 1)
