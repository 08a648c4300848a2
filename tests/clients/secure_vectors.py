"""Known answers for the TypeScript secure client, computed by our Python implementation.

Reads a JSON list of scenarios on stdin and prints, for each, the steps a client goes through
when the Python ``kcp.secure.SecureClient`` talks to a Python ``SecureServer`` in memory: every
datagram the client sends (``send``), every datagram it receives and what it makes of it
(``recv``), data it seals after the handshake (``seal``), key updates (``update_keys``), and how
it ends (``end``: state, error class and message, close code). Randomness on both sides comes
from :func:`stream_rng`, which the TypeScript test reproduces, so the TypeScript client must
produce the same bytes (clients/typescript/test/secure_vectors.test.ts).

Scenario fields (hex for bytes): ``client`` (server_public_key, static_key, psk, passphrase, token,
mtu, snd_wnd, rcv_wnd, fec, fec_strict, suites, cid_prefix, data_parts), ``server`` (static_key,
psk, passphrase, suites, mtu, snd_wnd, rcv_wnd, fec, min_mtu, always_retry, cid_prefix,
mux_versions), ``client_seed``/``server_seed`` (strings), ``peer``, ``data`` (client payloads),
``server_data`` (server payloads), ``key_update`` (bool), ``close`` (server CLOSE [code, message]),
``goaway`` (server GOAWAY [code, message]), ``tamper`` (bool: also flip each bit 0 of every byte
of the server's first answer, each fed to a fresh client with the same seed, and report what the
client made of it: ``tampered``, one [state, error class or "", counters that moved] per byte).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

from kcp.secure import HandshakeConfig, SecureClient, SecureConnection, SecureServer

CLIENT_ADDR = ("10.0.0.2", 40000)
SERVER_ADDR = "10.0.0.1:4000"
_BYTES = {"server_public_key", "static_key", "psk", "token", "cid_prefix"}


class _Stream:
    def __init__(self, seed: str) -> None:
        self.seed = seed.encode()
        self.buf = b""
        self.i = 0

    def __call__(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += hashlib.sha256(self.seed + self.i.to_bytes(4, "big")).digest()
            self.i += 1
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def stream_rng(seed: str) -> Callable[[int], bytes]:
    """``rng(n)``: the next ``n`` bytes of SHA-256(seed | counter as 4 big-endian bytes), block after block."""
    return _Stream(seed)


def _config(spec: dict[str, Any]) -> HandshakeConfig:
    kw: dict[str, Any] = {}
    for k, v in spec.items():
        if k in _BYTES:
            kw[k] = bytes.fromhex(v)
        elif k in ("fec",):
            kw[k] = (v[0], v[1])
        elif k in ("suites", "mux_versions", "versions"):
            kw[k] = tuple(v)
        else:
            kw[k] = v
    return HandshakeConfig(**kw)


def recv_step(datagram: bytes, payload: bytes | None, now: int) -> dict[str, Any]:
    """The script step of the client receiving ``datagram`` at ``now`` (``payload``: what it opened to, if any)."""
    return {
        "op": "recv",
        "hex": datagram.hex(),
        "now": now,
        "payload": None if payload is None else payload.hex(),
    }


def run(sc: dict[str, Any]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    cli = SecureClient(_config(sc["client"]), stream_rng(sc["client_seed"]), peer=sc.get("peer", ""))
    srv = SecureServer(_config(sc["server"]), stream_rng(sc["server_seed"]))
    cconn: SecureConnection | None = None
    sconn: SecureConnection | None = None
    now = 0
    out = [cli.initiate(now)]
    for _ in range(8):
        if not out:
            break
        now += 1
        nxt: list[bytes] = []
        for d in out:
            steps.append({"op": "send", "hex": d.hex(), "now": now})
            r = srv.receive(d, CLIENT_ADDR, now)
            if r.accepted:
                sconn = r.connection
            for reply, _addr in r.replies:
                now += 1
                if cconn is None:
                    got = cli.receive(reply, SERVER_ADDR, now)
                    if got is not None:
                        cconn = got
                    steps.append({"op": "recv", "hex": reply.hex(), "now": now, "state": cli.state.value})
                else:
                    steps.append(recv_step(reply, cconn.open(reply, SERVER_ADDR, now), now))
            nxt += cli.datagrams_to_send(now)
            if cconn is not None:
                nxt += [dg for dg, _ in cconn.datagrams_to_send(now)]
        out = nxt
    end: dict[str, Any] = {"op": "end", "state": cli.state.value}
    if cli.error is not None:
        end["error"] = type(cli.error).__name__
        end["message"] = str(cli.error)
        end["code"] = cli.error.code
    if cconn is not None and sconn is not None:
        end["conv"] = int.from_bytes(cconn.handshake_hash[:4], "little")
        end["remote_cid"] = cconn.remote_cid.hex()
        end["params"] = {
            "mtu": cconn.params.mtu,
            "snd_wnd": cconn.params.snd_wnd,
            "rcv_wnd": cconn.params.rcv_wnd,
            "fec": [cconn.params.data_shards, cconn.params.parity_shards],
            "mux": cconn.params.mux_version,
            "suite": cconn.params.suite,
            "features": cconn.params.features,
        }

        def exchange() -> None:
            nonlocal now
            assert cconn is not None and sconn is not None
            for p in sc.get("data", []):
                now += 1
                d = cconn.seal(bytes.fromhex(p), now)
                steps.append({"op": "seal", "payload": p, "hex": d.hex(), "now": now})
                got = sconn.open(d, CLIENT_ADDR, now)
                assert got == bytes.fromhex(p), "the server did not open the client's data"
            for p in sc.get("server_data", []):
                now += 1
                d = sconn.seal(bytes.fromhex(p), now)
                steps.append(recv_step(d, cconn.open(d, SERVER_ADDR, now), now))

        exchange()
        if sc.get("key_update"):
            now += 1
            assert cconn.update_keys(now)
            steps.append({"op": "update_keys", "now": now})
            exchange()
            end["epoch"] = cconn.epoch
        for field, send in (("goaway", sconn.goaway), ("close", sconn.close)):  # a server GOAWAY, then CLOSE
            if sc.get(field):
                now += 1
                code, msg = sc[field]
                d = send(code, msg, now)
                cconn.open(d, SERVER_ADDR, now)
                steps.append(recv_step(d, None, now))
        end["conn_state"] = cconn.state.value
        end["close_code"] = cconn.close_code
        end["close_message"] = cconn.close_message
        end["goaway"] = list(cconn.goaway_received) if cconn.goaway_received else None
    steps.append(end)
    result: dict[str, Any] = {"name": sc["name"], "steps": steps}
    if sc.get("tamper"):
        answer = bytes.fromhex(next(st["hex"] for st in steps if st["op"] == "recv"))
        tampered = []
        for i in range(len(answer)):
            bad = bytearray(answer)
            bad[i] ^= 1
            c = SecureClient(_config(sc["client"]), stream_rng(sc["client_seed"]), peer=sc.get("peer", ""))
            c.initiate(0)
            before = c.counters.snapshot()
            c.receive(bytes(bad), SERVER_ADDR, 2)
            moved = sorted(k for k, v in c.counters.snapshot().items() if v != before.get(k))
            tampered.append([c.state.value, type(c.error).__name__ if c.error else "", moved])
        result["tampered"] = tampered
    return result


def main() -> None:
    scenarios = json.load(sys.stdin)
    json.dump([run(sc) for sc in scenarios], sys.stdout)


if __name__ == "__main__":
    main()
