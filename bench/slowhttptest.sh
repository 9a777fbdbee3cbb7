#!/usr/bin/env bash
# Security battery row 11 at scale: slowhttptest (apt install slowhttptest) with 1000
# connections in slowloris (-H), slow-body (-B) and slow-read (-X) modes against sluice on
# 127.0.0.1, while curl keeps making normal requests on new connections.
#
# Pass: normal requests >= 99.9 % successful during every attack, and the gateway's open
# file descriptors back near the baseline once the attack stops (slow connections are cut at
# the configured timeouts, not kept).
#
# Sluice cuts a slow body or a slow read when nothing moves for `limits.idle_timeout`; it
# has no minimum data rate, so a client that trickles a byte more often than that is kept
# (bounded by `limits.max_connections`). The slow-body and slow-read modes therefore pause
# longer than the idle timeout between reads/writes.
#
# The bounded automated version (300 connections) is
# tests/e2e/defences.rs::many_slowloris_connections_do_not_starve_normal_clients.
#
# Usage: bench/slowhttptest.sh [seconds per mode, default 30]
#   SLUICE_BIN  the binary to test (default: target/release/sluice, built if missing)
#   CONNS       slow connections per mode (default 1000)
#   MODES       which of "slowloris slow-body slow-read" to run (default: all)
set -euo pipefail

cd "$(dirname "$0")/.."
SECS=${1:-30}
CONNS=${CONNS:-1000}
BIN=${SLUICE_BIN:-target/release/sluice}
command -v slowhttptest >/dev/null || { echo "slowhttptest not found: apt-get install -y slowhttptest" >&2; exit 2; }
if [[ ! -x $BIN ]]; then cargo build --release -p sluice --bin sluice; fi
(( $(ulimit -n) > CONNS + 200 )) || ulimit -n $((CONNS * 2 + 1024))

WORK=$(mktemp -d)
GW_PID=
cleanup() {
    [[ -n $GW_PID ]] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# A 256 KiB static body, large enough that a slow reader stalls the gateway's writes.
BIG=$(head -c 262144 /dev/zero | tr '\0' 'x')
cat >"$WORK/gateway.toml" <<EOF
[admin]
enabled = false

[gateway]
drain_timeout = "2s"

[limits]
header_read_timeout = "5s"
idle_timeout = "5s"

[access_log]
enabled = false

[[listeners]]
name = "main"
bind = "127.0.0.1:0"

[[routes]]
name = "small"
path = "/"
respond = { static = { body = "ok" } }

[[routes]]
name = "echo"
path = "/echo"
respond = "echo"

[[routes]]
name = "big"
path = "/big"
respond = { static = { body = "$BIG" } }
EOF

"$BIN" run --config "$WORK/gateway.toml" 2>"$WORK/stderr" >/dev/null &
GW_PID=$!
for _ in $(seq 100); do
    grep -q ' ready' "$WORK/stderr" && break
    kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/stderr" >&2; exit 1; }
    sleep 0.1
done
ADDR=$(grep -o 'addr=[0-9.:]*' "$WORK/stderr" | head -1 | cut -d= -f2)
[[ -n $ADDR ]] || { echo "gateway did not report its address" >&2; cat "$WORK/stderr" >&2; exit 1; }
fds() { ls "/proc/$GW_PID/fd" | wc -l; }
BASE=$(fds)
echo "sluice $BIN on $ADDR, $BASE fds at rest"

# Normal client: one request per new connection until the attack ends; prints "ok total".
normal_client() {
    local until=$1 ok=0 total=0
    while (( $(date +%s) < until )); do
        total=$((total + 1))
        if [[ $(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$ADDR/") == 200 ]]; then
            ok=$((ok + 1))
        fi
    done
    echo "$ok $total"
}

FAIL=0
run_mode() {
    local name=$1; shift
    local until=$(( $(date +%s) + SECS ))
    normal_client "$until" >"$WORK/normal" &
    local client=$!
    slowhttptest "$@" -c "$CONNS" -r 500 -l "$SECS" -p 3 -u "http://$ADDR$URL" \
        >"$WORK/$name.log" 2>&1 &
    local attack=$! peak=0 n
    while kill -0 "$attack" 2>/dev/null; do
        n=$(fds); (( n > peak )) && peak=$n
        sleep 0.5
    done
    wait "$attack" || true
    wait "$client"
    read -r ok total <"$WORK/normal"
    # Slow connections are cut at the 5 s timeouts; give them that long to go.
    local rest=
    for _ in $(seq 80); do
        rest=$(fds)
        (( rest <= BASE + 20 )) && break
        sleep 0.1
    done
    local pct; pct=$(awk -v o="$ok" -v t="$total" 'BEGIN { printf "%.2f", t ? 100 * o / t : 0 }')
    local verdict=PASS
    if (( total == 0 )) || awk -v o="$ok" -v t="$total" 'BEGIN { exit !(o < 0.999 * t) }'; then
        verdict=FAIL
    fi
    (( rest <= BASE + 20 )) || verdict=FAIL
    [[ $verdict == PASS ]] || FAIL=1
    printf '%-10s normal %s/%s (%s%%)  fds: at rest %s, peak %s, after %s  %s\n' \
        "$name" "$ok" "$total" "$pct" "$BASE" "$peak" "$rest" "$verdict"
}

MODES=${MODES:-slowloris slow-body slow-read}
[[ $MODES == *slowloris* ]] && URL=/ run_mode slowloris -H -i 2 -x 24
# Follow-up bytes every 10 s: slower than the 5 s idle timeout (see the note at the top).
[[ $MODES == *slow-body* ]] && URL=/echo run_mode slow-body -B -i 10 -x 24 -s 8192
[[ $MODES == *slow-read* ]] && URL=/big run_mode slow-read -X -k 3 -n 10 -w 32 -y 64 -z 16
kill -0 "$GW_PID" || { echo "the gateway died" >&2; exit 1; }
exit $FAIL
