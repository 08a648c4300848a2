"""Every ``kcprpc`` command and every example, given bad input, ends in one line that says what is
wrong and how to fix it (``kcprpc: ...``, ``PROG: error: ...``, ``STATUS: message`` or
``error: ...``), with its exit code, and never a traceback. Each case is a subprocess, as a user
runs it; the client commands talk to the CLI test server on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "tests" / "integration" / "cli_server.py"
ADDR = "{addr}"  # replaced by the test server's HOST:PORT
USAGE = 2
INTERNAL = 70


def code(status: str) -> int:
    from kcprpc.status import Status

    return 64 + int(Status[status])


# (argv after `python -m`, exit code, what the one line starts with, what it must also say)
CASES: list[tuple[list[str], int, str, str]] = [
    # the command line itself
    (["kcprpc"], USAGE, "kcprpc: error:", "required: cmd"),
    (["kcprpc", "nope"], USAGE, "kcprpc: error:", "invalid choice"),
    (["kcprpc", "serve"], USAGE, "kcprpc: serve needs module:app", "KCPRPC_APP"),
    # serve
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--port", "99999"],
        USAGE,
        "kcprpc serve: error:",
        "0..65535",
    ),
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--grace", "-1"],
        USAGE,
        "kcprpc serve: error:",
        "0 or more",
    ),
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--log-level", "loud"],
        USAGE,
        "kcprpc serve: error:",
        "debug",
    ),
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--port", "0", "--host", "nosuchhost.invalid"],
        USAGE,
        "kcprpc: cannot listen on nosuchhost.invalid:0",
        "--host must be",
    ),
    (["kcprpc", "serve", ":app"], USAGE, "kcprpc:", "expected module:app"),
    (["kcprpc", "serve", "nosuchmodule:app"], USAGE, "kcprpc: cannot import 'nosuchmodule'", "PYTHONPATH"),
    (["kcprpc", "serve", "examples.quickstart.service:nope"], USAGE, "kcprpc:", "has no attribute 'nope'"),
    (
        ["kcprpc", "serve", "examples.quickstart.service:HelloRequest"],
        USAGE,
        "kcprpc:",
        "must name a kcprpc.Server",
    ),
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--port", "0", "--mtu", "10"],
        USAGE,
        "kcprpc:",
        "mtu must be",
    ),
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--crypt", "rot13", "--key", "k"],
        USAGE,
        "kcprpc:",
        "known: ",
    ),
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--static-key", "zz"],
        USAGE,
        "kcprpc:",
        "64 hex digits",
    ),
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--server-key", "11" * 32],
        USAGE,
        "kcprpc:",
        "client flag",
    ),
    (
        ["kcprpc", "serve", "examples.quickstart.service:app", "--datashard", "10"],
        USAGE,
        "kcprpc:",
        "--parityshard",
    ),
    # client commands: arguments
    (["kcprpc", "list", "nohost"], USAGE, "kcprpc:", "expected HOST:PORT"),
    (["kcprpc", "list", ADDR, "--timeout", "0"], USAGE, "kcprpc list: error:", "above 0"),
    (["kcprpc", "list", ADDR, "--connect-timeout", "-1"], USAGE, "kcprpc list: error:", "above 0"),
    (["kcprpc", "list", ADDR, "--idl", "/nonexistent.json"], USAGE, "kcprpc:", "cannot read"),
    (["kcprpc", "list", ADDR, "--idl", "README.md"], USAGE, "kcprpc:", "not valid JSON"),
    (["kcprpc", "ping", ADDR, "-c", "0"], USAGE, "kcprpc ping: error:", "1 or more"),
    (["kcprpc", "ping", ADDR, "-i", "-1"], USAGE, "kcprpc ping: error:", "0 or more"),
    (["kcprpc", "watch", ADDR, "channel:demo", "-n", "0"], USAGE, "kcprpc watch: error:", "1 or more"),
    (["kcprpc", "watch", ADDR, "channel:demo", "--duration", "-1"], USAGE, "kcprpc watch: error:", "above 0"),
    (["kcprpc", "stats", ADDR, "extra"], USAGE, "kcprpc:", "unrecognized arguments: extra"),
    (["kcprpc", "call", ADDR, "quickstart.Greeter.hello", "-H", "nokey"], USAGE, "kcprpc:", "key=value"),
    (["kcprpc", "call", ADDR, "quickstart.Greeter.hello", "{}", "-d", "{}"], USAGE, "kcprpc:", "not both"),
    (
        ["kcprpc", "call", ADDR, "quickstart.Greeter.hello", "-d", "@/nonexistent"],
        USAGE,
        "kcprpc:",
        "cannot read",
    ),
    # client commands: the server says no
    (["kcprpc", "list", ADDR, "nosuch.Service"], code("NOT_FOUND"), "NOT_FOUND:", "services: "),
    (["kcprpc", "describe", ADDR, "quickstart.Greeter.nope"], code("NOT_FOUND"), "NOT_FOUND:", "'nope'"),
    (
        ["kcprpc", "call", ADDR, "quickstart.Greeter.hello", "{bad"],
        code("INVALID_ARGUMENT"),
        "INVALID_ARGUMENT:",
        "not valid JSON",
    ),
    (
        ["kcprpc", "call", ADDR, "quickstart.Greeter", "{}"],
        code("INVALID_ARGUMENT"),
        "INVALID_ARGUMENT:",
        "call SERVICE.METHOD",
    ),
    (
        ["kcprpc", "call", ADDR, "quickstart.Greeter.nope"],
        code("NOT_FOUND"),
        "NOT_FOUND:",
        "methods: count, hello",
    ),
    (
        ["kcprpc", "call", ADDR, "test.Echo.shout", "notjson"],
        code("INVALID_ARGUMENT"),
        "INVALID_ARGUMENT:",
        "line 1",
    ),
    (
        ["kcprpc", "call", ADDR, "game.v1.Game.move", '{"dx": 1, "dy": 1}'],
        code("FAILED_PRECONDITION"),
        "FAILED_PRECONDITION:",
        "join a room",
    ),
    (
        ["kcprpc", "call", ADDR, "live.v1.Live.chat", '{"channel": "a", "user": "u", "text": "t"}'],
        code("PERMISSION_DENIED"),
        "PERMISSION_DENIED:",
        "token",
    ),
    (
        ["kcprpc", "watch", ADDR, "nochannel"],
        code("NOT_FOUND"),
        "NOT_FOUND:",
        "its topics: channel:{channel}",
    ),
    (
        ["kcprpc", "watch", ADDR, "channel:{channel}"],
        code("INVALID_ARGUMENT"),
        "INVALID_ARGUMENT:",
        "e.g. 'channel:demo'",
    ),
    (
        ["kcprpc", "ping", ADDR, "--key", "wrong", "--connect-timeout", "0.5"],
        code("UNAUTHENTICATED"),
        "UNAUTHENTICATED: secure handshake failed: wrong key:",
        "(check the passphrase/PSK, or the pinned server public key)",
    ),
    (
        ["kcprpc", "ping", ADDR, "--wire", "compat", "--crypt", "aes", "--key", "x", "--connect-timeout", "0.5"],
        code("FAILED_PRECONDITION"),
        "FAILED_PRECONDITION: wrong wire mode:",
        "speaks the secure wire, not kcp-go's: dial it with kcp.SecureWire",
    ),
    (["kcprpc", "ping", "nosuchhost.invalid:9000"], code("UNAVAILABLE"), "UNAVAILABLE:", "cannot connect"),
    # keygen and idl
    (
        ["kcprpc", "keygen", "-o", "/nonexistent/dir/key"],
        USAGE,
        "kcprpc: cannot write /nonexistent/dir/key",
        "No such file",
    ),
    (["kcprpc", "idl"], USAGE, "kcprpc idl: error:", "required"),
    (["kcprpc", "idl", "export"], USAGE, "kcprpc:", "or use --all"),
    (["kcprpc", "idl", "export", "nope"], USAGE, "kcprpc:", "expected module:Attribute"),
    (
        ["kcprpc", "idl", "export", "examples.quickstart.service:HelloRequest"],
        USAGE,
        "kcprpc:",
        "not a service",
    ),
    (["kcprpc", "idl", "export", "kcprpc:Server"], USAGE, "kcprpc:", "not a service"),
    (["kcprpc", "idl", "export", "--all", "--check", "-o", "/nonexistent"], USAGE, "kcprpc:", "not a folder"),
    (
        ["kcprpc", "idl", "export", "examples.quickstart.service:Greeter", "-o", "/nonexistent/x.json"],
        USAGE,
        "kcprpc: cannot write",
        "No such file",
    ),
    (["kcprpc", "idl", "check", "/nonexistent.json", "idl"], USAGE, "kcprpc:", "cannot read"),
    (["kcprpc", "idl", "check", "git:nosuchref:idl", "idl"], USAGE, "kcprpc: git", "nosuchref"),
    (["kcprpc", "idl", "gen-python", "README.md"], USAGE, "kcprpc:", "not valid JSON"),
    (
        ["kcprpc", "idl", "gen-python", "idl/quickstart.Greeter.json", "-o", "/nonexistent/m.py"],
        USAGE,
        "kcprpc: cannot write",
        "No such file",
    ),
    (["kcprpc", "idl", "gen-ts", "README.md", "--out", "stubs"], USAGE, "kcprpc:", "not valid JSON"),
    (["kcprpc", "idl", "gen-ts", "--out", "stubs"], USAGE, "kcprpc:", "name documents"),
    (["kcprpc", "idl", "validate", "/tmp"], USAGE, "kcprpc:", "cannot read"),
    # the examples
    (
        ["examples.quickstart", "--name", ""],
        USAGE,
        "python -m examples.quickstart: error:",
        "at least 1 character",
    ),
    (
        ["examples.quickstart", "--count", "0"],
        USAGE,
        "python -m examples.quickstart: error:",
        "greater than or equal to 1",
    ),
    (
        ["examples.quickstart", "--count", "x"],
        USAGE,
        "python -m examples.quickstart: error:",
        "not a whole number",
    ),
    (["examples.game", "--bots", "0"], USAGE, "python -m examples.game: error:", "1 or more"),
    (["examples.game", "--rooms", "0"], USAGE, "python -m examples.game: error:", "1 or more"),
    (["examples.game", "--port", "99999"], USAGE, "python -m examples.game: error:", "0..65535"),
    (
        ["examples.game", "--connect", "nohost"],
        USAGE,
        "python -m examples.game: error:",
        "expected HOST:PORT",
    ),
    (
        ["examples.game", "--connect", "127.0.0.1:1", "--bots", "1"],
        1,
        "error: UNAVAILABLE:",
        "is the server running",
    ),
    (["examples.live", "--viewers", "0"], USAGE, "python -m examples.live: error:", "1 or more"),
    (["examples.live", "--rate", "0"], USAGE, "python -m examples.live: error:", "above 0"),
    (
        ["examples.live.load", "--connect", "127.0.0.1:1", "--viewers", "1"],
        1,
        "error: UNAVAILABLE:",
        "is the server running",
    ),
]


@pytest.fixture(scope="module")
def addr() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    yield f"127.0.0.1:{line.split()[1]}"
    proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


def run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_bad_input_is_one_line_with_the_fix(addr: str) -> None:
    argvs = [[a.replace(ADDR, addr) for a in argv] for argv, *_ in CASES]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, argvs))
    wrong = []
    for (argv, rc, start, says), r in zip(CASES, results, strict=True):
        err = r.stderr.strip()
        ok = (
            "Traceback" not in r.stderr
            and len(err.splitlines()) == 1
            and err.startswith(start)
            and says in err
            and r.returncode == rc
        )
        if not ok:
            wrong.append(f"{' '.join(argv)}\n  exit {r.returncode} (want {rc}), stderr:\n  {r.stderr}")
    assert not wrong, "\n".join(wrong)


def test_serve_on_a_taken_port_says_so() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = run(["kcprpc", "serve", "examples.quickstart.service:app", "--port", str(port)])
    assert r.returncode == USAGE, r.stderr
    assert r.stderr.startswith(f"kcprpc: cannot listen on 127.0.0.1:{port}: ")
    assert "another server has that port" in r.stderr and len(r.stderr.splitlines()) == 1


def test_an_unexpected_error_is_one_line_unless_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kcprpc.cli import build_parser
    from kcprpc.cli.runner import run_command

    def boom(args: object) -> int:
        raise ZeroDivisionError("a bug")

    args = build_parser().parse_args(["keygen"])
    args.func = boom
    monkeypatch.delenv("KCPRPC_TRACEBACK", raising=False)
    assert run_command(args) == INTERNAL
    err = capsys.readouterr().err
    assert (
        err
        == "kcprpc: internal error: ZeroDivisionError: a bug (a bug: KCPRPC_TRACEBACK=1 shows the traceback for a report)\n"
    )
    monkeypatch.setenv("KCPRPC_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        run_command(args)
