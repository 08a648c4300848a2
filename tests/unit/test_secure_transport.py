"""Secure mode after the handshake: sealing, replay window, tampering, key rotation with
reordering, CLOSE/GOAWAY and path migration. Sans-I/O, seeded."""

from __future__ import annotations

import random
from typing import Any

import pytest

from kcp.secure import (
    ConnectionClosed,
    GoAwayReceived,
    HandshakeConfig,
    KeyUpdated,
    PathChanged,
    PathFailed,
    PathValidated,
    Reason,
    ReplayWindow,
    SecureConnection,
    SecureConnectionClosed,
    SecureServer,
    generate_keypair,
    peek_cid,
)
from kcp.secure.connection import CLOSED
from kcp.secure.replay import DUPLICATE, OK, TOO_OLD
from kcp.secure.testing import CLIENT_ADDR, SERVER_ADDR, run_handshake, seeded_rng

SERVER_PRIV, SERVER_PUB = generate_keypair(seeded_rng(7))


def pair(seed: int = 1, **transport: Any) -> tuple[SecureConnection, SecureConnection]:
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, **transport),
        HandshakeConfig(static_key=SERVER_PRIV, **transport),
        seed=seed,
    )
    assert run.client_conn is not None and run.server_conn is not None
    return run.client_conn, run.server_conn


def events(conn: SecureConnection) -> list[object]:
    out = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


# ------------------------------------------------------------------------------------- replay window


def test_replay_window_unit() -> None:
    w = ReplayWindow(2048)
    assert w.check(0) == OK
    w.update(0)
    assert w.check(0) == DUPLICATE
    w.update(5000)
    assert w.check(5000 - 2047) == OK and w.check(5000 - 2048) == TOO_OLD
    w.update(4000)
    assert w.check(4000) == DUPLICATE and w.check(4001) == OK
    w.update(10**12)  # a jump beyond the window clears it
    assert w.check(10**12) == DUPLICATE and w.check(10**12 - 1) == OK
    with pytest.raises(ValueError):
        ReplayWindow(10)


@pytest.mark.parametrize("size", [64, 100, 2048])
def test_replay_window_remembers_every_packet_of_the_window(size: int) -> None:
    # in order and with every top position inside a ring block: each of the last `size` packet
    # numbers is a duplicate, the one before them too old (a ring one block short would forget
    # the oldest block's packets: replays)
    w = ReplayWindow(size)
    for top in range(3 * size + 40):
        w.update(top)
        assert w.check(top + 1) == OK
        low = max(0, top - size + 1)
        edges = {*range(low, min(top, low + 40) + 1), *range(max(low, top - 40), top + 1)}
        assert all(w.check(pn) == DUPLICATE for pn in edges), top
        assert top < size or w.check(top - size) == TOO_OLD
    # out of order: every other packet, then the gaps
    w = ReplayWindow(size)
    evens = range(0, 2 * size, 2)
    for pn in evens:
        w.update(pn)
    top = evens[-1]
    for pn in range(top - size + 1, top):
        assert w.check(pn) == (DUPLICATE if pn % 2 == 0 else OK)
        if pn % 2:
            w.update(pn)
    assert all(w.check(pn) == DUPLICATE for pn in range(top - size + 1, top + 1))


def test_packet_format_and_roundtrip() -> None:
    c, s = pair()
    pkt = c.seal(b"x" * 1400, 0)
    assert pkt[0] == 0xC8 and peek_cid(pkt) == s.local_cid
    assert int.from_bytes(pkt[9:17], "big") == 1  # packet 0 was the key-confirming PING
    assert len(pkt) == 1 + 8 + 8 + 1 + 1400 + 16
    assert s.open(pkt, CLIENT_ADDR, 1) == b"x" * 1400
    assert c.open(s.seal(b"", 2), SERVER_ADDR, 2) == b""


def test_replay_of_every_recorded_packet_is_rejected_and_counted_with_data_unharmed() -> None:
    c, s = pair()
    rng = random.Random(3)
    sent = [rng.randbytes(rng.randrange(1, 1400)) for _ in range(300)]
    recorded = [c.seal(m, i) for i, m in enumerate(sent)]
    got = [s.open(p, CLIENT_ADDR, i) for i, p in enumerate(recorded)]
    assert got == sent
    before = s.counters.snapshot()
    order = list(range(len(recorded)))
    rng.shuffle(order)
    for i in order:  # replay everything, in any order, also from another address
        addr = CLIENT_ADDR if i % 2 else ("6.6.6.6", 6)
        assert s.open(recorded[i], addr, 1000) is None
    assert s.counters.replay_duplicates - before["replay_duplicates"] == len(recorded)
    assert s.counters.packets_opened == before["packets_opened"]
    assert s.peer_addr == CLIENT_ADDR and events(s) == []  # a replay never moves the path
    # the session goes on unharmed
    assert s.open(c.seal(b"after", 2000), CLIENT_ADDR, 2000) == b"after"


