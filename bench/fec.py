"""Micro-benchmark of kcp.fec: (10,3) encode and recovery of 3 lost data shards, 1400-byte packets.

Prints microseconds per KCP packet (amortised over whole groups). Contenders are alternated
(A B A B) in one run: our encoder/decoder, and a numpy table-lookup kernel for the same parity
maths (to show why the pure bytes.translate + int XOR kernel was chosen).

    python bench/fec.py            # ~10 s
    python bench/fec.py --quick    # ~2 s
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kcp.fec import FECDecoder, FECEncoder
from kcp.rs import get_codec, mul_table

DS, PS, PKT = 10, 3, 1400


def make_packets(groups: int, rng: random.Random) -> list[bytes]:
    return [rng.randbytes(PKT) for _ in range(groups * DS)]


def bench_encode(packets: list[bytes]) -> float:
    enc = FECEncoder(DS, PS)
    encode = enc.encode
    t0 = time.perf_counter()
    for i, p in enumerate(packets):
        encode(p, i)
    return (time.perf_counter() - t0) / len(packets) * 1e6


def make_wire(packets: list[bytes]) -> list[bytes]:
    enc = FECEncoder(DS, PS)
    out: list[bytes] = []
    for i, p in enumerate(packets):
        out += enc.encode(p, i)
    return out


def lossy(wire: list[bytes], rng: random.Random, lost: int) -> list[bytes]:
    """Drop ``lost`` data shards from each group (the decoder must rebuild them from parity)."""
    n = DS + PS
    kept: list[bytes] = []
    for g in range(0, len(wire), n):
        drop = set(rng.sample(range(DS), lost))
        kept += [s for i, s in enumerate(wire[g : g + n]) if i not in drop]
    return kept


def bench_decode(kept: list[bytes], packets: int) -> tuple[float, int]:
    dec = FECDecoder(DS, PS)
    decode = dec.decode
    t0 = time.perf_counter()
    got = 0
    for s in kept:
        got += len(decode(s, 0))
    return (time.perf_counter() - t0) / packets * 1e6, got


def numpy_kernel() -> Callable[[list[bytes]], list[bytes]] | None:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return None
    codec = get_codec(DS, PS)
    table = np.frombuffer(b"".join(mul_table(c) for c in range(256)), dtype=np.uint8)
    coeffs = np.array([codec.matrix[DS + p] for p in range(PS)], dtype=np.intp)[:, :, None] << 8

    def parity(bodies: list[bytes]) -> list[bytes]:
        size = max(len(b) for b in bodies)
        d = np.frombuffer(b"".join(b.ljust(size, b"\0") for b in bodies), dtype=np.uint8).reshape(DS, size)
        prod = table[coeffs + d[None, :, :]]
        return [row.tobytes() for row in np.bitwise_xor.reduce(prod, axis=1)]

    return parity


def bench_kernel(kernel: Callable[[list[bytes]], list[bytes]], groups: list[list[bytes]]) -> float:
    t0 = time.perf_counter()
    for g in groups:
        kernel(g)
    return (time.perf_counter() - t0) / (len(groups) * DS) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run")
    args = ap.parse_args()
    rounds, groups = (3, 100) if args.quick else (5, 400)
    rng = random.Random(1234)
    packets = make_packets(groups, rng)
    wire = make_wire(packets)
    kept3 = lossy(wire, rng, 3)
    kept0 = lossy(wire, rng, 0)
    codec = get_codec(DS, PS)
    bodies = [
        [len(p).to_bytes(2, "little") + p for p in packets[g * DS : (g + 1) * DS]] for g in range(groups)
    ]
    size = PKT + 2
    ours: Callable[[list[bytes]], list[bytes]] = lambda b: codec.encode(b, size)  # noqa: E731
    npk = numpy_kernel()
    assert npk is None or npk(bodies[0]) == ours(bodies[0])

    res: dict[str, list[float]] = {}
    for _ in range(rounds):
        res.setdefault("encode (10,3), us/packet", []).append(bench_encode(packets))
        us, got = bench_decode(kept3, groups * DS)
        assert got == groups * 3
        res.setdefault("decode, 3 of 10 data lost, us/packet", []).append(us)
        res.setdefault("decode, no loss, us/packet", []).append(bench_decode(kept0, groups * DS)[0])
        res.setdefault("kernel translate+int parity, us/packet", []).append(bench_kernel(ours, bodies))
        if npk is not None:
            res.setdefault("kernel numpy lookup parity, us/packet", []).append(bench_kernel(npk, bodies))
    print(f"kcp.fec ({DS},{PS}), {PKT}-byte packets, {groups} groups x {rounds} rounds (median, min)")
    for name, vals in res.items():
        print(f"  {name:44s} {statistics.median(vals):7.2f}  {min(vals):7.2f}")
    if npk is not None:
        ratio = statistics.median(res["kernel numpy lookup parity, us/packet"]) / statistics.median(
            res["kernel translate+int parity, us/packet"]
        )
        print(f"  numpy kernel / translate kernel: {ratio:.2f}x")
    print(f"  (pid {os.getpid()})")


if __name__ == "__main__":
    main()
