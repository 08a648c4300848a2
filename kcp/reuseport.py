"""Several processes on one UDP port: an ``SO_REUSEPORT`` group routed by connection ID.

The kernel spreads the datagrams of a reuseport group over its sockets by a hash of the 4-tuple
(source and destination address and port). That keeps a compat (kcp-go) session, found by its
address, on one socket, but a secure session that migrates (a new source address or port) would
land on another socket, in a process that does not know its connection ID. So, as QUIC servers
do, each worker puts its index in the first byte of the connection IDs it hands out
(``SecureConfig.cid_prefix``), and a classic BPF program attached to the group with
``SO_ATTACH_REUSEPORT_CBPF`` reads that byte from each datagram:

* a secure transport packet (type byte ``0xC8 | key phase``, at least ``MIN_TRANSPORT`` bytes):
  its connection ID's first byte, the index of the socket that gets it, when it is below the
  number of workers;
* a handshake initiation: the first byte of the *client's* connection ID, which a client picks at
  random (so fresh handshakes spread evenly) or, reconnecting, sets to the worker of its last
  connection, where its session waits to be resumed (``SecureConfig.cid_prefix`` on the client);
  the handshake's retransmissions and its cookie retry carry the same ID, so they follow;
* anything else (other handshake packets, kcp-go packets, indexes out of range): an index past the
  group's end, and the kernel falls back to its hash.

For UDP the program sees the datagram's payload at offset 0 (the kernel pulls the UDP header
first), and an index at or past the number of sockets in the group makes the kernel use its hash
(net/core/sock_reuseport.c, ``run_bpf_filter``). Indexes are positions in the group, in the order
the sockets were bound, and a closed socket's place is taken by the last one: so
:func:`open_reuseport_group` binds all the sockets in order and its caller keeps every one open
for the group's whole life (``kcprpc.workers`` keeps them in the supervising process, and a
restarted worker serves on the same socket).

:func:`cid_router` builds the program (a pure function, tested with a small interpreter);
:func:`attach_cbpf` attaches one (Linux).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from typing import Final, NamedTuple

from kcp.batch import open_udp_socket
from kcp.errors import KCPUsageError
from kcp.secure.packet import MIN_TRANSPORT, T_INITIATION, T_TRANSPORT

INIT_SENDER_CID: Final = 4
"""Where an initiation's sender (client) connection ID starts: type, version, suite, pattern."""

__all__ = [
    "FALLBACK",
    "MAX_WORKERS",
    "SO_ATTACH_REUSEPORT_CBPF",
    "Insn",
    "attach_cbpf",
    "cid_router",
    "open_reuseport_group",
]

SO_ATTACH_REUSEPORT_CBPF: Final = 51
"""Linux ``<asm-generic/socket.h>`` (Python's socket module does not name it)."""

MAX_WORKERS: Final = 256
"""One connection-ID byte names the worker."""

FALLBACK: Final = 0xFFFFFFFF
"""What the program returns for "no choice": past any group's end, so the kernel uses its hash."""

# classic BPF opcodes (<linux/filter.h>, <linux/bpf_common.h>)
BPF_LD: Final = 0x00
BPF_JMP: Final = 0x05
BPF_RET: Final = 0x06
BPF_ALU: Final = 0x04
BPF_W: Final = 0x00
BPF_B: Final = 0x10
BPF_ABS: Final = 0x20
BPF_LEN: Final = 0x80
BPF_JA: Final = 0x00
BPF_JEQ: Final = 0x10
BPF_JGE: Final = 0x30
BPF_AND: Final = 0x50
BPF_K: Final = 0x00
BPF_A: Final = 0x10


class Insn(NamedTuple):
    """One classic BPF instruction (``struct sock_filter``): opcode, jump-if-true offset,
    jump-if-false offset, constant."""

    code: int
    jt: int
    jf: int
    k: int


def cid_router(workers: int, min_len: int = MIN_TRANSPORT) -> list[Insn]:
    """The program that sends a secure transport packet to the socket its connection ID's first
    byte names, an initiation to the one its client connection ID's first byte names, and
    everything else to the kernel's hash.

    ``workers`` is the number of sockets in the group (2..256); ``min_len`` the shortest transport
    packet (shorter datagrams are neither transport packets nor initiations, and the loads below
    never read past the end of the datagram: a classic BPF load out of bounds would end the
    program with 0, socket 0).
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise KCPUsageError(f"a reuseport group routed by connection ID has 1..{MAX_WORKERS} sockets")
    # jump offsets count from the next instruction; 11 is the fallback
    return [
        Insn(BPF_LD | BPF_W | BPF_LEN, 0, 0, 0),  # 0: A = datagram length
        Insn(BPF_JMP | BPF_JGE | BPF_K, 0, 9, min_len),  # 1: too short -> 11
        Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 0),  # 2: A = type byte
        Insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, T_INITIATION),  # 3: an initiation? -> 4, else 6
        Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, INIT_SENDER_CID),  # 4: A = the client's ID's first byte
        Insn(BPF_JMP | BPF_JA, 0, 0, 3),  # 5: -> 9
        Insn(BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xFE),  # 6: without the key-phase bit
        Insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, T_TRANSPORT),  # 7: not a transport packet -> 11
        Insn(BPF_LD | BPF_B | BPF_ABS, 0, 0, 1),  # 8: A = the connection ID's first byte
        Insn(BPF_JMP | BPF_JGE | BPF_K, 1, 0, workers),  # 9: no such worker -> 11
        Insn(BPF_RET | BPF_A, 0, 0, 0),  # 10: that worker's socket
        Insn(BPF_RET | BPF_K, 0, 0, FALLBACK),  # 11: the kernel's hash
    ]


def pack_program(program: list[Insn]) -> bytes:
    """The instructions as the kernel's ``struct sock_filter`` array (native byte order)."""
    return b"".join(struct.pack("=HBBI", i.code, i.jt, i.jf, i.k) for i in program)


def attach_cbpf(sock: socket.socket, program: list[Insn]) -> None:
    """Attach ``program`` to the reuseport group of ``sock`` (Linux; raises OSError otherwise)."""
    if not sys.platform.startswith("linux"):
        raise OSError("SO_ATTACH_REUSEPORT_CBPF needs Linux")
    code = pack_program(program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buf))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def open_reuseport_group(host: str, port: int, count: int, *, route_by_cid: bool) -> list[socket.socket]:
    """``count`` non-blocking UDP sockets bound to ``host:port`` with ``SO_REUSEPORT``, in order
    (socket ``i`` is index ``i`` of the group); ``port`` 0 binds the first to a free port and the
    others to the same. ``route_by_cid``: attach :func:`cid_router` (secure mode). The caller owns
    the sockets and must keep all of them open while the group serves (see the module docstring).
    """
    if count < 1:
        raise KCPUsageError("a reuseport group needs at least one socket")
    program = cid_router(count) if route_by_cid else None
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = open_udp_socket(host, port, reuse_port=True)
            socks.append(sock)
            if len(socks) == 1:
                port = sock.getsockname()[1]
                if program is not None:
                    attach_cbpf(sock, program)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks
