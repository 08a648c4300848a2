"""kcp.secure.aead: the native AEAD module (kcp/secure/_aead.c, compiled build) and the
``cryptography`` fallback, both checked against ``cryptography``'s own AESGCM and ChaCha20Poly1305.

Every test runs on the fallback; the ``native`` cases need kcp.secure._aead, which only the compiled
build has: they are skipped in the pure build and must run (not skip) when
KCPRPC_EXPECT_COMPILED=1 (.ci/run's compiled run), where the native module must also be in use.
"""

from __future__ import annotations

import copy
import mmap
import os
import random
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import aead as crypto
from hypothesis import given
from hypothesis import strategies as st

import kcp.secure
from kcp.secure import aead, noise
from kcp.secure.aead import AEAD, CryptographyAESGCM, CryptographyChaCha20Poly1305, self_test

EXPECT_COMPILED = os.environ.get("KCPRPC_EXPECT_COMPILED", "") == "1"

native_module: ModuleType | None
try:
    import kcp.secure._aead as native_module
except ImportError:
    native_module = None

Factory = Callable[[Any], AEAD]
Reference = Callable[[bytes], Any]
# (name, key length, reference class)
CIPHERS = [
    ("aes128", 16, crypto.AESGCM),
    ("aes192", 24, crypto.AESGCM),
    ("aes256", 32, crypto.AESGCM),
    ("chacha", 32, crypto.ChaCha20Poly1305),
]


def native() -> ModuleType:
    if native_module is None:
        if EXPECT_COMPILED:
            pytest.fail("the compiled build has no kcp.secure._aead")
        pytest.skip("kcp.secure._aead is built with the compiled build only")
    return native_module


def factory(impl: str, cipher: str) -> Factory:
    chacha = cipher == "chacha"
    if impl == "native":
        mod = native()
        return mod.ChaCha20Poly1305 if chacha else mod.AESGCM  # type: ignore[no-any-return]
    return CryptographyChaCha20Poly1305 if chacha else CryptographyAESGCM


@pytest.fixture(params=["fallback", "native"])
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "native":
        native()
    return str(request.param)


@pytest.fixture(params=[c[0] for c in CIPHERS])
def cipher(request: pytest.FixtureRequest) -> tuple[str, int, Reference]:
    return next(c for c in CIPHERS if c[0] == request.param)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --------------------------------------------------------------------------------- in use


def test_the_compiled_build_uses_the_native_aead() -> None:
    if EXPECT_COMPILED:
        assert kcp.secure.NATIVE_AEAD, kcp.secure.AEAD_BACKEND
        assert native_module is not None
    assert kcp.secure.NATIVE_AEAD is aead.NATIVE_AEAD
    if aead.NATIVE_AEAD:
        assert native_module is not None
        assert aead.AESGCM is native_module.AESGCM
        assert aead.ChaCha20Poly1305 is native_module.ChaCha20Poly1305
        assert aead.AEAD_BACKEND.startswith("kcp.secure._aead on ")
        assert "SSL" in native_module.openssl_version()
    else:
        assert aead.AESGCM is CryptographyAESGCM
        assert aead.ChaCha20Poly1305 is CryptographyChaCha20Poly1305
        assert aead.AEAD_BACKEND.startswith("cryptography ")
    # the suites, the traffic keys and compat mode's aes-128-gcm build the selected classes
    assert noise.AESGCM256.factory is aead.AESGCM
    assert noise.CHACHAPOLY.factory is aead.ChaCha20Poly1305
    from kcp.crypt import new_crypt
    from kcp.secure.keys import EpochKeys

    assert type(EpochKeys(noise.AESGCM256, bytes(32), 0).aead) is aead.AESGCM
    gcm = new_crypt("aes-128-gcm", bytes(32))
    assert gcm is not None and type(gcm._aead) is aead.AESGCM  # type: ignore[union-attr]


def test_the_environment_can_ask_for_cryptography() -> None:
    env = {**os.environ, "KCPRPC_NATIVE_AEAD": "0"}
    code = "import kcp.secure as s; print(s.NATIVE_AEAD, s.AEAD_BACKEND)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.startswith("False cryptography "), out
    assert "KCPRPC_NATIVE_AEAD=0" in out


