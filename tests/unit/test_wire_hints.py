"""Wire hints (kcp.wirehint): the format never raises on garbage, a hint is never larger than what it
answers, it is rate-limited per source and in total, a client takes only a hint bound to its own
initiation (a forged or stale one is ignored and counted), and the secure server answers a wrong
key, a mode its keys cannot run, another wire version and what is not its wire, while the normal
handshake's bytes stay the same."""

from __future__ import annotations

import random

import pytest

from kcp.secure import (
    HandshakeConfig,
    HandshakeKeyMismatch,
    HandshakeWireMismatch,
    Reason,
    SecureClient,
    SecureServer,
    generate_keypair,
)
from kcp.secure.handshake import ClientState
from kcp.secure.packet import TRANSPORT_TYPES, WIRE_VERSION
from kcp.secure.testing import CLIENT_ADDR, SERVER_ADDR, run_handshake, seeded_rng
from kcp.wirehint import (
    ECHO_LEN,
    HINT_LEN,
    T_HINT,
    HintCode,
    HintLimiter,
    SentLog,
    answerable,
    compat_conv,
    encode_hint,
    hint_message,
    is_secure_initiation,
    parse_hint,
)

SERVER_PRIV, SERVER_PUB = generate_keypair(seeded_rng(70))
_, OTHER_PUB = generate_keypair(seeded_rng(71))
KCP_PACKET = bytes(range(40))  # what a compat (kcp-go, no crypt) datagram looks like to a secure server


# ------------------------------------------------------------------------------------------ format


def test_encode_and_parse_round_trip_with_the_answered_datagrams_first_bytes() -> None:
    answered = bytes(range(100, 200))
    hint = encode_hint(HintCode.WIRE_VERSION, answered, detail=7)
    assert hint is not None and len(hint) == HINT_LEN == 20
    assert hint[0] == T_HINT
    assert parse_hint(hint) == (HintCode.WIRE_VERSION, 7, answered[:ECHO_LEN])


def test_a_hint_is_never_larger_than_the_datagram_it_answers() -> None:
    for n in range(0, 64):
        hint = encode_hint(HintCode.SECURE_WIRE, bytes(n))
        assert (hint is None) == (n < HINT_LEN)
        assert hint is None or len(hint) <= n


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        bytes([T_HINT]),
        bytes([T_HINT, 1, 1, 0]) + bytes(15),  # one byte short
        bytes([T_HINT, 1, 1, 0]) + bytes(17),  # one byte long
        bytes([T_HINT, 2, 1, 0]) + bytes(16),  # another hint version
        bytes([T_HINT, 1, 0, 0]) + bytes(16),  # code 0
        bytes([T_HINT, 1, 99, 0]) + bytes(16),  # unknown code
        bytes([0xC5, 1, 1, 0]) + bytes(16),  # another type
    ],
)
def test_malformed_hints_parse_as_none(datagram: bytes) -> None:
    assert parse_hint(datagram) is None


def test_random_bytes_never_raise() -> None:
    rnd = random.Random(5)
    for _ in range(5000):
        n = rnd.choice((HINT_LEN, rnd.randrange(0, 64)))
        d = bytes([T_HINT, 1]) + rnd.randbytes(max(0, n - 2)) if rnd.random() < 0.5 else rnd.randbytes(n)
        parse_hint(d)
        is_secure_initiation(d)
        answerable(d)


def test_hints_never_answer_a_hint_so_two_servers_cannot_loop() -> None:
    assert not answerable(encode_hint(HintCode.WRONG_KEY, bytes(40)) or b"")
    assert not answerable(bytes([T_HINT]) + bytes(22))  # shorter than any KCP datagram
    assert answerable(bytes([T_HINT]) + bytes(23))  # a kcp-go datagram whose conv starts 0xC4
    assert answerable(KCP_PACKET) and answerable(bytes([0xC2]) + bytes(100))
    assert not answerable(KCP_PACKET[: HINT_LEN - 1])


def test_messages_name_the_server_and_what_to_check() -> None:
    assert hint_message(HintCode.WRONG_KEY, 0, "h:1") == (
        "wrong key: the server at h:1 could not verify our handshake "
        "(check the passphrase/PSK, or the pinned server public key)"
    )
    assert "kcp.CompatWire" in hint_message(HintCode.COMPAT_WIRE, 0)
    assert "kcp.SecureWire" in hint_message(HintCode.SECURE_WIRE, 0)
    assert "speaks secure wire version 3, this client speaks 1" in hint_message(HintCode.WIRE_VERSION, 3)


# ---------------------------------------------------------------------------------------- limiter


def test_limiter_per_source_and_total_per_second_with_a_bounded_table() -> None:
    lim = HintLimiter(per_source=2, total=5, max_sources=3)
    assert [lim.allow("a", 0) for _ in range(3)] == [True, True, False]
    assert lim.allow("b", 10) and lim.allow("c", 20) and lim.allow("d", 30)
    assert not lim.allow("e", 40)  # 5 in this second in all
    assert lim.size() == 3  # the oldest source left the table
    assert lim.allow("a", 1000) and lim.allow("a", 1001) and not lim.allow("a", 1002)  # a new second
    assert not HintLimiter(total=0).allow("a", 0) and not HintLimiter(per_source=0).allow("a", 0)


