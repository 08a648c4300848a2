#!/usr/bin/env bash
# Calls under loss (issue 6, benchmark 3; issue 15): kcprpc vs grpcio, sequential unary calls (a 64 B echo; --size)
# across linkemu (25 ms one-way delay by default, loss on both ways), contenders alternated on the same link.
#
#   bash bench/linkemu_compare.sh            # 5 % loss: 2 rounds (A B A B); 0 % and 1 %: 1 round; 2,000 calls
#   bash bench/linkemu_compare.sh --quick    # 5 % and 0 %, 1 round, 300 calls
#   bash bench/linkemu_compare.sh --delay 40 --links "random5=--loss 5;ge1-25=--ge-p 1 --ge-r 25;clean="
#
# Options: -n CALLS, --rounds R (at the first link), --rounds2 R (at the others), --delay MS, --seed N,
#   --losses "5 0 1" (random loss % each way; one link per value, labelled "loss 5 %"),
#   --links "LABEL=OPTS;LABEL=OPTS" (instead of --losses: each OPTS are linkemu link options, e.g.
#     "random5=--loss 5;ge1-25=--ge-p 1 --ge-r 25;ge1-10=--ge-p 1 --ge-r 10;rate5=--rate 5 --loss 1;clean=";
#     every link starts from a clean link at --delay, so a label's OPTS are all it has),
#   --ge-p P --ge-r R --ge-bad-loss L (Gilbert-Elliott burst loss added to every link; then --loss is the
#     loss in the Good state), --link-opts "OPTS" (more linkemu link options for every link, e.g. "--jitter 5"),
#   --kcp "LABEL=OPTS;LABEL=OPTS" (kcprpc contenders; OPTS are rpc_loss.py transport options given to
#     both sides, e.g. "fast3=;fec1/1=--fec 1/1"), --py PYTHON (needs grpcio), --name NAME (linkemu
#     instance, default kcprpcbench), --json FILE (write every run and the summary rows as JSON lines),
#   --deadline S (per call, both probes; default 10), --size B (the echo's payload, both probes; default 64),
#   --report FILE (no runs: print the table of a --json FILE).
# Needs root. Uses its own linkemu instance (--name; namespaces NAME-a/-b, addresses 10.77.0.1/10.77.0.2):
# servers run in b, clients in a. The instance is always brought down on exit.
# Prints a table with each contender's p50/p99/max (median over rounds), the kcprpc/grpc ratios of p50,
# p99 and max, the bytes on the wire per call (IP bytes incl. headers that entered the link, both
# directions, lost packets included, from `linkemu stats`; the count covers the connect and the 20
# warm-up calls, divided by N + 20) and its overhead (÷ the same contender's bytes per call on a clean
# link of the run: no loss, no GE, no dup), the loss the link applied, the CPU pressure
# (/proc/pressure/cpu) during each run and the forwarder's lateness.
set -u -o pipefail
CALLER_PWD=$PWD
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
LE="$ROOT/../shared/tools/linkemu/linkemu"
GRPC_PROBE="$ROOT/../shared/tools/linkemu/bench/grpc_unary.py"
# The interpreter (it needs kcprpc and grpcio: pip install -e '.[bench]'): $PY if set, else the active
# virtual environment's, else the checkout's .venv, else python3 on the PATH.
if [ -z "${PY:-}" ]; then
    if [ -n "${VIRTUAL_ENV:-}" ]; then PY="$VIRTUAL_ENV/bin/python"
    elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
    else PY=$(command -v python3); fi