def test_packets_older_than_the_window_are_dropped_as_too_old() -> None:
    c, s = pair()
    early = c.seal(b"early", 0)
    for i in range(2100):
        assert s.open(c.seal(b"%d" % i, 0), CLIENT_ADDR, 0) == b"%d" % i
    assert s.open(early, CLIENT_ADDR, 0) is None
    assert s.counters.replay_too_old == 1


def test_every_flipped_byte_is_rejected() -> None:
    c, s = pair()
    pkt = c.seal(b"0123456789abcdef" * 4, 0)
    for i in range(len(pkt)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(pkt)
            bad[i] ^= mask
            assert s.open(bytes(bad), CLIENT_ADDR, 0) is None, (i, mask)
    assert s.counters.packets_opened == 1  # only the PING of the handshake
    assert s.open(pkt, CLIENT_ADDR, 0) == b"0123456789abcdef" * 4  # forgeries did not move the window
    for cut in range(len(pkt)):  # truncations too
        assert s.open(pkt[:cut], CLIENT_ADDR, 0) is None


def test_a_packet_for_another_connection_is_rejected() -> None:
    c1, _s1 = pair()
    _c2, s2 = pair(seed=2)
    assert s2.open(c1.seal(b"a", 0), CLIENT_ADDR, 0) is None
    assert s2.counters.unknown_cid == 1


# ------------------------------------------------------------------------------------- key rotation


def reorder(items: list[bytes], rng: random.Random, depth: int) -> list[bytes]:
    out: list[bytes] = []
    for start in range(0, len(items), depth):
        block = items[start : start + depth]
        rng.shuffle(block)
        out.extend(block)
    return out


def test_long_transfer_crosses_several_key_rotations_with_reordering_and_no_loss() -> None:
    c, s = pair(rekey_after_packets=400, key_grace_ms=50)
    rng = random.Random(5)
    now = 0
    delivered_c2s: list[bytes] = []
    delivered_s2c: list[bytes] = []
    expected_c2s: list[bytes] = []
    expected_s2c: list[bytes] = []
    for burst in range(60):
        up = [b"c%d-%d" % (burst, i) for i in range(97)]
        down = [b"s%d-%d" % (burst, i) for i in range(20)]
        expected_c2s += up
        expected_s2c += down
        up_pkts = [c.seal(m, now) for m in up]
        down_pkts = [s.seal(m, now) for m in down]
        for p in reorder(up_pkts, rng, 32):
            m = s.open(p, CLIENT_ADDR, now)
            assert m is not None
            delivered_c2s.append(m)
        for p in reorder(down_pkts, rng, 8):
            m = c.open(p, SERVER_ADDR, now)
            assert m is not None
            delivered_s2c.append(m)
        now += 10
    assert sorted(delivered_c2s) == sorted(expected_c2s)
    assert sorted(delivered_s2c) == sorted(expected_s2c)
    assert c.epoch == s.epoch >= 10
    assert c.counters.key_updates >= 10 and s.counters.key_updates_by_peer >= 10
    assert s.counters.prev_key_used > 0  # late packets of the old epoch still opened
    assert s.counters.decrypt_errors == c.counters.decrypt_errors == 0
    kinds = {type(e) for e in events(c)}
    assert kinds == {KeyUpdated}


def test_rotation_across_interleaved_directions_and_late_packets_within_grace() -> None:
    c, s = pair(rekey_after_ms=100, key_grace_ms=1000)
    late = [c.seal(b"late%d" % i, 0) for i in range(5)]
    for p in late[:1]:
        assert s.open(p, CLIENT_ADDR, 0) == b"late0"
    p = c.seal(b"new", 150)  # time-based update
    assert c.epoch == 1 and p[0] == 0xC9
    assert s.open(p, CLIENT_ADDR, 150) == b"new" and s.epoch == 1
    for i, p in enumerate(late[1:], 1):  # old-epoch packets reordered behind the switch still open
        assert s.open(p, CLIENT_ADDR, 200) == b"late%d" % i
    assert s.counters.prev_key_used == 4
    # the server answers in epoch 1; the client confirms and can update again later
    assert c.open(s.seal(b"ack", 200), SERVER_ADDR, 200) == b"ack"
    assert not c.update_keys(210)  # previous key still kept (grace) -> not yet
    assert c.update_keys(2000) and c.epoch == 2
    assert s.open(c.seal(b"e2", 2000), CLIENT_ADDR, 2000) == b"e2" and s.epoch == 2


def test_old_epoch_key_is_dropped_after_the_grace_time() -> None:
    c, s = pair(key_grace_ms=100)
    late = c.seal(b"late", 0)
    assert c.update_keys(0)
    assert s.open(c.seal(b"new", 0), CLIENT_ADDR, 0) == b"new"
    assert s.get_timer() == 100
    s.handle_timer(100)
    assert s.open(late, CLIENT_ADDR, 100) is None
    assert s.counters.decrypt_errors == 1


def test_peer_that_updated_twice_while_its_packets_were_lost_is_still_followed() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, key_grace_ms=1000),
        HandshakeConfig(static_key=SERVER_PRIV, key_grace_ms=0),
    )
    c, s = run.client_conn, run.server_conn
    assert c is not None and s is not None
    assert c.update_keys(0) and c.epoch == 1  # the client keeps epoch 0's key for 1 s
    assert s.open(c.seal(b"one", 0), CLIENT_ADDR, 0) == b"one" and s.epoch == 1
    s.seal(b"lost", 0)  # every epoch-1 packet of the server is lost...
    assert s.update_keys(0) and s.epoch == 2  # ...and the server updates again
    p = s.seal(b"two", 0)
    assert p[0] & 1 == 0  # same phase bit as epoch 0: ambiguous for the client
    assert c.open(p, SERVER_ADDR, 1) == b"two" and c.epoch == 2
    assert s.open(c.seal(b"three", 2), CLIENT_ADDR, 2) == b"three"


