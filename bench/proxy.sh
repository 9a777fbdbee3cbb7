#!/usr/bin/env bash
# Fast-path throughput and latency of Sluice against nginx, side by side, on loopback.
# Method: the project's benchmarking note, shared/notes/benchmarking.md (ratios measured side by
# side in the same run are what count; see bench/README.md).
#
# Starts, all on 127.0.0.1 and configured in a temp dir:
#   upstream  a separate nginx, 1 worker, `return 200 "ok"` (fixed port PORT_BASE)
#   nginx     reverse proxy to it: worker_processes 1, access_log off, upstream keepalive 64,
#             proxy_http_version 1.1, proxy_set_header Connection ""   (port PORT_BASE+1)
#   sluice    workers = 1, access log off, bound to port 0 (address read from its log):
#               /            route "plain": proxies to the upstream, no policies
#               /pipeline/   route "pipeline": same upstream behind the demo pipeline
#                            analytics -> key-auth -> rate-limit (local limiter, limit far
#                            above any reachable rate); wrk sends the key with -H
# then, for each connection count in CONNS, ROUNDS interleaved rounds of
#   [direct, nginx, sluice-plain, sluice-pipeline]
# each as a WARMUP-second `wrk` warm-up followed by a measured
#   wrk --latency -t1 -cC -dDURATIONs URL
# and finally a fixed-rate latency run with oha at RATE_PCT % of Sluice's measured max
# (median plain req/s, best connection count): `oha -q RATE --latency-correction -z 10s`
# against direct, nginx and sluice-plain, interleaved for ROUNDS rounds.
#
# Records per run: req/s, wrk's p50/p99 (saturated, so mostly queueing), wrk's error counts,
# and the CPU time the proxy under test and the upstream used (from /proc/PID/stat) divided
# by the requests served (CPU µs/request: less sensitive to a noisy machine than req/s).
# Sluice is started twice: with an empty compiled-artifact cache (ready time and idle RSS
# recorded, then stopped), then with the cache warm, like a restart: that process is measured.
# Records its VmRSS/VmHWM idle, right after each load level and idle again at the end.
# Prints a markdown report on stdout (progress goes to stderr); it is not a test and never
# asserts on time.
#
# Usage: bench/proxy.sh > report.md
# Environment (defaults in brackets):
#   ROUNDS [3]  DURATION [10] (s)  WARMUP [3] (s)  CONNS ["32 256"]
#   PIN [1]     1: wrk/oha pinned to GEN_CPU [0], upstream + proxies to SRV_CPU [1] (taskset);
#               0: nothing pinned. Ignored on a single-CPU machine.
#   FIXED_RATE [1]  RATE_PCT [50]  OHA_DURATION [10] (s)  OHA_CONNS [32]
#   MAX_LOAD [3]  MAX_WAIT [600] (s): before measuring, wait (checking every 60 s, at most
#               MAX_WAIT) for the 1-minute load average to drop below MAX_LOAD; measure anyway
#               after that and report the load.
#   PORT_BASE [18480]  SLUICE_BIN [target/dist/sluice: `cargo build --profile dist`, the
#               production build (fat LTO, one codegen unit), unless NO_BUILD=1]
#   PLUGINS_DIR [plugins/target/wasm32-unknown-unknown/release; `just plugins` builds it]
#   KEEP        a directory to keep the generated configs, logs and raw wrk/oha outputs in.
#   PROFILE [0] 1: afterwards, profile one more c=32 run of nginx, sluice-plain and
#               sluice-pipeline with `perf record -e cpu-clock` (apt linux-perf) and report
#               where the CPU goes (by binary/library and top symbols) and Sluice's per-thread
#               CPU split.
# Needs: nginx, wrk, curl (apt); oha (`cargo install --locked oha`) and jq for the fixed-rate
# part (skipped with a note when absent).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-"32 256"}
PIN=${PIN:-1}
GEN_CPU=${GEN_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
FIXED_RATE=${FIXED_RATE:-1}
RATE_PCT=${RATE_PCT:-50}
OHA_DURATION=${OHA_DURATION:-10}
OHA_CONNS=${OHA_CONNS:-32}
MAX_LOAD=${MAX_LOAD:-3}
MAX_WAIT=${MAX_WAIT:-600}
PORT_BASE=${PORT_BASE:-18480}
BIN=${SLUICE_BIN:-target/dist/sluice}
PLUGINS=${PLUGINS_DIR:-plugins/target/wasm32-unknown-unknown/release}
PROFILE=${PROFILE:-0}
API_KEY=bench-key-5b2e7f0c

# shellcheck source=bench/common.sh
. bench/common.sh

for tool in nginx wrk curl; do
    command -v $tool >/dev/null || die "$tool not found (apt-get install -y nginx-light wrk curl)"
done
for p in key_auth rate_limit analytics; do
    [[ -f $PLUGINS/$p.wasm ]] || die "$PLUGINS/$p.wasm missing: run \`just plugins\`"
done
if [[ $FIXED_RATE == 1 ]]; then
    if ! command -v oha >/dev/null; then
        log "oha not found (cargo install --locked oha): skipping the fixed-rate latency runs"
        FIXED_RATE=0
    elif ! command -v jq >/dev/null; then
        log "jq not found (apt-get install -y jq): skipping the fixed-rate latency runs"
        FIXED_RATE=0
    fi
fi
if [[ $PROFILE == 1 ]] && ! perf record -q -e cpu-clock -o /dev/null -- true 2>/dev/null; then
    log "perf record does not work here (apt-get install -y linux-perf?): PROFILE=0"
    PROFILE=0
fi
if [[ -z ${SLUICE_BIN:-} && ${NO_BUILD:-0} != 1 ]]; then
    log "cargo build --profile dist -p sluice (a no-op when up to date; ~12 min from cold)"
    cargo build --profile dist -p sluice --bin sluice >&2
fi
[[ -x $BIN ]] || die "$BIN not found"
BIN=$(realpath "$BIN")
PLUGINS=$(realpath "$PLUGINS")

GEN=()
SRV=()
if [[ $PIN == 1 ]] && (( $(nproc) >= 2 )); then
    GEN=(taskset -c "$GEN_CPU")
    SRV=(taskset -c "$SRV_CPU")
    PINNING="wrk/oha on CPU $GEN_CPU; upstream nginx, nginx proxy and sluice on CPU $SRV_CPU (taskset)"
else
    PIN=0
    PINNING="none (all processes float over $(nproc) CPUs)"
fi

WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && log "kept configs and raw outputs in $KEEP"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/raw" "$WORK/tmp"

UP_PORT=$PORT_BASE
NGX_PORT=$((PORT_BASE + 1))
for port in $UP_PORT $NGX_PORT; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then die "port $port is in use (set PORT_BASE)"; fi
done

# ---------------------------------------------------------------- configurations
nginx_common() { # $1: name
    local name=$1
    cat <<EOF
worker_processes 1;
daemon off;
pid $WORK/$name.pid;
error_log $WORK/$name.error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/tmp/${name}_body;
    proxy_temp_path $WORK/tmp/${name}_proxy;
EOF
    # Temp paths of the modules compiled in (nginx creates them all at start).
    local m
    for m in fastcgi uwsgi scgi; do
        nginx -V 2>&1 | grep -q -- "--without-http_${m}_module" ||
            echo "    ${m}_temp_path $WORK/tmp/${name}_$m;"
    done
}
{
    nginx_common upstream
    cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { return 200 "ok"; }
$(nginx -V 2>&1 | grep -q stub_status && echo '        location = /__status { stub_status; }')
    }
}
EOF
} >"$WORK/upstream.conf"
{
    nginx_common proxy
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORK/nginx.conf"

KEY_SHA=$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)
{
    bench_gateway "$WORK/cache"
    bench_plain_route "127.0.0.1:$UP_PORT"
    bench_demo_pipeline "$PLUGINS" "$KEY_SHA"
} >"$WORK/gateway.toml"

