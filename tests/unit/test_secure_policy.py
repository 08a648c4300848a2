"""The server's policy bounds every negotiated parameter (hostile clients, item 5), and only
authenticated packets prove a connection alive (item 6) — in the sans-I/O core."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from kcp.secure import (
    ClientHello,
    HandshakeConfig,
    HandshakeRefused,
    Reason,
    SecureServer,
    SecureUsageError,
    SessionParams,
    generate_keypair,
)
from kcp.secure import handshake as handshake_module
from kcp.secure.config import Refusal, fec_within, negotiate, outside_policy
from kcp.secure.noise import SUITE_BY_NAME
from kcp.secure.packet import T_TRANSPORT
from kcp.secure.testing import CLIENT_ADDR, HostileClient, run_handshake, seeded_rng

SERVER_PRIV, SERVER_PUB = generate_keypair(seeded_rng(7))
SERVER_10_3 = HandshakeConfig(static_key=SERVER_PRIV, fec=(10, 3), snd_wnd=128, rcv_wnd=128)
CLIENT = HandshakeConfig(server_public_key=SERVER_PUB)


def _hostile(seed: int = 1, **changes: Any) -> HostileClient:
    return HostileClient(CLIENT, seeded_rng(seed), **changes)


# ------------------------------------------------------------------------------------ FEC


def test_more_than_256_fec_shards_is_refused_in_the_handshake_with_a_reason() -> None:
    server = SecureServer(SERVER_10_3, seeded_rng(2))
    run = run_handshake(CLIENT, SERVER_10_3, server=server, client=_hostile(fec=(200, 100)))
    err = run.client.error
    assert isinstance(err, HandshakeRefused), f"the server accepted FEC 200/100: {run.client.state}"
    assert err.code == Reason.PARAMS_REFUSED
    assert "malformed proposal: FEC 200/100 has 300 shards per group, at most 256" in str(err)
    assert run.server_conn is None
    assert server.counters.refused == server.counters.params_refused == 1
    assert server.state_sizes()["half_open"] == server.state_sizes()["connections"] == 0


def test_fec_above_the_policy_is_lowered_to_the_servers_for_a_flexible_client() -> None:
    server = SecureServer(SERVER_10_3, seeded_rng(2))
    run = run_handshake(CLIENT, SERVER_10_3, server=server, client=_hostile(fec=(1, 255)))
    assert run.client_conn is not None and run.server_conn is not None
    for p in (run.client_conn.params, run.server_conn.params):
        assert (p.data_shards, p.parity_shards) == (10, 3)
    assert server.counters.fec_clamped == 1


def test_a_strict_client_asking_more_fec_than_the_policy_is_refused_with_the_limit() -> None:
    server = SecureServer(SERVER_10_3, seeded_rng(2))
    run = run_handshake(CLIENT, SERVER_10_3, server=server, client=_hostile(fec=(1, 255), fec_strict=True))
    err = run.client.error
    assert isinstance(err, HandshakeRefused) and err.code == Reason.PARAMS_REFUSED
    assert str(err) == (
        "handshake refused by the server: params refused: FEC 1/255 refused: the server allows at most "
        "10/3 (13 shards per group, the same parity per data shard) (make the client's transport "
        "settings fit the server's policy)"
    )
    assert server.counters.params_refused == 1 and server.state_sizes()["half_open"] == 0


@pytest.mark.parametrize(
    ("policy", "proposal", "agreed"),
    [
        ((10, 3), (10, 3), (10, 3)),
        ((10, 3), (0, 0), (0, 0)),  # off is always within the policy
        ((10, 3), (10, 1), (10, 1)),  # less parity: the client's
        ((10, 3), (5, 1), (5, 1)),
        ((10, 3), (5, 3), (10, 3)),  # more parity per data shard
        ((10, 3), (20, 3), (10, 3)),  # a larger group
        ((10, 3), (1, 255), (10, 3)),
        ((0, 0), (10, 3), (0, 0)),  # a server without FEC runs none
    ],
)
def test_fec_policy_table(
    policy: tuple[int, int], proposal: tuple[int, int], agreed: tuple[int, int]
) -> None:
    server = dataclasses.replace(SERVER_10_3, fec=policy)
    hello = dataclasses.replace(ClientHello.from_config(CLIENT), fec=proposal)
    p = negotiate(server, hello, SUITE_BY_NAME["aesgcm"].suite_id)
    assert isinstance(p, SessionParams)
    assert (p.data_shards, p.parity_shards) == agreed
    assert fec_within(policy, agreed) or agreed == policy


def test_a_local_config_with_more_than_256_shards_is_a_usage_error() -> None:
    with pytest.raises(SecureUsageError, match="fec 200/100 has 300 shards per group"):
        HandshakeConfig(server_public_key=SERVER_PUB, fec=(200, 100))


def test_the_client_refuses_an_answer_with_more_than_256_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    real = negotiate

    def lying(cfg: HandshakeConfig, hello: ClientHello, suite: int) -> SessionParams | Refusal:
        p = real(cfg, hello, suite)
        assert isinstance(p, SessionParams)
        return dataclasses.replace(p, data_shards=200, parity_shards=100)

    monkeypatch.setattr(handshake_module, "negotiate", lying)
    run = run_handshake(CLIENT, SERVER_10_3)
    assert isinstance(run.client.error, HandshakeRefused)
    assert str(run.client.error).startswith(
        "handshake failed: server chose FEC 200/100, more than 256 shards per group (this client refused"
    )


# ------------------------------------------------------------------------------------ every parameter


def test_windows_are_capped_by_the_servers_own_windows() -> None:
    server = dataclasses.replace(SERVER_10_3, snd_wnd=128, rcv_wnd=64, max_window=8192)
    client = HandshakeConfig(server_public_key=SERVER_PUB, snd_wnd=8192, rcv_wnd=8192)
    run = run_handshake(client, server)
    assert run.server_conn is not None
    p = run.server_conn.params
    # client -> server is what the server buffers (its rcv_wnd); server -> client is what it sends
    assert (p.snd_wnd, p.rcv_wnd) == (64, 128)


def test_no_proposal_gets_past_the_servers_policy() -> None:
    """Random (also absurd) proposals: each is refused or agreed within every bound of the policy."""
    server = HandshakeConfig(
        static_key=SERVER_PRIV,
        mtu=1400,
        min_mtu=600,
        snd_wnd=256,
        rcv_wnd=128,
        max_window=1024,
        fec=(10, 3),
        mux_versions=(2,),
    )
    rnd = random.Random(5)
    agreed = refused = 0
    for _ in range(3000):
        d = rnd.choice([0, 1, 2, 5, 10, 20, 128, 200, 255])
        hello = ClientHello(
            versions=tuple(rnd.sample(range(1, 5), rnd.randint(1, 3))),
            suites=(2,),
            mtu=rnd.choice([0, 500, 600, 1200, 1400, 9000, 65535]),
            snd_wnd=rnd.choice([0, 1, 32, 128, 1024, 65535]),
            rcv_wnd=rnd.choice([0, 1, 32, 128, 1024, 65535]),
            fec=(d, rnd.choice([0, 1, 3, 50, 255])),
            fec_strict=rnd.random() < 0.3,
            mux_versions=tuple(rnd.sample(range(1, 4), rnd.randint(1, 2))),
            token=b"",
        )
        p = negotiate(server, hello, 2)
        if isinstance(p, Refusal):
            refused += 1
            continue
        agreed += 1
        assert outside_policy(server, p) is None, (hello, p)
        assert p.mtu <= 1400 and p.snd_wnd <= 128 and p.rcv_wnd <= 256
        assert p.data_shards + p.parity_shards <= 13
        assert p.parity_shards * 10 <= 3 * p.data_shards
    assert agreed > 100 and refused > 100


# ------------------------------------------------------------------------------------ item 6: liveness


def test_only_authenticated_packets_move_last_authenticated() -> None:
    run = run_handshake(CLIENT, SERVER_10_3)
    cc, sc = run.client_conn, run.server_conn
    assert cc is not None and sc is not None
    t0 = sc.last_authenticated
    rnd = random.Random(3)
    authentic = cc.ping(t0 + 10)
    assert sc.open(authentic, CLIENT_ADDR, t0 + 10) is None  # a PING: no payload, but authentic
    assert sc.last_authenticated == t0 + 10
    header = bytes((T_TRANSPORT,)) + sc.local_cid
    for i in range(200):  # forged packets to the live connection ID, then a replay of the PING
        junk = header + rnd.randbytes(8) + rnd.randbytes(rnd.randrange(17, 200))
        assert sc.open(junk, CLIENT_ADDR, t0 + 20 + i) is None
    assert sc.open(authentic, CLIENT_ADDR, t0 + 500) is None
    assert sc.last_authenticated == t0 + 10
    assert sc.counters.decrypt_errors + sc.counters.replay_too_old >= 200
    assert sc.counters.replay_duplicates == 1
