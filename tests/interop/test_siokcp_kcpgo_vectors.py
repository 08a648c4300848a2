"""Known answers recorded from real kcp-go v5.6.72 (tests/interop/vectors/kcp-go.json).

For every recorded session: the KCP packets kcp-go sent are accepted by our engine and deliver
the application's writes; and our engine, given the same writes, conv, window and clock, emits
exactly the same KCP packets. (The file name groups it with the other interop tests.)
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from kcpgo_vectors import DATA

from kcp.engine import KCP, getconv

HDR = struct.Struct("<IBBHIIII")


def _sessions() -> list[dict[str, Any]]:
    return list(DATA["full_packets"])


def _kcp_packets(session: dict[str, Any]) -> list[bytes]:
    """The KCP packets inside the decrypted UDP payloads.

    Block ciphers prefix nonce (16) + crc32 (4); AEAD ("aes-128-gcm") and "null" leave nothing in
    ``plain``. FEC data shards then add seqid u32, flag u16 and a u16 size (counting itself).
    """
    off = 0 if session["crypt"] in ("aes-128-gcm", "null") else 20
    out = []
    for p in session["packets"]:
        plain = bytes.fromhex(p["plain"])
        if p["kind"] == "kcp":
            out.append(plain[off:])
        elif p["kind"] == "fec-data":
            (size,) = struct.unpack_from("<H", plain, off + 6)
            out.append(plain[off + 8 : off + 6 + size])
    return out


@pytest.mark.parametrize("session", _sessions(), ids=lambda s: f"{s['crypt']}-fec{s['datashards']}")
def test_kcpgo_packets_accepted_and_reproduced(session: dict[str, Any]) -> None:
    conv = int(session["conv"], 16)
    writes = [bytes.fromhex(w) for w in session["app_writes"]]
    packets = _kcp_packets(session)
    assert len(packets) == len(writes)

    # kcp-go -> us
    rx = KCP(conv)
    rx.update(0)
    for pkt in packets:
        assert getconv(pkt) == conv
        assert rx.input(pkt) == 0
    got = []
    while (m := rx.recv()) is not None:
        got.append(m)
    assert got == writes

    # us, same writes and clock -> the same bytes kcp-go produced
    tx_out: list[bytes] = []
    tx = KCP(conv, tx_out.append)
    tx.nodelay(1, 10, 2, 1)
    wnd = HDR.unpack_from(packets[0])[3]
    tx.wndsize(0, wnd)  # kcp-go advertised its receive window (nothing queued yet)
    tx.setmtu(int(session["mtu"]))
    for w, pkt in zip(writes, packets, strict=True):
        tx.send(w)
        tx.flush(HDR.unpack_from(pkt)[4])  # the ts kcp-go's live clock stamped on that packet
    assert tx_out == packets
