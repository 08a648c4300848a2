"""Same-run comparison of the pure-Python build and the compiled (mypyc) build: one benchmark
command, run alternately with each.

    python bench/builds.py --rounds 3 --metric 'ours=ours +([\\d.]+)' -- bench/engine.py --quick
    python bench/builds.py --setup ...     # (re)build the compiled venv first (about 1 min)
    python bench/builds.py --base-venv ../base-compiled ...    # compiled before / after instead

The pure side is this tree's ``.venv`` (the README's editable install, pure Python). The compiled
side is ``.venv-compiled`` (``--venv``): ``pip install '.[dev]'`` of this tree, a wheel whose
protocol cores mypyc compiled (``--setup`` builds it; .ci/run builds it too). The benchmarks put
their checkout first on ``sys.path``, so the compiled side runs the command in a mirror of this tree
without ``kcp/`` and ``kcprpc/`` (a temporary directory): the installed, compiled package is the
only one it can import. Before the rounds each side reports ``kcp.compiled``, and a side that is
not the build it stands for stops the run. Rounds alternate the order (pure first on odd rounds);
each ``--metric NAME=REGEX`` takes the LAST match of REGEX's first group in a run's output; the
report gives every round's values, the medians and the ratio compiled / pure.

``--base-venv`` compares two compiled builds instead: the base side is that venv (``pip install
'.[dev]'`` of an older checkout, compiled), run like the compiled side in the mirror of this tree,
so both sides run this tree's benchmark against their own installed package; the ratio is
compiled / base.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ab import alternate, parse_rounds_args

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kcp", "kcprpc")


def setup_venv(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "KCPRPC_PURE_BUILD"}
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # no stale modules from an older build
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", ".[dev]"], cwd=ROOT, env=env, check=True)


def mirror(dest: Path) -> None:
    """Copy this tree's files (tracked and untracked, not ignored) except the packages."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in files:
        if name.split("/", 1)[0] in PACKAGES or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)


def run(py: Path, tree: Path, args: list[str], timeout: float) -> str:
    out = subprocess.run(
        [str(py), *args], cwd=tree, capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        sys.exit(f"{py}: {' '.join(args)} exited {out.returncode}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", type=Path, default=ROOT / ".venv-compiled", help="the compiled build's venv")
    ap.add_argument("--setup", action="store_true", help="(re)build the compiled venv from this tree first")
    ap.add_argument(
        "--base-venv",
        type=Path,
        help="another compiled build's venv, the base side (instead of the pure build)",
    )
    args, cmd, metrics = parse_rounds_args(ap)
    venv = args.venv.resolve()
    if args.setup:
        setup_venv(venv)
    base = "pure" if args.base_venv is None else "base"
    base_py = (
        ROOT / ".venv" / "bin" / "python"
        if args.base_venv is None
        else args.base_venv.resolve() / "bin" / "python"
    )
    pythons = {base: base_py, "compiled": venv / "bin" / "python"}
    for side, py in pythons.items():
        if not py.exists():
            sys.exit(f"{py} is missing: " + ("--setup builds it" if side == "compiled" else "see the README"))
    with tempfile.TemporaryDirectory(prefix="kcprpc-builds-") as tmp:
        trees = {base: ROOT if base == "pure" else Path(tmp), "compiled": Path(tmp)}
        mirror(trees["compiled"])
        probe = "import sys; sys.path.insert(0, '.'); import kcp; print(kcp.compiled, kcp.__file__)"
        for side in pythons:
            flag, where = run(pythons[side], trees[side], ["-c", probe], 60).split(maxsplit=1)
            print(f"# {side:8} kcp.compiled={flag}  {where.strip()}", flush=True)
            if (flag == "True") is not (side != "pure"):
                sys.exit(f"the {side} side runs the wrong build (kcp.compiled is {flag})")
        alternate(
            (base, "compiled"),
            lambda side: run(pythons[side], trees[side], cmd, args.timeout),
            metrics,
            args.rounds,
            args.v,
            cmd,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