# ------------------------------------------------------------------------------------- close / goaway


def test_authenticated_close_with_reason_ends_both_sides() -> None:
    c, s = pair()
    pkt = c.close(Reason.APPLICATION, "bye now", 5)
    assert c.closed and c.close_packet == pkt
    assert c.close(Reason.APPLICATION, "again", 6) == pkt  # idempotent, resendable
    forged = bytearray(pkt)
    forged[-1] ^= 1
    assert s.open(bytes(forged), CLIENT_ADDR, 6) is None and not s.closed
    assert s.open(pkt, CLIENT_ADDR, 6) is None
    assert s.closed and (s.close_code, s.close_message) == (Reason.APPLICATION, "bye now")
    assert events(s) == [ConnectionClosed(Reason.APPLICATION, "bye now", by_peer=True)]
    assert events(c) == [ConnectionClosed(Reason.APPLICATION, "bye now", by_peer=False)]
    with pytest.raises(SecureConnectionClosed, match="bye now"):
        s.seal(b"x", 7)
    with pytest.raises(SecureConnectionClosed):
        c.seal(b"x", 7)
    assert s.open(pkt, CLIENT_ADDR, 8) is None and s.counters.after_close == 1


def test_goaway_is_delivered_and_the_connection_stays_usable() -> None:
    c, s = pair()
    assert c.open(s.goaway(Reason.GOING_AWAY, "draining", 1), SERVER_ADDR, 1) is None
    assert events(c) == [GoAwayReceived(Reason.GOING_AWAY, "draining")]
    assert c.goaway_received == (Reason.GOING_AWAY, "draining") and s.goaway_sent
    assert s.open(c.seal(b"in-flight reply", 2), CLIENT_ADDR, 2) == b"in-flight reply"


# ------------------------------------------------------------------------------------- migration


def test_migration_new_address_probe_then_move() -> None:
    c, s = pair(amplification_factor=3)
    new_addr = ("192.0.2.77", 55555)  # the phone moved from Wi-Fi to 4G
    pkt = c.seal(b"from 4g" * 10, 10)
    assert s.open(pkt, new_addr, 10) == b"from 4g" * 10  # data is delivered at once
    assert events(s) == [PathChanged(CLIENT_ADDR, new_addr)]
    assert s.peer_addr == new_addr and not s.path_validated
    assert s.counters.path_changes == 1
    # anti-amplification until the probe is answered: at most 3x what came from the new address
    assert s.can_send(3 * len(pkt) - 200) and not s.can_send(3 * len(pkt) + 1)
    ((challenge, to),) = s.datagrams_to_send(10)
    assert to == new_addr
    assert c.open(challenge, SERVER_ADDR, 11) is None
    ((response, to2),) = c.datagrams_to_send(11)
    assert to2 == SERVER_ADDR
    assert s.open(response, new_addr, 12) is None
    assert events(s) == [PathValidated(new_addr)]
    assert s.path_validated and s.can_send(10**6) and s.counters.path_validated == 1
    # a late packet from the old address (sent before the move) does not move the path back
    old = c.seal(b"old", 9)
    newer = c.seal(b"newer", 13)
    assert s.open(newer, new_addr, 13) == b"newer"
    assert s.open(old, CLIENT_ADDR, 14) == b"old"
    assert s.peer_addr == new_addr and events(s) == []


