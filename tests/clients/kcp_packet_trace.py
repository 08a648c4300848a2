"""The Python packet pipeline (kcp/pipeline.py) on seeded inputs, printed as JSON for the
TypeScript cross-check (clients/typescript/test/kcp_packet.test.ts).

For each (crypt, FEC) configuration: a sender pipeline seals random KCP-like packets (with a
counter as the nonce source: call k returns the next n bytes of 0, 1, 2, ... mod 256) and OOB
payloads at given times; a receiver pipeline opens the datagrams that a seeded lossy link lets
through, plus some garbage (short, corrupted, random). The JSON holds the inputs, every sealed
datagram, every open result and both pipelines' counters at the end.

Usage: python tests/clients/kcp_packet_trace.py SEED
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from kcp.crypt import derive_key, new_crypt
from kcp.pipeline import Pipeline
from kcp.stats import Counters

CONFIGS = [
    (c, f)
    for c in ("aes", "aes-128", "aes-192", "aes-128-gcm", "none", "null")
    for f in ((0, 0), (10, 3), (3, 2))
]
COUNTERS = ("short_packets", "in_csum_errors", "decrypt_errors", "fec_errs", "fec_recovered",
            "fec_parity_shards", "fec_short_shards", "oob_in", "oob_out", "in_errs")  # fmt: skip
PASSPHRASE = "it's a secrect"


class CounterRng:
    def __init__(self) -> None:
        self.c = 0

    def __call__(self, n: int) -> bytes:
        out = bytes((self.c + j) & 0xFF for j in range(n))
        self.c += n
        return out


def run(seed: int, crypt_name: str, fec: tuple[int, int]) -> dict[str, Any]:
    rng = random.Random(f"{seed}/{crypt_name}/{fec}")
    key = derive_key(PASSPHRASE)
    tx_c, rx_c = Counters(), Counters()
    # peers known to run the FEC (parity from the first group, as kcp-go and the TypeScript client
    # send it; a compat session learns it from its peer's first packet: kcp.pipeline)
    tx = Pipeline(new_crypt(crypt_name, key), fec[0], fec[1], tx_c, CounterRng(), peer_fec=True)
    rx = Pipeline(new_crypt(crypt_name, key), fec[0], fec[1], rx_c, CounterRng(), peer_fec=True)
    steps: list[dict[str, Any]] = []
    now = 1_000_000
    for _ in range(120):
        now += rng.choice([1, 5, 20, 600])  # 600 ms gaps make the encoder skip a group's parity
        if rng.random() < 0.1:
            payload = rng.randbytes(rng.randint(0, 100))
            out = [tx.seal_oob(payload, 0x11223344)]
            step: dict[str, Any] = {"op": "oob", "data": payload.hex(), "now": now}
        else:
            n = rng.choice([24, 30, rng.randint(24, 1300)])
            packet = rng.randbytes(n)
            out = tx.seal(packet, now)
            step = {"op": "seal", "data": packet.hex(), "now": now}
        step["out"] = [d.hex() for d in out]
        deliver = []
        for d in out:
            r = rng.random()
            if r < 0.15:
                continue  # lost
            if r < 0.2:  # corrupted in flight
                b = bytearray(d)
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                d = bytes(b)
            deliver.append(d.hex())
        if rng.random() < 0.1:
            deliver.append(rng.randbytes(rng.randint(0, 40)).hex())  # garbage
        step["deliver"] = deliver
        step["opened"] = [[[k, p.hex()] for k, p in rx.open(bytes.fromhex(d), now)] for d in deliver]
        steps.append(step)
    return {
        "crypt": crypt_name,
        "fec": list(fec),
        "steps": steps,
        "tx": {k: getattr(tx_c, k) for k in COUNTERS},
        "rx": {k: getattr(rx_c, k) for k in COUNTERS},
        "overhead": tx.overhead,
    }


if __name__ == "__main__":
    json.dump([run(int(sys.argv[1]), c, f) for c, f in CONFIGS], sys.stdout)
