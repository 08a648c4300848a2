"""The TypeScript package (clients/typescript) for the tests that need it built: its npm commands
run in it, a failure fails the test with their output, and its dependencies installed from the
lockfile when they are missing or older than it. Node and npm come from Debian's packages
(`.ci/run` installs them); without them the tests fail rather than skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
BUILD_TIMEOUT_S = 300.0


def run_npm(cmd: list[str], timeout: float = BUILD_TIMEOUT_S, env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` in the package; a non-zero exit fails the test with its stdout and stderr."""
    proc = subprocess.run(
        cmd, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-20000:]}"
            f"\n--- stderr\n{proc.stderr[-8000:]}",
            pytrace=False,
        )


def npm_ci() -> None:
    """Node and npm must be installed; ``npm ci`` when node_modules is missing or older than the
    lockfile."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: .ci/run installs Debian's nodejs and npm", pytrace=False)
    installed = PACKAGE / "node_modules" / ".package-lock.json"
    lock = PACKAGE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        run_npm(["npm", "ci", "--no-audit", "--no-fund"])
