"""Frame vectors for the TypeScript client's tests, made by our Python implementation.

Prints one JSON object: ``mux`` (smux frames: the parameters and the hex of
``kcprpc.mux.frame``'s encoding) and ``rpc`` (RPC frames: the hex of ``kcprpc.protocol.frames``'s
encoding of fixed frames the TypeScript test builds with its own encoder), plus
``resume`` (a resume proof for fixed inputs). Run with the repo's interpreter from the repo root.
"""

from __future__ import annotations

import json
from typing import Any

from kcprpc.mux.frame import CMD_FIN, CMD_NOP, CMD_PSH, CMD_SYN, encode_frame, encode_upd
from kcprpc.protocol import frames as f
from kcprpc.resume import resume_proof


def main() -> None:
    mux = [
        {"version": 1, "cmd": CMD_SYN, "sid": 3, "data": "", "hex": encode_frame(1, CMD_SYN, 3).hex()},
        {
            "version": 1,
            "cmd": CMD_PSH,
            "sid": 3,
            "data": b"hello".hex(),
            "hex": encode_frame(1, CMD_PSH, 3, b"hello").hex(),
        },
        {"version": 1, "cmd": CMD_FIN, "sid": 3, "data": "", "hex": encode_frame(1, CMD_FIN, 3).hex()},
        {"version": 1, "cmd": CMD_NOP, "sid": 0, "data": "", "hex": encode_frame(1, CMD_NOP, 0).hex()},
        {
            "version": 2,
            "cmd": CMD_PSH,
            "sid": 0xFFFFFFFF,
            "data": "00" * 300,
            "hex": encode_frame(2, CMD_PSH, 0xFFFFFFFF, bytes(300)).hex(),
        },
        {"version": 2, "upd": [16, 65536], "sid": 3, "hex": encode_upd(2, 3, 16, 65536).hex()},
        {
            "version": 2,
            "upd": [0xFFFFFFFF, 524288],
            "sid": 5,
            "hex": encode_upd(2, 5, 0xFFFFFFFF, 524288).hex(),
        },
    ]
    rpc_frames: list[tuple[str, int, int, Any, bytes]] = []

    def add(name: str, frame: Any) -> None:
        data = frame.encode()
        n = int.from_bytes(data[:4], "big")
        ftype = data[4]
        cid = int.from_bytes(data[5:9], "big")
        assert n == len(data) - 9
        rpc_frames.append((name, ftype, cid, frame, data))

    add("hello", f.Hello(1, {"token": "t", "n": 7}, None))
    add(
        "hello_restore",
        f.Hello(
            1,
            {},
            {"rooms": ["r1"], "topics": ["t1"], "offsets": {"topic:t1": [5, 9]}},
            {"sid": "abc", "proof": bytes(range(32))},
        ),
    )
    add("call_unary", f.Call(7, "game.Lobby/join", {"token": "x"}, 5000, 1, {"room": "r1"}))
    add("call_stream", f.Call(8, "svc/bidi", None, None, 0, None))
    add("msg", f.Msg(8, {"a": [1, -2, 3.5, True, None, "é"], "b": b"\x00\xff"}))
    add("end", f.End(8))
    add("cancel", f.Cancel(9))
    add("headers", f.Headers(8, {"x": 1}))
    add("trailer", f.Trailer(7, 5, "no room r1", None, None))
    add("reply", f.Reply(7, {"ok": True}, None, {"t": "m"}))
    add("event5", f.Event("Chat", {"text": "hi"}, "room:r1", 3, 42))
    add("event6", f.Event("Chat", {"text": "hi"}, "topic:t", 3, 42, 1))
    add("event7", f.Event("Pos", {"x": 1}, None, 4, 123456, 0, "entity:42"))
    add("notify", f.Notify("svc/note", [1, 2], None))
    add("ping", f.Ping(3, 1500))
    add("pong", f.Pong(3))
    add("goaway", f.GoAway(0, "client closed"))
    add("rooms", f.Rooms(True, "r1"))
    add(
        "big_ints",
        f.Msg(
            1,
            [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -1, -32, -33, -129, -(2**31), 2**53 - 1],
        ),
    )
    rpc = [{"name": n, "type": t, "cid": c, "hex": d.hex()} for n, t, c, _fr, d in rpc_frames]
    proof = resume_proof(bytes(range(32)), "sess-1", b"\x07" * 32)
    print(
        json.dumps(
            {
                "mux": mux,
                "rpc": rpc,
                "resume": {
                    "token": bytes(range(32)).hex(),
                    "sid": "sess-1",
                    "binding": "07" * 32,
                    "proof": proof.hex(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
