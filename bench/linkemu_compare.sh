#!/usr/bin/env bash
# Calls under loss (issue 6, benchmark 3): kcprpc vs grpcio, sequential unary calls (64 B echo)
# across linkemu (25 ms one-way delay, loss on both ways), contenders alternated on the same link.
#
#   bash bench/linkemu_compare.sh            # 5 % loss: 2 rounds (A B A B); 0 % and 1 %: 1 round; 2,000 calls
#   bash bench/linkemu_compare.sh --quick    # 5 % and 0 %, 1 round, 300 calls
#
# Options: -n CALLS, --rounds R (at the first loss), --rounds2 R (at the others), --losses "5 0 1",
#   --delay MS, --seed N, --kcp "LABEL=OPTS;LABEL=OPTS" (kcprpc contenders; OPTS are rpc_loss.py
#   transport options given to both sides, e.g. "fast3=;fec1/1=--fec 1/1"), --py PYTHON (needs grpcio).
# Needs root. Uses its own linkemu instance "kcprpcbench" (namespaces kcprpcbench-a/-b, addresses
# 10.77.0.1/10.77.0.2): servers run in b, clients in a. The instance is always brought down on exit.
# Prints a table with each contender's p50/p99/max (median over rounds) and kcprpc p99 / grpc p99,
# plus the CPU pressure (/proc/pressure/cpu) during each run and the forwarder's lateness.
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
LE="$ROOT/../shared/tools/linkemu/linkemu"
GRPC_PROBE="$ROOT/../shared/tools/linkemu/bench/grpc_unary.py"
PY=${PY:-"$ROOT/.venv/bin/python"}  # a venv with grpcio for the gRPC contender: PY=... bash bench/linkemu_compare.sh
NAME=kcprpcbench
B=10.77.0.2
N=2000
ROUNDS=2
ROUNDS2=1
LOSSES="5 0 1"
DELAY=25
SEED=1
KCP="fast3=;fast3+fec1/1=--fec 1/1"

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) N=300; ROUNDS=1; ROUNDS2=1; LOSSES="5 0" ;;
        -n) N=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --rounds2) ROUNDS2=$2; shift ;;
        --losses) LOSSES=$2; shift ;;
        --delay) DELAY=$2; shift ;;
        --seed) SEED=$2; shift ;;
        --kcp) KCP=$2; shift ;;
        --py) PY=$2; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
[ -x "$LE" ] || { echo "linkemu not found at $LE" >&2; exit 1; }
[ -r "$GRPC_PROBE" ] || { echo "grpc probe not found at $GRPC_PROBE" >&2; exit 1; }
"$PY" -c "import grpc, kcprpc" 2>/dev/null || { echo "$PY lacks grpcio or kcprpc" >&2; exit 1; }

