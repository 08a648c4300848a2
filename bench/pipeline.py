"""Packet-layer benchmark: microseconds per 1400-byte packet through kcp.pipeline.

Contenders run in alternation (A B C ... A B C ...) for several rounds and the median of the rounds
is reported, so that the machine's speed changes hit every contender alike. Ratios are only
meaningful within one run.

    python bench/pipeline.py            # ~20 s
    python bench/pipeline.py --quick    # ~3 s

What is measured (one "op" = one 1400-byte KCP packet):
  crypt seal / open / seal+open   the whole pipeline: nonce, crc32, cipher (or AEAD), FEC off
  reference CFB                   the same AES-128-CFB done naively with cryptography: a new Cipher
                                  per packet, or a kept Cipher with new contexts per packet
  fec10/3 encode                  Pipeline.seal with FEC (10,3), no cipher, amortised per data packet
                                  (every 10th call also builds and returns the 3 parity shards)
  fec10/3 recover 3 lost          Pipeline.open of the 10 surviving shards of a group whose first 3
                                  data shards were lost, per data packet of the group (10)
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib

from _common import Contender, alternate_rounds, print_rounds
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kcp.crypt import INITIAL_VECTOR, derive_key, new_crypt
from kcp.pipeline import Pipeline
from kcp.stats import Counters

SIZE = 1400
KEY = derive_key("bench")


def kcp_packet(i: int) -> bytes:
    return (
        (0x11223344).to_bytes(4, "little")
        + bytes([81, 0])
        + os.urandom(SIZE - 6 - 4)
        + i.to_bytes(4, "little")
    )


def make_contenders() -> list[Contender]:
    """(label, ops per call, callable)."""
    out: list[Contender] = []
    pkt = kcp_packet(0)

    for name in ("null", "aes-128", "aes", "aes-128-gcm", "salsa20"):
        tx = Pipeline(new_crypt(name, KEY), 0, 0, Counters())
        rx = Pipeline(new_crypt(name, KEY), 0, 0, Counters())
        wire = tx.seal(pkt, 0)[0]
        assert rx.open(wire, 0)[0][1] == pkt

        def seal(tx: Pipeline = tx) -> None:
            tx.seal(pkt, 0)

        def open_(rx: Pipeline = rx, wire: bytes = wire) -> None:
            rx.open(wire, 0)

        def both(tx: Pipeline = tx, rx: Pipeline = rx) -> None:
            rx.open(tx.seal(pkt, 0)[0], 0)

        out += [(f"{name} seal", 1, seal), (f"{name} open", 1, open_), (f"{name} seal+open", 1, both)]

    # naive references for AES-128-CFB (with the same nonce + crc32 work as the pipeline)
    alg = algorithms.AES(KEY[:16])
    kept = Cipher(alg, CFB(INITIAL_VECTOR))

    def ref_new_cipher() -> None:
        body = os.urandom(16) + zlib.crc32(pkt).to_bytes(4, "little") + pkt
        wire = Cipher(algorithms.AES(KEY[:16]), CFB(INITIAL_VECTOR)).encryptor().update(body)
        plain = Cipher(algorithms.AES(KEY[:16]), CFB(INITIAL_VECTOR)).decryptor().update(wire)
        assert zlib.crc32(plain[20:]) == int.from_bytes(plain[16:20], "little")

    def ref_kept_cipher() -> None:
        body = os.urandom(16) + zlib.crc32(pkt).to_bytes(4, "little") + pkt
        wire = kept.encryptor().update(body)
        plain = kept.decryptor().update(wire)
        assert zlib.crc32(plain[20:]) == int.from_bytes(plain[16:20], "little")

    # the CFB choices alone, on a 1420-byte body (nonce + crc32 + packet)
    body = os.urandom(20) + pkt
    ours = new_crypt("aes-128", KEY)
    assert ours is not None and not hasattr(ours, "seal")
    ct = kept.encryptor().update(body)
    ecb = Cipher(alg, modes.ECB()).encryptor()
    m = (len(ct) + 15) // 16

    def enc_ours() -> None:
        ours.encrypt(body)  # type: ignore[union-attr]

    def enc_new_ctx() -> None:
        kept.encryptor().update(body)

    def dec_ours() -> None:
        ours.decrypt(ct)  # type: ignore[union-attr]

    def dec_new_ctx() -> None:
        kept.decryptor().update(ct)

    def dec_ecb_xor() -> None:
        ks = ecb.update(INITIAL_VECTOR + ct[: 16 * (m - 1)])
        (int.from_bytes(ct, "little") ^ int.from_bytes(ks[: len(ct)], "little")).to_bytes(len(ct), "little")

    out += [
        ("cfb encrypt: kept contexts + IV reset block", 1, enc_ours),
        ("cfb encrypt: new encryptor from kept Cipher", 1, enc_new_ctx),
        ("cfb decrypt: kept decryptor, IV fed first", 1, dec_ours),
        ("cfb decrypt: new decryptor from kept Cipher", 1, dec_new_ctx),
        ("cfb decrypt: kept ECB + int XOR", 1, dec_ecb_xor),
    ]
    out += [("ref aes-128 new Cipher/pkt seal+open", 1, ref_new_cipher)]
    out += [("ref aes-128 kept Cipher seal+open", 1, ref_kept_cipher)]

    # FEC (10,3) encode, amortised: one call = one group of 10 data packets (+3 parity)
    packets = [kcp_packet(i) for i in range(10)]
    for name in ("null", "aes-128"):
        enc = Pipeline(new_crypt(name, KEY), 10, 3, Counters())
        clock = [0]

        def fec_encode(enc: Pipeline = enc, clock: list[int] = clock) -> None:
            now = clock[0]
            for p in packets:
                enc.seal(p, now)
            clock[0] = now + 1

        out.append((f"fec10/3 {name} encode (per data pkt)", 10, fec_encode))

        # recovery: precompute many groups with the first 3 data shards lost
        gen = Pipeline(new_crypt(name, KEY), 10, 3, Counters())
        groups = []
        for g in range(64):
            wires = [w for i, p in enumerate(packets) for w in gen.seal(p, g * 10 + i)]
            assert len(wires) == 13
            groups.append(wires[3:])
        state = {"rx": Pipeline(new_crypt(name, KEY), 10, 3, Counters()), "i": 0}

        def fec_recover(
            state: dict[str, object] = state, groups: list[list[bytes]] = groups, name: str = name
        ) -> None:
            i = state["i"]
            assert isinstance(i, int)
            if i == len(groups):  # replaying old seqids would be ignored: start a fresh receiver
                state["rx"] = Pipeline(new_crypt(name, KEY), 10, 3, Counters())
                i = 0
            rx = state["rx"]
            assert isinstance(rx, Pipeline)
            n = 0
            for w in groups[i]:
                n += len(rx.open(w, 0))
            assert n == 10, n
            state["i"] = i + 1

        out.append((f"fec10/3 {name} recover 3 lost (per data pkt)", 10, fec_recover))
    return out


def run(rounds: int, target_s: float) -> None:
    results = alternate_rounds(make_contenders(), rounds, target_s)
    print(
        f"µs per {SIZE}-byte packet, median of {rounds} alternating rounds (python {sys.version.split()[0]})"
    )
    m = print_rounds(results)
    ours = m["aes-128 seal+open"]
    print()
    print(f"aes-128 seal+open: {ours:.2f} µs (goal < 15)")
    print(f"  ratio vs new Cipher per packet: {m['ref aes-128 new Cipher/pkt seal+open'] / ours:.2f}x faster")
    print(
        f"  ratio vs kept Cipher, new contexts: {m['ref aes-128 kept Cipher seal+open'] / ours:.2f}x faster"
    )
    print(f"aes-128-gcm seal+open: {m['aes-128-gcm seal+open']:.2f} µs")
    print(f"fec10/3 encode: {m['fec10/3 null encode (per data pkt)']:.2f} µs per data packet (goal < 10)")
    print(f"fec10/3 recover 3 lost: {m['fec10/3 null recover 3 lost (per data pkt)']:.2f} µs per data packet")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short run (about 3 s)")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    run(rounds, 0.01 if args.quick else 0.05)


if __name__ == "__main__":
    main()
