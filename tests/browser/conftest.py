"""The browser tests' fixtures: the TypeScript client's browser bundle (built from the lockfile,
once per run) and a headless Chromium (tests/browser/chromium.py) per test."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser.chromium import Chromium

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
BUNDLE = PACKAGE / "dist" / "browser" / "kcprpc.js"
BUILD_TIMEOUT_S = 300.0


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=PACKAGE, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-8000:]}\n{proc.stderr[-8000:]}", pytrace=False)


@pytest.fixture(scope="session")
def bundle() -> Path:
    """clients/typescript/dist/browser/kcprpc.js, built from the lockfile (`npm ci`, then
    `npm run build:browser`): what the example pages import (as /kcprpc.js)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: .ci/run installs Debian's nodejs and npm", pytrace=False)
    installed = PACKAGE / "node_modules" / ".package-lock.json"
    lock = PACKAGE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        _run(["npm", "ci", "--no-audit", "--no-fund"])
    _run(["npm", "run", "build:browser"])
    return BUNDLE


@pytest.fixture
async def browser(bundle: Path) -> AsyncIterator[Chromium]:
    """A fresh headless Chromium (its own profile), killed at the end of the test."""
    async with Chromium.launch() as b:
        yield b