def test_self_test_accepts_cryptography_and_rejects_a_wrong_aead() -> None:
    self_test(CryptographyAESGCM, CryptographyChaCha20Poly1305)
    if native_module is not None:
        self_test(native_module.AESGCM, native_module.ChaCha20Poly1305)

    class Swapped(CryptographyAESGCM):  # AES-GCM standing in for ChaCha20-Poly1305
        __slots__ = ()

    with pytest.raises(RuntimeError):
        self_test(CryptographyAESGCM, Swapped)

    class Forgiving(CryptographyChaCha20Poly1305):
        __slots__ = ()

        def __init__(self, key: Any) -> None:
            super().__init__(key)
            strict = self.decrypt

            def decrypt(nonce: Any, data: Any, ad: Any) -> bytes:
                try:
                    return strict(nonce, data, ad)
                except InvalidTag:
                    return b""

            self.decrypt = decrypt

    with pytest.raises(RuntimeError, match="forged"):
        self_test(CryptographyAESGCM, Forgiving)


# --------------------------------------------------------------------------------- same bytes


@given(
    data=st.data(),
    length=st.integers(0, 2000),
    aad=st.none() | st.binary(max_size=80),
)
def test_same_bytes_as_cryptography(data: st.DataObject, length: int, aad: bytes | None) -> None:
    impls = ["fallback"] + (["native"] if native_module is not None or EXPECT_COMPILED else [])
    name, key_len, ref_class = data.draw(st.sampled_from(CIPHERS))
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    key = rnd.randbytes(key_len)
    nonce = rnd.randbytes(12)
    plaintext = rnd.randbytes(length)
    ref = ref_class(key)
    sealed = ref.encrypt(nonce, plaintext, aad)
    assert len(sealed) == length + 16
    for impl in impls:
        ours = factory(impl, name)(key)
        assert ours.encrypt(nonce, plaintext, aad) == sealed
        assert ours.decrypt(nonce, sealed, aad) == plaintext
        assert ref.decrypt(nonce, ours.encrypt(nonce, plaintext, aad), aad) == plaintext
        header = aad or b""
        packet = ours.seal(header, nonce, plaintext)
        assert packet == header + ref.encrypt(nonce, plaintext, header)
        assert ours.open(packet, len(header), nonce) == plaintext


def test_every_bytes_like_argument(impl: str, cipher: tuple[str, int, Reference]) -> None:
    name, key_len, ref_class = cipher
    key = os.urandom(key_len)
    nonce, header, plaintext = os.urandom(12), os.urandom(29), os.urandom(300)
    sealed = ref_class(key).encrypt(nonce, plaintext, header)
    ours = factory(impl, name)(bytearray(key))
    for conv in (bytes, bytearray, memoryview):
        assert ours.encrypt(conv(nonce), conv(plaintext), conv(header)) == sealed
        assert ours.decrypt(conv(nonce), conv(sealed), conv(header)) == plaintext
        assert ours.open(conv(header + sealed), len(header), conv(nonce)) == plaintext
    assert ours.seal(header, memoryview(nonce), bytearray(plaintext)) == header + sealed
    # slices of one datagram (what secure mode's open used to pass)
    view = memoryview(b"x" + header + sealed + b"y")[1:-1]
    assert ours.decrypt(nonce, view[len(header) :], view[: len(header)]) == plaintext
    assert ours.open(view, len(header), nonce) == plaintext
    # the keywords of cryptography's methods
    assert ours.encrypt(nonce=nonce, data=plaintext, associated_data=header) == sealed
    assert ours.decrypt(nonce, data=sealed, associated_data=header) == plaintext
    # no associated data is the same as empty associated data
    assert ours.encrypt(nonce, plaintext, None) == ours.encrypt(nonce, plaintext, b"")
    assert ours.open(ours.encrypt(nonce, plaintext, None), 0, nonce) == plaintext


@pytest.mark.parametrize("pn", [0, 1, 0x0123456789ABCDEF, (1 << 64) - 1])
def test_numbered_packets_are_seal_with_the_header_and_nonce_they_name(
    impl: str, cipher: tuple[str, int, Reference], pn: int
) -> None:
    # seal_pn/open_pn: header prefix + pn (8 bytes, big-endian), nonce iv XOR pn (secure mode's
    # transport packets), the same bytes as cryptography's with that header and nonce
    name, key_len, ref_class = cipher
    key, iv, prefix, plaintext = os.urandom(key_len), os.urandom(12), os.urandom(9), os.urandom(77)
    header = prefix + pn.to_bytes(8, "big")
    nonce = bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big"), strict=True))
    assert aead.pn_nonce(iv, pn) == nonce
    packet = header + ref_class(key).encrypt(nonce, plaintext, header)
    ours = factory(impl, name)(key)
    assert ours.seal_pn(prefix, pn, iv, plaintext) == packet
    assert ours.open_pn(packet, len(header), pn, iv) == plaintext
    assert ours.open_pn(memoryview(b"x" + packet)[1:], len(header), pn, bytearray(iv)) == plaintext
    for wrong_pn in ((pn + 1) % (1 << 64), pn ^ (1 << 63)):
        with pytest.raises(InvalidTag):
            ours.open_pn(packet, len(header), wrong_pn, iv)
    with pytest.raises(InvalidTag):
        ours.open_pn(flip(packet, 3), len(header), pn, iv)  # the header is authenticated
    with pytest.raises(ValueError):
        ours.seal_pn(prefix, pn, iv[:11], plaintext)
    with pytest.raises(ValueError):
        ours.open_pn(packet, len(header), pn, iv + b"x")
    with pytest.raises(ValueError):
        ours.seal_pn(bytes(65), pn, iv, plaintext)
    with pytest.raises(ValueError):
        ours.open_pn(packet, len(packet) + 1, pn, iv)
    for bad in (-1, 1 << 64):
        with pytest.raises(OverflowError):
            ours.seal_pn(prefix, bad, iv, plaintext)
        with pytest.raises(OverflowError):
            ours.open_pn(packet, len(header), bad, iv)


