#!/usr/bin/env bash
# Cost of the rate limiter's state backends (local, redis, hybrid), side by side on loopback.
# Method: the project's benchmarking note (interleaved rounds, medians, differences within a
# round; see bench/README.md).
#
# Starts on 127.0.0.1, configured in a temp dir: redis-server on a free port (--save ""
# --appendonly no), and sluice (workers = 1, access log off, port 0 read from its log, [redis]
# command_timeout = "50ms", hybrid_sync_interval = "100ms") with four routes answering a static
# 200 "ok": /none/ (no policy), /local/, /redis/, /hybrid/ (one rate-limit policy each, 1e9 per
# 1m, key = "route": never reached; rate_limit_backend = the route's name; on_backend_error =
# "closed", so a Redis failure shows as a non-200, not as a silent local fallback).
# Then ROUNDS interleaved rounds of [none, local, redis, hybrid], per route a WARMUP-second
# warm-up (discarded) and two measured runs:
#   saturated:  oha --no-tui -w --output-format json -c CONNS -z DURATIONs URL  (req/s, p50, p99)
#   fixed rate: the same + -q RATE --latency-correction                       (p50, p99, p99.9)
# (-w waits for the requests in flight at the deadline, so every request sent is counted).
# Redis per request: `INFO commandstats` before and after a route's two runs; the delta of the
# calls= summed over every command but INFO (the script's own probe), divided by the 200s oha
# counted. Redis counts the commands a Lua script runs too (gcra.lua: EVALSHA + TIME, GET, SET
# = 4), so "round trips" also leaves out the commands named in host/src/state/lua/*.lua (exact
# here: with no redis kv policy the gateway sends none of them itself): ~0 for /none/ and
# /local/, ~1 for /redis/ (one EVALSHA), << 1 for /hybrid/ (one EVALSHA per key per sync; a
# hybrid key keeps syncing while its window lasts, so later runs of other routes see ~10/s).
# Also: EVALSHA alone; sluice's and redis's CPU µs/request in the saturated run (/proc/PID/stat);
# "p99 added" = the route's fixed-rate p99 − /local/'s in the same round. Prints a markdown
# report on stdout (progress on stderr); it never asserts on time.
#
# Usage: bench/state.sh > report.md
#        SLUICE_BIN=target/debug/sluice ROUNDS=1 DURATION=2 bench/state.sh   # smoke run
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [10] (s)  WARMUP [2] (s)  CONNS [32]  RATE [2000] (req/s)
#   PIN [1]     1: oha on GEN_CPU [0], sluice and redis on SRV_CPU [1] (taskset); 0: no pinning.
#   MAX_LOAD [3]  MAX_WAIT [600] (s): first wait (checking every 60 s, at most MAX_WAIT) for the
#               1-minute load average to drop below MAX_LOAD; then measure anyway.
#   SLUICE_BIN [target/release/sluice; not built here: `cargo build --release -p sluice`]
#   PLUGINS_DIR [plugins/target/wasm32-unknown-unknown/release; `just plugins` builds it]
#   KEEP        a directory to keep the config, logs and raw oha outputs in.
# Needs: redis-server, redis-cli, curl, jq (apt); oha (`cargo install --locked oha`).
set -euo pipefail

CMDLINE="$(for v in ROUNDS DURATION WARMUP CONNS RATE PIN MAX_LOAD SLUICE_BIN PLUGINS_DIR; do
    if [[ -n ${!v:-} ]]; then printf '%s=%q ' "$v" "${!v}"; fi; done)$0${*:+ $*}"
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} CONNS=${CONNS:-32} RATE=${RATE:-2000}
PIN=${PIN:-1} GEN_CPU=${GEN_CPU:-0} SRV_CPU=${SRV_CPU:-1} MAX_LOAD=${MAX_LOAD:-3} MAX_WAIT=${MAX_WAIT:-600}
BIN=${SLUICE_BIN:-target/release/sluice}
PLUGINS=${PLUGINS_DIR:-plugins/target/wasm32-unknown-unknown/release}
ROUTES=(none local redis hybrid)

# shellcheck source=bench/common.sh
. bench/common.sh

for tool in redis-server redis-cli curl jq oha; do
    command -v $tool >/dev/null || die "$tool not found (apt-get install -y redis-server curl jq; cargo install --locked oha)"
