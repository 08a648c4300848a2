"""Packet ciphers of kcp-go and kcptun, byte-compatible on the wire.

kcp-go encrypts every UDP payload as one unit. The block ciphers run in a *packet-local CFB
mode*: the feedback register starts at a fixed IV for every packet (the first 16 bytes, or 8 for a
64-bit block cipher, of :data:`INITIAL_VECTOR`), each full block is ``C = P xor E(previous C)``, and a
trailing partial block is XORed with the first bytes of the next keystream block. That is plain
full-block CFB with a short last segment, so OpenSSL's CFB (through ``cryptography``) produces the
same bytes. The random 16-byte nonce at the front of every packet (added by :mod:`kcp.pipeline`) is
what makes two packets with the same content encrypt differently.

``salsa20`` keeps the first 8 bytes of the packet in clear as its nonce and XORs the rest with the
Salsa20 keystream; ``xor`` XORs the packet with a fixed 1500-byte table; ``none`` copies. The AEAD
``aes-128-gcm`` is a different arrangement, see :class:`AESGCMCrypt`.

Names, key sizes and key slicing follow kcptun: the key is ``derive_key(passphrase)`` (32 bytes)
and each cipher takes a prefix of it (:data:`KEY_SIZES`). ``new_crypt("null", key)`` is ``None``:
no crypt layer at all, not even the nonce and crc32.

Implementations (see docs/crypto.md): AES, SM4, Blowfish, CAST5 and 3DES come from
``cryptography``, AES-GCM from :mod:`kcp.secure.aead` (the compiled build's native module on OpenSSL,
else ``cryptography``'s); Salsa20 from ``pycryptodome``; Twofish, TEA and XTEA are compact pure-Python
block functions in this module (checked against kcp-go's known answers), driven by the same CFB
arrangement.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kcp.errors import KCPUsageError
from kcp.secure.aead import AESGCM

try:  # cryptography >= 47 keeps CFB and the 64-bit ciphers under "decrepit"
    from cryptography.hazmat.decrepit.ciphers import algorithms as _old_algorithms
    from cryptography.hazmat.decrepit.ciphers.modes import CFB as _CFB
except ImportError:  # pragma: no cover - older cryptography
    _old_algorithms = algorithms  # type: ignore[misc]
    _CFB = modes.CFB  # type: ignore[misc]

__all__ = [
    "AEAD_NONCE_SIZE",
    "AEAD_OVERHEAD",
    "CIPHER_NAMES",
    "INITIAL_VECTOR",
    "KDF_ITERATIONS",
    "KDF_SALT",
    "KEY_SIZES",
    "AEADCrypt",
    "AESGCMCrypt",
    "BlockCrypt",
    "PacketCrypt",
    "derive_key",
    "new_crypt",
    "register_cipher",
]

INITIAL_VECTOR = bytes([167, 115, 79, 156, 18, 172, 27, 1, 164, 21, 242, 193, 252, 120, 230, 107])
"""kcp-go's fixed CFB IV; 64-bit block ciphers use its first 8 bytes."""

KDF_SALT = b"kcp-go"
KDF_ITERATIONS = 4096
XOR_SALT = b"sH3CIVoF#rWLtJo6"
XOR_TABLE_SIZE = 1500  # kcp-go's mtuLimit
AEAD_NONCE_SIZE = 12
AEAD_OVERHEAD = 16


def derive_key(passphrase: str | bytes) -> bytes:
    """Turn a kcptun ``--key`` into the 32-byte key material: PBKDF2-HMAC-SHA1, salt ``kcp-go``, 4096 rounds."""
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    return hashlib.pbkdf2_hmac("sha1", passphrase, KDF_SALT, KDF_ITERATIONS, 32)


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------