# ---------------------------------------------------------------- start the servers
wait_http() { # $1: url
    local i
    for i in $(seq 100); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "nothing answers at $1"
}
"${SRV[@]}" nginx -p "$WORK" -e "$WORK/upstream.error.log" -c "$WORK/upstream.conf" &
UP_PID=$!
PIDS+=("$UP_PID")
"${SRV[@]}" nginx -p "$WORK" -e "$WORK/proxy.error.log" -c "$WORK/nginx.conf" &
NGX_PID=$!
PIDS+=("$NGX_PID")
wait_http "http://127.0.0.1:$UP_PORT/"
wait_http "http://127.0.0.1:$NGX_PORT/"
UP_WORKER=$(pgrep -P "$UP_PID" | awk 'NR==1')
NGX_WORKER=$(pgrep -P "$NGX_PID" | awk 'NR==1')

# Sluice starts twice: first with an empty compiled-artifact cache (the 3 policies are compiled
# with Cranelift), stopped after its idle RSS is read; then again with the cache warm, as a
# restart would — that second process is the one measured.
start_gateway() { # $1: log file; sets GW_PID and READY_MS
    local log=$1 i t0
    t0=$(date +%s%N)
    "${SRV[@]}" "$BIN" run --config "$WORK/gateway.toml" 2>"$log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    for i in $(seq 600); do
        grep -q ' ready' "$log" 2>/dev/null && break
        kill -0 "$GW_PID" 2>/dev/null || { cat "$log" >&2; die "sluice exited"; }
        sleep 0.01
    done
    grep -q ' ready' "$log" || { cat "$log" >&2; die "sluice not ready after 6 s"; }
    READY_MS=$((($(date +%s%N) - t0) / 1000000))
}
start_gateway "$WORK/sluice-cold.log"
READY_COLD_MS=$READY_MS
sleep 2
RSS_COLD=$(awk '/^VmRSS/{printf "%.1f MB", $2/1024}' "/proc/$GW_PID/status")
kill "$GW_PID"
wait "$GW_PID" 2>/dev/null || true
start_gateway "$WORK/sluice.log"
sleep 2
GW_ADDR=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/sluice.log" | grep -o 'listener=bench addr=[0-9.:]*' | awk -F= 'NR==1{print $3}')
[[ -n $GW_ADDR ]] || die "no 'listening listener=bench addr=…' line in the sluice log"