done
[[ -x $BIN ]] || die "$BIN not found: run \`cargo build --release -p sluice\` (or set SLUICE_BIN)"
[[ -f $PLUGINS/rate_limit.wasm ]] || die "$PLUGINS/rate_limit.wasm missing: run \`just plugins\`"
BIN=$(realpath "$BIN") PLUGINS=$(realpath "$PLUGINS")

GEN=() SRV=()
if [[ $PIN == 1 ]] && (( $(nproc) >= 2 )); then
    GEN=(taskset -c "$GEN_CPU") SRV=(taskset -c "$SRV_CPU")
    PINNING="oha on CPU $GEN_CPU; sluice and redis-server on CPU $SRV_CPU (taskset)"
else
    PINNING="none (all processes float over $(nproc) CPUs)"
fi

WORK=$(mktemp -d /tmp/sluice-bench-state.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && log "kept config, logs and raw outputs in $KEEP"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/raw"

# ---------------------------------------------------------------- redis
REDIS_PORT=
for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then REDIS_PORT=$p; break; fi
done
[[ -n $REDIS_PORT ]] || die "no free port found for redis"
"${SRV[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$! && PIDS+=("$REDIS_PID")
for _ in $(seq 100); do
    grep -q 'Ready to accept connections' "$WORK/redis.log" && break
    kill -0 "$REDIS_PID" 2>/dev/null || { cat "$WORK/redis.log" >&2; die "redis-server exited"; }
    sleep 0.05
done
grep -q 'Ready to accept connections' "$WORK/redis.log" || die "redis-server not ready after 5 s"
RCLI=(redis-cli -h 127.0.0.1 -p "$REDIS_PORT")

# ---------------------------------------------------------------- sluice
{
    bench_gateway "$WORK/cache"
    cat <<EOF
[state]
path = "$WORK/state/sluice.redb"
[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
command_timeout = "50ms"
hybrid_sync_interval = "100ms"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
[plugins.rate-limit]
path = "$PLUGINS/rate_limit.wasm"
grants = ["rate-limit"]
EOF
    for r in "${ROUTES[@]}"; do
        printf '\n[[routes]]\nname = "%s"\npath_prefix = "/%s/"\n' "$r" "$r"
        printf 'respond = { static = { status = 200, body = "ok" } }\n'
        [[ $r == none ]] && continue
        printf '\n[[routes.policies]]\nplugin = "rate-limit"\n'
        printf 'config = { requests = 60000000, window = "1m", key = "route" }\n'
        printf 'rate_limit_backend = "%s"\non_backend_error = "closed"\n' "$r"
    done
} >"$WORK/gateway.toml"

"${SRV[@]}" "$BIN" run --config "$WORK/gateway.toml" 2>"$WORK/sluice.log" &
GW_PID=$! && PIDS+=("$GW_PID")
for _ in $(seq 600); do
    grep -q ' ready' "$WORK/sluice.log" && break
    kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/sluice.log" >&2; die "sluice exited"; }
    sleep 0.05
done
grep -q ' ready' "$WORK/sluice.log" || { cat "$WORK/sluice.log" >&2; die "sluice not ready after 30 s"; }
GW_ADDR=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/sluice.log" | grep -o 'listener=main addr=[0-9.:]*' | awk -F= 'NR==1{print $3}')
[[ -n $GW_ADDR ]] || die "no 'listening listener=main addr=…' line in the sluice log"

# Sanity: every route answers 200 "ok"; the policy routes add the RateLimit-* headers.
for r in "${ROUTES[@]}"; do
    body=$(curl -s -w ' %{http_code}' "http://$GW_ADDR/$r/")
    [[ $body == "ok 200" ]] || die "/$r/ answered '$body', expected 'ok 200'"
    [[ $r == none ]] || curl -s -D - -o /dev/null "http://$GW_ADDR/$r/" | grep -qi '^ratelimit-limit:' ||
        die "/$r/ carries no RateLimit-Limit header"
done
log "redis :$REDIS_PORT, sluice $GW_ADDR; pinning: $PINNING"

# ---------------------------------------------------------------- helpers
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Commands the gateway's Lua scripts run (Redis counts them in commandstats too).
LUA_CMDS=$(grep -ohi "redis.call('[a-z]*'" host/src/state/lua/*.lua 2>/dev/null | cut -d"'" -f2 | tr 'A-Z' 'a-z' | sort -u | paste -sd' ' || true)
[[ -n $LUA_CMDS ]] || log "warning: no host/src/state/lua/*.lua: round trips include the scripts' commands"
# "all round_trips evalsha": calls of every command but INFO (this script's probe); the same
# without the scripts' commands; EVALSHA alone.
rcalls() {
    "${RCLI[@]}" INFO commandstats | tr -d '\r' | awk -F'[:=,]' -v lua=" $LUA_CMDS " '
        /^cmdstat_/ && $1 != "cmdstat_info" { c = substr($1, 9); t += $3; if (index(lua, " " c " ") == 0) r += $3 }
        $1 == "cmdstat_evalsha" { e = $3 } END { printf "%d %d %d\n", t, r, e }'
}
load1() { cut -d' ' -f1 /proc/loadavg; }
# $1 json, $2 round, $3 route, $4 kind, $5 $6 sluice/redis CPU ticks -> round route kind rps
# p50 p99 p999 (µs) 200s non-200 errors sluice_cpu_us_per_req redis_cpu_us_per_req
oha_row() {
    jq -r --arg r "$2" --arg t "$3" --arg k "$4" --arg g "$5" --arg d "$6" --arg hz "$HZ" '
        (.statusCodeDistribution["200"] // 0) as $ok | [ $r, $t, $k, (.summary.requestsPerSec | floor),
        (.latencyPercentiles.p50 * 1e6 | round), (.latencyPercentiles.p99 * 1e6 | round),
        (.latencyPercentiles["p99.9"] * 1e6 | round), $ok,
        ((.statusCodeDistribution // {}) | to_entries | map(select(.key != "200") | .value) | add // 0),
        ((.errorDistribution // {}) | to_entries | map(.value) | add // 0),
        (if $ok > 0 then ($g | tonumber) / ($hz | tonumber) * 1e6 / $ok * 10 | round / 10 else 0 end),
        (if $ok > 0 then ($d | tonumber) / ($hz | tonumber) * 1e6 / $ok * 10 | round / 10 else 0 end) ] | @tsv' "$1"
}

# ---------------------------------------------------------------- wait for a quieter machine
LOAD_BEFORE_WAIT=$(uptime)
waited=0
while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN{exit !(l > m)}' && (( waited < MAX_WAIT )); do
    log "load $(load1) > $MAX_LOAD: waiting (${waited}s of at most ${MAX_WAIT}s)"
    sleep 60
    waited=$((waited + 60))
done
LOAD_START=$(uptime)
log "measuring; $LOAD_START"

# ---------------------------------------------------------------- runs
RES=$WORK/results.tsv RT=$WORK/redis.tsv
: >"$RES"; : >"$RT"
START_DATE=$(date)
OHA=(oha --no-tui -w --output-format json -c "$CONNS" -z "${DURATION}s")
for round in $(seq "$ROUNDS"); do
    for r in "${ROUTES[@]}"; do
        url="http://$GW_ADDR/$r/"
        if (( WARMUP > 0 )); then "${GEN[@]}" oha --no-tui -c "$CONNS" -z "${WARMUP}s" "$url" >/dev/null; fi
        read -r c0 t0 e0 < <(rcalls)
        g0=$(ticks "$GW_PID"); d0=$(ticks "$REDIS_PID")
        "${GEN[@]}" "${OHA[@]}" "$url" >"$WORK/raw/sat-r$round-$r.json"
        g1=$(ticks "$GW_PID"); d1=$(ticks "$REDIS_PID")
        oha_row "$WORK/raw/sat-r$round-$r.json" "$round" "$r" sat $((g1 - g0)) $((d1 - d0)) >>"$RES"
        "${GEN[@]}" "${OHA[@]}" -q "$RATE" --latency-correction "$url" >"$WORK/raw/fixed-r$round-$r.json"
        oha_row "$WORK/raw/fixed-r$round-$r.json" "$round" "$r" fixed 0 0 >>"$RES"
        read -r c1 t1 e1 < <(rcalls)
        ok=$(tail -2 "$RES" | awk -F'\t' '{s += $8} END {print s}')
        printf '%s\t%s\t%d\t%d\t%d\t%d\n' "$round" "$r" $((c1 - c0)) $((t1 - t0)) $((e1 - e0)) "$ok" >>"$RT"
        log "round $round /$r/: sat $(tail -2 "$RES" | head -1 | cut -f4-6 | tr '\t' ' ') (req/s p50 p99 µs);" \
            "fixed $(tail -1 "$RES" | cut -f5-7 | tr '\t' ' ') (p50 p99 p99.9 µs); redis commands $((c1 - c0)), round trips $((t1 - t0)), evalsha $((e1 - e0)), 200s $ok"
    done
done
LOAD_END=$(uptime) END_DATE=$(date)

# ---------------------------------------------------------------- report
# POSIX awk (mawk has no asort): median, min and max of a space-separated list.
median='function med(s,   a, n, i, j, x) { n = split(s, a, " ")
    for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function mn(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
function mx(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }'
{
    echo "### State backends: run $START_DATE → $END_DATE"
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- commit: \`$(git rev-parse --short HEAD 2>/dev/null || echo '?')\`; sluice binary: \`$BIN\`, built $(date -u -r "$BIN" '+%F %T UTC')"
    echo "- machine: $(nproc) × $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(uname -r)"
    echo "- load: at the start \`$LOAD_BEFORE_WAIT\`; when measuring started \`$LOAD_START\`$( ((waited > 0)) && echo " (after waiting ${waited} s)"); at the end \`$LOAD_END\`"
    echo "- tools: $(oha --version), redis $(redis-server --version | awk '{print $3}' | cut -d= -f2); pinning: $PINNING"
    echo "- per route and round: ${WARMUP} s warm-up, then \`${OHA[*]} URL\` (saturated) and the same with \`-q $RATE --latency-correction\` (fixed rate); order ${ROUTES[*]}; $ROUNDS rounds"
    echo
    echo "#### Medians of $ROUNDS rounds (min–max in brackets)"
    echo
    echo "| route | req/s (saturated) | p50 µs | p99 µs | sluice CPU µs/req | redis CPU µs/req | achieved req/s @ $RATE | p50 µs @ $RATE | p99 µs @ $RATE | p99.9 µs @ $RATE | p99 added vs /local/ @ $RATE (µs) | Redis round trips/req | Redis commands/req (incl. in scripts) | EVALSHA/req | non-200 | errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for r in "${ROUTES[@]}"; do
        awk -F'\t' -v t="$r" "$median"'
            FILENAME ~ /redis.tsv$/ { if ($2 == t) { n = $6 ? $6 : 1; C = C " " $3 / n; T = T " " $4 / n; E = E " " $5 / n }; next }
            $3 == "fixed" && $2 == "local" { L[$1] = $6 }
            $2 != t { next }
            $3 == "sat" { rps = rps " " $4; p50 = p50 " " $5; p99 = p99 " " $6; g = g " " $11; d = d " " $12 }
            $3 == "fixed" { q = q " " $4; f50 = f50 " " $5; f99 = f99 " " $6; f999 = f999 " " $7; F[$1] = $6 }
            { bad += $9; err += $10 }
            END { for (k in F) A = A " " (F[k] - L[k])
                printf "| /%s/ | %.0f (%.0f–%.0f) | %.0f | %.0f (%.0f–%.0f) | %.1f | %.1f | %.0f | %.0f | %.0f (%.0f–%.0f) | %.0f | %s | **%.4f** (%.4f–%.4f) | %.3f | %.4f | %d | %d |\n",
                    t, med(rps), mn(rps), mx(rps), med(p50), med(p99), mn(p99), mx(p99), med(g), med(d), med(q),
                    med(f50), med(f99), mn(f99), mx(f99), med(f999),
                    (t == "local" || t == "none") ? "–" : sprintf("**%.0f** (%.0f–%.0f)", med(A), mn(A), mx(A)),
                    med(T), mn(T), mx(T), med(C), med(E), bad, err }' "$RES" "$RT"
    done
    echo
    echo "Per request (÷ the 200 answers of both measured runs), from the INFO commandstats delta around them: Redis round trips = commands received, leaving out INFO (this script) and the commands the gateway's Lua scripts run ($LUA_CMDS); non-200: answers other than 200 (a Redis failure answers 503 here); errors: oha's connection errors."
} >"$WORK/report.md"
cat "$WORK/report.md"
