"""Our listener accepts real kcp-go client traffic: recorded UDP payloads replayed over loopback.

The recordings (tests/interop/vectors/kcp-go.json, ``full_packets``) come from a real kcp-go v5
UDPSession (conv 0x11223344, mtu 1350) for every kcptun cipher, without FEC and with FEC (3, 2).
Replaying them to :func:`kcp.listen` must create one session with kcp-go's conv and deliver exactly
the bytes the kcp-go application wrote.

A compat listener holds a new peer as pending until it acknowledges a challenge (kcp.admission):
a PUSH without data whose sn is just below the peer's receive window and whose ts is random. A
live kcp-go engine acknowledges it by itself; the recording cannot, so the test sends the ack that
kcp-go's engine sends, sealed with the same cipher. Everything the recording sent before is held
and reaches the session.
"""

from __future__ import annotations

import asyncio
import json
import select
import struct
from pathlib import Path
from typing import Any

import pytest

import kcp
from kcp.batch import open_udp_socket
from kcp.crypt import derive_key, new_crypt
from kcp.pipeline import KIND_KCP, Pipeline
from kcp.stats import Counters

_HDR = struct.Struct("<IBBHIIII")  # conv cmd frg wnd ts sn una len
VECTORS = Path(__file__).resolve().parents[1] / "interop" / "vectors" / "kcp-go.json"
_DATA: dict[str, Any] = json.loads(VECTORS.read_text())
_CASES = [
    pytest.param(rec, id=f"{rec['crypt']}-fec{rec['datashards']}-{rec['parityshards']}")
    for rec in _DATA["full_packets"]
]


@pytest.mark.parametrize("rec", _CASES)
async def test_replayed_kcp_go_client_is_accepted(rec: dict[str, Any]) -> None:
    crypt = None if rec["crypt"] == "null" else rec["crypt"]
    async with await kcp.listen(
        "127.0.0.1",
        0,
        kcp.CompatWire(crypt=crypt, key=_DATA["key"], fec=(rec["datashards"], rec["parityshards"])),
        session=kcp.SessionConfig(mtu=rec["mtu"]),
    ) as lis:
        sock = open_udp_socket("127.0.0.1", 0)
        try:
            for pkt in rec["packets"]:
                sock.sendto(bytes.fromhex(pkt["wire"]), lis.address)
            # our listener answers the first datagram with a challenge for kcp-go's conv: a PUSH
            # without data, sn 0xFFFFFFFF (just below a fresh receive window) and a random ts ...
            conv = int(rec["conv"], 16)
            pipe = Pipeline(
                None if crypt is None else new_crypt(crypt, derive_key(_DATA["key"])), 0, 0, Counters()
            )
            ready = await asyncio.get_running_loop().run_in_executor(
                None, lambda: select.select([sock], [], [], 5)[0]
            )
            assert ready, "no challenge came back"
            (kind, challenge), *_ = pipe.open(sock.recv(4096), 0)
            assert kind == KIND_KCP and len(challenge) == 24
            c_conv, cmd, frg, wnd, ts, sn, una, ln = _HDR.unpack_from(challenge)
            assert (c_conv, cmd, frg, wnd, sn, una, ln) == (
                conv,
                81,
                0,
                kcp.SessionConfig().rcv_wnd,
                0xFFFFFFFF,
                0,
                0,
            )
            # ... which kcp-go's engine acknowledges (ikcp acks a segment below its window, echoing
            # sn and ts, and delivers nothing): this ack proves the peer
            sock.sendto(pipe.seal(_HDR.pack(conv, 82, 0, 128, ts, sn, 0, 0), 0)[0], lis.address)
            s = await asyncio.wait_for(lis.accept(), 10)
            assert s.conv == int(rec["conv"], 16)
            expected = b"".join(bytes.fromhex(w) for w in rec["app_writes"])
            assert await asyncio.wait_for(s.readexactly(len(expected)), 10) == expected
            st = lis.stats
            assert st["dropped_no_session"] == 0 and st["dropped_bad_conv"] == 0
            assert st["pending_promoted"] == 1 and st["pending"] == 0
            assert s.stats["in_csum_errors"] == 0 and s.stats["kcp_in_errors"] == 0
            # and our session answers the kcp-go client (acks) on the wire
            ready = await asyncio.get_running_loop().run_in_executor(
                None, lambda: select.select([sock], [], [], 5)[0]
            )
            assert ready, "no ack came back"
        finally:
            sock.close()