declare -A URL=(
    [direct]="http://127.0.0.1:$UP_PORT/"
    [nginx]="http://127.0.0.1:$NGX_PORT/"
    [sluice-plain]="http://$GW_ADDR/"
    [sluice-pipeline]="http://$GW_ADDR/pipeline/"
)
# Process whose CPU time is charged to each target (the proxy under test).
declare -A PROXY_PID=([direct]="" [nginx]=$NGX_WORKER [sluice-plain]=$GW_PID [sluice-pipeline]=$GW_PID)
TARGETS=(direct nginx sluice-plain sluice-pipeline)
hdr_args() { [[ $1 == sluice-pipeline ]] && printf '%s\n' -H "x-api-key: $API_KEY"; return 0; }

# Sanity: every target answers 200 "ok"; the pipeline refuses a request without the key.
for t in "${TARGETS[@]}"; do
    mapfile -t H < <(hdr_args "$t")
    body=$(curl -s "${H[@]}" -w ' %{http_code}' "${URL[$t]}")
    [[ $body == "ok 200" ]] || die "$t (${URL[$t]}) answered '$body', expected 'ok 200'"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "${URL[sluice-pipeline]}")
[[ $code == 401 ]] || die "pipeline without a key answered $code, expected 401"
curl -s -D - -o /dev/null -H "x-api-key: $API_KEY" "${URL[sluice-pipeline]}" | grep -qi '^ratelimit-limit:' ||
    die "pipeline response carries no RateLimit-Limit header"
log "servers up: upstream :$UP_PORT, nginx :$NGX_PORT, sluice $GW_ADDR (ready in ${READY_MS} ms); pinning: $PINNING"