def test_a_flood_from_spoofed_sources_keeps_the_table_bounded() -> None:
    lim = HintLimiter(per_source=4, total=100, max_sources=1024)
    sent = sum(lim.allow(("10.0.0.1", port), port // 50) for port in range(50_000))
    assert sent == 100 and lim.size() <= 1024  # one second of simulated time: 100 hints at most


def test_sent_log_keeps_the_last_datagrams() -> None:
    log = SentLog(keep=2)
    for i in range(3):
        log.add(bytes([i]) * 30)
    assert not log.bound(bytes([0]) * 16)
    assert log.bound(bytes([1]) * 16) and log.bound(bytes([2]) * 16)
    assert not log.bound(bytes([2]) * 15)


# ------------------------------------------------------------------------------- secure client


def _client(**kw: object) -> tuple[SecureClient, bytes]:
    client = SecureClient(HandshakeConfig(passphrase="pw", **kw), seeded_rng(72), peer="10.0.0.1:4000")  # type: ignore[arg-type]
    return client, client.initiate(0)


def test_a_hint_not_bound_to_our_initiation_is_ignored_and_counted() -> None:
    client, init = _client()
    forged = encode_hint(HintCode.WRONG_KEY, bytes(range(20)))  # an off-path guess
    assert forged is not None
    assert client.receive(forged, SERVER_ADDR, 1) is None
    assert client.state is ClientState.INITIATING and client.error is None
    assert client.counters.hints_ignored == 1 and client.counters.hints_received == 0
    bound = encode_hint(HintCode.WRONG_KEY, init)
    assert bound is not None
    client.receive(bound, SERVER_ADDR, 2)
    assert isinstance(client.error, HandshakeKeyMismatch)  # failed at once
    assert "the server at 10.0.0.1:4000" in str(client.error)
    assert client.counters.hints_received == 1


def test_a_secure_wire_hint_means_nothing_to_a_secure_client() -> None:
    client, init = _client()
    client.receive(encode_hint(HintCode.SECURE_WIRE, init) or b"", SERVER_ADDR, 1)
    assert client.state is ClientState.INITIATING and client.counters.hints_ignored == 1


@pytest.mark.parametrize(
    ("code", "detail", "error", "reason", "text"),
    [
        (HintCode.COMPAT_WIRE, 0, HandshakeWireMismatch, Reason.NONE, "speaks kcp-go's wire (compat)"),
        (HintCode.WIRE_VERSION, 2, HandshakeWireMismatch, Reason.VERSION_MISMATCH, "wire version 2"),
        (HintCode.NO_PSK_MODE, 0, HandshakeKeyMismatch, Reason.NONE, "pin its public key"),
        (HintCode.NO_KEY_MODE, 0, HandshakeKeyMismatch, Reason.NONE, "without server_public_key"),
    ],
)
def test_each_bound_hint_fails_the_handshake_at_once_with_its_reason(
    code: HintCode, detail: int, error: type, reason: int, text: str
) -> None:
    client, init = _client()
    client.receive(encode_hint(code, init, detail) or b"", SERVER_ADDR, 1)
    err = client.error
    assert isinstance(err, error) and err is not None and err.code == reason
    assert text in str(err) and str(err).startswith("handshake failed: ")


# ------------------------------------------------------------------------------- secure server


def test_the_normal_handshake_sends_no_hint() -> None:
    run = run_handshake(HandshakeConfig(passphrase="pw"), HandshakeConfig(passphrase="pw"))
    assert run.client.state is ClientState.ESTABLISHED
    assert all(d[0] != T_HINT for d in run.to_client)
    assert run.server.counters.hints_sent == 0


def test_wrong_key_hints_are_rate_limited_per_source_and_counted() -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, hint_rate_per_source=2), seeded_rng(73))
    sizes = []
    for i in range(5):
        init = SecureClient(HandshakeConfig(server_public_key=OTHER_PUB), seeded_rng(80 + i)).initiate(0)
        r = server.receive(init, CLIENT_ADDR, i)
        sizes += [len(d) for d, _ in r.replies]
        assert all(d[4:] == init[:16] for d, _ in r.replies)  # each echoes the initiation it answers
    assert sizes == [HINT_LEN, HINT_LEN]
    assert server.counters.hints_sent == 2 and server.counters.hints_rate_limited == 3
    assert server.counters.bad_mac1 == 5 and server.half_open == 0


def test_hints_are_limited_in_total_across_sources() -> None:
    server = SecureServer(HandshakeConfig(passphrase="pw", hint_rate=3), seeded_rng(74))
    sent = 0
    for port in range(10):
        r = server.receive(KCP_PACKET, ("10.9.9.9", port), 5)
        sent += len(r.replies)
    assert sent == 3 and server.counters.hints_rate_limited == 7
    assert server.state_sizes()["hint_sources"] == 3


