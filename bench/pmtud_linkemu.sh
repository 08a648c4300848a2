#!/usr/bin/env bash
# Path MTU discovery across linkemu with a small link MTU (issue 15, item 4): a secure session's
# search must end just below the link's UDP payload limit (TUN MTU - 28), with no data resent.
#
#   bash bench/pmtud_linkemu.sh                 # --mtu 1400 --delay 10
#   bash bench/pmtud_linkemu.sh --mtu 1300 --delay 25
#
# Needs root. Uses its own linkemu instance "i15mtu" (brought down on exit).
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
LE="$ROOT/../shared/tools/linkemu/linkemu"
PY=${PY:-"$ROOT/.venv/bin/python"}
NAME=i15mtu
MTU=1400
DELAY=10
while [ $# -gt 0 ]; do
    case "$1" in
        --mtu) MTU=$2; shift ;;
        --delay) DELAY=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
trap '"$LE" --name "$NAME" down >/dev/null 2>&1' EXIT
"$LE" --name "$NAME" up --mtu "$MTU" --delay "$DELAY" --seed 1 || exit 1
"$LE" --name "$NAME" exec b -- "$PY" bench/pmtud_linkemu.py server --seconds 60 &
for _ in $(seq 50); do  # wait for the server's socket (bounded: 5 s)
    "$LE" --name "$NAME" exec b -- ss -lun 2>/dev/null | grep -q ':7400 ' && break
    sleep 0.1
done
echo "link MTU $MTU: UDP payload limit $((MTU - 28))"
timeout 90 "$LE" --name "$NAME" exec a -- "$PY" bench/pmtud_linkemu.py client --seconds 45