@runtime_checkable
class BlockCrypt(Protocol):
    """A kcp-go ``BlockCrypt``: encrypts or decrypts a whole packet, output length = input length.

    The input is the complete packet including the 16-byte nonce and the crc32; the object may
    keep state between calls (kept cipher contexts) but every call is independent on the wire.
    One object may serve many sessions on one thread (an event loop); it is not thread-safe.
    """

    name: str

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt a whole packet."""
        ...

    def decrypt(self, data: bytes) -> bytes:
        """Decrypt a whole packet (never raises on garbage: it yields garbage)."""
        ...


@runtime_checkable
class AEADCrypt(Protocol):
    """kcp-go's AEAD arrangement: ``nonce || ciphertext || tag``, no crc32, no additional data."""

    name: str
    nonce_size: int
    overhead: int

    def seal(self, nonce: bytes, plaintext: bytes) -> bytes:
        """Return ``ciphertext || tag`` (``len(plaintext) + overhead`` bytes)."""
        ...

    def open(self, nonce: bytes, sealed: bytes) -> bytes | None:
        """Return the plaintext, or ``None`` when the tag does not verify."""
        ...


PacketCrypt = BlockCrypt | AEADCrypt


# --------------------------------------------------------------------------------------------
# CFB through cryptography (AES, SM4, Blowfish, CAST5, 3DES)
# --------------------------------------------------------------------------------------------


class _OpenSSLCFB:
    """kcp-go's packet CFB on a ``cryptography`` block cipher, with every context kept.

    Three contexts live as long as the object: a CFB encryptor, a CFB decryptor and an ECB
    encryptor. Both CFB contexts are always left on a block boundary (the input is padded to a
    whole number of blocks and the padding's output thrown away), so the stream state is exactly
    one feedback register:

    * decryption resets it for free: feeding the IV as one ciphertext block makes the IV the
      register, so one ``update(IV || packet || pad)`` decrypts the packet;
    * encryption remembers the last ciphertext block ``R`` it produced and prepends the block
      ``IV xor E(R)`` (one ECB call): its ciphertext is the IV, which resets the register.
    """

    __slots__ = ("_bs", "_dec", "_ecb", "_enc", "_iv", "_iv_int", "_reg", "name")

    def __init__(self, name: str, algorithm: Any, iv: bytes | None = None) -> None:
        self.name = name
        bs = algorithm.block_size // 8
        self._bs = bs
        self._iv = INITIAL_VECTOR[:bs] if iv is None else bytes(iv)
        if len(self._iv) != bs:
            raise KCPUsageError(f"IV must be {bs} bytes")
        self._iv_int = int.from_bytes(self._iv, "little")
        self._enc = Cipher(algorithm, _CFB(self._iv)).encryptor()
        self._dec = Cipher(algorithm, _CFB(self._iv)).decryptor()
        self._ecb = Cipher(algorithm, modes.ECB()).encryptor()
        self._reg: bytes | None = None  # None: the encryptor's register is the IV

    def encrypt(self, data: bytes) -> bytes:
        n = len(data)
        if not n:
            return b""
        bs = self._bs
        pad = -n % bs
        reg = self._reg
        if reg is None:
            out = self._enc.update(data + bytes(pad) if pad else data)
        else:
            ks = int.from_bytes(self._ecb.update(reg), "little")
            reset = (ks ^ self._iv_int).to_bytes(bs, "little")
            out = self._enc.update(reset + data + bytes(pad))[bs:]
        self._reg = out[-bs:]
        return out[:n]

    def decrypt(self, data: bytes) -> bytes:
        n = len(data)
        if not n:
            return b""
        bs = self._bs
        return self._dec.update(self._iv + data + bytes(-n % bs))[bs : bs + n]


# --------------------------------------------------------------------------------------------
# CFB on a pure-Python block function (Twofish, TEA, XTEA)
# --------------------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF


class _PythonCFB:
    """kcp-go's packet CFB on a pure-Python block function working on blocks as integers.

    ``block`` maps a block, read as an integer in ``byteorder``, to its encryption. Whole blocks are
    unpacked and packed in one ``struct`` call each; only a trailing partial block goes through bytes.
    """

    __slots__ = ("_block", "_bs", "_iv", "_order", "_unpack_fmt", "name")

    def __init__(
        self,
        name: str,
        block_size: int,
        block: Callable[[int], int],
        byteorder: Literal["big", "little"],
        iv: bytes | None = None,
    ) -> None:
        if block_size not in (8, 16):
            raise KCPUsageError("block size must be 8 or 16 bytes")
        self.name = name
        self._bs = block_size
        iv = INITIAL_VECTOR[:block_size] if iv is None else bytes(iv)
        if len(iv) != block_size:
            raise KCPUsageError(f"IV must be {block_size} bytes")
        self._iv = int.from_bytes(iv, byteorder)
        self._order: Literal["big", "little"] = byteorder
        self._block = block
        self._unpack_fmt = ">" if byteorder == "big" else "<"

    def _to_ints(self, data: bytes, nblocks: int) -> list[int]:
        if self._bs == 8:
            return list(struct.unpack(f"{self._unpack_fmt}{nblocks}Q", data[: 8 * nblocks]))
        words = struct.unpack(f"{self._unpack_fmt}{2 * nblocks}Q", data[: 16 * nblocks])
        if self._order == "little":
            return [lo | (hi << 64) for lo, hi in zip(words[0::2], words[1::2], strict=True)]
        return [(hi << 64) | lo for hi, lo in zip(words[0::2], words[1::2], strict=True)]

    def _to_bytes(self, blocks: list[int]) -> bytes:
        if self._bs == 8:
            return struct.pack(f"{self._unpack_fmt}{len(blocks)}Q", *blocks)
        bs, order = self._bs, self._order
        return b"".join([b.to_bytes(bs, order) for b in blocks])

    def _finish(self, data: bytes, out: list[int], reg: int) -> bytes:
        """Pack the whole blocks ``out``; XOR a partial last block of ``data`` with E(reg)'s first bytes."""
        res = self._to_bytes(out)
        full = len(out) * self._bs
        r = len(data) - full
        if not r:
            return res
        ks = self._block(reg).to_bytes(self._bs, self._order)[:r]
        tail = (int.from_bytes(data[full:], "little") ^ int.from_bytes(ks, "little")).to_bytes(r, "little")
        return res + tail

    def encrypt(self, data: bytes) -> bytes:
        f = self._block
        reg = self._iv
        out: list[int] = []
        append = out.append
        for p in self._to_ints(data, len(data) // self._bs):
            reg = f(reg) ^ p
            append(reg)
        return self._finish(data, out, reg)

    def decrypt(self, data: bytes) -> bytes:
        f = self._block
        cs = self._to_ints(data, len(data) // self._bs)
        regs = [self._iv, *cs]  # block i is XORed with E(C[i-1]), E(IV) for the first
        return self._finish(data, [f(r) ^ c for r, c in zip(regs, cs, strict=False)], regs[-1])


def _bytes_block(
    f: Callable[[int], int], size: int, order: Literal["big", "little"]
) -> Callable[[bytes], bytes]:
    """A bytes-to-bytes view of an integer block function (tests, known answers)."""
    return lambda src: f(int.from_bytes(src, order)).to_bytes(size, order)


def _tea_int(key: bytes) -> Callable[[int], int]:
    """TEA with 16 rounds (8 cycles), as kcp-go's ``tea.NewCipherWithRounds(key, 16)``; big-endian words."""
    k0, k1, k2, k3 = struct.unpack(">4I", key[:16])
    sums = [(0x9E3779B9 * (i + 1)) & _M32 for i in range(8)]

    def block(x: int) -> int:
        v0 = x >> 32
        v1 = x & _M32
        for s in sums:
            v0 = (v0 + ((((v1 << 4) + k0) ^ (v1 + s) ^ ((v1 >> 5) + k1)) & _M32)) & _M32
            v1 = (v1 + ((((v0 << 4) + k2) ^ (v0 + s) ^ ((v0 >> 5) + k3)) & _M32)) & _M32
        return (v0 << 32) | v1

    return block


def _tea_block(key: bytes) -> Callable[[bytes], bytes]:
    """TEA (kcp-go's 16 rounds) on one 8-byte block."""
    return _bytes_block(_tea_int(key), 8, "big")


def _xtea_int(key: bytes) -> Callable[[int], int]:
    """XTEA, 64 Feistel rounds (32 cycles) with the per-round key+sum table precomputed; big-endian words."""
    k = struct.unpack(">4I", key[:16])
    table: list[int] = []
    s = 0
    for _ in range(32):
        table.append((s + k[s & 3]) & _M32)
        s = (s + 0x9E3779B9) & _M32
        table.append((s + k[(s >> 11) & 3]) & _M32)
    pairs = list(zip(table[0::2], table[1::2], strict=True))

    def block(x: int) -> int:
        v0 = x >> 32
        v1 = x & _M32
        for ta, tb in pairs:
            v0 = (v0 + (((((v1 << 4) & _M32) ^ (v1 >> 5)) + v1) ^ ta)) & _M32
            v1 = (v1 + (((((v0 << 4) & _M32) ^ (v0 >> 5)) + v0) ^ tb)) & _M32
        return (v0 << 32) | v1

    return block


def _xtea_block(key: bytes) -> Callable[[bytes], bytes]:
    """XTEA on one 8-byte block."""
    return _bytes_block(_xtea_int(key), 8, "big")


# Twofish, from the specification (Schneier et al., 1998): q-permutations built from their
# 4-bit t-tables, the MDS matrix over GF(2^8)/0x169, the RS matrix over GF(2^8)/0x14D.
_Q_T = (
    (  # q0: t0..t3
        (0x8, 0x1, 0x7, 0xD, 0x6, 0xF, 0x3, 0x2, 0x0, 0xB, 0x5, 0x9, 0xE, 0xC, 0xA, 0x4),
        (0xE, 0xC, 0xB, 0x8, 0x1, 0x2, 0x3, 0x5, 0xF, 0x4, 0xA, 0x6, 0x7, 0x0, 0x9, 0xD),
        (0xB, 0xA, 0x5, 0xE, 0x6, 0xD, 0x9, 0x0, 0xC, 0x8, 0xF, 0x3, 0x2, 0x4, 0x7, 0x1),
        (0xD, 0x7, 0xF, 0x4, 0x1, 0x2, 0x6, 0xE, 0x9, 0xB, 0x3, 0x0, 0x8, 0x5, 0xC, 0xA),
    ),
    (  # q1: t0..t3
        (0x2, 0x8, 0xB, 0xD, 0xF, 0x7, 0x6, 0xE, 0x3, 0x1, 0x9, 0x4, 0x0, 0xA, 0xC, 0x5),
        (0x1, 0xE, 0x2, 0xB, 0x4, 0xC, 0x3, 0x7, 0x6, 0xD, 0xA, 0x5, 0xF, 0x9, 0x0, 0x8),
        (0x4, 0xC, 0x7, 0x5, 0x1, 0x6, 0x9, 0xA, 0x0, 0xE, 0xD, 0x8, 0x2, 0xB, 0x3, 0xF),
        (0xB, 0x9, 0x5, 0x1, 0xC, 0x3, 0xD, 0xE, 0x6, 0x4, 0x7, 0xF, 0x2, 0x0, 0x8, 0xA),
    ),
)


def _ror4(x: int) -> int:
    return ((x >> 1) | (x << 3)) & 0xF


def _make_q(t: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    out = []
    for x in range(256):
        a, b = x >> 4, x & 0xF
        a, b = a ^ b, (a ^ _ror4(b) ^ (8 * a)) & 0xF
        a, b = t[0][a], t[1][b]
        a, b = a ^ b, (a ^ _ror4(b) ^ (8 * a)) & 0xF
        a, b = t[2][a], t[3][b]
        out.append((b << 4) | a)
    return tuple(out)


_Q0 = _make_q(_Q_T[0])
_Q1 = _make_q(_Q_T[1])

_MDS = (
    (0x01, 0xEF, 0x5B, 0x5B),
    (0x5B, 0xEF, 0xEF, 0x01),
    (0xEF, 0x5B, 0x01, 0xEF),
    (0xEF, 0x01, 0xEF, 0x5B),
)
_RS = (
    (0x01, 0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E),
    (0xA4, 0x56, 0x82, 0xF3, 0x1E, 0xC6, 0x68, 0xE5),
    (0x02, 0xA1, 0xFC, 0xC1, 0x47, 0xAE, 0x3D, 0x19),
    (0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E, 0x03),
)


def _gf_mul(a: int, b: int, poly: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= poly
        b >>= 1
    return r


def _rol(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _M32


def _twofish_h_bytes(x: int, words: list[int]) -> list[int]:
    """The q-box chain of Twofish's h function for one byte value in all four lanes."""
    k = len(words)
    lb = [w.to_bytes(4, "little") for w in words]
    y = [x, x, x, x]
    if k == 4:
        y = [_Q1[y[0]] ^ lb[3][0], _Q0[y[1]] ^ lb[3][1], _Q0[y[2]] ^ lb[3][2], _Q1[y[3]] ^ lb[3][3]]
    if k >= 3:
        y = [_Q1[y[0]] ^ lb[2][0], _Q1[y[1]] ^ lb[2][1], _Q0[y[2]] ^ lb[2][2], _Q0[y[3]] ^ lb[2][3]]
    return [
        _Q1[_Q0[_Q0[y[0]] ^ lb[1][0]] ^ lb[0][0]],
        _Q0[_Q0[_Q1[y[1]] ^ lb[1][1]] ^ lb[0][1]],
        _Q1[_Q1[_Q0[y[2]] ^ lb[1][2]] ^ lb[0][2]],
        _Q0[_Q1[_Q1[y[3]] ^ lb[1][3]] ^ lb[0][3]],
    ]


def _mds_column(j: int, v: int) -> int:
    """MDS times the vector with ``v`` in lane ``j`` and zeros elsewhere, as a little-endian word."""
    return sum(_gf_mul(_MDS[i][j], v, 0x169) << (8 * i) for i in range(4))


def _twofish_h(x: int, words: list[int]) -> int:
    ys = _twofish_h_bytes_word(x, words)
    return _mds_column(0, ys[0]) ^ _mds_column(1, ys[1]) ^ _mds_column(2, ys[2]) ^ _mds_column(3, ys[3])


def _twofish_h_bytes_word(x: int, words: list[int]) -> list[int]:
    """h's q-box chain for a 32-bit input whose four bytes may differ."""
    xb = x.to_bytes(4, "little")
    return [_twofish_h_bytes(xb[j], words)[j] for j in range(4)]


def _twofish_int(key: bytes) -> Callable[[int], int]:
    """Twofish encryption of one block read as a little-endian 128-bit integer (128/192/256-bit key).

    Full key-dependent S-boxes with the MDS matrix folded in: g(X) is four table lookups.
    """
    if len(key) not in (16, 24, 32):
        raise KCPUsageError(f"twofish key must be 16, 24 or 32 bytes, not {len(key)}")
    k = len(key) // 8
    m = [int.from_bytes(key[4 * i : 4 * i + 4], "little") for i in range(2 * k)]
    me, mo = m[0::2], m[1::2]
    s_words = []
    for i in range(k):
        chunk = key[8 * i : 8 * i + 8]
        s = 0
        for r in range(4):
            v = 0
            for c in range(8):
                v ^= _gf_mul(_RS[r][c], chunk[c], 0x14D)
            s |= v << (8 * r)
        s_words.append(s)
    s_words.reverse()  # S = (S_{k-1}, ..., S_0)
    rho = 0x01010101
    subkeys: list[int] = []
    for i in range(20):
        a = _twofish_h((2 * i * rho) & _M32, me)
        b = _rol(_twofish_h(((2 * i + 1) * rho) & _M32, mo), 8)
        subkeys.append((a + b) & _M32)
        subkeys.append(_rol((a + 2 * b) & _M32, 9))
    # g(X) = S0[x0] ^ S1[x1] ^ S2[x2] ^ S3[x3] with the MDS folded into each table.
    tables = [[0] * 256 for _ in range(4)]
    for x in range(256):
        ys = _twofish_h_bytes(x, s_words)
        for j in range(4):
            tables[j][x] = _mds_column(j, ys[j])
    s0, s1, s2, s3 = (tuple(t) for t in tables)
    k0, k1, k2, k3, k4, k5, k6, k7 = subkeys[:8]
    # two rounds per iteration, so the halves swap roles instead of being shuffled
    round_keys = [tuple(subkeys[4 * r + 8 : 4 * r + 12]) for r in range(8)]

    def block(x: int) -> int:
        r0 = (x & _M32) ^ k0
        r1 = ((x >> 32) & _M32) ^ k1
        r2 = ((x >> 64) & _M32) ^ k2
        r3 = (x >> 96) ^ k3
        for ka, kb, kc, kd in round_keys:
            t0 = s0[r0 & 0xFF] ^ s1[(r0 >> 8) & 0xFF] ^ s2[(r0 >> 16) & 0xFF] ^ s3[r0 >> 24]
            t1 = s0[r1 >> 24] ^ s1[r1 & 0xFF] ^ s2[(r1 >> 8) & 0xFF] ^ s3[(r1 >> 16) & 0xFF]
            r2 ^= (t0 + t1 + ka) & _M32
            r2 = ((r2 >> 1) | (r2 << 31)) & _M32
            r3 = (((r3 << 1) | (r3 >> 31)) & _M32) ^ ((t0 + 2 * t1 + kb) & _M32)
            t0 = s0[r2 & 0xFF] ^ s1[(r2 >> 8) & 0xFF] ^ s2[(r2 >> 16) & 0xFF] ^ s3[r2 >> 24]
            t1 = s0[r3 >> 24] ^ s1[r3 & 0xFF] ^ s2[(r3 >> 8) & 0xFF] ^ s3[(r3 >> 16) & 0xFF]
            r0 ^= (t0 + t1 + kc) & _M32
            r0 = ((r0 >> 1) | (r0 << 31)) & _M32
            r1 = (((r1 << 1) | (r1 >> 31)) & _M32) ^ ((t0 + 2 * t1 + kd) & _M32)
        return (r2 ^ k4) | ((r3 ^ k5) << 32) | ((r0 ^ k6) << 64) | ((r1 ^ k7) << 96)

    return block


def _twofish_block(key: bytes) -> Callable[[bytes], bytes]:
    """Twofish on one 16-byte block."""
    return _bytes_block(_twofish_int(key), 16, "little")


# --------------------------------------------------------------------------------------------
# Stream-like and trivial ciphers
# --------------------------------------------------------------------------------------------


class _Salsa20Crypt:
    """``salsa20``: bytes 0-7 stay in clear and are the nonce; the rest is XORed with Salsa20/20."""

    __slots__ = ("_key", "_new", "name")

    def __init__(self, key: bytes) -> None:
        from Crypto.Cipher import Salsa20  # pycryptodome

        if len(key) != 32:
            raise KCPUsageError(f"salsa20 key must be 32 bytes, not {len(key)}")
        self.name = "salsa20"
        self._key = key
        self._new = Salsa20.new

    def encrypt(self, data: bytes) -> bytes:
        if len(data) <= 8:
            return bytes(data)
        return data[:8] + self._new(key=self._key, nonce=data[:8]).encrypt(data[8:])

    decrypt = encrypt


class _XorCrypt:
    """``xor``: the packet XORed with a 1500-byte table, PBKDF2-SHA1(key, fixed salt, 32 rounds)."""

    __slots__ = ("_table", "name")

    def __init__(self, key: bytes) -> None:
        self.name = "xor"
        self._table = hashlib.pbkdf2_hmac("sha1", key, XOR_SALT, 32, XOR_TABLE_SIZE)

    def encrypt(self, data: bytes) -> bytes:
        n = min(len(data), XOR_TABLE_SIZE)
        if not n:
            return bytes(data)
        head = (int.from_bytes(data[:n], "little") ^ int.from_bytes(self._table[:n], "little")).to_bytes(
            n, "little"
        )
        return head + data[n:] if len(data) > n else head

    decrypt = encrypt


class _NoneCrypt:
    """``none``: no encryption, but packets still carry the nonce and the crc32."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = "none"

    def encrypt(self, data: bytes) -> bytes:
        return bytes(data)

    decrypt = encrypt


class AESGCMCrypt:
    """kcp-go's ``aes-128-gcm``: packet = 12-byte random nonce, AES-GCM ciphertext, 16-byte tag.

    There is no crc32 and no 16-byte nonce header: the tag authenticates the packet. No additional
    data. The AEAD object (:data:`kcp.secure.aead.AESGCM`) is kept, so sealing or opening is one call
    into OpenSSL.
    """

    __slots__ = ("_aead", "name", "nonce_size", "overhead")

    def __init__(self, key: bytes) -> None:
        if len(key) not in (16, 24, 32):
            raise KCPUsageError(f"AES-GCM key must be 16, 24 or 32 bytes, not {len(key)}")
        self.name = "aes-128-gcm" if len(key) == 16 else f"aes-{8 * len(key)}-gcm"
        self.nonce_size = AEAD_NONCE_SIZE
        self.overhead = AEAD_OVERHEAD
        self._aead = AESGCM(key)

    def seal(self, nonce: bytes, plaintext: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, None)

    def open(self, nonce: bytes, sealed: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(nonce, sealed, None)
        except InvalidTag:
            return None


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

CipherFactory = Callable[[bytes], "PacketCrypt | None"]

_REGISTRY: dict[str, tuple[int | None, CipherFactory]] = {}


def register_cipher(
    name: str, key_size: int | None, factory: CipherFactory, *, replace: bool = False
) -> None:
    """Make ``name`` available to :func:`new_crypt`.

    ``key_size`` is how many leading bytes of the key the factory receives (``None``: all of
    them). The factory returns a :class:`BlockCrypt`, an :class:`AEADCrypt`, or ``None`` for no
    crypt layer.
    """
    if name in _REGISTRY and not replace:
        raise KCPUsageError(f"cipher {name!r} is already registered")
    _REGISTRY[name] = (key_size, factory)


def new_crypt(name: str, key: bytes) -> PacketCrypt | None:
    """Build the packet cipher kcptun builds for ``--crypt name`` from ``key`` (normally ``derive_key(...)``).

    The key is cut the way kcptun cuts it (``aes`` uses all 32 bytes, ``aes-128`` the first 16...).
    Returns ``None`` for ``null``. Raises :class:`KCPUsageError` for an unknown name or a key that
    is too short.
    """
    try:
        key_size, factory = _REGISTRY[name]
    except KeyError:
        raise KCPUsageError(f"unknown cipher {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    key = bytes(key)
    if key_size is not None:
        if len(key) < key_size:
            raise KCPUsageError(f"cipher {name!r} needs a key of at least {key_size} bytes, got {len(key)}")
        key = key[:key_size]
    return factory(key)


def _cfb(name: str, algorithm: Callable[[bytes], Any]) -> CipherFactory:
    return lambda key: _OpenSSLCFB(name, algorithm(key))


def _py_cfb(
    name: str,
    block_size: int,
    block: Callable[[bytes], Callable[[int], int]],
    order: Literal["big", "little"],
) -> CipherFactory:
    return lambda key: _PythonCFB(name, block_size, block(key), order)


# name -> (key bytes taken from the 32-byte derived key, factory); kcptun's table.
register_cipher("aes", 32, _cfb("aes", algorithms.AES))
register_cipher("aes-128", 16, _cfb("aes-128", algorithms.AES))
register_cipher("aes-192", 24, _cfb("aes-192", algorithms.AES))
register_cipher("sm4", 16, _cfb("sm4", algorithms.SM4))
register_cipher("blowfish", 32, _cfb("blowfish", _old_algorithms.Blowfish))
register_cipher("cast5", 16, _cfb("cast5", _old_algorithms.CAST5))
register_cipher("3des", 24, _cfb("3des", _old_algorithms.TripleDES))
register_cipher("twofish", 32, _py_cfb("twofish", 16, _twofish_int, "little"))
register_cipher("tea", 16, _py_cfb("tea", 8, _tea_int, "big"))
register_cipher("xtea", 16, _py_cfb("xtea", 8, _xtea_int, "big"))
register_cipher("salsa20", 32, _Salsa20Crypt)
register_cipher("xor", 32, _XorCrypt)
register_cipher("none", None, lambda key: _NoneCrypt())
register_cipher("aes-128-gcm", 16, AESGCMCrypt)
register_cipher("null", None, lambda key: None)

CIPHER_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""The kcptun ``--crypt`` names available at import time."""

KEY_SIZES: dict[str, int | None] = {name: size for name, (size, _) in _REGISTRY.items()}
"""How many bytes of the derived key each built-in cipher takes (``None``: it ignores the key)."""


def cipher_known(name: str) -> bool:
    """Whether ``name`` is a registered kcptun cipher name (built in or :func:`register_cipher`)."""
    return name in _REGISTRY
