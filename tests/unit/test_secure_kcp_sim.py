"""Secure connections under real KCP engines on a seeded lossy, reordering link: an echo stream
crosses a client address change (NAT rebinding), several key updates and FEC, and every byte
arrives. This is the protocol-level rehearsal of the session-layer integration."""

from __future__ import annotations

import heapq
import random
from typing import Any

from kcp.engine import KCP
from kcp.pipeline import Pipeline
from kcp.secure import HandshakeConfig, KeyUpdated, PathChanged, PathValidated, generate_keypair
from kcp.secure.packet import MIN_TRANSPORT
from kcp.secure.testing import CLIENT_ADDR, SERVER_ADDR, run_handshake, seeded_rng
from kcp.stats import Counters

SERVER_PRIV, SERVER_PUB = generate_keypair(seeded_rng(7))
SECURE_OVERHEAD = MIN_TRANSPORT  # header 17 + frame type 1 + tag 16


def test_echo_stream_survives_migration_loss_reordering_and_key_updates() -> None:
    transport = {"rekey_after_packets": 80, "key_grace_ms": 100, "path_probe_interval_ms": 200}
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, fec=(4, 2), mtu=1200, **transport),  # type: ignore[arg-type]
        HandshakeConfig(static_key=SERVER_PRIV, fec=(4, 2), **transport),  # type: ignore[arg-type]
        server=None,
    )
    cc, sc, server = run.client_conn, run.server_conn, run.server
    assert cc is not None and sc is not None
    p = cc.params
    assert (p.data_shards, p.parity_shards, p.mtu) == (4, 2, 1200)

    rnd = random.Random(42)
    now = [run.now]
    client_addr = [CLIENT_ADDR]
    NEW_ADDR = ("192.0.2.50", 50000)
    link: list[tuple[int, int, bytes, Any, Any]] = []
    seq = [0]
    lost_to_dead_address = [0]
    held_back = [0]

    def enqueue(d: bytes, src: Any, dst: Any) -> None:
        seq[0] += 1
        if rnd.random() < 0.03:
            return
        heapq.heappush(link, (now[0] + rnd.randrange(5, 25), seq[0], d, src, dst))

    cpipe = Pipeline(None, p.data_shards, p.parity_shards, Counters())
    spipe = Pipeline(None, p.data_shards, p.parity_shards, Counters())

    def client_out(pkt: bytes) -> None:
        for shard in cpipe.seal(bytes(pkt), now[0]):
            enqueue(cc.seal(shard, now[0]), client_addr[0], SERVER_ADDR)

    def server_out(pkt: bytes) -> None:
        for shard in spipe.seal(bytes(pkt), now[0]):
            d = sc.seal(shard, now[0])
            if not sc.can_send(len(d)):
                held_back[0] += 1  # new path not validated yet: KCP will retransmit
                continue
            enqueue(d, SERVER_ADDR, sc.peer_addr)

    mss_mtu = p.mtu - SECURE_OVERHEAD - cpipe.overhead
    ce, se = KCP(7, client_out), KCP(7, server_out)
    for e in (ce, se):
        e.setmtu(mss_mtu)
        e.nodelay(1, 10, 2, 1)
        e.wndsize(128, 128)

    sent = [rnd.randbytes(rnd.randrange(200, 1100)) for _ in range(400)]
    echoed: list[bytes] = []
    for m in sent[:100]:
        ce.send(m)
    queued = 100
    migrated_at = None
    while len(echoed) < len(sent) and now[0] < 120_000:
        now[0] += 1
        t = now[0]
        while link and link[0][0] <= t:
            _, _, d, src, dst = heapq.heappop(link)
            if dst == SERVER_ADDR:
                payload = server.receive(d, src, t).payload
                if payload is not None:
                    for _kind, pkt in spipe.open(payload, t):
                        se.input(pkt, t)
                for ctl, to in sc.datagrams_to_send(t):
                    enqueue(ctl, SERVER_ADDR, to)
            elif dst == client_addr[0]:
                payload = cc.open(d, src, t)
                if payload is not None:
                    for _kind, pkt in cpipe.open(payload, t):
                        ce.input(pkt, t)
                for ctl, to in cc.datagrams_to_send(t):
                    enqueue(ctl, client_addr[0], to)
            else:
                lost_to_dead_address[0] += 1  # the old NAT mapping is gone
        while (m := se.recv()) is not None:
            se.send(m)  # echo
        while (m := ce.recv()) is not None:
            echoed.append(m)
        if queued < len(sent) and ce.waitsnd() < 64:
            ce.send(sent[queued])
            queued += 1
        if migrated_at is None and len(echoed) >= len(sent) // 2:
            migrated_at = t
            client_addr[0] = NEW_ADDR  # NAT rebinding: new source port and address
        for conn in (cc, sc):
            timer = conn.get_timer()
            if timer is not None and timer <= t:
                conn.handle_timer(t)
        for ctl, to in sc.datagrams_to_send(t):
            enqueue(ctl, SERVER_ADDR, to)
        ce.update(t)
        se.update(t)

    assert echoed == sent  # every message, in order, through the move and the key updates
    assert migrated_at is not None
    events = []
    while (ev := sc.next_event()) is not None:
        events.append(ev)
    moves = [e for e in events if isinstance(e, PathChanged)]
    assert moves == [PathChanged(CLIENT_ADDR, NEW_ADDR)]
    assert PathValidated(NEW_ADDR) in events
    assert sc.peer_addr == NEW_ADDR and sc.path_validated
    assert sum(isinstance(e, KeyUpdated) for e in events) >= 3 and cc.epoch == sc.epoch >= 3
    assert lost_to_dead_address[0] > 0  # packets did go to the old address before the move was seen
    for conn in (cc, sc):
        c = conn.counters
        assert c.decrypt_errors == 0 and c.frame_errors == 0