# ---------------------------------------------------------------- helpers
rss() { awk '/^VmRSS/{r=$2} /^VmHWM/{h=$2} END{printf "%.1f MB (peak %.1f MB)", r/1024, h/1024}' "/proc/$1/status"; }
rss_mb() { awk '/^VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
# Connections the upstream has accepted so far (stub_status), to see whether a proxy reuses them.
accepts() { curl -s "http://127.0.0.1:$UP_PORT/__status" | awk 'NR==3{print $1; exit}'; }
ticks() { [[ -z $1 ]] && { echo 0; return; }; awk '{print $14 + $15}' "/proc/$1/stat"; }
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
# CPU ticks of every benchmark server process (upstream, nginx proxy, sluice).
ours() { echo $(($(ticks "$UP_WORKER") + $(ticks "$NGX_WORKER") + $(ticks "$GW_PID"))); }
# Runs a command in a subshell and prints the CPU ticks its children used (bash `times`).
child_ticks() { # $1: output file, rest: command
    local out=$1; shift
    ( "$@" >"$out"; times ) | awk -v hz="$HZ" 'NR==2{ t=0; for (i=1;i<=2;i++) { split($i, a, /[ms]/); t += a[1]*60 + a[2] }; printf "%.0f", t*hz }'
}
load1() { cut -d' ' -f1 /proc/loadavg; }
to_us() { # wrk latency such as 612.00us, 2.10ms, 1.02s, 1.5m
    awk -v v="$1" 'BEGIN{n=v+0; u=v; sub(/^[0-9.]+/,"",u);
        m=(u=="us")?1:(u=="ms")?1000:(u=="s")?1e6:(u=="m")?6e7:1; printf "%.0f", n*m}'
}

HZ=$(getconf CLK_TCK)
RES=$WORK/results.tsv
printf 'conns\tround\ttarget\trps\tp50_us\tp99_us\trequests\tnon2xx\tsock_errors\tproxy_cpu_us_req\tupstream_cpu_us_req\tothers_cpu_pct\tupstream_conns_opened\n' >"$RES"

run_wrk() { # $1 target, $2 conns, $3 round
    local t=$1 c=$2 r=$3 out="$WORK/raw/wrk-c$2-r$3-$1.txt"
    mapfile -t H < <(hdr_args "$t")
    "${GEN[@]}" wrk -t1 -c"$c" -d"${WARMUP}s" "${H[@]}" "${URL[$t]}" >/dev/null
    local p0 u0 b0 o0 p1 u1 b1 o1 a0 a1 w
    a0=$(accepts)
    p0=$(ticks "${PROXY_PID[$t]}"); u0=$(ticks "$UP_WORKER"); o0=$(ours); b0=$(busy)
    w=$(child_ticks "$out" "${GEN[@]}" wrk --latency -t1 -c"$c" -d"${DURATION}s" "${H[@]}" "${URL[$t]}")
    p1=$(ticks "${PROXY_PID[$t]}"); u1=$(ticks "$UP_WORKER"); o1=$(ours); b1=$(busy)
    a1=$(accepts)
    local rps p50 p99 reqs non2xx sockerr
    rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
    p50=$(to_us "$(awk '$1=="50%"{print $2}' "$out")")
    p99=$(to_us "$(awk '$1=="99%"{print $2}' "$out")")
    reqs=$(awk '/requests in/{print $1}' "$out")
    non2xx=$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")
    sockerr=$(awk -F'[ ,]+' '/Socket errors:/{print $5+$7+$9+$11}' "$out")
    awk -v c="$c" -v r="$r" -v t="$t" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
        -v n="$reqs" -v e="${non2xx:-0}" -v s="${sockerr:-0}" -v hz="$HZ" \
        -v pc=$((p1 - p0)) -v uc=$((u1 - u0)) -v b0="$b0" -v b1="$b1" -v ours=$((o1 - o0 + w)) \
        -v ac=$(( ${a1:-0} - ${a0:-0} - 1 )) 'BEGIN{
            split(b0, x, " "); split(b1, y, " ");
            tot = y[2] - x[2]; bz = (tot > 0) ? 100 * (y[1] - x[1] - ours) / tot : 0; if (bz < 0) bz = 0;
            pcu = (t == "direct") ? "-" : sprintf("%.1f", pc / hz * 1e6 / n);
            printf "%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.0f\t%d\n",
                c, r, t, rps, p50, p99, n, e, s, pcu, uc / hz * 1e6 / n, bz, ac }' >>"$RES"
    log "c=$c round $r $t: $(tail -1 "$RES" | cut -f4-13 | tr '\t' ' ')"
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

RSS_IDLE=$(rss "$GW_PID")
RSS_IDLE_MB=$(rss_mb "$GW_PID")
NGX_RSS_IDLE=$(awk '/^VmRSS/{s+=$2} END{printf "%.1f MB", s/1024}' "/proc/$NGX_PID/status" "/proc/$NGX_WORKER/status")
declare -A RSS_AFTER
START_DATE=$(date)
for c in $CONNS; do
    for r in $(seq "$ROUNDS"); do
        for t in "${TARGETS[@]}"; do run_wrk "$t" "$c" "$r"; done
    done
    RSS_AFTER[$c]=$(rss "$GW_PID")
