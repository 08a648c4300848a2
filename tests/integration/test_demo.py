"""``python -m kcp.demo``: the echo through the lossy relay completes intact and exits 0."""

from __future__ import annotations

import pytest

from kcp import demo


def test_demo_echoes_intact_through_a_lossy_relay(capsys: pytest.CaptureFixture[str]) -> None:
    code = demo.main(["--messages", "2", "--bulk", "200000", "--loss", "5", "--delay", "2", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("  echo 'hello #") == 2
    assert "intact=True" in out
