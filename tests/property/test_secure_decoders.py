"""Property tests: arbitrary bytes into every secure-mode decoder never raise (except the
documented DecodeError of the low-level codecs), and mutated genuine packets never authenticate."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from kcp.secure import (
    ClientHello,
    HandshakeConfig,
    ReplayWindow,
    SecureClient,
    SecureServer,
    generate_keypair,
)
from kcp.secure.errors import DecodeError
from kcp.secure.packet import (
    T_INITIATION,
    T_RESPONSE,
    T_RETRY,
    T_TRANSPORT,
    decode_reason_frame,
    decode_tlv,
    peek_cid,
)
from kcp.secure.replay import DUPLICATE, OK, TOO_OLD
from kcp.secure.testing import CLIENT_ADDR, SERVER_ADDR, run_handshake, seeded_rng

SERVER_PRIV, SERVER_PUB = generate_keypair(seeded_rng(7))
PSK = bytes(range(32))
RUN = run_handshake(
    HandshakeConfig(server_public_key=SERVER_PUB), HandshakeConfig(static_key=SERVER_PRIV, psk=None)
)
assert RUN.client_conn is not None and RUN.server_conn is not None
CLIENT_CONN, SERVER_CONN = RUN.client_conn, RUN.server_conn
TYPES = st.sampled_from([T_INITIATION, T_RESPONSE, T_RETRY, T_TRANSPORT, T_TRANSPORT | 1, 0, 0xF1, 0xFF])


def typed(prefix: bytes = b"") -> st.SearchStrategy[bytes]:
    return st.builds(lambda t, body: bytes((t,)) + prefix + body, TYPES, st.binary(max_size=1500))


@given(st.one_of(st.binary(max_size=1500), typed(), typed(SERVER_CONN.local_cid)))
def test_server_receive_never_raises(data: bytes) -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, psk=PSK, always_retry=False), seeded_rng(1))
    r = server.receive(data, CLIENT_ADDR, 0)
    assert r.connection is None and r.payload is None
    assert all(len(reply) <= len(data) for reply, _ in r.replies)


@given(st.binary(min_size=0, max_size=1400), st.integers(0, 3), st.sampled_from([1200, 256, 1472]))
def test_server_receive_of_mac1_valid_garbage_never_raises(body: bytes, pattern: int, size: int) -> None:
    """Garbage that passes the mac1 filter (an attacker who knows the server's key) reaches the
    Noise and TLV decoders; still nothing raises and nothing is kept."""
    from kcp.secure.cookie import mac16
    from kcp.secure.handshake import _mac1_key

    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, psk=PSK), seeded_rng(2))
    material = SERVER_PUB if pattern == 1 else PSK
    head = bytes((T_INITIATION, 1, 1 + pattern % 2, pattern)) + bytes(8)
    d = (head + body)[: size - 32].ljust(size - 32, b"\0")
    d += mac16(_mac1_key(pattern, material), d) + bytes(16)
    r = server.receive(d, CLIENT_ADDR, 0)
    assert server.half_open <= 1 and all(len(x) <= len(d) for x, _ in r.replies)


@given(st.one_of(st.binary(max_size=300), typed(), typed(b"\x00")))
def test_client_receive_never_raises(data: bytes) -> None:
    client = SecureClient(HandshakeConfig(server_public_key=SERVER_PUB), seeded_rng(3))
    client.initiate(0)
    cid_prefixed = data[:2] + client.local_cid + data[2:]
    for d in (data, cid_prefixed):
        assert client.receive(d, SERVER_ADDR, 1) is None


@given(st.one_of(st.binary(max_size=1500), typed(), typed(SERVER_CONN.local_cid + bytes(8))))
def test_connection_open_never_raises_nor_accepts_garbage(data: bytes) -> None:
    before = SERVER_CONN.counters.packets_opened
    assert SERVER_CONN.open(data, CLIENT_ADDR, 0) is None
    assert SERVER_CONN.counters.packets_opened == before
    peek_cid(data)


@given(st.binary(min_size=1, max_size=200), st.data())
def test_mutated_genuine_packets_never_authenticate(payload: bytes, data: st.DataObject) -> None:
    pkt = bytearray(CLIENT_CONN.seal(payload, 0))
    positions = data.draw(st.lists(st.integers(0, len(pkt) - 1), min_size=1, max_size=4, unique=True))
    for pos in positions:
        pkt[pos] ^= data.draw(st.integers(1, 255))
    assert SERVER_CONN.open(bytes(pkt), CLIENT_ADDR, 0) is None


@given(st.binary(max_size=600))
def test_tlv_and_hello_decoders_raise_only_decode_error(data: bytes) -> None:
    for fn in (decode_tlv, ClientHello.decode, decode_reason_frame):
        with contextlib.suppress(DecodeError):
            fn(data)


@given(
    st.sampled_from([64, 100, 2048]),
    st.lists(st.one_of(st.integers(0, 6000), st.integers(0, 2**64 - 1)), max_size=300),
    st.lists(st.integers(-70, 70), max_size=300),
)
def test_replay_window_matches_a_set_model(size: int, pns: list[int], steps: list[int]) -> None:
    # any packet numbers (jumps of any length), then packets around the top: in order, reordered,
    # repeated, just inside and just outside the window
    w = ReplayWindow(size)
    seen: set[int] = set()
    top = -1
    for pn in [*pns, *(max(0, (max(pns) if pns else 0) + d * (1 + size // 64)) for d in steps)]:
        if pn > top:
            expect = OK
        elif top - pn >= size:
            expect = TOO_OLD
        else:
            expect = DUPLICATE if pn in seen else OK
        assert w.check(pn) == expect
        if expect == OK:
            w.update(pn)
            seen.add(pn)
            top = max(top, pn)


def _initiation_with_payload(payload: bytes, seed: int) -> bytes:
    """A correctly keyed and MACed initiation whose encrypted payload is ``payload``."""
    import struct

    from kcp.secure.cookie import mac16
    from kcp.secure.handshake import _mac1_key
    from kcp.secure.noise import IKPSK2, SUITES, HandshakeState, KeyPair
    from kcp.secure.packet import PATTERN_IKPSK2, PROLOGUE_LABEL

    rng = seeded_rng(seed)
    header = bytes((T_INITIATION, 1, 1, PATTERN_IKPSK2)) + rng(8)
    hs = HandshakeState(
        IKPSK2,
        SUITES[1],
        initiator=True,
        prologue=PROLOGUE_LABEL + header,
        rng=rng,
        s=KeyPair.generate(rng),
        rs=SERVER_PUB,
        psk=bytes(32),
    )
    msg1 = hs.write_message(payload)
    body = header + struct.pack(">H", len(msg1)) + msg1
    body = body.ljust(1200 - 32, b"\0")
    return body + mac16(_mac1_key(PATTERN_IKPSK2, SERVER_PUB), body) + bytes(16)


HELLOS = st.builds(
    ClientHello,
    versions=st.lists(st.integers(0, 255), max_size=4).map(tuple),
    suites=st.lists(st.integers(0, 255), max_size=4).map(tuple),
    mtu=st.integers(0, 65535),
    snd_wnd=st.integers(0, 65535),
    rcv_wnd=st.integers(0, 65535),
    fec=st.tuples(st.integers(0, 255), st.integers(0, 255)),
    fec_strict=st.booleans(),
    mux_versions=st.lists(st.integers(0, 255), max_size=4).map(tuple),
    token=st.binary(max_size=64),
)


@given(st.one_of(st.binary(max_size=400), HELLOS.map(lambda h: h.encode())), st.integers(0, 1000))
def test_authenticated_but_arbitrary_client_hello_never_raises(payload: bytes, seed: int) -> None:
    server = SecureServer(HandshakeConfig(static_key=SERVER_PRIV), seeded_rng(4))
    d = _initiation_with_payload(payload, seed)
    r = server.receive(d, CLIENT_ADDR, 0)
    assert len(r.replies) <= 1 and all(len(x) <= len(d) for x, _ in r.replies)
    if r.replies:  # accepted or refused: then the params it agreed to are sane
        for h in list(server._half_open.values()):
            p = h.params
            assert p.mtu >= 576 and p.snd_wnd > 0 and p.rcv_wnd > 0 and p.version in (1,)
