"""kcp.crypt: our own known answers (each traced to a published specification), round trips,
the kept-context CFB against a fresh-context reference, and the registry.

The kcp-go byte-compatibility vectors live in tests/interop/test_kcpgo_vectors.py.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from cryptography.hazmat.decrepit.ciphers import algorithms as old_algorithms
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kcp import crypt as kc
from kcp.crypt import (
    CIPHER_NAMES,
    INITIAL_VECTOR,
    AEADCrypt,
    AESGCMCrypt,
    BlockCrypt,
    derive_key,
    new_crypt,
    register_cipher,
)
from kcp.errors import KCPUsageError

KEY = derive_key("unit-test passphrase")
BLOCK_NAMES = [n for n in CIPHER_NAMES if n not in ("null", "aes-128-gcm")]
SLOW = {"twofish", "tea", "xtea"}  # pure-Python block functions: fewer, shorter cases


def _block(name: str) -> BlockCrypt:
    c = new_crypt(name, KEY)
    assert isinstance(c, BlockCrypt)
    return c


# ---------------------------------------------------------------------------------------------
# known answers from the specifications
# ---------------------------------------------------------------------------------------------

# NIST SP 800-38A, F.3.13 (CFB128-AES128.Encrypt). kcp-go's packet CFB is standard full-block CFB
# with its own fixed IV, so with the spec's IV our engine must print the spec's ciphertext; a
# trailing partial block is the ciphertext's prefix (CFB is a stream over whole blocks).
SP800_38A_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SP800_38A_IV = bytes(range(16))
SP800_38A_PLAIN = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
SP800_38A_CIPHER = bytes.fromhex(
    "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b"
    "26751f67a3cbb140b1808cf187a4f4dfc04b05357c5d1c0eeac4c66f9ff7f2e6"
)


@pytest.mark.parametrize("n", [64, 37, 16, 5, 0])
def test_aes_cfb_engine_matches_sp800_38a(n: int) -> None:
    engine = kc._OpenSSLCFB("aes", algorithms.AES(SP800_38A_KEY), SP800_38A_IV)
    for _ in range(3):  # repeated: the kept contexts reset between packets
        assert engine.encrypt(SP800_38A_PLAIN[:n]) == SP800_38A_CIPHER[:n]
        assert engine.decrypt(SP800_38A_CIPHER[:n]) == SP800_38A_PLAIN[:n]


def test_python_cfb_driver_matches_sp800_38a() -> None:
    """The pure-Python CFB driver (used for Twofish/TEA/XTEA), run on AES as its block function."""
    ecb = Cipher(algorithms.AES(SP800_38A_KEY), modes.ECB()).encryptor()
    for order in ("big", "little"):
        aes_int = kc._PythonCFB(
            "aes-py",
            16,
            lambda x, o=order: int.from_bytes(ecb.update(x.to_bytes(16, o)), o),  # type: ignore[misc]
            order,  # type: ignore[arg-type]
            SP800_38A_IV,
        )
        for n in (64, 37, 1, 0):
            assert aes_int.encrypt(SP800_38A_PLAIN[:n]) == SP800_38A_CIPHER[:n]
            assert aes_int.decrypt(SP800_38A_CIPHER[:n]) == SP800_38A_PLAIN[:n]
    # and an 8-byte block function: 3DES ECB against 3DES CFB-64 from OpenSSL
    key = bytes(range(24))
    des_ecb = Cipher(old_algorithms.TripleDES(key), modes.ECB()).encryptor()
    for order in ("big", "little"):
        des_py = kc._PythonCFB(
            "3des-py",
            8,
            lambda x, o=order: int.from_bytes(des_ecb.update(x.to_bytes(8, o)), o),  # type: ignore[misc]
            order,  # type: ignore[arg-type]
        )
        for n in (0, 3, 8, 13, 64, 77):
            ref = (
                Cipher(old_algorithms.TripleDES(key), CFB(INITIAL_VECTOR[:8]))
                .encryptor()
                .update(SP800_38A_PLAIN[:n])
            )
            assert des_py.encrypt(SP800_38A_PLAIN[:n]) == ref
            assert des_py.decrypt(ref) == SP800_38A_PLAIN[:n]


def test_python_cfb_driver_bytes_api_matches_sp800_38a() -> None:
    ecb = Cipher(algorithms.AES(SP800_38A_KEY), modes.ECB()).encryptor()
    engine = kc._PythonCFB(
        "aes-py", 16, lambda x: int.from_bytes(ecb.update(x.to_bytes(16, "big")), "big"), "big", SP800_38A_IV
    )
    for n in (64, 37, 1):
        assert engine.encrypt(SP800_38A_PLAIN[:n]) == SP800_38A_CIPHER[:n]
        assert engine.decrypt(SP800_38A_CIPHER[:n]) == SP800_38A_PLAIN[:n]


@pytest.mark.parametrize(
    ("key", "cipher"),
    [
        # Twofish paper / reference ECB_TBL.TXT: zero plaintext under these keys
        ("00000000000000000000000000000000", "9f589f5cf6122c32b6bfec2f2ae8c35a"),
        ("0123456789abcdeffedcba98765432100011223344556677", "cfd1d2e5a9be9cdf501f13b892bd2248"),
        (
            "0123456789abcdeffedcba987654321000112233445566778899aabbccddeeff",
            "37527be0052334b89f0cfccae87cfa20",
        ),
    ],
)
def test_twofish_block_known_answers(key: str, cipher: str) -> None:
    assert kc._twofish_block(bytes.fromhex(key))(bytes(16)).hex() == cipher


def test_xtea_block_known_answer() -> None:
    # Go's golang.org/x/crypto/xtea test table (the implementation kcp-go links): key 00..0f, "ABCDEFGH"
    assert kc._xtea_block(bytes(range(16)))(b"ABCDEFGH").hex() == "497df3d072612cb5"


def test_salsa20_arrangement_known_answer() -> None:
    # eSTREAM Salsa20/20 256-bit key set 1, vector 0: key 80 00..00, IV 0. kcp-go keeps the first 8
    # packet bytes as the nonce, so a packet of 8 zero bytes + 64 zero bytes encrypts to the nonce
    # followed by the first 64 keystream bytes.
    c = kc._Salsa20Crypt(b"\x80" + bytes(31))
    stream = bytes.fromhex(
        "e3be8fdd8beca2e3ea8ef9475b29a6e7003951e1097a5c38d23b7a5fad9f6844"
        "b22c97559e2723c7cbbd3fe4fc8d9a0744652a83e72a9c461876af4d7ef1a117"
    )
    assert c.encrypt(bytes(72)) == bytes(8) + stream
    assert c.decrypt(bytes(8) + stream) == bytes(72)
    nonce = bytes(range(8))  # a different nonce gives a different stream; the nonce stays in clear
    assert c.encrypt(nonce + bytes(64))[:8] == nonce
    assert c.encrypt(nonce + bytes(64))[8:] != stream


def test_aes_gcm_known_answer() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation", test case 3 (96-bit IV, no AAD)
    a = AESGCMCrypt(bytes.fromhex("feffe9928665731c6d6a8f9467308308"))
    nonce = bytes.fromhex("cafebabefacedbaddecaf888")
    plain = bytes.fromhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
    )
    sealed = bytes.fromhex(
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
        "4d5c2af327cd64a62cf35abd2ba6fab4"
    )
    assert a.seal(nonce, plain) == sealed
    assert a.open(nonce, sealed) == plain
    assert a.open(nonce, sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
    assert a.open(nonce, b"") is None


def test_derive_key_is_pbkdf2_sha1_kcp_go_salt() -> None:
    # the definition, spelled out: PBKDF2-HMAC-SHA1, salt "kcp-go", 4096 rounds, 32 bytes
    assert derive_key("secret") == hashlib.pbkdf2_hmac("sha1", b"secret", b"kcp-go", 4096, 32)
    assert derive_key(b"secret") == derive_key("secret")
    assert len(derive_key("")) == 32


def test_xor_table_is_pbkdf2_of_the_key() -> None:
    c = new_crypt("xor", KEY)
    assert isinstance(c, BlockCrypt)
    table = hashlib.pbkdf2_hmac("sha1", KEY, b"sH3CIVoF#rWLtJo6", 32, 1500)
    assert c.encrypt(bytes(1500)) == table
    assert c.encrypt(bytes(1600)) == table + bytes(100)  # past the table: untouched, as in kcp-go


# ---------------------------------------------------------------------------------------------
# round trips and context reuse
# ---------------------------------------------------------------------------------------------

LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 37, 63, 64, 65, 100, 1400]
SHORT_LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 33, 37, 100]


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_block_cipher_round_trip(name: str) -> None:
    c = _block(name)
    assert c.name == name
    rnd = random.Random(name)
    for n in SHORT_LENGTHS if name in SLOW else LENGTHS:
        data = rnd.randbytes(n)
        enc = c.encrypt(data)
        assert len(enc) == n
        if name != "none" and n > (8 if name == "salsa20" else 7):  # salsa20 keeps its 8-byte nonce clear
            assert enc != data
        assert c.decrypt(enc) == data


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_encryption_is_deterministic_per_packet(name: str) -> None:
    """No state survives a call: the same packet always encrypts the same, whatever came before."""
    c = _block(name)
    rnd = random.Random(1)
    packet = rnd.randbytes(40)
    first = c.encrypt(packet)
    for n in (3, 16, 29, 8):
        c.encrypt(rnd.randbytes(n))
        c.decrypt(rnd.randbytes(n))
        assert c.encrypt(packet) == first
        assert c.decrypt(first) == packet


OPENSSL_REFERENCE = {
    "aes": (32, algorithms.AES),
    "aes-128": (16, algorithms.AES),
    "aes-192": (24, algorithms.AES),
    "sm4": (16, algorithms.SM4),
    "blowfish": (32, old_algorithms.Blowfish),
    "cast5": (16, old_algorithms.CAST5),
    "3des": (24, old_algorithms.TripleDES),
}


@pytest.mark.parametrize("name", sorted(OPENSSL_REFERENCE))
def test_kept_context_cfb_equals_fresh_context_cfb(name: str) -> None:
    """The context-reuse tricks (padding, IV reset block) give exactly a fresh CFB per packet."""
    size, alg = OPENSSL_REFERENCE[name]
    c = _block(name)
    rnd = random.Random(name)
    bs = alg(KEY[:size]).block_size // 8
    for _ in range(200):
        data = rnd.randbytes(rnd.choice([rnd.randrange(0, 40), rnd.randrange(0, 1500)]))
        ref = Cipher(alg(KEY[:size]), CFB(INITIAL_VECTOR[:bs]))
        want = ref.encryptor().update(data)
        if rnd.random() < 0.5:
            assert c.encrypt(data) == want
        else:
            assert c.decrypt(want) == data


def test_aead_round_trip_and_sizes() -> None:
    a = new_crypt("aes-128-gcm", KEY)
    assert isinstance(a, AEADCrypt)
    assert (a.nonce_size, a.overhead, a.name) == (12, 16, "aes-128-gcm")
    for n in (0, 1, 1400):
        nonce = bytes([n % 255 + 1]) * 12
        sealed = a.seal(nonce, bytes(n))
        assert len(sealed) == n + 16
        assert a.open(nonce, sealed) == bytes(n)
        assert a.open(bytes(12), sealed) is None  # another nonce: the tag fails


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_null_is_no_crypt_layer() -> None:
    assert new_crypt("null", KEY) is None


def test_unknown_cipher_and_short_key_are_usage_errors() -> None:
    with pytest.raises(KCPUsageError, match="unknown cipher"):
        new_crypt("rot13", KEY)
    with pytest.raises(KCPUsageError, match="at least 32"):
        new_crypt("aes", KEY[:16])
    with pytest.raises(KCPUsageError):
        AESGCMCrypt(bytes(5))
    with pytest.raises(KCPUsageError):
        kc._twofish_block(bytes(20))


def test_registry_is_pluggable() -> None:
    class Reverse:
        name = "test-reverse"

        def encrypt(self, data: bytes) -> bytes:
            return data[::-1]

        decrypt = encrypt

    register_cipher("test-reverse", 4, lambda key: Reverse())
    try:
        c = new_crypt("test-reverse", b"abcd")
        assert isinstance(c, BlockCrypt)
        assert c.encrypt(b"xyz") == b"zyx"
        with pytest.raises(KCPUsageError, match="already registered"):
            register_cipher("test-reverse", 4, lambda key: Reverse())
        register_cipher("test-reverse", None, lambda key: None, replace=True)
        assert new_crypt("test-reverse", b"") is None
    finally:
        kc._REGISTRY.pop("test-reverse", None)
