"""examples/web.py's command line: the web listeners of ``python -m examples.live`` and
``python -m examples.game`` (the pages themselves are tested in a browser: tests/browser)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from examples.web import listen_address

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )


def test_listen_address_takes_port_zero() -> None:
    assert listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert listen_address("[::1]:8080") == ("::1", 8080)
    with pytest.raises(argparse.ArgumentTypeError):
        listen_address("127.0.0.1")


@pytest.mark.parametrize("module", ["examples.live", "examples.game"])
def test_web_flags_misused_are_one_line_errors(module: str) -> None:
    out = run(module, "--web", "127.0.0.1:0")
    assert out.returncode == 1 and out.stderr.strip() == "error: --web and --wt go with --serve"
    out = run(module, "--serve", "--wt", "127.0.0.1:0")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: --wt needs --web: the pages and /kcprpc.json come from the WebSocket listener"
    )