# --------------------------------------------------------------------------------- rejection


def test_any_flipped_bit_is_refused(impl: str, cipher: tuple[str, int, Reference]) -> None:
    name, key_len, _ = cipher
    rnd = random.Random(5)
    ours = factory(impl, name)(rnd.randbytes(key_len))
    for length in (0, 1, 15, 16, 17, 100, 1400):
        nonce, aad, plaintext = rnd.randbytes(12), rnd.randbytes(13), rnd.randbytes(length)
        sealed = ours.encrypt(nonce, plaintext, aad)
        bits = [*range(8 * length), *rnd.sample(range(8 * length, 8 * length + 128), 32)]
        for bit in rnd.sample(bits, min(len(bits), 40)):  # ciphertext and tag
            with pytest.raises(InvalidTag):
                ours.decrypt(nonce, flip(sealed, bit), aad)
            with pytest.raises(InvalidTag):
                ours.open(aad + flip(sealed, bit), len(aad), nonce)
        for bit in rnd.sample(range(96), 12):
            with pytest.raises(InvalidTag):
                ours.decrypt(flip(nonce, bit), sealed, aad)
        for bit in rnd.sample(range(104), 12):
            with pytest.raises(InvalidTag):
                ours.decrypt(nonce, sealed, flip(aad, bit))
            with pytest.raises(InvalidTag):
                ours.open(flip(aad, bit) + sealed, len(aad), nonce)
        with pytest.raises(InvalidTag):
            ours.decrypt(nonce, sealed, None)  # the associated data left out
        with pytest.raises(InvalidTag):
            ours.decrypt(nonce, sealed + b"\x00", aad)
        with pytest.raises(InvalidTag):
            ours.decrypt(nonce, sealed[:-1], aad)
        with pytest.raises(InvalidTag):
            ours.open(aad + sealed, len(aad) - 1, nonce)  # the header boundary moved
        assert ours.decrypt(nonce, sealed, aad) == plaintext  # still fine after the failures


def test_data_shorter_than_a_tag_is_invalid(impl: str, cipher: tuple[str, int, Reference]) -> None:
    name, key_len, _ = cipher
    ours = factory(impl, name)(os.urandom(key_len))
    nonce = os.urandom(12)
    for n in range(16):
        with pytest.raises(InvalidTag):
            ours.decrypt(nonce, os.urandom(n), None)
        with pytest.raises(InvalidTag):
            ours.decrypt(nonce, bytes(n), b"aad")
        with pytest.raises(InvalidTag):
            ours.open(b"h" * 29 + os.urandom(n), 29, nonce)


def test_wrong_key_lengths(impl: str) -> None:
    for n in (0, 1, 15, 17, 23, 31, 33, 64):
        with pytest.raises(ValueError):
            factory(impl, "aes256")(bytes(n))
    for n in (0, 16, 24, 31, 33):
        with pytest.raises(ValueError):
            factory(impl, "chacha")(bytes(n))
    with pytest.raises(TypeError):
        factory(impl, "aes256")("k" * 32)


def test_wrong_nonce_lengths(impl: str, cipher: tuple[str, int, Reference]) -> None:
    name, key_len, _ = cipher
    ours = factory(impl, name)(os.urandom(key_len))
    sealed = ours.encrypt(bytes(12), b"data", None)
    # refused by both (cryptography's AESGCM takes 8 to 128 bytes, the native module exactly 12)
    lengths = (0, 7, 129) if impl == "fallback" else (0, 7, 8, 11, 13, 16, 129)
    for n in lengths:
        with pytest.raises(ValueError):
            ours.encrypt(bytes(n), b"data", None)
        with pytest.raises(ValueError):
            ours.decrypt(bytes(n), sealed, None)
        with pytest.raises(ValueError):
            ours.seal(b"h", bytes(n), b"data")
        with pytest.raises(ValueError):
            ours.open(b"h" + sealed, 1, bytes(n))


