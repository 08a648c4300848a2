"""The grpcurl-like commands, each run as a subprocess against a server on 127.0.0.1 (reflection on)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kcprpc.status import Status

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "integration" / "cli_server.py"
TOKEN = "publisher-secret"
COMPAT = [  # kcptun's flags: a kcp-go cipher selects compat mode
    "--crypt",
    "aes",
    "--key",
    "cli secret",
    "--datashard",
    "10",
    "--parityshard",
    "3",
    "--mode",
    "fast2",
]


class Srv:
    def __init__(self, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), *flags],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.addr = f"127.0.0.1:{line.split()[1]}"

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def srv() -> Iterator[Srv]:
    s = Srv()
    yield s
    s.stop()


def kcprpc(*argv: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    # the `kcprpc` command itself
    r = subprocess.run(
        [sys.executable, "-m", "kcprpc", *argv],
        cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert "Traceback" not in r.stderr, r.stderr
    return r


def code(status: Status) -> int:
    return 64 + int(status)


def test_list(srv: Srv) -> None:
    r = kcprpc("list", srv.addr)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "game.v1.Game", "kcprpc.Health", "kcprpc.Push", "kcprpc.Reflection", "kcprpc.State", "live.v1.Live",
        "quickstart.Greeter", "test.Echo",
    ]  # fmt: skip
    r = kcprpc("list", srv.addr, "game.v1.Game")
    assert r.stdout.split() == [
        "game.v1.Game.join",
        "game.v1.Game.leave",
        "game.v1.Game.move",
        "game.v1.Game.position",
        "game.v1.Game.say",
    ]


def test_describe(srv: Srv) -> None:
    r = kcprpc("describe", srv.addr, "game.v1.Game")
    assert r.returncode == 0, r.stderr
    assert "rpc join(JoinRequest) returns (JoinReply)  [unary, reliable]" in r.stdout
    assert "rpc position(PositionUpdate)  [notify, unreliable]" in r.stdout
    assert "event game.chat: ChatLine  [reliable" in r.stdout
    # the served document is byte-identical to the checked-in one
    r = kcprpc("describe", srv.addr, "quickstart.Greeter", "--json")
    assert r.stdout == (ROOT / "idl" / "quickstart.Greeter.json").read_text()
    r = kcprpc("describe", srv.addr, "test.Echo.shout", "--json")
    info = json.loads(r.stdout)
    assert info["method"]["kind"] == "bidi" and "Line" in info["$defs"]
    r = kcprpc("describe", srv.addr, "game.v1.Game.JoinRequest", "--json")
    assert json.loads(r.stdout)["schema"]["properties"]["room"]["maxLength"] == 32
    r = kcprpc("describe", srv.addr, "game.v1.Game.game.chat")  # an event (its name has dots)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("game.v1.Game.game.chat:  event") and "player_id" in r.stdout
    r = kcprpc("describe", srv.addr, "game.v1.Game.nope")
    assert r.returncode == code(Status.NOT_FOUND) and r.stderr.startswith("NOT_FOUND: ")


def test_call_unary(srv: Srv, tmp_path: Path) -> None:
    r = kcprpc("call", srv.addr, "quickstart.Greeter.hello", '{"name": "ann"}')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"message": "Hello, ann!"}
    f = tmp_path / "req.json"
    f.write_text('{"name": "bob"}')
    assert json.loads(kcprpc("call", srv.addr, "quickstart.Greeter/hello", "-d", f"@{f}").stdout) == {
        "message": "Hello, bob!"
    }
    r = kcprpc("call", srv.addr, "quickstart.Greeter.hello", "-d", "@-", stdin='{"name": "cy"}')
    assert json.loads(r.stdout) == {"message": "Hello, cy!"}
    r = kcprpc("call", srv.addr, "kcprpc.Health.Check")  # no JSON: {} (the defaults)
    assert json.loads(r.stdout) == {"status": "SERVING"}
    r = kcprpc("call", srv.addr, "game.v1.Game.position", '{"seq": 1, "x": 1, "y": 2}')  # notify: no answer
    assert r.returncode == 0 and r.stdout == "", r.stderr


def test_call_metadata_and_server_errors(srv: Srv) -> None:
    chat = '{"channel": "x", "user": "u", "text": "hi"}'
    r = kcprpc("call", srv.addr, "live.v1.Live.chat", chat)
    assert r.returncode == code(Status.PERMISSION_DENIED)
    assert r.stderr.strip() == "PERMISSION_DENIED: publisher token required"
    r = kcprpc("call", srv.addr, "live.v1.Live.chat", chat, "-H", f"token={TOKEN}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["seq"] >= 1
    r = kcprpc("call", srv.addr, "test.Echo.who", "-H", "a=1", "-H", "b=two")
    assert json.loads(r.stdout) == {"a": "1", "b": "two"}
    r = kcprpc("call", srv.addr, "game.v1.Game.move", '{"dx": 1, "dy": 1}')
    assert r.returncode == code(Status.FAILED_PRECONDITION)
    assert r.stderr.strip() == "FAILED_PRECONDITION: join a room first"


def test_call_validates_json_before_sending(srv: Srv) -> None:
    r = kcprpc("call", srv.addr, "game.v1.Game.move", '{"dx": 9, "dy": 1}')
    assert r.returncode == code(Status.INVALID_ARGUMENT)
    assert r.stderr.startswith("INVALID_ARGUMENT: request does not match game.v1.Game/move")
    assert "dx: 9 is greater than the maximum of 5" in r.stderr
    r = kcprpc("call", srv.addr, "game.v1.Game.join", '{"room": "r"}')
    assert "'name' is a required property" in r.stderr
    r = kcprpc("call", srv.addr, "game.v1.Game.join", "{room: r}")
    assert r.returncode == code(Status.INVALID_ARGUMENT)
    assert r.stderr.startswith("INVALID_ARGUMENT: the request is not valid JSON")
    # without the client-side check the server's own validation answers, with pydantic's details
    r = kcprpc("call", srv.addr, "game.v1.Game.move", '{"dx": 9, "dy": 1}', "--no-validate")
    assert r.returncode == code(Status.INVALID_ARGUMENT)
    assert "less than or equal to 5" in r.stderr
    r = kcprpc("call", srv.addr, "game.v1.Game.fly", "{}")
    assert r.returncode == code(Status.NOT_FOUND) and "no method 'fly'" in r.stderr
    r = kcprpc("call", srv.addr, "nope.Service.x", "{}")
    assert r.returncode == code(Status.NOT_FOUND)
    r = kcprpc("call", "not-an-address", "a.b", "{}")
    assert r.returncode == 2 and r.stderr.startswith("kcprpc: ")


def test_call_streams(srv: Srv) -> None:
    r = kcprpc("call", srv.addr, "quickstart.Greeter.count", '{"to": 3}')
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in r.stdout.splitlines()] == [{"n": 1}, {"n": 2}, {"n": 3}]
    lines = '{"text": "ab"}\n\n{"text": "cde"}\n'
    r = kcprpc("call", srv.addr, "test.Echo.shout", stdin=lines)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x) for x in r.stdout.splitlines()] == [{"text": "AB"}, {"text": "CDE"}]
    r = kcprpc("call", srv.addr, "test.Echo.total", "-d", lines)
    assert r.returncode == 0 and json.loads(r.stdout) == 5
    r = kcprpc("call", srv.addr, "test.Echo.shout", stdin='{"text": "ok"}\n{"text": 5}\n')
    assert r.returncode == code(Status.INVALID_ARGUMENT), r.stderr
    assert "text: 5 is not of type 'string'" in r.stderr


def test_call_timeout(srv: Srv) -> None:
    r = kcprpc(
        "call", srv.addr, "quickstart.Greeter.count", '{"to": 50, "interval_ms": 100}', "--timeout", "0.3"
    )
    assert r.returncode == code(Status.DEADLINE_EXCEEDED), r.stderr
    assert r.stderr.startswith("DEADLINE_EXCEEDED")
    assert len(r.stdout.splitlines()) < 50  # cut short (how many arrived depends on the machine)


def test_watch(srv: Srv) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "kcprpc", "watch", srv.addr, "channel:demo", "-n", "2", "--duration", "20"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watcher.stderr is not None
        assert watcher.stderr.readline() == "subscribed to channel:demo\n"
        for text in ("one", "two"):
            req = json.dumps({"channel": "demo", "user": "u", "text": text})
            r = kcprpc("call", srv.addr, "live.v1.Live.chat", "-d", req, "-H", f"token={TOKEN}")
            assert r.returncode == 0, r.stderr
        out, err = watcher.communicate(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    events = [json.loads(x) for x in out.splitlines()]
    assert [e["data"]["text"] for e in events] == ["one", "two"]
    assert all(e["event"] == "live.chat" and e["topic"] == "channel:demo" for e in events)
    assert events[1]["seq"] == events[0]["seq"] + 1 and events[0]["epoch"] == events[1]["epoch"]


def test_ping_and_stats(srv: Srv) -> None:
    r = kcprpc("ping", srv.addr, "-c", "2", "-i", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("SERVING") == 2
    r = kcprpc("stats", srv.addr)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["server"]["connections"] >= 1 and "transport" in st and "rtt_ms" in st["session"]


def test_transport_flags_match_kcptun_names() -> None:
    s = Srv(*COMPAT)
    try:
        r = kcprpc("call", s.addr, "quickstart.Greeter.hello", '{"name": "x"}', *COMPAT)
        assert r.returncode == 0, r.stderr
        r = kcprpc("ping", s.addr, "-c", "1", *COMPAT)
        assert r.returncode == 0, r.stderr
        wrong = [*COMPAT[:3], "other key", *COMPAT[4:]]
        r = kcprpc("list", s.addr, *wrong, "--connect-timeout", "1")
        assert r.returncode == code(Status.UNAVAILABLE) and r.stderr.startswith("UNAVAILABLE: ")
        assert "no answer" in r.stderr
        r = kcprpc("list", s.addr, "--datashard", "10")
        assert r.returncode == 2 and "--parityshard" in r.stderr
    finally:
        s.stop()


def test_reflection_off() -> None:
    s = Srv("--no-reflection")
    try:
        r = kcprpc("list", s.addr)
        assert r.returncode == code(Status.UNIMPLEMENTED)
        assert "reflection off" in r.stderr and "--idl" in r.stderr
        doc = str(ROOT / "idl" / "quickstart.Greeter.json")
        r = kcprpc("call", s.addr, "quickstart.Greeter.hello", '{"name": "z"}', "--idl", doc)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"message": "Hello, z!"}
        r = kcprpc("list", s.addr, "--idl", doc)
        assert r.stdout.split() == ["quickstart.Greeter"]
    finally:
        s.stop()


def test_secure_mode_with_a_pinned_key_from_keygen(tmp_path: Path) -> None:
    keyfile = tmp_path / "server.key"
    r = kcprpc("keygen", "-o", str(keyfile))
    assert r.returncode == 0, r.stderr
    pub = r.stdout.split()[-1]
    assert len(bytes.fromhex(pub)) == 32 and len(bytes.fromhex(keyfile.read_text().strip())) == 32
    s = Srv("--static-key", f"@{keyfile}", "--key", "cli secret", "--ds", "4", "--ps", "2")
    try:
        pinned = ["--server-key", pub, "--key", "cli secret", "--ds", "4", "--ps", "2"]
        r = kcprpc("ping", s.addr, "-c", "1", *pinned)
        assert r.returncode == 0, r.stderr
        r = kcprpc("ping", s.addr, "-c", "1", *pinned[:3], "not it", "--connect-timeout", "1")
        assert r.returncode == code(Status.UNAUTHENTICATED)  # right server key, wrong PSK: one RTT
        assert r.stderr.startswith("UNAUTHENTICATED: secure handshake failed: PSK mismatch")
        r = kcprpc("ping", s.addr, "--server-key", "abcd")
        assert r.returncode == 2 and "64 hex digits" in r.stderr
    finally:
        s.stop()


def test_timeout_bounds_the_connect(srv: Srv) -> None:
    # a server that never answers (a bound UDP socket): only the connect timeout ends the wait;
    # --timeout caps it (the default connect timeout is 5 s), also against a larger --connect-timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        for extra in ([], ["--connect-timeout", "30"]):
            t0 = time.monotonic()
            r = kcprpc("ping", addr, "-c", "1", "--key", "k", "--timeout", "1", *extra, timeout=20)
            elapsed = time.monotonic() - t0
            assert r.returncode == code(Status.UNAVAILABLE), r.stderr
            assert f"no answer from the server at {addr} within 1 s" in r.stderr
            assert elapsed < 4.5, elapsed  # 1 s plus interpreter start-up; was 5 s plus start-up
        r = kcprpc("ping", addr, "-c", "1", "--key", "k", "--timeout", "3", "--connect-timeout", "0.5")
        assert r.returncode == code(Status.UNAVAILABLE) and "within 0.5 s" in r.stderr
    # a wrong passphrase no longer waits at all: the server's wire hint says so
    r = kcprpc("ping", srv.addr, "-c", "1", "--key", "wrong", "--timeout", "3", timeout=20)
    assert r.returncode == code(Status.UNAUTHENTICATED) and "wrong key" in r.stderr, r.stderr


def test_old_host_port_form_gets_a_hint(srv: Srv) -> None:
    port = srv.addr.rsplit(":", 1)[1]
    for cmd in (["ping"], ["stats"], ["list"], ["call", "127.0.0.1", port, "quickstart.Greeter.hello"]):
        argv = cmd if len(cmd) > 1 else [*cmd, "127.0.0.1", port]
        r = kcprpc(*argv, timeout=20)
        assert r.returncode == 2, r.stderr
        assert f"use HOST:PORT (127.0.0.1:{port})" in r.stderr, r.stderr
        assert "unrecognized arguments" not in r.stderr
    r = kcprpc("ping", "localhost", timeout=20)
    assert r.returncode == 2 and "expected HOST:PORT" in r.stderr
    r = kcprpc("ping", srv.addr, "surplus", timeout=20)
    assert r.returncode == 2 and "unrecognized arguments: surplus" in r.stderr
