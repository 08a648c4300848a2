"""examples/web.py's command line: the web listeners of ``python -m examples.live`` and
``python -m examples.game`` (the pages themselves are tested in a browser: tests/browser)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

import examples.web
from examples.web import listen_address, page_origins, web_folder
from kcprpc import UsageError

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


def test_the_served_folder_has_the_pages_and_the_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "dist" / "kcprpc.js"
    bundle.parent.mkdir()
    monkeypatch.setattr(examples.web, "BUNDLE", bundle)
    with pytest.raises(UsageError, match=r"browser bundle .* is missing: build it first \(cd clients/typescript"):
        web_folder(tmp_path / "served")
    bundle.write_text("export const VERSION = 1;\n")
    root = web_folder(tmp_path / "served")
    assert (root / "kcprpc.js").read_text() == "export const VERSION = 1;\n"
    for page in ("live/index.html", "live/live.js", "game/index.html", "game/game.js", "common.js", "style.css"):
        assert (root / page).is_file(), page


def test_page_origins() -> None:
    assert page_origins("127.0.0.1", 8080) == ("http://127.0.0.1:8080", "http://localhost:8080")
    assert page_origins("10.0.0.5", 80) == ("http://10.0.0.5:80",)