@pytest.mark.parametrize(
    ("server_cfg", "client_cfg", "code"),
    [
        ({"static_key": SERVER_PRIV}, {"passphrase": "pw"}, HintCode.NO_PSK_MODE),
        ({"passphrase": "pw"}, {"server_public_key": SERVER_PUB}, HintCode.NO_KEY_MODE),
        ({"passphrase": "pw"}, {"passphrase": "other"}, HintCode.WRONG_KEY),
        ({"static_key": SERVER_PRIV}, {"server_public_key": OTHER_PUB}, HintCode.WRONG_KEY),
    ],
)
def test_the_server_says_which_key_problem_it_sees(
    server_cfg: dict[str, object], client_cfg: dict[str, object], code: HintCode
) -> None:
    server = SecureServer(HandshakeConfig(**server_cfg), seeded_rng(75))  # type: ignore[arg-type]
    init = SecureClient(HandshakeConfig(**client_cfg), seeded_rng(76)).initiate(0)  # type: ignore[arg-type]
    ((reply, addr),) = server.receive(init, CLIENT_ADDR, 0).replies
    assert addr == CLIENT_ADDR and parse_hint(reply) == (code, 0, init[:16])


def test_another_wire_version_gets_the_servers_version() -> None:
    server = SecureServer(HandshakeConfig(passphrase="pw"), seeded_rng(77))
    init = bytearray(SecureClient(HandshakeConfig(passphrase="pw"), seeded_rng(78)).initiate(0))
    init[1] = WIRE_VERSION + 1
    ((reply, _),) = server.receive(bytes(init), CLIENT_ADDR, 0).replies
    assert parse_hint(reply) == (HintCode.WIRE_VERSION, WIRE_VERSION, bytes(init[:16]))


def test_what_is_not_the_secure_wire_gets_a_secure_wire_hint_but_hints_and_short_junk_do_not() -> None:
    server = SecureServer(HandshakeConfig(passphrase="pw"), seeded_rng(79))
    ((reply, _),) = server.receive(KCP_PACKET, CLIENT_ADDR, 0).replies
    assert parse_hint(reply) == (HintCode.SECURE_WIRE, 0, KCP_PACKET[:16])
    assert server.receive(reply, CLIENT_ADDR, 1).replies == []  # a hint is never answered
    assert server.receive(KCP_PACKET[:19], CLIENT_ADDR, 2).replies == []  # smaller than a hint
    assert server.counters.hints_sent == 1


@pytest.mark.parametrize("first", [0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xCF, 0x00])
def test_a_compat_datagram_that_starts_like_a_secure_type_still_gets_a_hint(first: int) -> None:
    # a kcp-go datagram without encryption starts with its conv: any first byte is possible
    server = SecureServer(HandshakeConfig(passphrase="pw"), seeded_rng(91))
    datagram = bytes([first]) + bytes(range(1, 100))
    replies = [d for d, _ in server.receive(datagram, CLIENT_ADDR, 0).replies]
    assert sum(map(len, replies)) <= len(datagram)
    hints = [parse_hint(d) for d in replies if parse_hint(d) is not None]
    assert hints == [(HintCode.SECURE_WIRE, 0, datagram[:16])]


def test_a_compat_datagram_that_starts_like_a_transport_packet_gets_a_stateless_reset_only() -> None:
    # 0xC8/0xC9 with a connection ID we do not know: the stateless reset's path (which is why a
    # compat dial's default conv never starts with them: compat_conv)
    server = SecureServer(HandshakeConfig(passphrase="pw"), seeded_rng(92))
    ((reply, _),) = server.receive(bytes([0xC8]) + bytes(range(1, 100)), CLIENT_ADDR, 0).replies
    assert parse_hint(reply) is None and server.counters.stateless_resets_sent == 1


def test_a_compat_listener_recognises_a_secure_initiation_by_its_shape() -> None:
    init = SecureClient(HandshakeConfig(passphrase="pw"), seeded_rng(90)).initiate(0)
    assert is_secure_initiation(init)
    assert not is_secure_initiation(KCP_PACKET) and not is_secure_initiation(init[:255])


def test_a_compat_conv_never_starts_like_a_transport_packet() -> None:
    firsts = {compat_conv(bytes([b, 1, 2, 3])) & 0xFF for b in range(256)}
    assert firsts.isdisjoint(TRANSPORT_TYPES) and len(firsts) == 254  # 0xC8, 0xC9 -> 0xD8, 0xD9
    assert compat_conv(bytes([0xC8, 1, 2, 3])) == 0x030201D8
    assert compat_conv(bytes([0x11, 0x22, 0x33, 0x44])) == 0x44332211  # little-endian, as on the wire
    with pytest.raises(ValueError, match="4 random bytes"):
        compat_conv(b"abc")
