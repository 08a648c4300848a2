"""Workers' routing by connection ID: the reuseport CBPF program (run here by a small classic-BPF
interpreter), the worker byte in the server's connection IDs, the worker's transport, and the
restart policy. The program on a real socket group: tests/integration/test_reuseport_routing.py."""

from __future__ import annotations

import argparse
import struct
import threading

import pytest

import kcprpc
from kcp.errors import KCPUsageError
from kcp.reuseport import (
    BPF_A,
    BPF_ABS,
    BPF_ALU,
    BPF_AND,
    BPF_B,
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JMP,
    BPF_K,
    BPF_LD,
    BPF_LEN,
    BPF_RET,
    FALLBACK,
    Insn,
    cid_router,
    pack_program,
)
from kcp.secure import HandshakeConfig, SecureServer, generate_keypair
from kcp.secure.config import SecureConfig
from kcp.secure.errors import SecureUsageError
from kcp.secure.packet import CID_LEN, MIN_TRANSPORT, T_INITIATION
from kcp.secure.testing import CLIENT_ADDR, run_handshake, seeded_rng
from kcprpc import CompatWire, SecureWire, Transport, UsageError
from kcprpc.workers import RestartPolicy, worker_transport

SERVER_PRIV, SERVER_PUB = generate_keypair(seeded_rng(7))


class OutOfBounds(Exception):
    """A load past the datagram's end: the kernel ends the program with 0."""


def run_cbpf(program: list[Insn], payload: bytes) -> int:
    """Run a classic BPF program on ``payload`` as the kernel does for a reuseport group (the UDP
    payload at offset 0). Only the instructions the router uses; anything else fails the test."""
    a = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        cls = code & 0x07
        if cls == BPF_LD:
            if code == BPF_LD | BPF_LEN:
                a = len(payload)
            elif code == BPF_LD | BPF_B | BPF_ABS:
                if k >= len(payload):
                    return 0
                a = payload[k]
            else:
                raise AssertionError(f"load {code:#x} not interpreted")
            pc += 1
        elif code == BPF_ALU | BPF_AND | BPF_K:
            a &= k
            pc += 1
        elif code == BPF_JMP | BPF_JA:
            pc += 1 + k
        elif code == BPF_JMP | BPF_JEQ | BPF_K:
            pc += 1 + (jt if a == k else jf)
        elif code == BPF_JMP | BPF_JGE | BPF_K:
            pc += 1 + (jt if a >= k else jf)
        elif code == BPF_RET | BPF_A:
            return a
        elif code == BPF_RET | BPF_K:
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")


def transport_packet(worker: int, key_phase: int = 0, size: int = MIN_TRANSPORT) -> bytes:
    return bytes((0xC8 | key_phase, worker)) + bytes(size - 2)


@pytest.mark.parametrize("workers", [2, 3, 8, 256])
def test_a_transport_packet_goes_to_the_worker_its_cid_names(workers: int) -> None:
    prog = cid_router(workers)
    for w in {0, 1, workers - 1}:
        for phase in (0, 1):
            assert run_cbpf(prog, transport_packet(w, phase)) == w
            assert run_cbpf(prog, transport_packet(w, phase, 1400)) == w


def test_everything_else_falls_back_to_the_kernel_hash() -> None:
    prog = cid_router(4)
    assert run_cbpf(prog, transport_packet(4)) == FALLBACK  # no such worker
    assert run_cbpf(prog, transport_packet(255)) == FALLBACK
    assert run_cbpf(prog, transport_packet(1)[: MIN_TRANSPORT - 1]) == FALLBACK  # too short for transport
    assert run_cbpf(prog, b"") == FALLBACK  # never socket 0 by an out-of-bounds load
    assert run_cbpf(prog, b"\xc8") == FALLBACK
    assert run_cbpf(prog, initiation(4)) == FALLBACK  # a client ID naming no worker: by address
    assert run_cbpf(prog, initiation(200)) == FALLBACK
    assert run_cbpf(prog, bytes((0xC2, 1)) + bytes(100)) == FALLBACK  # what a server sends: never routed
    # a kcp-go packet: conv (4, little-endian) then cmd 81..84; nothing secure about it
    assert run_cbpf(prog, struct.pack("<IBBHIII", 0x01020304, 81, 0, 32, 0, 0, 0) + bytes(20)) == FALLBACK
    for first in range(256):  # only 0xC8/0xC9 (by byte 1) and 0xC1 (by byte 4) route
        routed = run_cbpf(prog, bytes((first, 2, 0, 0, 3)) + bytes(60))
        assert routed == (2 if first in (0xC8, 0xC9) else 3 if first == T_INITIATION else FALLBACK)


def initiation(client_cid_first: int) -> bytes:
    """An initiation's shape: type, version, suite, pattern, the client's ID (8), padding."""
    return bytes((T_INITIATION, 1, 1, 1, client_cid_first)) + bytes(7) + bytes(1188)


def test_an_initiation_goes_to_the_worker_its_client_id_names() -> None:
    prog = cid_router(3)
    assert [run_cbpf(prog, initiation(w)) for w in range(3)] == [0, 1, 2]
    assert run_cbpf(prog, initiation(1)[: MIN_TRANSPORT - 1]) == FALLBACK