done

# ---------------------------------------------------------------- profile (optional)
thread_ticks() { # "name ticks" for each thread of $1
    local f
    for f in /proc/$1/task/*/stat; do
        awk '{ n = $0; sub(/^[^(]*\(/, "", n); sub(/\).*/, "", n); gsub(/ /, "_", n); sub(/^.*\) /, ""); print n, $12 + $13 }' "$f"
    done
}
if [[ $PROFILE == 1 ]]; then
    PROF_C=${CONNS%% *}
    for t in nginx sluice-plain sluice-pipeline; do
        mapfile -t H < <(hdr_args "$t")
        pid=${PROXY_PID[$t]}
        "${GEN[@]}" wrk -t1 -c"$PROF_C" -d"${WARMUP}s" "${H[@]}" "${URL[$t]}" >/dev/null
        [[ $t == sluice-plain ]] && thread_ticks "$GW_PID" >"$WORK/threads0"
        "${GEN[@]}" wrk -t1 -c"$PROF_C" -d"${DURATION}s" "${H[@]}" "${URL[$t]}" >"$WORK/raw/profile-$t.txt" &
        wpid=$!
        sleep 1
        perf record -q -e cpu-clock -F 999 -p "$pid" -o "$WORK/perf-$t.data" -- sleep $((DURATION - 2)) 2>/dev/null
        wait "$wpid"
        [[ $t == sluice-plain ]] && thread_ticks "$GW_PID" >"$WORK/threads1"
        perf report -i "$WORK/perf-$t.data" --no-children --sort dso --stdio 2>/dev/null |
            awk '/^ *[0-9.]+%/ && n++ < 8' >"$WORK/dso-$t.txt"
        perf report -i "$WORK/perf-$t.data" --no-children --sort dso,sym --stdio 2>/dev/null |
            awk '/^ *[0-9.]+%/ && n++ < 25' >"$WORK/sym-$t.txt"
        log "profiled $t"
    done
fi