fi
NAME=kcprpcbench
B=10.77.0.2
N=2000
WARMUP=20
ROUNDS=2
ROUNDS2=1
LOSSES="5 0 1"
LINKS=""
LINK_OPTS=""
DELAY=25
SEED=1
JSON_OUT=""
REPORT=""
DEADLINE=10
SIZE=64
KCP="fast3=;fast3+fec1/1=--fec 1/1"

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) N=300; ROUNDS=1; ROUNDS2=1; LOSSES="5 0" ;;
        -n) N=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --rounds2) ROUNDS2=$2; shift ;;
        --losses) LOSSES=$2; shift ;;
        --links) LINKS=$2; shift ;;
        --ge-p|--ge-r|--ge-bad-loss) LINK_OPTS="$LINK_OPTS $1 $2"; shift ;;
        --link-opts) LINK_OPTS="$LINK_OPTS $2"; shift ;;
        --delay) DELAY=$2; shift ;;
        --seed) SEED=$2; shift ;;
        --kcp) KCP=$2; shift ;;
        --py) PY=$2; shift ;;
        --name) NAME=$2; shift ;;
        --deadline) DEADLINE=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --report) REPORT=$2; shift ;;
        --json) JSON_OUT=$2; case "$JSON_OUT" in /*) ;; *) JSON_OUT="$CALLER_PWD/$JSON_OUT" ;; esac; shift ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done
case "$DEADLINE" in ''|*[!0-9]*) echo "--deadline takes whole seconds: $DEADLINE" >&2; exit 2 ;; esac
case "$SIZE" in ''|*[!0-9]*) echo "--size takes bytes: $SIZE" >&2; exit 2 ;; esac
case "$NAME" in ''|*[!A-Za-z0-9_.-]*) echo "bad --name: $NAME" >&2; exit 2 ;; esac
summarize() {  # RESULTS.jsonl [JSON_OUT]: the table (and the JSON lines) from the run records
    "$PY" - "$1" "${2:-}" <<'EOF'
import json, statistics, sys
path, json_out = sys.argv[1:]
recs = [r for r in (json.loads(l) for l in open(path) if l.strip()) if r.get("kind", "run") == "run"]
if not recs:
    sys.exit("no run records in %s" % path)
warmup = recs[0].get("warmup", 20)
n = recs[0].get("n_req", recs[0].get("calls", warmup) - warmup)
delay = recs[0].get("params", {}).get("delay", float("nan"))
seed = recs[0].get("seed")
deadline = recs[0].get("deadline_s", 10.0)
ok = [r for r in recs if "p99" in r]
links = list(dict.fromkeys(r["link"] for r in recs))
labels = list(dict.fromkeys(r["label"] for r in recs))
med = lambda xs: statistics.median(xs) if xs else float("nan")
# the clean-link reference of each contender: its runs on the first clean link
clean_links = [l for l in links if any(r.get("clean") for r in recs if r["link"] == l)]
clean = clean_links[0] if clean_links else None
def bpc(link, lab):
    xs = [r["bytes_per_call"] for r in ok if r["link"] == link and r["label"] == lab and "bytes_per_call" in r]
    return med(xs) if xs else None
rows = []
for link in links:
    gr = [r for r in ok if r["link"] == link and r["impl"] == "grpc"]
    g = {k: med([r[k] for r in gr]) if gr else None for k in ("p50", "p99", "max")}
    for lab in labels:
        rs = [r for r in ok if r["link"] == link and r["label"] == lab]
        if not rs:
            continue
        b, b0 = bpc(link, lab), (bpc(clean, lab) if clean else None)
        row = {"kind": "summary", "link": link, "link_opts": rs[0].get("link_opts", ""), "label": lab,
               "impl": rs[0]["impl"], "runs": len(rs), "n": n, "delay_ms": delay, "seed": seed,
               "p50": med([r["p50"] for r in rs]), "p99": med([r["p99"] for r in rs]), "max": med([r["max"] for r in rs]),
               "errors": sum(r.get("errors", 0) for r in rs), "bytes_per_call": b,
               "overhead": round(b / b0, 2) if b and b0 else None, "clean_link": clean,
               "lost_total_pct": med([r["lost_total_pct"] for r in rs if "lost_total_pct" in r]),
               "psi_pct": [r["psi_pct"] for r in rs],
               "late_avg_us": max(r.get("late_avg_us", 0) for r in rs), "late_max_us": max(r.get("late_max_us", 0) for r in rs)}
        # the percentiles are over the calls that succeeded; a failed call waited the whole deadline, so
        # once more than 1 % of the calls failed, the p99 over all calls is >= the deadline
        row["p99_censored"] = row["errors"] > 0.01 * sum(r.get("n_req", n) for r in rs)
        row["max_censored"] = row["errors"] > 0
        for k in ("p50", "p99", "max"):
            row[k + "_vs_grpc"] = None if rs[0]["impl"] == "grpc" or not g[k] else round(row[k] / g[k], 2)
        rows.append(row)
# a censored figure (failed calls waited the deadline) is >= the deadline: its ratio is a bound
dl_ms = deadline * 1000.0
for w in rows:
    if w["impl"] == "grpc":
        continue
    gw = next((x for x in rows if x["link"] == w["link"] and x["impl"] == "grpc"), None)
    for k in ("p99", "max"):
        mine, theirs = w[k + "_censored"], bool(gw and gw[k + "_censored"])
        if w[k + "_vs_grpc"] is None or not (mine or theirs):
            continue
        w[k + "_vs_grpc"] = None
        if mine and not theirs:
            w[k + "_vs_grpc_bound"] = ">= %.2f" % (dl_ms / gw[k])
        elif theirs and not mine:
            w[k + "_vs_grpc_bound"] = "<= %.2f" % (w[k] / dl_ms)
        else:
            w[k + "_vs_grpc_bound"] = "?"
def rat(w, k):
    if w.get(k + "_vs_grpc_bound"):
        return w[k + "_vs_grpc_bound"]
    return "" if w[k + "_vs_grpc"] is None else "%.2f" % w[k + "_vs_grpc"]
print("| link | contender | runs | p50 ms | p99 ms | max ms | errors | p50 / grpc | p99 / grpc | max / grpc | bytes/call | overhead vs clean | lost % | cpu pressure % | fwd lateness avg / max us |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
f = lambda v: "" if v is None else "%.2f" % v
for w in rows:
    print("| %s | %s | %d | %.1f | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %.1f / %.0f |" % (
        w["link"], w["label"], w["runs"], w["p50"], "%.1f%s" % (w["p99"], " †" if w["p99_censored"] else ""),
        "%.1f%s" % (w["max"], " †" if w["max_censored"] else ""), w["errors"],
        f(w["p50_vs_grpc"]), "**%s**" % rat(w, "p99") if rat(w, "p99") else "", rat(w, "max"), "" if w["bytes_per_call"] is None else "%.0f" % w["bytes_per_call"],
        f(w["overhead"]), "" if w["lost_total_pct"] != w["lost_total_pct"] else "%.1f" % w["lost_total_pct"],
        "/".join("%.0f" % x for x in w["psi_pct"]), w["late_avg_us"], w["late_max_us"]))
failed = [r for r in recs if "p99" not in r]
if failed:
    print("\nFAILED runs: %d" % len(failed))
print("\n(medians over rounds; bytes/call = IP bytes into the link, both ways, lost packets included, over %d calls"
      " + %s warm-up calls, connect included; overhead = bytes/call ÷ the same contender's on the clean link %s; lost %% = packets the link"
      " dropped, both ways; per-run cpu pressure = share of wall time some task waited for a CPU, from /proc/pressure/cpu)"
      % (n, warmup, "'%s'" % clean if clean else "(none in this run)"))
if any(w["max_censored"] for w in rows):
    print("† p50/p99/max are over the calls that succeeded; a failed call (errors) waited the %g s deadline, so with"
          " errors the max over all calls is >= %g s, and with errors over 1 %% of the calls so is the p99. A ratio"
          " with such a figure is a bound (<= or >=), taking the censored figure as the deadline" % (deadline, deadline))
if json_out:
    with open(json_out, "w") as fh:
        for r in recs + rows:
            fh.write(json.dumps(r) + "\n")
    print("JSON lines: %s (%d runs, %d summary rows)" % (json_out, len(recs), len(rows)))
sys.exit(1 if failed else 0)
EOF
}
if [ -n "$REPORT" ]; then  # no runs: the table of a --json file written before
    case "$REPORT" in /*) ;; *) REPORT="$CALLER_PWD/$REPORT" ;; esac
    [ -x "$PY" ] || PY=python3
    summarize "$REPORT" "$JSON_OUT"
    exit $?
fi
[ -x "$LE" ] || { echo "linkemu not found at $LE" >&2; exit 1; }
[ -r "$GRPC_PROBE" ] || { echo "grpc probe not found at $GRPC_PROBE" >&2; exit 1; }
"$PY" -c "import grpc, kcprpc" 2>/dev/null || { echo "$PY lacks grpcio or kcprpc: pip install -e '.[bench]' into it, or set PY=" >&2; exit 1; }

# the links: LINK_LABELS[i] with linkemu options LINK_SET[i]
LINK_LABELS=(); LINK_SET=()
if [ -z "$LINKS" ]; then
    for loss in $LOSSES; do LINKS="$LINKS;loss $loss %=--loss $loss"; done
fi
IFS=';' read -r -a LINK_ITEMS <<<"$LINKS"
for item in "${LINK_ITEMS[@]}"; do
    [ -n "${item// /}" ] || continue
    case "$item" in *=*) ;; *) echo "--links: '$item' is not LABEL=OPTS" >&2; exit 2 ;; esac
    label=${item%%=*}; label=${label# }
    [ -n "$label" ] || { echo "--links: '$item' has no label" >&2; exit 2 ;}
    LINK_LABELS+=("$label"); LINK_SET+=("${item#*=}")
done
[ ${#LINK_LABELS[@]} -gt 0 ] || { echo "no links given" >&2; exit 2; }
# every link starts from a clean link with the delay, so each label's options are all it has
CLEAN_SET="--delay $DELAY --loss 0 --jitter 0 --dup 0 --reorder 0 --reorder-gap 10 --rate 0 --queue 50 --ge-p 0 --ge-r 25 --ge-bad-loss 100"

le() { "$LE" --name "$NAME" "$@"; }
WORK=$(mktemp -d -t "$NAME.XXXXXX")
RESULTS="$WORK/results.jsonl"
SPID=""
CPID=""
cleanup() {  # `le down` first: it ends what runs in the namespaces, which the subshells wait for
    le down >/dev/null 2>&1
    if [ -n "$CPID" ]; then kill "$CPID" 2>/dev/null; wait "$CPID" 2>/dev/null; fi
    if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psi_total() { awk '/^some/ { split($5, t, "="); print t[2] }' /proc/pressure/cpu 2>/dev/null || echo 0; }
now_us() { date +%s%6N; }
# generous bounds: a call takes ~50-80 ms and a lossy call up to a few s; each call has --deadline (10 s),
# and up to 20 calls may use it whole (burst loss can stall TCP for longer)
CLIENT_LIMIT=$(( N * 2 + 120 + 20 * ${DEADLINE%.*} ))
SERVER_LIMIT=$(( CLIENT_LIMIT + 60 ))

# Servers and clients are started as "$LE" ... & (not through the le function), so that $! is the
# process itself: linkemu execs `ip netns exec`, which execs timeout, so a kill reaches the probe.
start_server() {  # impl port opts -> sets SPID, waits until it listens (bounded)
    local impl=$1 port=$2 opts=$3
    if [ "$impl" = grpc ]; then
        "$LE" --name "$NAME" exec b -- timeout "$SERVER_LIMIT" "$PY" "$GRPC_PROBE" server --host "$B" --port "$port" \
            --max-seconds "$SERVER_LIMIT" >"$WORK/server.log" 2>&1 &
        SPID=$!
        sleep 1  # the gRPC client itself waits (up to 30 s) for the channel to be ready
    else
        # shellcheck disable=SC2086  # opts are word-split on purpose
        "$LE" --name "$NAME" exec b -- timeout "$SERVER_LIMIT" "$PY" bench/rpc_loss.py server --host "$B" --port "$port" \
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
run_one() {  # link-label link-opts round label impl opts
    local link=$1 link_opts=$2 round=$3 label=$4 impl=$5 opts=$6 port out p0 p1 t0 t1 rc
    RUN=$((RUN + 1))
    if [ "$impl" = grpc ]; then port=$((50100 + RUN)); else port=$((9400 + RUN)); fi
    start_server "$impl" "$port" "$opts" || return 1
    # every run starts with the burst model in its Good state: linkemu ends a burst after a number
    # of packets, not of milliseconds, so a run would otherwise inherit the burst the previous run's
    # last packets left on the idle link (a ge1-10 run once lost all 7 of a handshake's initiations
    # that way). Turning the model off resets it; the seeded streams go on.
    # shellcheck disable=SC2086
    if [[ " $link_opts " == *" --ge-p "* ]]; then le set --ge-p 0 >/dev/null && le set $CLEAN_SET $link_opts >/dev/null; fi
    le stats --reset >/dev/null
    p0=$(psi_total); t0=$(now_us)
    # the client runs in the background and we `wait` for it, so that INT/TERM act at once (a trap
    # waits for a foreground command to finish)
    if [ "$impl" = grpc ]; then
        "$LE" --name "$NAME" exec a -- timeout "$CLIENT_LIMIT" "$PY" "$GRPC_PROBE" client --host "$B" --port "$port" \
            -n "$N" --warmup "$WARMUP" --deadline "$DEADLINE" --size "$SIZE" >"$WORK/client.out" 2>"$WORK/client.err" &
    else
        # shellcheck disable=SC2086
        "$LE" --name "$NAME" exec a -- timeout "$CLIENT_LIMIT" "$PY" bench/rpc_loss.py client --host "$B" --port "$port" \
            -n "$N" --warmup "$WARMUP" --deadline "$DEADLINE" --size "$SIZE" $opts >"$WORK/client.out" 2>"$WORK/client.err" &
    fi
    CPID=$!
    wait "$CPID"
    rc=$?
    CPID=""
    out=$(tail -1 "$WORK/client.out")
    p1=$(psi_total); t1=$(now_us)
    le stats --json --reset >"$WORK/stats.json" 2>/dev/null
    stop_server
    "$PY" - "$link" "$link_opts" "$round" "$label" "$impl" "$p0" "$p1" "$t0" "$t1" "$WORK/stats.json" \
        "$N" "$WARMUP" "$SEED" "$DEADLINE" "$out" >>"$RESULTS" <<'EOF'
import json, re, sys
link, link_opts, rnd, label, impl, p0, p1, t0, t1, stats_path, n_req, warmup, seed, deadline, out = sys.argv[1:]
calls = int(n_req) + int(warmup)
rec = {"kind": "run", "link": link, "link_opts": link_opts.strip(), "round": int(rnd), "label": label,
       "impl": impl, "n_req": int(n_req), "warmup": int(warmup), "seed": int(seed), "deadline_s": float(deadline), "psi_pct": round((int(p1) - int(p0)) / max(1, int(t1) - int(t0)) * 100, 1),
       "wall_s": round((int(t1) - int(t0)) / 1e6, 1)}
try:
    rep = json.load(open(stats_path))
    st = rep["stats"]
    prm = rep["params"]["a->b"]
    rec["params"] = {k: prm[k] for k in ("loss", "delay", "jitter", "dup", "rate", "ge_p", "ge_r", "ge_bad_loss")}
    rec["clean"] = all(p["loss"] == 0 and p["ge_p"] == 0 and p["dup"] == 0 for p in rep["params"].values())
    rec["loss"] = prm["loss"]
    rec["late_avg_us"] = max(d["late_avg_us"] for d in st.values())
    rec["late_max_us"] = max(d["late_max_us"] for d in st.values())
    rec["late_over_1ms"] = sum(d["late_over_1ms"] for d in st.values())
    rec["lost_pct"] = {k: round(100 * d["lost"] / max(1, d["rx_pkts"]), 2) for k, d in st.items()}
    rec["lost_total_pct"] = round(100 * sum(d["lost"] + d["queue_drops"] for d in st.values())
                                  / max(1, sum(d["rx_pkts"] for d in st.values())), 2)
    rec["pkts"] = sum(d["rx_pkts"] for d in st.values())
    # bytes on the wire: IP bytes (headers included) that entered the link, both ways, lost ones included
    rec["bytes"] = {k: d["rx_bytes"] for k, d in st.items()}
    rec["calls"] = int(calls)  # counted + warm-up calls; the bytes also cover the connect
    rec["bytes_per_call"] = round(sum(rec["bytes"].values()) / int(calls), 1)
    rec["pkts_per_call"] = round(rec["pkts"] / int(calls), 2)
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
        rec["counters"] = c
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
    print("  %s round %d %-16s p50 %7.1f p90 %7.1f p99 %7.1f max %7.1f mean %6.1f err %d | %.0f B/call, lost %s%% | %5.1f s, cpu pressure %4.1f%%, fwd late avg %.1f us max %.0f us (%s > 1 ms)%s" % (
        r["link"], r["round"], r["label"], r["p50"], r["p90"], r["p99"], r["max"], r["mean"], r.get("errors", 0),
        r.get("bytes_per_call", -1), r.get("lost_total_pct", "?"),
        r["wall_s"], r["psi_pct"], r.get("late_avg_us", -1), r.get("late_max_us", -1), r.get("late_over_1ms", "?"), extra))
    if r.get("trace"):
        print("    trace [call, ms, rto, srtt, rttvar]: %s" % r["trace"])
else:
    print("  %s round %d %-16s FAILED: %s" % (r["link"], r["round"], r["label"], r.get("failed")))
'
    [ "$rc" -eq 0 ] || { echo "  (client exit code $rc; stderr:)"; tail -3 "$WORK/client.err"; }
    [ -z "$JSON_OUT" ] || cp "$RESULTS" "$JSON_OUT"  # the runs so far, should the run be cut short
}


# contenders: grpc plus the kcprpc configurations
LABELS=(grpc); IMPLS=(grpc); OPTS=("")
IFS=';' read -r -a KCP_ITEMS <<<"$KCP"
for item in "${KCP_ITEMS[@]}"; do
    [ -n "$item" ] || continue
    LABELS+=("kcprpc ${item%%=*}"); IMPLS+=(kcprpc); OPTS+=("${item#*=}")
done

le down >/dev/null 2>&1
le up --delay "$DELAY" --seed "$SEED" >/dev/null || { echo "linkemu up failed" >&2; exit 1; }
echo "# kcprpc vs grpcio: sequential unary ${SIZE} B echo across linkemu ($NAME), ${DELAY} ms one-way delay, seed $SEED, $N calls per run"
echo "# $(date -u +%FT%TZ); kernel $(uname -r); $(nproc) CPUs; loadavg $(cut -d' ' -f1-3 /proc/loadavg);" \
     "TCP cc $(le exec a -- sysctl -n net.ipv4.tcp_congestion_control); grpcio $("$PY" -c 'import grpc; print(grpc.__version__)')"
echo "# cpu pressure at start: $(head -1 /proc/pressure/cpu 2>/dev/null)"
echo "# contenders (alternated A B, then B A): $(printf "%s, " "${LABELS[@]}")"
echo "# links: $(for i in "${!LINK_LABELS[@]}"; do printf "%s=[%s]; " "${LINK_LABELS[$i]}" "$(echo ${LINK_OPTS} ${LINK_SET[$i]})"; done)"
for li in "${!LINK_LABELS[@]}"; do
    link=${LINK_LABELS[$li]}
    lopts="$LINK_OPTS ${LINK_SET[$li]}"
    # shellcheck disable=SC2086  # link options are word-split on purpose
    le set $CLEAN_SET $lopts >"$WORK/set.out" 2>&1 || { echo "linkemu set failed for '$link' ($lopts):"; cat "$WORK/set.out"; exit 1; }
    rounds=$ROUNDS; [ "$li" -eq 0 ] || rounds=$ROUNDS2
    echo "## link $link: $(head -1 "$WORK/set.out" | sed 's/^a->b: //'); ${rounds} round(s)"
    for r in $(seq "$rounds"); do
        idx=$(seq 0 $(( ${#LABELS[@]} - 1 )))
        [ $((r % 2)) -eq 0 ] && idx=$(echo "$idx" | tac)  # A B, then B A
        for i in $idx; do
            run_one "$link" "$lopts" "$r" "${LABELS[$i]}" "${IMPLS[$i]}" "${OPTS[$i]}"
        done
    done
done

echo
summarize "$RESULTS" "$JSON_OUT"
