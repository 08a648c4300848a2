"""Flood: 100,000 spoofed initiations from random source addresses. The server's state stays
bounded (counted objects) and a real client completes its handshake while the flood runs."""

from __future__ import annotations

import gc
import random
import struct

from kcp.secure import HandshakeConfig, SecureClient, SecureConnection, SecureServer, generate_keypair
from kcp.secure.cookie import mac16
from kcp.secure.handshake import _HalfOpen, _mac1_key
from kcp.secure.packet import PATTERN_IKPSK2, T_INITIATION, T_RESPONSE, T_RETRY, WIRE_VERSION
from kcp.secure.testing import seeded_rng

FLOOD = 100_000
SERVER_PRIV, SERVER_PUB = generate_keypair(seeded_rng(7))


def count(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def spoofed_initiations(rng: random.Random, n: int) -> list[tuple[bytes, tuple[str, int]]]:
    """Initiations an off-path attacker who knows the server's public key can make cheaply:
    valid mac1, random ephemeral key and ciphertext, random client CID, spoofed source."""
    key = _mac1_key(PATTERN_IKPSK2, SERVER_PUB)
    head = bytes((T_INITIATION, WIRE_VERSION, 2, PATTERN_IKPSK2))
    pad = bytes(1200 - 32 - 14 - 96 - 60)
    out = []
    for _ in range(n):
        body = head + rng.randbytes(8) + struct.pack(">H", 156) + rng.randbytes(156) + pad
        body += mac16(key, body)
        addr = (
            f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            rng.randrange(1024, 65536),
        )
        out.append((body + bytes(16), addr))
    return out


def test_flood_of_spoofed_initiations_keeps_memory_bounded_and_a_real_client_connects() -> None:
    cfg = HandshakeConfig(static_key=SERVER_PRIV, retry_threshold=64, retry_rate=200, max_half_open=256)
    server = SecureServer(cfg, seeded_rng(20))
    rng = random.Random(21)
    flood = spoofed_initiations(rng, FLOOD)
    assert all(len(d) == 1200 for d, _ in flood[:10])
    client_addr = ("198.51.100.7", 40404)
    client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(22))
    conn: SecureConnection | None = None
    replies = retries = biggest = 0
    sizes: list[dict[str, int]] = []
    half_open_objects = 0
    for i, (dgram, addr) in enumerate(flood):
        now = i // 10  # 10,000 initiations per second
        r = server.receive(dgram, addr, now)
        for reply, _ in r.replies:
            replies += 1
            retries += reply[0] == T_RETRY
            biggest = max(biggest, len(reply))
        if i == FLOOD // 2 + 5_001:  # the real client starts in the middle of the flood (mid-second)
            to_server = [client.initiate(now)]
            for _round in range(4):
                nxt: list[bytes] = []
                for d in to_server:
                    for reply, to in server.receive(d, client_addr, now).replies:
                        assert to == client_addr and len(reply) <= len(d)
                        got = client.receive(reply, ("192.0.2.1", 4000), now)
                        if got is not None:
                            conn = got
                    nxt += client.datagrams_to_send(now)
                if conn is not None:
                    nxt += [d for d, _ in conn.datagrams_to_send(now)]
                to_server = nxt
            half_open_objects = count(_HalfOpen)
        if i % 10_000 == 0:
            sizes.append(server.state_sizes())
    c = server.counters
    # the real client got through: retry, then response, then its confirmation was accepted
    assert client.state == "established" and conn is not None
    assert client.counters.retries_received == 1
    assert len(server.connections) == 1
    assert server.receive(conn.seal(b"hello during flood", 10_000), client_addr, 10_000).payload == (
        b"hello during flood"
    )
    # nothing the flood sent created state: it cannot complete a handshake
    assert c.handshake_decrypt_errors + c.retries_sent + 1 >= FLOOD
    assert c.retries_sent > 0.9 * FLOOD  # almost everything was answered with a stateless retry
    assert c.handshake_decrypt_errors <= 200 * (FLOOD // 10_000 + 1)  # DH work is rate-limited
    assert c.half_open_max <= 1 and half_open_objects <= 1
    for s in sizes:
        assert s["half_open"] <= cfg.max_half_open and s["seen"] <= cfg.replay_cache and s["connections"] <= 1
    # no amplification: every reply is smaller than the initiation that caused it
    assert biggest <= 1200 and replies == retries == c.retries_sent - client.counters.retries_received
    assert count(SecureConnection) >= 1  # the real one (plus the client's view)


def test_a_flood_of_valid_handshakes_is_capped_by_the_half_open_limit() -> None:
    """Attackers that own real addresses and complete the DH still cannot pile up state."""
    cfg = HandshakeConfig(static_key=SERVER_PRIV, retry_threshold=10_000, retry_rate=10_000, max_half_open=32)
    server = SecureServer(cfg, seeded_rng(30))
    for i in range(300):
        c = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(1000 + i))
        r = server.receive(c.initiate(i), ("203.0.113.5", 1000 + i), i)
        assert len(r.replies) == 1 and r.replies[0][0][0] == T_RESPONSE
    assert server.half_open == 32 and count(_HalfOpen) == 32
    assert server.counters.half_open_evicted == 300 - 32
