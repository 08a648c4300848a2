"""kcprpc.web.fdlimit: a TCP listener makes room for its connections in RLIMIT_NOFILE. Each case
runs in a child process, whose limits it may change for good (a lowered hard limit cannot be
raised again)."""

from __future__ import annotations

import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")  # (POSIX only)

_CASE = """
import logging, resource, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
from kcprpc.web.fdlimit import ensure_fd_limit
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
print("now", ensure_fd_limit({connections}))
print("limits", *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def _run(soft: int, hard: int, connections: int | None) -> str:
    code = _CASE.format(soft=soft, hard=hard, connections=connections)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def _hard() -> int:
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def test_the_soft_limit_is_raised_to_hold_the_connections() -> None:
    hard = _hard()
    assert hard == resource.RLIM_INFINITY or hard >= 756, (
        f"a hard RLIMIT_NOFILE of {hard} is below this test's"
    )
    out = _run(300, hard, 500)
    assert "now 756" in out and f"limits 756 {hard}" in out, out  # 500 + FD_SLACK
    assert "open file limit raised from 300 to 756" in out, out


def test_a_limit_that_already_holds_them_is_left_alone() -> None:
    hard = _hard()
    soft = 1000 if hard == resource.RLIM_INFINITY else min(hard, 1000)
    out = _run(soft, hard, soft - 300)
    assert f"now {soft}" in out and "raised" not in out and "WARNING" not in out, out


def test_a_hard_limit_too_low_is_used_whole_and_named_in_a_warning() -> None:
    out = _run(300, 600, 1000)
    assert "now 600" in out and "limits 600 600" in out, out
    assert "WARNING" in out and "holds about 344 connections, fewer than max_connections (1000)" in out, out


def test_no_bound_on_connections_raises_the_soft_limit_to_the_hard_one() -> None:
    out = _run(300, 4000, None)
    assert "now 4000" in out and "limits 4000 4000" in out, out
