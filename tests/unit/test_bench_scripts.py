"""Every benchmark script answers ``--help`` (a newcomer's first command; the dev extra pulls in the
``bench`` extra, so the peers the scripts import are installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def help_of(script: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    # The scripts import their siblings (``_common``); CI's compiled run sets PYTHONSAFEPATH=1, which
    # keeps a script's own directory off sys.path, so name it explicitly.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=BENCH.parent,
        env=env,
    )
    return script, done


def test_every_bench_script_answers_help() -> None:
    assert len(SCRIPTS) >= 20, SCRIPTS  # the glob found the scripts
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(help_of, SCRIPTS))
    failed = {p.name: (r.returncode, r.stderr[-400:]) for p, r in results if r.returncode != 0}
    assert not failed, failed
    silent = [p.name for p, r in results if "usage" not in r.stdout.lower()]
    assert not silent, f"--help printed no usage: {silent}"


def test_rpc_bench_names_each_contenders_wire_mode() -> None:
    out = help_of(BENCH / "rpc.py")[1].stdout
    for contender in ("kcprpc", "kcprpc-key", "kcprpc-compat", "grpcio"):
        assert contender in out
