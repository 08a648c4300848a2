"""Secure-mode benchmark: handshakes per second on one core, and µs per 1400-byte packet for
secure mode (AEAD, kept keys, header as AD, replay window) against compat mode (kcp-go's
nonce + crc32 + AES-CFB, through kcp.pipeline) in the same run.

Contenders run in alternation (A B C ... A B C ...) for several rounds; the median of the rounds
is reported. Only ratios within one run are meaningful on this machine.

    python bench/secure.py            # ~20 s
    python bench/secure.py --quick    # ~4 s
    python bench/secure.py --aead     # ~5 s: only the AEAD figures for 100-byte packets (--size)

What is measured:
  handshake full         client initiate + server answer + client finish + server confirm, one process
  handshake server side  only the server's work per handshake (answer + confirm), timed inside the loop
  retry reply            the server's stateless answer to an initiation under load (mac1 + cookie)
  <mode> seal+open       one 1400-byte KCP packet sealed by one side and opened by the other
  aead ...               (--aead) one packet's AEAD alone, kcp.secure._aead against cryptography:
                         seal = header + ciphertext + tag with the header as associated data (what
                         SecureConnection.seal does), open = its inverse on the whole datagram;
                         then SecureConnection.seal and seal+open with the AEAD in use
                         (KCPRPC_NATIVE_AEAD=0 in the environment: cryptography's)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from _common import Contender, alternate_rounds, print_rounds

import kcp.secure
from kcp.crypt import derive_key, new_crypt
from kcp.pipeline import Pipeline
from kcp.secure import HandshakeConfig, SecureClient, SecureConnection, SecureServer, generate_keypair
from kcp.secure.packet import TRANSPORT_HEADER
from kcp.stats import Counters

SIZE = 1400
KEY = derive_key("bench")
SERVER_PRIV, SERVER_PUB = generate_keypair()
CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4000)


def kcp_packet() -> bytes:
    return (0x11223344).to_bytes(4, "little") + bytes([81, 0]) + os.urandom(SIZE - 6)


def handshake_contenders(server_time: list[float]) -> list[Contender]:
    scfg = HandshakeConfig(
        static_key=SERVER_PRIV,
        retry_threshold=1 << 30,
        retry_rate=1 << 30,
        max_half_open=1 << 16,
        replay_cache=1 << 16,
    )
    ccfg = HandshakeConfig(server_public_key=SERVER_PUB)
    server = SecureServer(scfg)
    clock = [0]

    def full() -> None:
        clock[0] += 1
        now = clock[0]
        client = SecureClient(ccfg)
        init = client.initiate(now)
        t = time.perf_counter()
        r = server.receive(init, CLIENT_ADDR, now)
        server_time[0] += time.perf_counter() - t
        conn = client.receive(r.replies[0][0], SERVER_ADDR, now)
        assert conn is not None
        ((confirm, _),) = conn.datagrams_to_send(now)
        t = time.perf_counter()
        ok = server.receive(confirm, CLIENT_ADDR, now).accepted
        server_time[0] += time.perf_counter() - t
        server_time[1] += 1
        assert ok
        server.remove(server.connections[conn.remote_cid])

    loaded = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, always_retry=True))
    init = SecureClient(ccfg).initiate(0)

    def retry() -> None:
        assert loaded.receive(init, CLIENT_ADDR, 0).replies

    return [("handshake full (IKpsk2, both sides)", 1, full), ("retry reply under load", 1, retry)]


def packet_contenders() -> list[Contender]:
    out: list[Contender] = []
    pkt = kcp_packet()
    for name in ("aes", "aes-128"):
        tx = Pipeline(new_crypt(name, KEY), 0, 0, Counters())
        rx = Pipeline(new_crypt(name, KEY), 0, 0, Counters())
        assert rx.open(tx.seal(pkt, 0)[0], 0)[0][1] == pkt

        def compat(tx: Pipeline = tx, rx: Pipeline = rx) -> None:
            rx.open(tx.seal(pkt, 0)[0], 0)

        out.append((f"compat {name} (CFB + crc32) seal+open", 1, compat))
    for suite in ("aesgcm", "chachapoly"):
        c, s = connected(suite)
        assert s.open(c.seal(pkt, 0), CLIENT_ADDR, 0) == pkt
        clock = [0]

        def secure(c: SecureConnection = c, s: SecureConnection = s, clock: list[int] = clock) -> None:
            clock[0] += 1
            s.open(c.seal(pkt, clock[0]), CLIENT_ADDR, clock[0])

        out.append((f"secure {suite} seal+open", 1, secure))
        null_tx = Pipeline(None, 0, 0, Counters())
        null_rx = Pipeline(None, 0, 0, Counters())

        def secure_pipe(
            c: SecureConnection = c,
            s: SecureConnection = s,
            clock: list[int] = clock,
            null_tx: Pipeline = null_tx,
            null_rx: Pipeline = null_rx,
        ) -> None:
            clock[0] += 1
            wire = c.seal(null_tx.seal(pkt, 0)[0], clock[0])
            inner = s.open(wire, CLIENT_ADDR, clock[0])
            assert inner is not None
            null_rx.open(inner, 0)

        out.append((f"secure {suite} + null pipeline seal+open", 1, secure_pipe))
    return out


def connected(suite: str) -> tuple[SecureConnection, SecureConnection]:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV))
    client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB, suites=(suite,)))
    r = server.receive(client.initiate(0), CLIENT_ADDR, 0)
    c = client.receive(r.replies[0][0], SERVER_ADDR, 0)
    assert c is not None
    ((confirm, _),) = c.datagrams_to_send(0)
    s = server.receive(confirm, CLIENT_ADDR, 0).connection
    assert s is not None
    return c, s


def aead_contenders(size: int) -> list[Contender]:
    from cryptography.hazmat.primitives.ciphers import aead as crypto

    try:
        from kcp.secure import _aead as native
    except ImportError:
        native = None  # type: ignore[assignment]
        print("kcp.secure._aead is not built here (pure build): cryptography only\n")
    out: list[Contender] = []
    key, nonce, plaintext = os.urandom(32), os.urandom(12), os.urandom(size)
    header = os.urandom(TRANSPORT_HEADER)
    h = TRANSPORT_HEADER
    for suite, ref_class, native_class in (
        ("aesgcm", crypto.AESGCM, native and native.AESGCM),
        ("chachapoly", crypto.ChaCha20Poly1305, native and native.ChaCha20Poly1305),
    ):
        ref = ref_class(key)
        packet = header + ref.encrypt(nonce, plaintext, header)

        def crypto_seal(ref: Any = ref) -> None:
            header + ref.encrypt(nonce, plaintext, header)

        def crypto_open(ref: Any = ref, packet: bytes = packet) -> None:
            view = memoryview(packet)
            ref.decrypt(nonce, view[h:], view[:h])

        out.append((f"aead {suite} seal {size} B: cryptography (header + encrypt)", 1, crypto_seal))
        if native_class:
            ours = native_class(key)
            assert ours.seal(header, nonce, plaintext) == packet and ours.open(packet, h, nonce) == plaintext

            def native_seal(ours: Any = ours) -> None:
                ours.seal(header, nonce, plaintext)

            def native_open(ours: Any = ours, packet: bytes = packet) -> None:
                ours.open(packet, h, nonce)

            out.append((f"aead {suite} seal {size} B: native", 1, native_seal))
        out.append((f"aead {suite} open {size} B: cryptography (views + decrypt)", 1, crypto_open))
        if native_class:
            out.append((f"aead {suite} open {size} B: native", 1, native_open))
    pkt = kcp_packet()[:size]
    for suite in ("aesgcm", "chachapoly"):
        c, s = connected(suite)
        clock = [0]

        def seal(c: SecureConnection = c, clock: list[int] = clock) -> None:
            clock[0] += 1
            c.seal(pkt, clock[0])

        def seal_open(c: SecureConnection = c, s: SecureConnection = s, clock: list[int] = clock) -> None:
            clock[0] += 1
            s.open(c.seal(pkt, clock[0]), CLIENT_ADDR, clock[0])

        out.append((f"SecureConnection {suite} seal {size} B", 1, seal))
        out.append((f"SecureConnection {suite} seal+open {size} B", 1, seal_open))
    return out


def run_aead(rounds: int, target_s: float, size: int) -> None:
    res = alternate_rounds(aead_contenders(size), rounds, target_s)
    print(f"AEAD per packet, median of {rounds} alternating rounds (python {sys.version.split()[0]})")
    # (a build older than kcp.secure.aead, bench/builds.py's base side: cryptography, called inline)
    print(f"in use: {getattr(kcp.secure, 'AEAD_BACKEND', 'cryptography (before kcp.secure.aead)')}")
    m = print_rounds(res, "9.3f", " µs")
    print()
    for suite in ("aesgcm", "chachapoly"):
        for op, ref in (("seal", "header + encrypt"), ("open", "views + decrypt")):
            native = m.get(f"aead {suite} {op} {size} B: native")
            base = m[f"aead {suite} {op} {size} B: cryptography ({ref})"]
            if native is not None:
                print(
                    f"{suite} {op}: native {native:.3f} µs vs cryptography {base:.3f} µs: {base / native:.2f}x"
                )


def run(rounds: int, target_s: float) -> None:
    server_time = [0.0, 0]
    hs = handshake_contenders(server_time)
    pk = packet_contenders()
    res = alternate_rounds(hs + pk, rounds, target_s)
    print(f"secure mode benchmark, median of {rounds} alternating rounds (python {sys.version.split()[0]})")
    m = print_rounds(res, "9.2f", " µs")
    full = m["handshake full (IKpsk2, both sides)"]
    srv = server_time[0] / max(1, server_time[1]) * 1e6
    print()
    print(
        f"handshakes/s on one core: {1e6 / full:,.0f} full (both sides), "
        f"{1e6 / srv:,.0f} server side only ({srv:.0f} µs each)"
    )
    print(f"stateless retries/s under load: {1e6 / m['retry reply under load']:,.0f}")
    base = m["compat aes (CFB + crc32) seal+open"]
    for suite in ("aesgcm", "chachapoly"):
        ours = m[f"secure {suite} seal+open"]
        print(
            f"secure {suite} seal+open {ours:.2f} µs vs compat aes {base:.2f} µs: {base / ours:.2f}x "
            f"(with null pipeline: {base / m[f'secure {suite} + null pipeline seal+open']:.2f}x)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (about 4 s)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--aead", action="store_true", help="only the AEAD figures (about 5 s)")
    ap.add_argument("--size", type=int, default=100, help="--aead's packet size (default 100)")
    args = ap.parse_args()
    if args.aead:
        run_aead(args.rounds or 7, 0.05, args.size)
        return
    run(args.rounds or (5 if args.quick else 15), 0.02 if args.quick else 0.1)


if __name__ == "__main__":
    main()