le() { "$LE" --name "$NAME" "$@"; }
WORK=$(mktemp -d /tmp/kcprpcbench.XXXXXX)
RESULTS="$WORK/results.jsonl"
SPID=""
cleanup() {
    if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; fi
    le down >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psi_total() { awk '/^some/ { split($5, t, "="); print t[2] }' /proc/pressure/cpu 2>/dev/null || echo 0; }
now_us() { date +%s%6N; }
# generous bounds: a call takes ~50 ms and a lossy gRPC call up to a few s; per-call deadline 10 s
CLIENT_LIMIT=$(( N * 2 + 120 ))
SERVER_LIMIT=$(( CLIENT_LIMIT + 60 ))

start_server() {  # impl port opts -> sets SPID, waits until it listens (bounded)
    local impl=$1 port=$2 opts=$3
    if [ "$impl" = grpc ]; then
        le exec b -- timeout "$SERVER_LIMIT" "$PY" "$GRPC_PROBE" server --host "$B" --port "$port" \
            --max-seconds "$SERVER_LIMIT" >"$WORK/server.log" 2>&1 &
        SPID=$!
        sleep 1  # the gRPC client itself waits (up to 30 s) for the channel to be ready
    else
        # shellcheck disable=SC2086  # opts are word-split on purpose
        le exec b -- timeout "$SERVER_LIMIT" "$PY" bench/rpc_loss.py server --host "$B" --port "$port" \
            --max-seconds "$SERVER_LIMIT" $opts >"$WORK/server.log" 2>&1 &
        SPID=$!
        for _ in $(seq 100); do
            grep -q listening "$WORK/server.log" 2>/dev/null && return 0
            kill -0 "$SPID" 2>/dev/null || break
            sleep 0.1
        done
        grep -q listening "$WORK/server.log" || { echo "kcprpc server did not start:"; cat "$WORK/server.log"; return 1; }
    fi
}

stop_server() {
    [ -n "$SPID" ] || return 0
    kill "$SPID" 2>/dev/null
    for _ in $(seq 30); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    SPID=""
}

RUN=0
run_one() {  # loss round label impl opts
    local loss=$1 round=$2 label=$3 impl=$4 opts=$5 port out p0 p1 t0 t1 rc
    RUN=$((RUN + 1))
    if [ "$impl" = grpc ]; then port=$((50100 + RUN)); else port=$((9400 + RUN)); fi
    start_server "$impl" "$port" "$opts" || return 1
    le stats --reset >/dev/null
    p0=$(psi_total); t0=$(now_us)
    if [ "$impl" = grpc ]; then
        out=$(le exec a -- timeout "$CLIENT_LIMIT" "$PY" "$GRPC_PROBE" client --host "$B" --port "$port" \
            -n "$N" --size 64 2>"$WORK/client.err" | tail -1)
    else
        # shellcheck disable=SC2086
        out=$(le exec a -- timeout "$CLIENT_LIMIT" "$PY" bench/rpc_loss.py client --host "$B" --port "$port" \
            -n "$N" --size 64 $opts 2>"$WORK/client.err" | tail -1)
    fi
    rc=$?
    p1=$(psi_total); t1=$(now_us)
    le stats --json >"$WORK/stats.json" 2>/dev/null
    stop_server
    "$PY" - "$loss" "$round" "$label" "$impl" "$p0" "$p1" "$t0" "$t1" "$WORK/stats.json" "$out" >>"$RESULTS" <<'EOF'
import json, re, sys
loss, rnd, label, impl, p0, p1, t0, t1, stats_path, out = sys.argv[1:]
rec = {"loss": float(loss), "round": int(rnd), "label": label, "impl": impl,
       "psi_pct": round((int(p1) - int(p0)) / max(1, int(t1) - int(t0)) * 100, 1),
       "wall_s": round((int(t1) - int(t0)) / 1e6, 1)}
try:
    st = json.load(open(stats_path))["stats"]
    rec["late_avg_us"] = max(d["late_avg_us"] for d in st.values())
    rec["late_max_us"] = max(d["late_max_us"] for d in st.values())
    rec["late_over_1ms"] = sum(d["late_over_1ms"] for d in st.values())
    rec["lost_pct"] = {k: round(100 * d["lost"] / max(1, d["rx_pkts"]), 2) for k, d in st.items()}
    rec["pkts"] = sum(d["rx_pkts"] for d in st.values())
except Exception as e:  # noqa: BLE001
    rec["stats_error"] = str(e)
if impl == "grpc":
    m = re.search(r"errors=(\d+).*p50 ([\d.]+) p90 ([\d.]+) p99 ([\d.]+) max ([\d.]+) mean ([\d.]+)", out)
    if m:
        rec.update(errors=int(m[1]), p50=float(m[2]), p90=float(m[3]), p99=float(m[4]),
                   max=float(m[5]), mean=float(m[6]))
else:
    try:
        d = json.loads(out)
        rec.update({k: d[k] for k in ("p50", "p90", "p99", "max", "mean", "errors", "n") if k in d})
        c = d.get("counters", {})
        rec.update(retrans=c.get("retrans_segs"), fec_recovered=c.get("fec_recovered"),
                   rto_max=c.get("rto_max"))
        if d.get("trace"):
            rec["trace"] = d["trace"][:20]
    except Exception:
        pass
if "p99" not in rec:
    rec["failed"] = out[-300:]
print(json.dumps(rec))
EOF
    tail -1 "$RESULTS" | "$PY" -c '
import json, sys
r = json.loads(sys.stdin.read())
if "p99" in r:
    extra = "" if r["impl"] == "grpc" else "  retrans %s fec_rec %s rto_max %s" % (r.get("retrans"), r.get("fec_recovered"), r.get("rto_max"))
    print("  loss %g%% round %d %-16s p50 %7.1f p90 %7.1f p99 %7.1f max %7.1f mean %6.1f err %d | %5.1f s, cpu pressure %4.1f%%, fwd late avg %.1f us max %.0f us (%s > 1 ms)%s" % (
        r["loss"], r["round"], r["label"], r["p50"], r["p90"], r["p99"], r["max"], r["mean"], r.get("errors", 0),
        r["wall_s"], r["psi_pct"], r.get("late_avg_us", -1), r.get("late_max_us", -1), r.get("late_over_1ms", "?"), extra))
    if r.get("trace"):
        print("    trace [call, ms, rto, srtt, rttvar]: %s" % r["trace"])
else:
    print("  loss %g%% round %d %-16s FAILED: %s" % (r["loss"], r["round"], r["label"], r.get("failed")))
'
    [ "$rc" -eq 0 ] || { echo "  (client exit code $rc; stderr:)"; tail -3 "$WORK/client.err"; }
}

# contenders: grpc plus the kcprpc configurations
LABELS=(grpc); IMPLS=(grpc); OPTS=("")
IFS=';' read -r -a KCP_ITEMS <<<"$KCP"
for item in "${KCP_ITEMS[@]}"; do
    [ -n "$item" ] || continue
    LABELS+=("kcprpc ${item%%=*}"); IMPLS+=(kcprpc); OPTS+=("${item#*=}")
done

le down >/dev/null 2>&1
first=${LOSSES%% *}
le up --delay "$DELAY" --loss "$first" --seed "$SEED" >/dev/null || { echo "linkemu up failed" >&2; exit 1; }
echo "# kcprpc vs grpcio: sequential unary 64 B echo across linkemu ($NAME), ${DELAY} ms one-way delay, seed $SEED, $N calls per run"
echo "# $(date -u +%FT%TZ); kernel $(uname -r); $(nproc) CPUs; loadavg $(cut -d' ' -f1-3 /proc/loadavg);" \
     "TCP cc $(le exec a -- sysctl -n net.ipv4.tcp_congestion_control); grpcio $("$PY" -c 'import grpc; print(grpc.__version__)')"
echo "# cpu pressure at start: $(head -1 /proc/pressure/cpu 2>/dev/null)"
echo "# contenders (alternated A B, then B A): $(printf "%s, " "${LABELS[@]}")"
for loss in $LOSSES; do
    le set --loss "$loss" >/dev/null
    rounds=$ROUNDS; [ "$loss" = "$first" ] || rounds=$ROUNDS2
    echo "## loss ${loss} % each way, ${rounds} round(s)"
    for r in $(seq "$rounds"); do
        idx=$(seq 0 $(( ${#LABELS[@]} - 1 )))
        [ $((r % 2)) -eq 0 ] && idx=$(echo "$idx" | tac)  # A B, then B A
        for i in $idx; do
            run_one "$loss" "$r" "${LABELS[$i]}" "${IMPLS[$i]}" "${OPTS[$i]}"
        done
    done
done

echo
"$PY" - "$RESULTS" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in recs if "p99" in r]
losses = list(dict.fromkeys(r["loss"] for r in recs))
labels = list(dict.fromkeys(r["label"] for r in recs))
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("| loss each way | contender | runs | p50 ms | p99 ms | max ms | errors | p99 / grpc p99 | cpu pressure % | fwd lateness avg / max us |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for loss in losses:
    g = [r["p99"] for r in ok if r["loss"] == loss and r["impl"] == "grpc"]
    for lab in labels:
        rs = [r for r in ok if r["loss"] == loss and r["label"] == lab]
        if not rs:
            continue
        ratio = "" if rs[0]["impl"] == "grpc" or not g else "**%.2f**" % (med([r["p99"] for r in rs]) / med(g))
        print("| %g %% | %s | %d | %.1f | %.1f | %.1f | %d | %s | %s | %.1f / %.0f |" % (
            loss, lab, len(rs), med([r["p50"] for r in rs]), med([r["p99"] for r in rs]),
            med([r["max"] for r in rs]), sum(r.get("errors", 0) for r in rs), ratio,
            "/".join("%.0f" % r["psi_pct"] for r in rs),
            max(r.get("late_avg_us", 0) for r in rs), max(r.get("late_max_us", 0) for r in rs)))
failed = [r for r in recs if "p99" not in r]
if failed:
    print("\nFAILED runs: %d" % len(failed))
print("\n(medians over rounds; per-run cpu pressure = share of wall time some task waited for a CPU, from /proc/pressure/cpu)")
sys.exit(1 if failed else 0)
EOF
