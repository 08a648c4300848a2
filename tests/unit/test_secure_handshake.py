"""Secure mode handshake: Noise known answers, success, every failure with its message, retry
cookies, anti-amplification, half-open limits. Sans-I/O and seeded."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import kcp.secure.handshake as handshake_module
from kcp.secure import (
    ClientHello,
    HandshakeConfig,
    HandshakeKeyMismatch,
    HandshakeNoAnswer,
    HandshakePskMismatch,
    HandshakeRefused,
    HandshakeTimeout,
    Reason,
    SecureClient,
    SecureServer,
    SecureUsageError,
    SessionParams,
    generate_keypair,
)
from kcp.secure.config import Refusal, negotiate
from kcp.secure.noise import (
    PATTERNS,
    SUITES,
    CipherState,
    HandshakeState,
    KeyPair,
    protocol_name,
    public_key_of,
)
from kcp.secure.packet import T_RESPONSE, T_RETRY
from kcp.secure.testing import CLIENT_ADDR, SERVER_ADDR, run_handshake, seeded_rng
from kcp.secure_path import new_pmtud
from kcp.wirehint import HINT_LEN, T_HINT, HintCode

# Produced by the independent `noiseprotocol` 0.3.1 package (PyPI) with the keys below:
# initiator static = bytes(range(32)), responder static = bytes(range(32, 64)), initiator
# ephemeral = bytes(range(64, 96)), responder ephemeral = bytes(range(96, 128)), psk =
# bytes(range(128, 160)), prologue b"prologue!", payloads b"hello" / b"world", then the
# initiator's first transport message b"transport".
VECTORS = [
    (
        "Noise_IKpsk2_25519_ChaChaPoly_SHA256",
        "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a997a4bd4e32b1a9158d89e0bc1dcfdb1ab53e5dec36a61bb30f2d113c68c843a27a27e405c4adf692838311e0a0365e4ef7cff6d2f9268ff06a731846210580d8c4ae018a5",
        "675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52fcf304ccbf8bb48bbded18b8651d75310981858d868",
        "0e1dda3ceea953ca46d67904babedd10ce84c2a5c77c6c7686",
    ),
    (
        "Noise_IKpsk2_25519_AESGCM_SHA256",
        "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51acd55dcee03b530dc7043ef8aa4f3436eea7b82e6d37ea234d0fbcb5f618e69d2bd0d7c43512c2d67e5bdde9952352e61adb5d8f004b051c6d12da7b5b232b0abe5b40ad4af",
        "675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f020de4a87961c9c2d0ec136ad9e520aebdf045d7dc",
        "7e356e4e1ac2e1868a7d9ba05be68f916f97c8625cbfb06c97",
    ),
    (
        "Noise_NNpsk0_25519_ChaChaPoly_SHA256",
        "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a01bc651e922aaf4ced3283bdbfa05a91e4129701e2",
        "675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52f7ee3cbf6584d8dcecc02630092b775350145fc798c",
        "833b33a981361c288d56470ac302fe89a6520dd56485efb336",
    ),
    (
        "Noise_NNpsk0_25519_AESGCM_SHA256",
        "79a631eede1bf9c98f12032cdeadd0e7a079398fc786b88cc846ec89af85a51a5e82f10c84d5883bc78100ef3ce845d2e86abac506",
        "675dd574ed7789310b3d2e7681f3790b466c773b1521fecf36577958371ea52fc343b3fdb99a30ac52e2361b4c6a4a431ca79c63c1",
        "5cd4b7b42a1a30831f45f6c87808fe4488288604586d219273",
    ),
]

SERVER_PRIV, SERVER_PUB = generate_keypair(seeded_rng(7))
OTHER_PRIV, OTHER_PUB = generate_keypair(seeded_rng(8))
PSK = bytes(range(1, 33))


@pytest.mark.parametrize(("name", "m1", "m2", "t1"), VECTORS)
def test_noise_matches_independent_implementation(name: str, m1: str, m2: str, t1: str) -> None:
    _, pattern_name, _, cipher, _ = name.split("_")
    pattern = PATTERNS[pattern_name]
    suite = next(s for s in SUITES.values() if s.noise_name == cipher)
    assert protocol_name(pattern, suite) == name
    i_s, r_s, i_e, r_e, psk = (bytes(range(a, a + 32)) for a in (0, 32, 64, 96, 128))
    ik = pattern_name == "IKpsk2"
    ini = HandshakeState(
        pattern,
        suite,
        initiator=True,
        prologue=b"prologue!",
        rng=seeded_rng(0),
        s=KeyPair.from_private_bytes(i_s) if ik else None,
        rs=public_key_of(r_s) if ik else None,
        psk=psk,
        e=KeyPair.from_private_bytes(i_e),
    )
    res = HandshakeState(
        pattern,
        suite,
        initiator=False,
        prologue=b"prologue!",
        rng=seeded_rng(0),
        s=KeyPair.from_private_bytes(r_s) if ik else None,
        psk=psk,
        e=KeyPair.from_private_bytes(r_e),
    )
    msg1 = ini.write_message(b"hello")
    assert msg1.hex() == m1
    assert res.read_message(msg1) == b"hello"
    msg2 = res.write_message(b"world")
    assert msg2.hex() == m2
    assert ini.read_message(msg2) == b"world"
    k1, k2 = ini.split()
    assert (k1, k2) == res.split()
    assert CipherState(suite, k1).encrypt_with_ad(b"", b"transport").hex() == t1
    assert ini.handshake_hash == res.handshake_hash


# ------------------------------------------------------------------------------------------ success


@pytest.mark.parametrize("suite", ["aesgcm", "chachapoly"])
def test_pinned_key_handshake_succeeds_and_carries_identity_and_token(suite: str) -> None:
    seen: list[tuple[bytes, bytes | None, object]] = []

    def authorize(token: bytes, client_static: bytes | None, addr: object) -> str | None:
        seen.append((token, client_static, addr))
        return None

    client_priv, client_pub = generate_keypair(seeded_rng(3))
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, static_key=client_priv, token=b"tok-123", suites=(suite,)),
        HandshakeConfig(static_key=SERVER_PRIV),
        authorize=authorize,
    )
    assert run.client.state == "established" and run.client.error is None
    assert run.client.pattern_name == "IKpsk2"
    cc, sc = run.client_conn, run.server_conn
    assert cc is not None and sc is not None
    assert seen == [(b"tok-123", client_pub, CLIENT_ADDR)]
    assert sc.peer_static == client_pub
    assert cc.params == sc.params and cc.params.suite == suite
    assert cc.handshake_hash == sc.handshake_hash
    # one round trip: initiation, response, then the client's key-confirming packet
    assert len(run.to_server) == 2 and len(run.to_client) == 1
    assert len(run.to_server[0]) == 1200 and len(run.to_client[0]) < 200
    assert run.to_client[0][0] == T_RESPONSE
    assert run.server.half_open == 0 and run.server.connections == {sc.local_cid: sc}
    assert cc.remote_cid == sc.local_cid and sc.remote_cid == cc.local_cid
    assert cc.local_cid != sc.local_cid
    # data both ways
    assert run.server.receive(cc.seal(b"ping", 10), CLIENT_ADDR, 10).payload == b"ping"
    assert cc.open(sc.seal(b"pong", 11), SERVER_ADDR, 11) == b"pong"


def test_passphrase_only_handshake_uses_nnpsk0() -> None:
    run = run_handshake(HandshakeConfig(passphrase="correct horse"), HandshakeConfig(passphrase="correct horse"))
    assert run.client.pattern_name == "NNpsk0"
    assert run.client.state == "established" and run.server_conn is not None
    assert run.server_conn.peer_static is None


def test_server_with_key_and_psk_serves_both_patterns() -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, psk=PSK), seeded_rng(50))
    a = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, psk=PSK), HandshakeConfig(), server=server, seed=2
    )
    b = run_handshake(HandshakeConfig(psk=PSK), HandshakeConfig(), server=server, seed=3)
    assert a.client.state == b.client.state == "established"
    assert len(server.connections) == 2


def test_parameters_are_negotiated() -> None:
    run = run_handshake(
        HandshakeConfig(
            server_public_key=SERVER_PUB, mtu=1400, snd_wnd=1024, rcv_wnd=64, fec=(10, 3), mux_versions=(1, 2)
        ),
        HandshakeConfig(
            static_key=SERVER_PRIV,
            mtu=1200,
            snd_wnd=4096,
            rcv_wnd=4096,
            max_window=512,
            fec=(20, 6),
            mux_versions=(1,),
        ),
    )
    assert run.client_conn is not None
    p = run.client_conn.params
    assert (p.version, p.mtu, p.snd_wnd, p.rcv_wnd, p.mux_version) == (1, 1200, 512, 64, 1)
    # server not strict, the client's FEC is within its policy (less parity, smaller groups): the client's
    assert (p.data_shards, p.parity_shards) == (10, 3)


def test_strict_server_fec_wins_over_flexible_client() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, fec=(10, 3)),
        HandshakeConfig(static_key=SERVER_PRIV, fec=(4, 2), fec_strict=True),
    )
    assert run.client_conn is not None
    assert (run.client_conn.params.data_shards, run.client_conn.params.parity_shards) == (4, 2)


def test_cipher_suite_refusal_is_resolved_by_retrying_with_an_allowed_suite() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, suites=("aesgcm", "chachapoly")),
        HandshakeConfig(static_key=SERVER_PRIV, suites=("chachapoly",)),
    )
    assert run.client.state == "established"
    assert run.client_conn is not None and run.client_conn.params.suite == "chachapoly"
    assert run.server.counters.refused == 1


# ------------------------------------------------------------------------------------------ failures


def test_wrong_static_key_gets_a_bound_hint_and_fails_at_once() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=OTHER_PUB, handshake_timeout_ms=3000, handshake_retry_ms=500),
        HandshakeConfig(static_key=SERVER_PRIV),
    )
    (hint,) = run.to_client  # a 20-byte wire hint, no handshake answer
    assert len(hint) == HINT_LEN and hint[0] == T_HINT and hint[2] == HintCode.WRONG_KEY
    assert hint[4:] == run.to_server[0][:16]  # bound: it echoes our initiation
    assert run.server.counters.bad_mac1 == 1 and run.server.counters.hints_sent == 1
    assert run.server.half_open == 0
    err = run.client.error
    assert isinstance(err, HandshakeKeyMismatch) and not isinstance(err, HandshakeTimeout)
    assert str(err) == (
        "handshake failed: wrong key: the server could not verify our handshake "
        "(check the passphrase/PSK, or the pinned server public key)"
    )
    assert run.now < 5  # one round trip, not the 3 s timeout
    assert run.client.counters.hints_received == 1


def test_wrong_passphrase_gets_the_same_wrong_key_answer() -> None:
    run = run_handshake(
        HandshakeConfig(passphrase="right", handshake_timeout_ms=2000), HandshakeConfig(passphrase="wrong")
    )
    assert [len(d) for d in run.to_client] == [HINT_LEN]
    assert isinstance(run.client.error, HandshakeKeyMismatch)
    assert str(run.client.error).startswith("handshake failed: wrong key: ")
    assert run.now < 5


def test_a_server_with_hints_off_stays_silent_and_the_client_says_no_answer() -> None:
    run = run_handshake(
        HandshakeConfig(passphrase="right", handshake_timeout_ms=3000, handshake_retry_ms=500),
        HandshakeConfig(passphrase="wrong", hint_rate=0),
    )
    assert run.to_client == []  # no oracle when the server's operator turned hints off
    assert run.server.counters.bad_mac1 == len(run.to_server) >= 3  # retransmissions with backoff
    assert run.server.counters.hints_rate_limited == len(run.to_server)
    err = run.client.error
    assert isinstance(err, HandshakeNoAnswer)
    assert str(err) == (
        "handshake failed: no answer from the server within 3 s: is the server running and reachable "
        "over UDP (address, port, firewall)?"
    )
    assert 3000 <= run.now <= 3001  # failed at the deadline, not before


def test_wrong_psk_with_right_server_key_fails_fast() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, psk=bytes(32 * [9])),
        HandshakeConfig(static_key=SERVER_PRIV, psk=PSK),
    )
    assert len(run.to_client) == 1  # the server answered (psk2 is checked by the client)
    assert run.now < 5  # no timeout needed
    assert run.client.error is not None
    assert isinstance(run.client.error, HandshakePskMismatch | HandshakeKeyMismatch)
    assert str(run.client.error) == (
        "handshake failed: PSK mismatch: the server holds the pinned key but its reply did not "
        "authenticate with our PSK (check the psk/passphrase)"
    )
    assert run.server_conn is None  # the server never sees a confirmation: the half-open entry expires
    run.server.handle_timer(run.now + 10_000)
    assert run.server.half_open == 0 and run.server.counters.half_open_expired == 1


def test_version_mismatch_is_refused_with_reason() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, versions=(2, 3)),
        HandshakeConfig(static_key=SERVER_PRIV, versions=(1,)),
    )
    err = run.client.error
    assert isinstance(err, HandshakeRefused) and err.code == Reason.VERSION_MISMATCH
    assert str(err) == (
        "handshake refused by the server: version mismatch: client speaks [2, 3], server speaks [1] "
        "(upgrade the older side)"
    )
    assert run.server.half_open == 0 and run.server.counters.refused == 1


def test_bad_token_is_refused_with_the_hooks_message() -> None:
    def authorize(token: bytes, client_static: bytes | None, addr: object) -> str | None:
        return None if token == b"good" else "unknown token"

    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, token=b"bad"),
        HandshakeConfig(static_key=SERVER_PRIV),
        authorize=authorize,
    )
    err = run.client.error
    assert isinstance(err, HandshakeRefused) and err.code == Reason.BAD_TOKEN
    assert str(err) == "handshake refused by the server: bad token: unknown token (check the client's token)"
    assert run.server.connections == {} and run.server.half_open == 0


def test_raising_hook_refuses_instead_of_crashing() -> None:
    def authorize(token: bytes, client_static: bytes | None, addr: object) -> str | None:
        raise RuntimeError("db down")

    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB), HandshakeConfig(static_key=SERVER_PRIV), authorize=authorize
    )
    assert (
        str(run.client.error)
        == "handshake refused by the server: bad token: authorization hook raised RuntimeError "
        "(check the client's token)"
    )


@pytest.mark.parametrize(
    ("client", "server", "message"),
    [
        (
            {"mux_versions": (2,)},
            {"mux_versions": (1,)},
            "mux version mismatch: client speaks [2], server speaks [1]",
        ),
        (
            {"fec": (10, 3), "fec_strict": True},
            {"fec": (0, 0), "fec_strict": True},
            "FEC mismatch: client requires 10/3 shards, server requires 0/0",
        ),
        ({"mtu": 600, "min_mtu": 576}, {"min_mtu": 1000}, "MTU 600 is below the server's minimum 1000"),
        (
            {"suites": ("aesgcm",)},
            {"suites": ("chachapoly",)},
            "cipher suite AESGCM refused; server allows ['ChaChaPoly']",
        ),
    ],
)
def test_refused_parameters_give_a_clear_reason(
    client: dict[str, Any], server: dict[str, Any], message: str
) -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, **client),
        HandshakeConfig(static_key=SERVER_PRIV, **server),
    )
    err = run.client.error
    assert isinstance(err, HandshakeRefused)
    assert err.code in (Reason.PARAMS_REFUSED, Reason.SUITE_REFUSED)
    assert message in str(err), str(err)  # the parameter and both sides' values
    assert str(err).endswith(")"), str(err)  # then what to check


def test_client_refuses_a_server_answer_it_cannot_accept_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    # An honest server never picks FEC shards that a strict client refused; simulate one that does
    # to check the client's own verification of the answer.
    real = negotiate

    def lying_negotiate(cfg: HandshakeConfig, hello: ClientHello, suite: int) -> SessionParams | Refusal:
        p = real(cfg, hello, suite)
        assert isinstance(p, SessionParams)
        return dataclasses.replace(p, data_shards=4, parity_shards=2)

    monkeypatch.setattr(handshake_module, "negotiate", lying_negotiate)
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, fec=(10, 3), fec_strict=True),
        HandshakeConfig(static_key=SERVER_PRIV, fec=(10, 3)),
    )
    err = run.client.error
    assert isinstance(err, HandshakeRefused) and err.code == Reason.PARAMS_REFUSED
    assert str(err) == (
        "handshake failed: FEC mismatch: server chose 4/2 shards, client requires 10/3 (this client "
        "refused the answer of the server: check its transport settings against the server's)"
    )
    # the client told the server with an authenticated CLOSE, which also confirmed the keys
    assert run.server_conn is not None and run.server_conn.closed
    assert run.server_conn.close_code == Reason.PARAMS_REFUSED


# ------------------------------------------------------------------------------------------ DoS


def test_under_load_the_server_sends_a_stateless_retry_bound_to_the_address() -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, always_retry=True), seeded_rng(11))
    run = run_handshake(HandshakeConfig(server_public_key=SERVER_PUB), HandshakeConfig(), server=server)
    assert run.client.state == "established"
    assert run.to_client[0][0] == T_RETRY and len(run.to_client[0]) == 54
    assert server.counters.retries_sent == 1 and run.client.counters.retries_received == 1
    # the cookie-bearing initiation is useless from another address: another retry, no state
    with_cookie = run.to_server[1]
    server2 = server
    r = server2.receive(with_cookie, ("6.6.6.6", 1), run.now)
    assert r.replies and r.replies[0][0][0] == T_RETRY
    assert server.counters.bad_mac2 == 1 and server.half_open == 0


def test_retransmitted_initiation_gets_the_same_response_and_replays_are_dropped() -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV), seeded_rng(12))
    client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(13))
    init = client.initiate(0)
    r1 = server.receive(init, CLIENT_ADDR, 0)
    r2 = server.receive(init, CLIENT_ADDR, 5)
    assert r1.replies == r2.replies and server.half_open == 1
    assert server.counters.initiation_retransmits == 1
    conn = client.receive(r1.replies[0][0], SERVER_ADDR, 6)
    assert conn is not None
    ((confirm, _),) = conn.datagrams_to_send(6)
    assert server.receive(confirm, CLIENT_ADDR, 7).accepted
    # the same initiation replayed later (by an attacker) does no work and creates no state
    r3 = server.receive(init, CLIENT_ADDR, 8)
    assert r3.replies == [] and server.half_open == 0
    assert server.counters.initiation_replays == 1


def test_half_open_handshakes_are_capped_counted_and_expire() -> None:
    cfg = HandshakeConfig(
        static_key=SERVER_PRIV,
        max_half_open=8,
        retry_threshold=1000,
        retry_rate=10_000,
        half_open_timeout_ms=1000,
    )
    server = SecureServer(cfg, seeded_rng(14))
    for i in range(20):
        client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(100 + i))
        r = server.receive(client.initiate(i), ("10.1.0.1", 1000 + i), i)
        assert len(r.replies) == 1
        assert server.half_open <= 8
    assert server.half_open == 8 and server.counters.half_open_evicted == 12
    assert server.counters.half_open_max == 8
    assert server.get_timer() == 12 + 1000
    server.handle_timer(5000)
    assert server.half_open == 0 and server.counters.half_open_expired == 8
    assert server.state_sizes()["by_ephemeral"] == 0


def test_every_flipped_byte_of_an_initiation_gets_no_answer_but_at_most_a_hint() -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, hint_rate_per_source=10_000), seeded_rng(15))
    init = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(16)).initiate(0)
    for i in range(len(init) - 16):  # mac2 is all zeros and unchecked when not under load
        bad = bytearray(init)
        bad[i] ^= 0xFF
        r = server.receive(bytes(bad), CLIENT_ADDR, i)
        for reply, _ in r.replies:  # unauthenticated advice only: wrong key, mode or wire
            assert len(reply) == HINT_LEN and reply[0] == T_HINT and reply[4:] == bytes(bad[:16]), i
    assert server.half_open == 0 and server.connections == {}


# ------------------------------------------------------------------------------------------ misuse


def test_config_and_usage_errors_are_clear() -> None:
    with pytest.raises(SecureUsageError, match=r"server_public_key .*or psk/passphrase"):
        SecureClient(HandshakeConfig())
    with pytest.raises(SecureUsageError, match="static_key and/or psk"):
        SecureServer(HandshakeConfig())
    with pytest.raises(SecureUsageError, match="psk must be 32 bytes"):
        HandshakeConfig(psk=b"short")
    with pytest.raises(SecureUsageError, match="suites must be among"):
        HandshakeConfig(suites=("rot13",))
    with pytest.raises(SecureUsageError, match="token longer"):
        HandshakeConfig(token=bytes(600))
    with pytest.raises(SecureUsageError, match="token does not fit"):
        SecureClient(
            HandshakeConfig(server_public_key=SERVER_PUB, token=bytes(500), initiation_size=300)
        ).initiate(0)
    client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB))
    client.initiate(0)
    with pytest.raises(SecureUsageError, match="twice"):
        client.initiate(1)
    err = client.abandon(2)
    assert isinstance(err, HandshakeNoAnswer) and "no answer from the server within 0.002 s" in str(err)


def test_a_lost_refusal_is_repeated_when_the_client_retransmits() -> None:
    dropped: list[bytes] = []

    def drop_first_reply(d: bytes) -> bool:
        if d[0] == T_RESPONSE and not dropped:
            dropped.append(d)
            return True
        return False

    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, token=b"bad", handshake_retry_ms=200),
        HandshakeConfig(static_key=SERVER_PRIV),
        authorize=lambda token, static, addr: "unknown token",
        drop=drop_first_reply,
    )
    assert len(dropped) == 1 and run.to_client == [dropped[0], dropped[0]]
    assert str(run.client.error) == (
        "handshake refused by the server: bad token: unknown token (check the client's token)"
    )
    assert run.server.counters.initiation_retransmits == 1 and run.server.counters.refused == 1
    assert 200 <= run.now <= 202


def test_a_lost_response_is_repeated_and_the_handshake_completes() -> None:
    seen: list[bytes] = []

    def drop_first_response(d: bytes) -> bool:
        if d[0] == T_RESPONSE and not seen:
            seen.append(d)
            return True
        return False

    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, handshake_retry_ms=300),
        HandshakeConfig(static_key=SERVER_PRIV),
        drop=drop_first_response,
    )
    assert run.client.state == "established" and run.server_conn is not None
    assert run.server.counters.initiation_retransmits == 1 and run.server.half_open == 0


def test_initiations_are_retransmitted_doubling_to_a_cap_within_the_timeout() -> None:
    """250, 500, 1000, 1000 ... ms apart: seven initiations in the default 5 s, so a burst of loss
    cannot swallow every one (issue 15); each is the same bytes."""
    client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(21))
    first = client.initiate(0)
    sent = [0]
    now = 0
    while client.state == "initiating":
        t = client.get_timer()
        assert t is not None
        now = t
        client.handle_timer(now)
        for d in client.datagrams_to_send(now):
            assert d == first
            sent.append(now)
    assert sent == [0, 250, 750, 1750, 2750, 3750, 4750]
    assert isinstance(client.error, HandshakeNoAnswer) and now == 5000


def test_the_client_measures_the_handshake_round_trip_for_the_mtu_search() -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV), seeded_rng(12))
    client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(13))
    r = server.receive(client.initiate(100), CLIENT_ADDR, 140)  # 40 ms each way
    conn = client.receive(r.replies[0][0], SERVER_ADDR, 180)
    assert conn is not None and conn.handshake_rtt_ms == 80
    pm = new_pmtud(conn, 180)
    assert pm is not None and pm.probe_timeout == 240  # three round trips, not the 1 s cap
    # an answer to a resent initiation could answer either copy (Karn): no sample
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV), seeded_rng(12))
    client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(13))
    init = client.initiate(0)
    client.handle_timer(client.get_timer() or 0)
    assert client.datagrams_to_send(300)
    r = server.receive(init, CLIENT_ADDR, 300)
    conn = client.receive(r.replies[0][0], SERVER_ADDR, 340)
    assert conn is not None and conn.handshake_rtt_ms == 0
    pm = new_pmtud(conn, 340)
    assert pm is not None and pm.probe_timeout == conn.config.pmtud_probe_timeout_ms