def test_spoofed_path_that_never_answers_reverts_to_the_old_address() -> None:
    c, s = pair(path_probe_interval_ms=100, path_probe_attempts=3)
    # an on-path attacker forwards a fresh packet from its own address before the real one
    pkt = c.seal(b"data", 0)
    attacker = ("203.0.113.9", 666)
    assert s.open(pkt, attacker, 0) == b"data"
    assert s.peer_addr == attacker
    probes = s.datagrams_to_send(0)
    now = 0
    while (t := s.get_timer()) is not None:
        now = t
        s.handle_timer(now)
        probes += s.datagrams_to_send(now)
    assert len(probes) == 3 and all(to == attacker for _, to in probes)
    assert s.peer_addr == CLIENT_ADDR and s.path_validated
    assert events(s)[-1] == PathFailed(attacker, CLIENT_ADDR)
    assert s.counters.path_failed == 1


def test_client_sees_server_move_too_and_going_back_needs_no_probe() -> None:
    c, s = pair()
    other = ("10.0.0.1", 4001)
    assert c.open(s.seal(b"a", 0), other, 0) == b"a"
    assert c.peer_addr == other and not c.path_validated
    c.datagrams_to_send(0)
    assert c.open(s.seal(b"b", 1), SERVER_ADDR, 1) == b"b"  # back to the validated address
    assert c.peer_addr == SERVER_ADDR and c.path_validated
    assert [type(e) for e in events(c)] == [PathChanged, PathChanged]


def test_seal_after_handshake_is_fast_enough_for_one_core() -> None:
    # a smoke check of the kept-keys design: 2000 seal+open of 1400 B in well under a second
    c, s = pair()
    data = bytes(1400)
    for i in range(2000):
        assert s.open(c.seal(data, i), CLIENT_ADDR, i) is not None


# ------------------------------------------------------------------------------------- stateless reset


def test_restarted_server_resets_the_client_at_once() -> None:
    c, _s = pair()
    restarted = SecureServer(HandshakeConfig(static_key=SERVER_PRIV), seeded_rng(99))  # same key, no state
    pkt = c.seal(b"are you there?", 100)
    r = restarted.receive(pkt, CLIENT_ADDR, 100)
    ((reset, to),) = r.replies
    assert to == CLIENT_ADDR and len(reset) < len(pkt) and reset[0] in (0xC8, 0xC9)
    assert restarted.counters.stateless_resets_sent == 1 and restarted.counters.unknown_cid == 1
    assert c.open(reset, SERVER_ADDR, 101) is None
    assert c.state == CLOSED and c.close_code == Reason.STATELESS_RESET
    assert events(c) == [
        ConnectionClosed(
            Reason.STATELESS_RESET,
            "stateless reset: the server no longer knows this connection (restarted or closed)",
            by_peer=True,
        )
    ]
    with pytest.raises(SecureConnectionClosed, match="stateless reset"):
        c.seal(b"x", 102)


def test_reset_from_another_server_is_ignored_and_resets_shrink() -> None:
    c, _s = pair()
    other_priv, _ = generate_keypair(seeded_rng(123))
    stranger = SecureServer(HandshakeConfig(static_key=other_priv), seeded_rng(98))
    pkt = c.seal(b"x" * 100, 0)
    ((reset, _),) = stranger.receive(pkt, CLIENT_ADDR, 0).replies
    assert c.open(reset, SERVER_ADDR, 0) is None and not c.closed
    assert c.counters.unknown_cid == 1
    # a reset answered by another stateless server gets strictly shorter: no ping-pong loop
    sizes = [len(reset)]
    d = reset
    for _ in range(100):
        replies = stranger.receive(d, CLIENT_ADDR, 0).replies
        if not replies:
            break
        d = replies[0][0]
        sizes.append(len(d))
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes) and sizes[-1] >= 34


def test_stateless_resets_are_rate_limited() -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, reset_rate=5), seeded_rng(97))
    junk = bytes((0xC8,)) + bytes(range(60))
    sent = sum(len(server.receive(junk, CLIENT_ADDR, 0).replies) for _ in range(50))
    assert sent == 5
    assert len(server.receive(junk, CLIENT_ADDR, 1000).replies) == 1  # the next second
