"""The README demo: ``python -m examples.quickstart`` exits 0 within seconds and prints the calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.quickstart", "--name", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "Hello, test!" in out.stdout
    assert "[1, 2, 3, 4, 5]" in out.stdout
    assert "INVALID_ARGUMENT" in out.stdout
    assert "SERVING" in out.stdout
