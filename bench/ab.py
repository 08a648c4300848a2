"""Same-run A/B of two source trees: one benchmark command, run alternately in each tree.

    python bench/ab.py --base ../old-tree --rounds 3 \
        --metric 'calls/s=kcprpc +(\\d+) calls/s' --metric 'p50 ms=p50 ([\\d.]+) ms' \
        -- bench/rpc.py --quick --contenders kcprpc

``--base`` is a checkout of the older code (e.g. ``git worktree add --detach ../old-tree COMMIT``,
with its own ``.venv``); this tree is the new side. A benchmark script the base tree does not have
runs from this tree, against the base tree's code (``KCPRPC_BENCH_CODE``, which bench/_common.py
reads). Each round runs the command in both trees, in alternating order (base first on odd rounds,
new first on even ones), each with its own ``.venv/bin/python``. Each ``--metric NAME=REGEX`` takes
the LAST match of REGEX's first group in a run's output; the report gives every round's values, the
medians and the ratio new / base.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tree: Path, cmd: list[str], timeout: float) -> str:
    py = tree / ".venv" / "bin" / "python"
    if not py.exists():
        sys.exit(f"{py} is missing: create the venv of {tree} first")
    if not (tree / cmd[0]).exists() and (ROOT / cmd[0]).exists():  # a benchmark newer than the base tree
        cmd = [str(ROOT / cmd[0]), *cmd[1:]]
    # KCPRPC_BENCH_CODE: bench/_common.py imports this tree's code even when the script is the newer
    # tree's (the base's venv alone would not decide it: _common puts its own checkout first on sys.path)
    env = {**os.environ, "KCPRPC_BENCH_CODE": str(tree.resolve())}
    out = subprocess.run(
        [str(py), *cmd], cwd=tree, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if out.returncode != 0:
        sys.exit(
            f"{tree}: {' '.join(cmd)} exited {out.returncode}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
        )
    return out.stdout


def pick(text: str, regex: str) -> float | None:
    found = re.findall(regex, text)
    if not found:
        return None
    last = found[-1]
    return float((last[0] if isinstance(last, tuple) else last).replace(",", ""))


def alternate(
    sides: tuple[str, str],
    run_side: Callable[[str], str],
    metrics: list[list[str]],
    rounds: int,
    verbose: bool,
    cmd: list[str],
) -> None:
    """Run both sides ``rounds`` times in alternating order (the first side first on odd rounds),
    pick every metric from each run's output, print each round's values and the medians with the
    ratio second / first. Exits with a message naming a metric that a run did not print."""
    values: dict[str, dict[str, list[float]]] = {s: {n: [] for n, _ in metrics} for s in sides}
    width = max(len(s) for s in sides)
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            text = run_side(side)
            if verbose:
                print(f"--- round {r + 1} {side}\n{text}", flush=True)
            got = []
            for name, regex in metrics:
                v = pick(text, regex)
                if v is None:
                    sys.exit(f"round {r + 1} {side}: metric {name!r} ({regex}) not found in:\n{text[-2000:]}")
                values[side][name].append(v)
                got.append(f"{name} {v:g}")
            print(f"round {r + 1} {side:{width}}  " + "  ".join(got), flush=True)
    first, second = sides
    print(f"# medians of {rounds} rounds; command: {' '.join(cmd)}")
    for name, _ in metrics:
        a = statistics.median(values[first][name])
        b = statistics.median(values[second][name])
        ratio = f"{b / a:.3f}" if a else "n/a"
        print(f"{name:24} {first} {a:12g}   {second} {b:12g}   {second}/{first} {ratio}")


def parse_rounds_args(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, list[str], list[list[str]]]:
    """Add the options of alternating rounds (--rounds, --metric, --timeout, -v, ``-- CMD``) to
    ``ap``, parse, and return the arguments, the command and the metrics as ``[NAME, REGEX]``."""
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--metric", action="append", required=True, help="NAME=REGEX (first group: the number)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("-v", action="store_true", help="print each run's output")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the benchmark and its arguments")
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("give the benchmark command after --")
    metrics = [m.split("=", 1) for m in args.metric]
    if any(len(m) != 2 for m in metrics):
        ap.error("--metric must be NAME=REGEX")
    return args, cmd, metrics


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, type=Path, help="the older tree (has its own .venv)")
    args, cmd, metrics = parse_rounds_args(ap)
    trees = {"base": args.base.resolve(), "new": ROOT}
    alternate(
        ("base", "new"), lambda side: run(trees[side], cmd, args.timeout), metrics, args.rounds, args.v, cmd
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
