"""``kcprpc idl gen-ts``: the Python command gathers documents and runs the Node generator.

Runs the real generator (clients/typescript, built by the ``ts_build`` fixture) on the repo's
idl/ documents and on a service exported with ``--from-app``; checks ``--check``, and that a
missing Node, a generator that is not built and a bad ``--generator`` are one-line errors that
name the fix. (That the output compiles, and that a wrong call does not, is tested in
clients/typescript/test/idl-gen.test.ts.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kcprpc.cli import main
from kcprpc.errors import UsageError
from kcprpc.idl.gen_ts import checkout_package, find_generator
from tests.clients.test_typescript import PACKAGE, ROOT, ts_build  # noqa: F401  (ts_build: a fixture)

IDL = ROOT / "idl"
DOCS = sorted(p for p in IDL.glob("*.json") if p.name != "schema.json")


def _kcprpc(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kcprpc", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(400)
@pytest.mark.usefixtures("ts_build")
def test_gen_ts_writes_one_module_per_document_of_idl(tmp_path: Path) -> None:
    out = tmp_path / "stubs"
    r = _kcprpc("idl", "gen-ts", "idl", "--out", str(out))
    assert r.returncode == 0, r.stderr
    names = [json.loads(p.read_text())["name"] for p in DOCS]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.ts" for n in names)
    game = (out / "game.v1.Game.ts").read_text()
    assert 'import type { CallOptions, EventInfo, NotifyOptions, RpcChannel } from "kcprpc";' in game
    assert "export interface JoinRequest {" in game and "export class GameClient {" in game
    assert 'this.channel.unary<JoinRequest, JoinReply>("game.v1.Game/join", request, options)' in game
    assert 'this.channel.notify("game.v1.Game/position", request, options)' in game
    assert f"wrote {len(names)} module(s) to {out}" in r.stdout

    # The same modules, importing the runtime from inside the package, are the committed copies.
    same = tmp_path / "same"
    assert main(["idl", "gen-ts", str(IDL), "--out", str(same), "--runtime", "../rpc/channel.js"]) == 0
    for p in sorted(same.iterdir()):
        assert p.read_text() == (PACKAGE / "src" / "generated" / p.name).read_text(), p.name

    # --check: nothing written; 0 when up to date, 1 (and the file named) when a module differs.
    assert _kcprpc("idl", "gen-ts", "idl", "--out", str(out), "--check").returncode == 0
    (out / "live.v1.Live.ts").write_text("// edited\n")
    stale = _kcprpc("idl", "gen-ts", "idl", "--out", str(out), "--check")
    assert stale.returncode == 1 and "live.v1.Live.ts" in stale.stderr
    assert (out / "live.v1.Live.ts").read_text() == "// edited\n"


@pytest.mark.timeout(400)
@pytest.mark.usefixtures("ts_build")
def test_gen_ts_from_app_and_git(tmp_path: Path) -> None:
    r = _kcprpc("idl", "gen-ts", "--from-app", "tests.clients.idl_kinds:Depot", "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    depot = (tmp_path / "a" / "kinds.v1.Depot.ts").read_text()
    for needle in (
        "export class DepotClient {",
        "export interface DepotClient2 {",  # the message renamed, not the stub
        "relabel(options?: CallOptions): BidiCall<Part, RelabelResponse>",
        "weigh(requests: Iterable<Part> | AsyncIterable<Part>, options?: CallOptions): Promise<WeighResponse>",
        "many(request: ManyRequest, options?: CallOptions): ServerStreamCall<Part>",
        "drop_it(request: Part, options?: NotifyOptions): void",
        "{ ...options, reliable: options?.reliable ?? true }",  # declared reliable
        "blob?: Uint8Array;",
        "at?: [number, number];",
        'kind?: "bolt" | "nut";',
        "export type DepotTopic = `shop:${string}:${string}`;",
    ):
        assert needle in depot, needle
    # A document as committed at a git ref, read as `idl check` reads it.
    r = _kcprpc("idl", "gen-ts", "git:HEAD:idl/quickstart.Greeter.json", "--out", str(tmp_path / "g"))
    assert r.returncode == 0, r.stderr
    assert "export class GreeterClient {" in (tmp_path / "g" / "quickstart.Greeter.ts").read_text()
    # The same service twice is a usage error, not a silent overwrite.
    dup = _kcprpc(
        "idl",
        "gen-ts",
        "idl/quickstart.Greeter.json",
        "--from-app",
        "examples.quickstart.service:Greeter",
        "--out",
        str(tmp_path / "d"),
    )
    assert dup.returncode == 2 and "a second document for quickstart.Greeter" in dup.stderr


@pytest.mark.timeout(400)
@pytest.mark.usefixtures("ts_build")
def test_gen_ts_errors_name_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No documents.
    assert main(["idl", "gen-ts", "--out", str(tmp_path)]) == 2
    assert "name documents" in capsys.readouterr().err
    # No Node on PATH.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["idl", "gen-ts", str(IDL), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "`node` is not on PATH" in err and "apt install nodejs npm" in err
    monkeypatch.undo()
    # A --generator that is not there, and a package folder that was not built.
    with pytest.raises(UsageError, match="no such file"):
        find_generator(str(tmp_path / "nope.js"))
    pkg = tmp_path / "pkg"
    (pkg / "bin").mkdir(parents=True)
    (pkg / "bin" / "kcprpc-gen-ts.js").write_text("")
    with pytest.raises(UsageError, match=r"not built .* run `npm ci && npm run build`"):
        find_generator(str(pkg))
    (pkg / "node_modules" / "json-schema-to-typescript").mkdir(parents=True)
    (pkg / "dist" / "src" / "idl").mkdir(parents=True)
    (pkg / "dist" / "src" / "idl" / "cli.js").write_text("")
    (pkg / "dist" / "src" / "idl" / "generate.js").write_text("")
    (pkg / "src" / "idl").mkdir(parents=True)
    (pkg / "src" / "idl" / "generate.ts").write_text("")
    old = (pkg / "dist" / "src" / "idl" / "generate.js").stat().st_mtime - 10
    os.utime(pkg / "dist" / "src" / "idl" / "generate.js", (old, old))
    with pytest.raises(UsageError, match=r"older than its sources: run `npm run build`"):
        find_generator(str(pkg))
    os.utime(pkg / "src" / "idl" / "generate.ts", (old - 10, old - 10))
    assert find_generator(str(pkg))[-1] == str(pkg / "bin" / "kcprpc-gen-ts.js")
    with pytest.raises(UsageError, match="a folder without"):
        find_generator(str(tmp_path))
    # From a checkout, the generator is clients/typescript's script, run with node; a kcprpc
    # installed from a wheel finds the checkout that holds the current folder.
    assert checkout_package() == PACKAGE
    assert checkout_package(PACKAGE / "src" / "idl") == PACKAGE
    cmd = find_generator()  # built by the ts_build fixture
    assert cmd[-1] == str(PACKAGE / "bin" / "kcprpc-gen-ts.js") and Path(cmd[0]).name.startswith("node")


def test_gen_ts_without_a_checkout_looks_in_node_modules_then_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kcprpc.idl.gen_ts as gen_ts

    monkeypatch.setattr(gen_ts, "checkout_package", lambda cwd=None: None)
    node_dir = tmp_path / "nodebin"
    node_dir.mkdir()
    (node_dir / "node").write_text("#!/bin/sh\n")
    (node_dir / "node").chmod(0o755)
    monkeypatch.setenv("PATH", str(node_dir))
    with pytest.raises(UsageError, match=r"`npm pack` in clients/typescript.*npm install kcprpc-<version>\.tgz"):
        find_generator(cwd=tmp_path)
    tool = node_dir / "kcprpc-gen-ts"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert find_generator(cwd=tmp_path) == [str(tool)]
    local = tmp_path / "node_modules" / ".bin" / "kcprpc-gen-ts"
    local.parent.mkdir(parents=True)
    local.write_text("#!/bin/sh\n")
    assert find_generator(cwd=tmp_path) == [str(local)]
    assert os.environ["PATH"] == str(node_dir)
