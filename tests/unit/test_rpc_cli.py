"""The ``kcprpc`` command: serve module:app with the kcptun-named transport flags, ping, stats, exit
codes, graceful stop on SIGINT."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kcprpc import CompatWire, SecureWire, SessionConfig, Transport
from kcprpc.cli import build_parser, main
from kcprpc.cli.env import apply_env
from kcprpc.cli.serve import LOG_FORMAT, load_app, make_server, security_summary, setup_logging
from kcprpc.errors import UsageError
from kcprpc.server import Server
from kcprpc.status import Status

ROOT = Path(__file__).resolve().parents[2]
APP_KEYS = ["--crypt", "aes", "--key", "quickstart secret", "--datashard", "10", "--parityshard", "3"]
KEYS = ["--crypt", "salsa20", "--key", "cli secret", "--ds", "4", "--ps", "2", "--mode", "fast2"]


def test_serve_ping_stats_and_sigint() -> None:
    # the command-line flags override the app's own transport settings (aes, FEC 10/3)
    cmd = [sys.executable, "-m", "kcprpc", "serve", "examples.quickstart.service:app", "--port", "0", *KEYS]
    srv = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        line = srv.stdout.readline()
        assert "quickstart.Greeter" in line
        port = line.rsplit(":", 1)[1].strip()
        ping = subprocess.run(
            [sys.executable, "-m", "kcprpc", "ping", f"127.0.0.1:{port}", "-c", "2", "-i", "0", *KEYS],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert ping.returncode == 0, ping.stderr
        assert ping.stdout.count("SERVING") == 2
        stats = subprocess.run(
            [sys.executable, "-m", "kcprpc", "stats", f"127.0.0.1:{port}", *KEYS],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["server"]["connections"] >= 1
        old = subprocess.run(
            [sys.executable, "-m", "kcprpc", "ping", f"127.0.0.1:{port}", "-c", "1", "--connect-timeout", "1",
             *APP_KEYS],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert old.returncode == 64 + int(Status.UNAVAILABLE), old.stderr
        assert old.stderr.startswith("UNAVAILABLE: ") and "Traceback" not in old.stderr
        secure = subprocess.run(  # the default wire mode against a compat server: the handshake's reason
            [sys.executable, "-m", "kcprpc", "ping", f"127.0.0.1:{port}", "-c", "1", "--connect-timeout", "1",
             "--key", "cli secret"],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert secure.returncode == 64 + int(Status.FAILED_PRECONDITION), secure.stderr
        assert secure.stderr.startswith(
            "FAILED_PRECONDITION: secure handshake failed: wrong wire mode: the server at "
        ), secure.stderr  # the compat server's wire hint: at once
        srv.send_signal(signal.SIGINT)
        assert srv.wait(15) == 0
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
        if srv.stdout is not None:
            srv.stdout.close()


def test_bad_app_spec() -> None:
    with pytest.raises(UsageError):
        load_app("examples.quickstart.service:nope")
    assert main(["serve", "examples.quickstart.service:Greeter", "--port", "0"]) == 2


def test_serve_flags_override_only_what_is_given() -> None:
    def app() -> Server:
        wire = CompatWire(crypt="aes", key="k", fec=(10, 3))
        return Server([], "127.0.0.1", 1, transport=Transport(wire, session=SessionConfig(mtu=1300)))

    args = build_parser().parse_args(
        ["serve", "m:app", "--port", "0", "--crypt", "salsa20", "--key", "s", "--ds", "0", "--ps", "0",
         "--mode", "fast2", "--rcvwnd", "512"]
    )  # fmt: skip
    server = make_server(app, args)
    assert (server.host, server.port) == ("127.0.0.1", 0)
    assert server.transport.wire == CompatWire(crypt="salsa20", key="s", fec=(0, 0))
    assert server.transport.session == SessionConfig(
        mtu=1300, nodelay=1, interval=20, resend=2, nc=1, rcv_wnd=512
    )
    server = make_server(app, build_parser().parse_args(["serve", "m:app"]))
    assert server.port == 1
    assert server.transport == app().transport
    with pytest.raises(UsageError, match="--parityshard"):
        make_server(app, build_parser().parse_args(["serve", "m:app", "--datashard", "10"]))
    assert main(["serve", "m:app", "--crypt", "aes"]) == 2  # a cipher needs --key


def test_wire_flag() -> None:
    def app() -> Server:
        return Server([], "127.0.0.1", 1, key="k")

    def serve(*flags: str) -> Server:
        return make_server(app, build_parser().parse_args(["serve", "m:app", *flags]))

    assert serve().wire_mode == "secure"  # the default between kcprpc peers
    s = serve("--crypt", "aes", "--key", "k")  # a kcp-go cipher implies compat
    assert (s.wire_mode, s.transport.wire) == ("compat", CompatWire(crypt="aes", key="k"))
    assert serve("--wire", "compat").wire_mode == "compat"
    s = make_server(lambda: Server([], "h", 1, transport=Transport(CompatWire(crypt="aes", key="k"))),
                    build_parser().parse_args(["serve", "m:app", "--wire", "secure"]))  # fmt: skip
    assert (s.wire_mode, s.transport.wire) == ("secure", SecureWire(key="k"))  # the kcp-go cipher is gone
    with pytest.raises(UsageError, match="--wire secure"):
        serve("--wire", "secure", "--crypt", "aes", "--key", "k")
    key = "11" * 32
    assert serve("--static-key", key).transport.wire == SecureWire(
        key="k", static_private_key=bytes.fromhex(key)
    )
    with pytest.raises(UsageError, match="client flag"):
        serve("--server-key", key)
    with pytest.raises(UsageError, match="selects compat mode"):
        serve("--static-key", key, "--crypt", "aes", "--key", "k")
    args = build_parser().parse_args(["ping", "h:1", "--wire", "compat", "--mode", "fast"])
    assert (args.wire, args.mode) == ("compat", "fast")  # kcptun's --mode stays the KCP profile


def test_serve_binds_loopback_and_warns_when_nobody_is_authenticated(tmp_path: Path) -> None:
    # an app that names no host and no key: the newcomer's first `kcprpc serve`
    (tmp_path / "userapp.py").write_text(
        "from examples.quickstart.service import Greeter\napp = [Greeter()]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    srv = subprocess.Popen(
        [sys.executable, "-m", "kcprpc", "serve", "userapp:app", "--port", "0", "--log-level", "INFO"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert srv.stdout is not None
        banner = [srv.stdout.readline() for _ in range(3)]
        assert banner[0].startswith("kcprpc serving kcprpc.Health, kcprpc.Push, kcprpc.Reflection, "
                                    "quickstart.Greeter on 127.0.0.1:")  # fmt: skip
        assert banner[1] == "  wire mode: secure, anonymous (encrypted; the pre-shared key is public)\n"
        assert banner[2] == "  clients:   NOT authenticated\n"
        srv.send_signal(signal.SIGINT)
        _, err = srv.communicate(timeout=15)
        assert srv.returncode == 0, err
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    assert err.startswith("warning: keyless secure mode authenticates nobody")
    assert "--key PASSPHRASE" in err and "Traceback" not in err


def test_serve_says_the_wire_mode_and_who_is_authenticated() -> None:
    def summary(*flags: str, **app: Any) -> tuple[list[str], str | None]:
        server = make_server(lambda: Server([], **app), build_parser().parse_args(["serve", "m:app", *flags]))
        return security_summary(server.transport)

    lines, warning = summary("--key", "k", "--ds", "10", "--ps", "3")
    assert lines == ["wire mode: secure (encrypted and authenticated; FEC 10/3)",
                     "clients:   authenticated by the passphrase (--key)"] and warning is None  # fmt: skip
    wire = SecureWire(static_private_key=bytes(range(32)), authorize=lambda *a: None)
    lines, warning = summary(transport=Transport(wire))
    assert lines[0] == "wire mode: secure (encrypted and authenticated)"
    assert lines[1].startswith("server key: ") and "--server-key" in lines[1]
    assert lines[2] == "clients:   authenticated by the app's authorize hook" and warning is None
    lines, warning = summary("--static-key", "11" * 32)
    assert lines[2].startswith("clients:   not authenticated (they authenticate this server by its key")
    assert warning is None
    lines, warning = summary("--crypt", "aes", "--key", "k")
    assert lines[0] == "wire mode: compat (kcp-go's packet format; cipher aes)"
    assert lines[1].startswith("clients:   not authenticated") and warning is None
    lines, warning = summary("--wire", "compat")
    assert "no encryption" in lines[0] and warning is not None and "neither encrypted" in warning
    lines, warning = summary()
    assert lines[1] == "clients:   NOT authenticated" and warning is not None
    # the host: loopback unless the app or --host says otherwise
    assert make_server(lambda: Server([]), build_parser().parse_args(["serve", "m:app"])).host == "127.0.0.1"
    args = build_parser().parse_args(["serve", "m:app", "--host", "0.0.0.0"])
    assert make_server(lambda: Server([]), args).host == "0.0.0.0"
    assert (
        make_server(lambda: Server([], "10.0.0.1"), build_parser().parse_args(["serve", "m:app"])).host
        == "10.0.0.1"
    )


def test_serve_log_level() -> None:
    args = build_parser().parse_args(["serve", "m:app", "--log-level", "DEBUG"])
    assert args.log_level == "debug"
    assert apply_env(build_parser().parse_args(["serve", "m:app"]), {}).log_level == "warning"
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        setup_logging("info")
        assert logging.getLogger("kcprpc.server").getEffectiveLevel() == logging.INFO
        assert root.handlers[0].formatter is not None and root.handlers[0].formatter._fmt == LOG_FORMAT
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    import kcprpc
    from kcprpc.buildinfo import build_name

    assert kcprpc.__version__ == importlib.metadata.version("kcprpc")
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    assert capsys.readouterr().out.strip() == f"kcprpc {kcprpc.__version__} ({build_name()})"


def test_output_closed_under_the_command_is_a_quiet_exit() -> None:
    """``kcprpc call ... | head -2``: the reader leaving reported ``UNAVAILABLE: [Errno 32] Broken
    pipe`` and exit status 78, as if the server had failed (a newcomer's report). Now a quiet exit
    with 141 (128 + SIGPIPE), and nothing from Python's flush at exit."""
    code = (
        "import argparse, sys\n"
        "from kcprpc.cli.runner import run_command\n"
        "def func(args):\n"
        "    for i in range(1_000_000):\n"
        "        print('line', i)\n"
        "    return 0\n"
        "sys.exit(run_command(argparse.Namespace(func=func)))\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline() == b"line 0\n"
    p.stdout.close()  # the reader leaves
    assert p.wait(30) == 141
    assert p.stderr.read() == b""
