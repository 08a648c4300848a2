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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, type=Path, help="the older tree (has its own .venv)")
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
    trees = {"base": args.base.resolve(), "new": ROOT}
    values: dict[str, dict[str, list[float]]] = {t: {n: [] for n, _ in metrics} for t in trees}
    for r in range(args.rounds):
        order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
        for side in order:
            text = run(trees[side], cmd, args.timeout)
            if args.v:
                print(f"--- round {r + 1} {side}\n{text}", flush=True)
            got = []
            for name, regex in metrics:
                v = pick(text, regex)
                if v is None:
                    sys.exit(f"round {r + 1} {side}: metric {name!r} ({regex}) not found in:\n{text[-2000:]}")
                values[side][name].append(v)
                got.append(f"{name} {v:g}")
            print(f"round {r + 1} {side:4}  " + "  ".join(got), flush=True)
    print(f"# medians of {args.rounds} rounds; command: {' '.join(cmd)}")
    for name, _ in metrics:
        b = statistics.median(values["base"][name])
        n = statistics.median(values["new"][name])
        ratio = f"{n / b:.3f}" if b else "n/a"
        print(f"{name:24} base {b:12g}   new {n:12g}   new/base {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
