"""mypy in a user's own project sees the installed kcprpc, as the README promises ("mypy checks the
calls") right after its install command: a separate project folder, outside the checkout, checked
with ``python -m mypy --strict app.py`` of the environment kcprpc was installed into. Nothing points
mypy at the checkout (no PYTHONPATH, no MYPYPATH), so this fails if the install is one mypy cannot
see (setuptools' import-hook finder for editable installs was; pyproject.toml's package-dir makes
it a plain path entry). It also checks that ``client.notify`` rejects a wrong message type."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

USER_APP = """
from __future__ import annotations

from pydantic import BaseModel

import kcprpc


class Move(BaseModel):
    dx: float


class Pos(BaseModel):
    x: float


class Game(kcprpc.Service, name="user.Game"):
    async def move(self, req: Move) -> Pos:
        return Pos(x=req.dx)

    @kcprpc.rpc.notify
    async def position(self, pos: Pos) -> None:
        return None


async def play(client: kcprpc.Client) -> None:
    game = client.stub(Game, timeout=2.0)
    reveal_type(await game.move(Move(dx=1)))  # N: app.Pos
    client.notify(Game.position, Pos(x=1))
    client.notify(Game.position, Move(dx=1))  # E: the wrong message
    client.notify(Game.move, Move(dx=1))  # E: not a notify method (it returns Pos)
    await game.move(Pos(x=1))  # E: the wrong request
    reveal_type(client.notifications_dropped)  # N: int
"""


def test_mypy_in_a_user_project_sees_the_installed_package(tmp_path: Path) -> None:
    try:
        dist = metadata.distribution("kcprpc")
    except metadata.PackageNotFoundError:
        raise AssertionError(
            "kcprpc is not installed in this environment: install it with the README's test command"
        ) from None
    project = tmp_path / "userproject"
    project.mkdir()
    assert ROOT not in project.parents
    (project / "app.py").write_text(textwrap.dedent(USER_APP))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--cache-dir",
         str(tmp_path / "cache"), "app.py"],
        cwd=project, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert "import-not-found" not in out and "Cannot find implementation" not in out, (
        f"mypy cannot see the installed kcprpc ({dist.version}); the install is one type checkers "
        f"cannot follow:\n{out}"
    )
    errors: dict[int, str] = {}
    notes: dict[int, str] = {}
    for line in r.stdout.splitlines():
        where, _, text = line.partition(": ")
        if where.startswith("app.py:"):
            n = int(where.split(":")[1])
            if text.startswith("error: "):
                errors.setdefault(n, text)
            elif text.startswith("note: Revealed type is "):
                notes[n] = text.split('"')[1]
    src = USER_APP.splitlines()
    want_errors = {i for i, t in enumerate(src, 1) if "# E:" in t}
    want_notes = {i: t.split("# N: ")[1] for i, t in enumerate(src, 1) if "# N: " in t}
    assert set(errors) == want_errors, out  # every wrong call flagged, the right notify not
    assert notes == want_notes, out
    assert "Move" in errors[min(want_errors)] and "Pos" in errors[min(want_errors)], out
    assert r.returncode == 1, out
