"""The ``kcprpc`` command: serve module:app, ping, stats, graceful stop on SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kcprpc.cli import load_app, main
from kcprpc.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["--crypt", "aes", "--key", "quickstart secret", "--fec", "10,3"]


def test_serve_ping_stats_and_sigint() -> None:
    cmd = [sys.executable, "-m", "kcprpc.cli", "serve", "examples.quickstart.service:app", "--port", "0"]
    srv = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        line = srv.stdout.readline()
        assert "quickstart.Greeter" in line
        port = line.rsplit(":", 1)[1].strip()
        ping = subprocess.run(
            [sys.executable, "-m", "kcprpc.cli", "ping", "127.0.0.1", port, "-c", "2", "-i", "0", *KEYS],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert ping.returncode == 0, ping.stderr
        assert ping.stdout.count("SERVING") == 2
        stats = subprocess.run(
            [sys.executable, "-m", "kcprpc.cli", "stats", "127.0.0.1", port, *KEYS],
            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["server"]["connections"] >= 1
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
