"""The TypeScript client's own tests (clients/typescript/test/*.test.ts), run from pytest.

The package is installed from its lockfile (`npm ci`), compiled with `tsc` and its browser bundle
built (`npm run build:browser`) once per run; each test file then runs under Node's test runner as
its own pytest case, so a failure names the file and shows Node's report. The TypeScript tests start real Python servers with the interpreter and
the tree given in KCPRPC_PYTHON and KCPRPC_REPO. `.ci/run` installs Node and npm from Debian's
packages; without them these cases fail rather than skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
TEST_FILES = sorted(p.name for p in (PACKAGE / "test").glob("*.test.ts"))
BUILD_TIMEOUT_S = 300.0
FILE_TIMEOUT_S = 180.0


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        cmd, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-20000:]}"
            f"\n--- stderr\n{proc.stderr[-8000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def ts_build() -> Path:
    """The package installed from its lockfile and compiled; fails if Node or npm is missing."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: .ci/run installs Debian's nodejs and npm", pytrace=False)
    installed = PACKAGE / "node_modules" / ".package-lock.json"
    lock = PACKAGE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        _run(["npm", "ci", "--no-audit", "--no-fund"], BUILD_TIMEOUT_S)
    _run(["npx", "tsc", "-p", "tsconfig.json"], BUILD_TIMEOUT_S)
    _run(["npm", "run", "--silent", "build:browser"], BUILD_TIMEOUT_S)
    return PACKAGE / "dist" / "test"


@pytest.mark.timeout(FILE_TIMEOUT_S + 30)
@pytest.mark.parametrize("name", TEST_FILES)
def test_typescript(ts_build: Path, name: str) -> None:
    compiled = ts_build / name.replace(".ts", ".js")
    env = dict(os.environ, KCPRPC_PYTHON=sys.executable, KCPRPC_REPO=str(ROOT))
    # Node 20 has its global WebSocket (the web transport's tests) behind a flag
    _run(
        ["node", "--experimental-websocket", "--test", "--test-reporter=tap", str(compiled)],
        FILE_TIMEOUT_S,
        env,
    )