def test_bad_arguments(impl: str) -> None:
    ours = factory(impl, "aes256")(bytes(32))
    nonce = bytes(12)
    sealed = ours.encrypt(nonce, b"data", None)
    with pytest.raises(TypeError):
        ours.encrypt(nonce, "data", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ours.encrypt(nonce, b"data", "aad")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ours.encrypt(nonce, b"data")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ours.decrypt(nonce, None, None)  # type: ignore[arg-type]
    for header_len in (-1, len(sealed) + 1):
        with pytest.raises(ValueError):
            ours.open(sealed, header_len, nonce)
    with pytest.raises(TypeError):
        ours.open(sealed, "0", nonce)  # type: ignore[arg-type]


def test_native_keyword_errors_and_copies() -> None:
    mod = native()
    ours = mod.AESGCM(key=bytes(16))
    nonce = bytes(12)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ours.encrypt(nonce, b"x", aad=None)
    with pytest.raises(TypeError, match="multiple values"):
        ours.encrypt(nonce, b"x", None, nonce=nonce)
    with pytest.raises(TypeError):
        ours.encrypt(nonce, b"x", None, None)
    with pytest.raises(TypeError):
        mod.AESGCM()
    with pytest.raises(TypeError):  # no object without a key
        copy.copy(ours)
    with pytest.raises(TypeError):
        type(ours).__new__(type(ours))


def test_native_lengths_above_int_max_overflow() -> None:
    mod = native()
    try:
        big = mmap.mmap(-1, 2**31)  # never touched: only its length is read
    except (OSError, OverflowError, ValueError):
        pytest.skip("no 2 GiB mapping here")
    try:
        for cls in (mod.AESGCM, mod.ChaCha20Poly1305):
            ours = cls(bytes(32))
            with pytest.raises(OverflowError):
                ours.encrypt(bytes(12), big, None)
            with pytest.raises(OverflowError):
                ours.encrypt(bytes(12), b"x", big)
            with pytest.raises(OverflowError):
                ours.decrypt(bytes(12), big, None)
            with pytest.raises(OverflowError):
                ours.seal(big, bytes(12), b"x")
    finally:
        big.close()


# --------------------------------------------------------------------------------- reuse


def test_one_object_many_interleaved_calls(impl: str, cipher: tuple[str, int, Reference]) -> None:
    name, key_len, ref_class = cipher
    rnd = random.Random(11)
    key = rnd.randbytes(key_len)
    ref = ref_class(key)
    ours = factory(impl, name)(key)
    other = factory(impl, name)(rnd.randbytes(key_len))  # another key between the calls
    pending: list[tuple[bytes, bytes, bytes | None, bytes]] = []
    for i in range(600):
        nonce = rnd.randbytes(12)
        plaintext = rnd.randbytes(rnd.choice((0, 1, 16, 100, 1400, rnd.randrange(2000))))
        aad = rnd.choice((None, b"", rnd.randbytes(rnd.randrange(1, 64))))
        op = i % 5
        if op == 0:
            sealed = ours.encrypt(nonce, plaintext, aad)
        elif op == 1:
            header = aad or b""
            sealed = ours.seal(header, nonce, plaintext)[len(header) :]
        else:
            sealed = ref.encrypt(nonce, plaintext, aad)
        assert sealed == ref.encrypt(nonce, plaintext, aad)
        pending.append((nonce, sealed, aad, plaintext))
        other.encrypt(nonce, plaintext, aad)
        if rnd.random() < 0.3:
            with pytest.raises(InvalidTag):
                ours.decrypt(nonce, flip(sealed, rnd.randrange(8 * len(sealed))), aad)
            with pytest.raises(InvalidTag):
                other.decrypt(nonce, sealed, aad)
        # decrypt out of order, interleaved with the encryptions
        while pending and rnd.random() < 0.6:
            n, s, a, p = pending.pop(rnd.randrange(len(pending)))
            if rnd.random() < 0.5:
                assert ours.decrypt(n, s, a) == p
            else:
                header = a or b""
                assert ours.open(header + s, len(header), n) == p
    for n, s, a, p in pending:
        assert ours.decrypt(n, s, a) == p


def test_many_objects_come_and_go(impl: str) -> None:
    nonce = bytes(12)
    for i in range(2000):
        ours = factory(impl, "chacha" if i & 1 else "aes128")(bytes(32 if i & 1 else 16))
        assert ours.decrypt(nonce, ours.encrypt(nonce, b"x", None), None) == b"x"
        del ours