# ---------------------------------------------------------------- fixed-rate latency
OHA_RES=$WORK/oha.tsv
RATE=
if [[ $FIXED_RATE == 1 ]]; then
    MAX_RPS=$(awk -F'\t' '$3=="sluice-plain"{print $1, $4}' "$RES" | sort -k1,1n -k2,2n |
        awk '{v[$1]=v[$1] " " $2} END{best=0; for (c in v) {n=split(substr(v[c],2), a, " ");
            m=(n%2)?a[(n+1)/2]:(a[n/2]+a[n/2+1])/2; if (m>best) best=m}; printf "%.0f", best}')
    RATE=$((MAX_RPS * RATE_PCT / 100))
    printf 'round\ttarget\trate\tachieved_rps\tp50_us\tp99_us\tp999_us\tok\terrors\taborted_at_end\tothers_cpu_pct\n' >"$OHA_RES"
    log "fixed rate: $RATE req/s ($RATE_PCT % of sluice-plain's $MAX_RPS req/s)"
    for r in $(seq "$ROUNDS"); do
        for t in direct nginx sluice-plain; do
            out="$WORK/raw/oha-r$r-$t.json"
            "${GEN[@]}" oha -q "$RATE" --latency-correction -z "${WARMUP}s" -c "$OHA_CONNS" --no-tui "${URL[$t]}" >/dev/null
            o0=$(ours); b0=$(busy)
            w=$(child_ticks "$out" "${GEN[@]}" oha -q "$RATE" --latency-correction -z "${OHA_DURATION}s" \
                -c "$OHA_CONNS" --no-tui --output-format json "${URL[$t]}")
            o1=$(ours); b1=$(busy)
            others=$(awk -v b0="$b0" -v b1="$b1" -v ours=$((o1 - o0 + w)) 'BEGIN{split(b0, x, " "); split(b1, y, " ");
                tot = y[2] - x[2]; o = (tot > 0) ? 100 * (y[1] - x[1] - ours) / tot : 0; printf "%.0f", (o < 0) ? 0 : o}')
            # oha counts the requests still in flight when -z ends as "aborted due to deadline":
            # not a server error, reported apart.
            jq -r --arg r "$r" --arg t "$t" --arg q "$RATE" --arg o "$others" '[ $r, $t, $q,
                (.summary.requestsPerSec | floor),
                (.latencyPercentiles.p50 * 1e6 | round), (.latencyPercentiles.p99 * 1e6 | round),
                (.latencyPercentiles["p99.9"] * 1e6 | round),
                ((.statusCodeDistribution["200"] // 0)),
                ((.errorDistribution // {}) | to_entries | map(select(.key != "aborted due to deadline") | .value) | add // 0),
                ((.errorDistribution // {})["aborted due to deadline"] // 0), $o ] | @tsv' "$out" >>"$OHA_RES"
            log "oha round $r $t: $(tail -1 "$OHA_RES" | cut -f4-11 | tr '\t' ' ')"
        done
    done
fi
sleep 5
RSS_END=$(rss "$GW_PID")
LOAD_END=$(uptime)
END_DATE=$(date)

# ---------------------------------------------------------------- report
# POSIX awk (mawk has no asort): median, min and max of a space-separated list.
median='function med(s,   a, n, i, j, x) { n = split(s, a, " ")
    for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function mn(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
function mx(s,   a, n, i, m) { n = split(s, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }'
{
    echo "### Run $START_DATE → $END_DATE"
    echo
    echo "- commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- host Cargo.toml Cargo.lock 2>/dev/null || echo ' (with uncommitted changes under host/ or Cargo.*)')"
    echo "- sluice binary: \`$BIN\`, built $(date -u -r "$BIN" '+%F %T UTC')$([[ -n $(find host Cargo.lock -newer "$BIN" -type f 2>/dev/null | awk 'NR==1') ]] && echo ' (**older than some sources under host/ or Cargo.lock**: it may not be this commit)')"
    echo "- machine: $(nproc) × $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(uname -r), $(awk '/MemTotal/{printf "%.0f GB", $2/1048576}' /proc/meminfo)"
    echo "- tools: $(nginx -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | awk 'NR==1{print $1, $2}')$([[ $FIXED_RATE == 1 ]] && echo ", $(oha --version)")"
    echo "- pinning: $PINNING"
    echo "- load when the script started: \`$LOAD_BEFORE_WAIT\`"
    echo "- load when measuring started: \`$LOAD_START\`$( ((waited > 0)) && echo " (after waiting ${waited} s)")"
    echo "- load at the end: \`$LOAD_END\`"
    echo "- sluice: workers = 1, access log off; ready ${READY_COLD_MS} ms after exec with an empty artifact cache (3 policies compiled), ${READY_MS} ms on restart with the cache warm (the measured process; both include polling the log every 10 ms)"
    echo "- per run: \`wrk -t1 -cC -d${WARMUP}s URL\` (warm-up, discarded), then \`wrk --latency -t1 -cC -d${DURATION}s URL\`; pipeline runs add \`-H 'x-api-key: …'\`; order per round: ${TARGETS[*]}; $ROUNDS rounds per connection count"
    [[ $FIXED_RATE == 1 ]] && echo "- fixed rate: \`oha -q $RATE --latency-correction -z ${OHA_DURATION}s -c $OHA_CONNS --no-tui URL\` (after a ${WARMUP} s warm-up at the same rate), order direct, nginx, sluice-plain, $ROUNDS rounds"
    echo
    echo "#### Throughput (median of $ROUNDS rounds; min–max in brackets)"
    echo
    echo "| conns | target | req/s | p50 µs | p99 µs (saturated) | proxy CPU µs/req | upstream CPU µs/req | upstream conns opened (max) | other processes' CPU % | non-2xx | socket errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for c in $CONNS; do
        for t in "${TARGETS[@]}"; do
            awk -F'\t' -v c="$c" -v t="$t" "$median"'
                $1 == c && $3 == t { rps = rps " " $4; p50 = p50 " " $5; p99 = p99 " " $6; pc = pc " " $10;
                    uc = uc " " $11; bz = bz " " $12; e += $8; s += $9; if ($13 > ac) ac = $13 }
                END { printf "| %s | %s | %.0f (%.0f–%.0f) | %.0f | %.0f (%.0f–%.0f) | %s | %.1f | %d | %.0f | %d | %d |\n",
                    c, t, med(rps), mn(rps), mx(rps), med(p50), med(p99), mn(p99), mx(p99),
                    (t == "direct") ? "–" : sprintf("%.1f (%.1f–%.1f)", med(pc), mn(pc), mx(pc)),
                    med(uc), ac, med(bz), e, s }' "$RES"
        done
    done
    echo
    echo "#### Ratios within each round (req/s)"
    echo
    echo "| conns | round | plain / nginx | pipeline / nginx | pipeline / plain | direct / nginx | nginx CPU/req ÷ sluice-plain CPU/req |"
    echo "|---|---|---|---|---|---|---|"
    for c in $CONNS; do
        awk -F'\t' -v c="$c" -v rounds="$ROUNDS" "$median"'
            $1 == c { v[$2, $3] = $4; cpu[$2, $3] = $10 }
            END {
                for (r = 1; r <= rounds; r++) {
                    a = v[r, "sluice-plain"] / v[r, "nginx"]; b = v[r, "sluice-pipeline"] / v[r, "nginx"];
                    d = v[r, "sluice-pipeline"] / v[r, "sluice-plain"]; e = v[r, "direct"] / v[r, "nginx"];
                    f = cpu[r, "nginx"] / cpu[r, "sluice-plain"];
                    A = A " " a; B = B " " b; D = D " " d; E = E " " e; F = F " " f;
                    printf "| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f |\n", c, r, a, b, d, e, f
                }
                printf "| %s | **median** (min–max) | **%.2f** (%.2f–%.2f) | **%.2f** (%.2f–%.2f) | **%.2f** (%.2f–%.2f) | %.2f | %.2f (%.2f–%.2f) |\n",
                    c, med(A), mn(A), mx(A), med(B), mn(B), mx(B), med(D), mn(D), mx(D), med(E), med(F), mn(F), mx(F)
            }' "$RES"
    done
    if [[ $FIXED_RATE == 1 ]]; then
        echo
        echo "#### Fixed-rate latency at $RATE req/s ($RATE_PCT % of sluice-plain's median max, $MAX_RPS req/s)"
        echo
        echo "| round | target | achieved req/s | p50 µs | p99 µs | p99.9 µs | 200s | errors | aborted at end (oha) | other processes' CPU % | p50 added vs direct (µs) | p99 added vs direct (µs) |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
        awk -F'\t' -v rounds="$ROUNDS" "$median"'
            NR > 1 { k = $1 SUBSEP $2; row[k] = $0; p99[k] = $6; p50[k] = $5 }
            END {
                split("direct nginx sluice-plain", ts, " ")
                for (r = 1; r <= rounds; r++) for (i = 1; i <= 3; i++) {
                    t = ts[i]; k = r SUBSEP t; split(row[k], f, "\t")
                    a50 = p50[k] - p50[r SUBSEP "direct"]; a99 = p99[k] - p99[r SUBSEP "direct"]
                    L50[t] = L50[t] " " f[5]; L99[t] = L99[t] " " f[6]; A50[t] = A50[t] " " a50; A99[t] = A99[t] " " a99
                    printf "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r, t, f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11],
                        (t == "direct") ? "–" : a50, (t == "direct") ? "–" : a99
                }
                for (i = 1; i <= 3; i++) { t = ts[i]
                    if (t == "direct") printf "| **median** | direct | | %.0f | %.0f | | | | | | – | – |\n", med(L50[t]), med(L99[t])
                    else printf "| **median** | %s | | %.0f | %.0f | | | | | | **%.0f** (%.0f–%.0f) | **%.0f** (%.0f–%.0f) |\n", t, med(L50[t]), med(L99[t]),
                        med(A50[t]), mn(A50[t]), mx(A50[t]), med(A99[t]), mn(A99[t]), mx(A99[t]) }
            }' "$OHA_RES"
    fi
    if [[ $PROFILE == 1 ]]; then
        echo
        echo "#### Where the CPU goes (perf record -e cpu-clock -F 999 -p PID, one c=$PROF_C run each)"
        for t in nginx sluice-plain sluice-pipeline; do
            echo
            echo "$t, req/s during the profiled run: $(awk '/^Requests\/sec:/{print $2}' "$WORK/raw/profile-$t.txt"); by binary/library:"
            echo
            echo '```'
            cat "$WORK/dso-$t.txt"
            echo '```'
            echo
            echo "top symbols:"
            echo
            echo '```'
            cat "$WORK/sym-$t.txt"
            echo '```'
        done
        echo
        echo "Sluice threads' CPU during the profiled sluice-plain run (ticks of 1/$HZ s):"
        echo
        echo '```'
        awk 'NR == FNR { a[$1] += $2; next } { b[$1] += $2 } END { for (k in b) if (b[k] - a[k] > 0) printf "%-20s %d\n", k, b[k] - a[k] }' \
            "$WORK/threads0" "$WORK/threads1" | sort -k2,2nr
        echo '```'
    fi
    echo
    echo "#### Sluice memory (VmRSS; peak = VmHWM)"
    echo
    echo "| when | RSS |"
    echo "|---|---|"
    echo "| idle after the first start (empty artifact cache: 3 policies compiled), 2 s after ready | $RSS_COLD |"
    echo "| idle after restart (artifact cache warm), before load — the measured process | $RSS_IDLE |"
    for c in $CONNS; do echo "| right after the c=$c rounds | ${RSS_AFTER[$c]} |"; done
    echo "| idle, 5 s after the last run | $RSS_END |"
    echo "| (nginx proxy, master + worker, idle) | $NGX_RSS_IDLE |"
    echo
    echo "#### Targets (benchmarking.md)"
    echo
    echo "| bar | target | measured | met? |"
    echo "|---|---|---|---|"
    first_c=${CONNS%% *}
    for c in $CONNS; do
        awk -F'\t' -v c="$c" -v rounds="$ROUNDS" "$median"'
            $1 == c { v[$2, $3] = $4 }
            END { for (r = 1; r <= rounds; r++) { A = A " " v[r, "sluice-plain"] / v[r, "nginx"];
                    D = D " " v[r, "sluice-pipeline"] / v[r, "sluice-plain"] }
                a = med(A); d = med(D)
                printf "| plain / nginx (c=%s) | ≥ 1.10 | %.2f | %s |\n", c, a, (a >= 1.10) ? "yes" : "**no**"
                printf "| pipeline / plain (c=%s) | ≥ 0.90 | %.2f | %s |\n", c, d, (d >= 0.90) ? "yes" : "**no**" }' "$RES"
    done
    if [[ $FIXED_RATE == 1 ]]; then
        awk -F'\t' -v rounds="$ROUNDS" "$median"'
            NR > 1 { p99[$1, $2] = $6 }
            END { for (r = 1; r <= rounds; r++) A = A " " (p99[r, "sluice-plain"] - p99[r, "direct"])
                a = med(A); lo = mn(A); hi = mx(A)
                # A verdict only when the rounds agree: on a noisy machine direct'"'"'s own p99 can
                # exceed the proxy'"'"'s, and a negative "added" latency says nothing.
                v = (a > 200) ? "**no**" : (hi > 200 || lo < -200) ? "inconclusive (rounds disagree: noise)" : "yes"
                printf "| p99 added vs direct at %s %% load | ≤ 200 µs | %.0f µs (rounds %.0f to %.0f) | %s |\n", pct, a, lo, hi, v }' \
            pct="$RATE_PCT" "$OHA_RES"
    fi
    # Issue 2's idle-RSS bar is for the fast path alone; this gateway also loads the pipeline's
    # 3 plugins (bench/rss.sh measures the plain-route gateway without them).
    awk -v r="$RSS_IDLE_MB" -v c="$RSS_COLD" 'BEGIN{printf "| idle RSS, 3 plugins loaded (restart, cache warm) | ≤ 15 MB without plugins (bench/rss.sh) | %.1f MB (%s after a first start that compiled them) | %s |\n", r, c, (r <= 15) ? "yes, even with plugins" : "not with plugins; see rss.sh"}'
    awk -v r="$READY_MS" 'BEGIN{printf "| restart → ready with cache | ≤ 200 ms | %d ms | %s |\n", r, (r <= 200) ? "yes" : "**no**"}'
} >"$WORK/report.md"
cat "$WORK/report.md"