def test_the_program_is_what_the_kernel_takes() -> None:
    prog = cid_router(2)
    code = pack_program(prog)
    assert len(code) == 8 * len(prog)  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
    assert struct.unpack_from("=HBBI", code, 8 * (len(prog) - 1)) == (BPF_RET | BPF_K, 0, 0, FALLBACK)
    for i, insn in enumerate(prog):  # every jump lands inside the program (the kernel checks too)
        if insn.code & 0x07 == BPF_JMP:
            assert i + 1 + max(insn.jt, insn.jf) < len(prog)
    assert prog[-2] == Insn(BPF_RET | BPF_A, 0, 0, 0)
    with pytest.raises(KCPUsageError):
        cid_router(0)
    with pytest.raises(KCPUsageError):
        cid_router(257)


def test_server_cids_start_with_the_worker_byte_and_stay_random() -> None:
    seen = set()
    for seed in range(20):
        run = run_handshake(
            HandshakeConfig(server_public_key=SERVER_PUB),
            HandshakeConfig(static_key=SERVER_PRIV, cid_prefix=b"\x05"),
            seed=seed,
        )
        assert run.server_conn is not None and run.client_conn is not None
        cid = run.server_conn.local_cid
        assert len(cid) == CID_LEN and cid[0] == 5 and run.client_conn.remote_cid == cid
        seen.add(cid[1:])
    assert len(seen) == 20  # the other 7 bytes are drawn for each connection
    plain = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB), HandshakeConfig(static_key=SERVER_PRIV)
    )
    assert plain.server_conn is not None and len(plain.server_conn.local_cid) == CID_LEN


def test_every_worker_resets_any_workers_connection() -> None:
    """The stateless-reset token comes from the static key, not the process: the worker that gets a
    packet for a connection it does not know (its restarted self) resets it at once."""
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB),
        HandshakeConfig(static_key=SERVER_PRIV, cid_prefix=b"\x01"),
    )
    assert run.client_conn is not None
    other = SecureServer(HandshakeConfig(static_key=SERVER_PRIV, cid_prefix=b"\x00"), seeded_rng(5))
    r = other.receive(run.client_conn.seal(b"hello", 10), CLIENT_ADDR, 10)
    ((reset, _),) = r.replies
    assert reset[-16:] == run.server.reset_token(run.server_conn.local_cid if run.server_conn else b"")


def test_a_client_asks_for_a_worker_with_its_own_cid_prefix() -> None:
    run = run_handshake(
        HandshakeConfig(server_public_key=SERVER_PUB, cid_prefix=b"\x01"),
        HandshakeConfig(static_key=SERVER_PRIV),
    )
    assert run.client_conn is not None and run.server_conn is not None
    assert run.to_server[0][4] == 1 and run.client_conn.local_cid[0] == 1  # in the initiation, as routed
    assert run_cbpf(cid_router(2), run.to_server[0]) == 1


def test_cid_prefix_is_at_most_one_byte() -> None:
    assert SecureConfig(cid_prefix=b"\xff").cid_prefix == b"\xff"
    with pytest.raises(SecureUsageError, match="cid_prefix"):
        SecureConfig(cid_prefix=b"\x00\x01")


def test_worker_transport() -> None:
    base = Transport(SecureWire(key="k"))
    t = worker_transport(base, 3, None)
    assert isinstance(t.wire, SecureWire) and t.wire.config is not None
    assert t.wire.config.cid_prefix == b"\x03" and t.wire.config.reset_key is None and t.wire.key == "k"
    assert worker_transport(base, None, None) is base  # one worker: unchanged
    key = bytes(range(32))
    anon = worker_transport(Transport(SecureWire()), 0, key)
    assert isinstance(anon.wire, SecureWire) and anon.wire.config is not None
    assert anon.wire.config.reset_key == key  # an anonymous server's reset key: one for all workers
    own = Transport(SecureWire(key="k").with_config(reset_key=bytes(32)))
    kept = worker_transport(own, 1, key).wire
    assert isinstance(kept, SecureWire) and kept.config is not None and kept.config.reset_key == bytes(32)
    compat = Transport(CompatWire())
    assert worker_transport(compat, 1, key) is compat  # the kernel's hash routes compat sessions


def test_restart_policy_backs_off_while_a_worker_dies_young() -> None:
    p = RestartPolicy(initial=0.1, maximum=1.0, stable_after=10.0)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5, 50)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert p.failures_after(0, 0.5) == 1
    assert p.failures_after(3, 0.5) == 4  # died young again
    assert p.failures_after(3, 10.0) == 1  # ran long enough: back to the first delay
    with pytest.raises(UsageError):
        RestartPolicy(initial=2.0, maximum=1.0)


def _app() -> kcprpc.Server:
    return kcprpc.Server([], "127.0.0.1", 0, key="k")


def test_serve_workers_misuse_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"1\.\.256"):
        kcprpc.serve_workers(_app, 0)
    with pytest.raises(UsageError, match=r"1\.\.256"):
        kcprpc.serve_workers(_app, 257)
    with pytest.raises(UsageError, match="grace"):
        kcprpc.serve_workers(_app, 2, grace=-1)
    with pytest.raises(UsageError, match="Server"):
        kcprpc.serve_workers(lambda: 42, 2)  # type: ignore[arg-type, return-value]
    with pytest.raises(UsageError, match="module:app"):
        kcprpc.serve_workers(":app", 2)


async def test_serve_workers_refuses_a_running_event_loop() -> None:
    with pytest.raises(UsageError, match="no event loop"):
        kcprpc.serve_workers(_app, 2)


def test_serve_workers_refuses_another_thread() -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            kcprpc.serve_workers(_app, 2)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], UsageError) and "main thread" in str(errors[0])


def test_the_workers_flag_takes_1_to_256() -> None:
    from kcprpc.cli.serve import worker_count

    assert worker_count("1") == 1 and worker_count("256") == 256
    for bad in ("0", "257", "-2", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="number of workers"):
            worker_count(bad)
