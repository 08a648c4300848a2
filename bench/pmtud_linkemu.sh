#!/usr/bin/env bash
# Path MTU discovery across linkemu with a small link MTU (issue 15, item 4): a secure session's
# search must end just below the link's UDP payload limit (TUN MTU - 28), with no data resent.
#
#   bash bench/pmtud_linkemu.sh                 # --mtu 1400 --delay 10
#   bash bench/pmtud_linkemu.sh --mtu 1300 --delay 25
#   bash bench/pmtud_linkemu.sh --mtu 1500 --drop-mtu 1280 --drop-at 5   # the MTU falls mid-stream
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
DROP_MTU=0
DROP_AT=5
while [ $# -gt 0 ]; do
    case "$1" in
        --mtu) MTU=$2; shift ;;
        --delay) DELAY=$2; shift ;;
        --drop-mtu) DROP_MTU=$2; shift ;;
        --drop-at) DROP_AT=$2; shift ;;
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
if [ "$DROP_MTU" -gt 0 ]; then
    # both TUNs (each side's sends) go down to DROP_MTU while the stream runs: DF datagrams above
    # it fail to send (EMSGSIZE), as on a new, smaller interface or route
    ( sleep "$DROP_AT"
      ip -n "$NAME-a" link set le0 mtu "$DROP_MTU" && ip -n "$NAME-b" link set le0 mtu "$DROP_MTU" &&
      echo "t~${DROP_AT}s: link MTU $DROP_MTU (UDP payload limit $((DROP_MTU - 28)))" ) &
    timeout 90 "$LE" --name "$NAME" exec a -- "$PY" bench/pmtud_linkemu.py stream --seconds 12
    exit $?
fi
timeout 90 "$LE" --name "$NAME" exec a -- "$PY" bench/pmtud_linkemu.py client --seconds 45
