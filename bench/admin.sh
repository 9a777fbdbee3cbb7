#!/usr/bin/env bash
# Admin-plane and start-up figures of Sluice next to the admin API issue's targets: plugin upload
# → first request served by the new version (≤ 50 ms), start → ready with 10 plugins in the
# compiled-artifact cache (≤ 200 ms), idle RSS with those 10 plugins (≤ 25 MB). Method: the
# project's benchmarking note (rounds, median and min–max; bench/README.md); no peer here.
#
# Every gateway: 127.0.0.1, configured in a temp dir ([state] path, [policy] cache_dir, [admin]
# token_file in it), workers = 1, access log off, listener `main` and the admin API on port 0
# (read from the `listening` log lines), admin token from SLUICE_ADMIN_TOKEN.
# 1. Upload → first request. Through the API: plugin `p` = noop.wasm (?grants=kv), route `r`
#    (/r/, respond = "echo", policies [p]). Then ROUNDS+1 timed uploads, POST
#    /v1/plugins/p/versions with kv_probe.wasm, noop.wasm, kv_probe.wasm … (always the other
#    one), each followed by GET /r/kv/k until it shows the new version (kv_probe: 404 for the
#    missing key; noop: the echo responder's 200). One curl makes the upload and the first GET
#    (`--next`); the figure is the sum of their time_total (plus any further GET's), "wall" is
#    `date +%s%N` around it all (includes starting curl). The upload returns once the version is
#    live, so the first GET should show it. Upload 0 (kv_probe) is compiled by Cranelift: cold,
#    reported alone; the others find their artifact in the cache: warm.
# 2. Start → ready with 10 plugins cached: p1..p10 (COMPONENTS below, every grant given), each on
#    a route /pN/ (static 200) with a minimal valid config. A first start fills the empty cache
#    (its ready time is shown; routes checked: key_auth 401 without a key, others 200), SIGTERM;
#    then ROUNDS restarts, timed from `date +%s%N` before the spawn to the `ready` line's stamp.
# 3. Idle RSS: VmRSS (/proc/PID/status) of each restart 2 s after ready, no traffic; then
#    SIGTERM. MB = 1024² bytes.
# Prints a markdown report on stdout (progress on stderr); it never asserts on time.
#
# Usage: bench/admin.sh > report.md
#        SLUICE_BIN=target/debug/sluice ROUNDS=2 bench/admin.sh     # smoke run
# Environment (defaults in brackets):
#   ROUNDS [5]  READY_TIMEOUT [180] (s per start; a cold debug start may compile for a minute)
#   MAX_LOAD [3]  MAX_WAIT [600] (s): first wait (checking every 60 s, at most MAX_WAIT) for the
#               1-minute load average to drop below MAX_LOAD; then measure anyway.
#   SLUICE_BIN [target/release/sluice; not built here: `cargo build --release -p sluice`]
#   PLUGINS_DIR [plugins/target/wasm32-unknown-unknown/release; `just plugins` builds it]
#   KEEP        a directory to keep the configs, logs and raw timings in.
# Needs: curl.
set -euo pipefail

CMDLINE="$(for v in ROUNDS MAX_LOAD SLUICE_BIN PLUGINS_DIR; do
    if [[ -n ${!v:-} ]]; then printf '%s=%q ' "$v" "${!v}"; fi; done)$0${*:+ $*}"
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5} READY_TIMEOUT=${READY_TIMEOUT:-180} MAX_LOAD=${MAX_LOAD:-3} MAX_WAIT=${MAX_WAIT:-600}
BIN=${SLUICE_BIN:-target/release/sluice}
PLUGINS=${PLUGINS_DIR:-plugins/target/wasm32-unknown-unknown/release}
COMPONENTS=(noop echo_attrs key_auth rate_limit analytics cors ip_restriction request_transformer kv_probe body_check)

# shellcheck source=bench/common.sh
. bench/common.sh

command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
[[ -x $BIN ]] || die "$BIN not found: run \`cargo build --release -p sluice\` (or set SLUICE_BIN)"
for c in "${COMPONENTS[@]}"; do
    [[ -f $PLUGINS/$c.wasm ]] || die "$PLUGINS/$c.wasm missing: run \`just plugins\`"
done
BIN=$(realpath "$BIN") PLUGINS=$(realpath "$PLUGINS")

WORK=$(mktemp -d /tmp/sluice-bench-admin.XXXXXX)
GW_PID=
cleanup() {
    if [[ -n $GW_PID ]]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && log "kept configs, logs and raw timings in $KEEP"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
export SLUICE_ADMIN_TOKEN="bench-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
AUTH="authorization: Bearer $SLUICE_ADMIN_TOKEN"

# ---------------------------------------------------------------- helpers
common() { # $1: sub-directory of WORK for this gateway's state, cache and token
    cat <<EOF
gateway = { workers = 1, drain_timeout = "1s" }
access_log = { enabled = false }
state = { path = "$WORK/$1/state/sluice.redb" }
policy = { cache_dir = "$WORK/$1/cache" }
admin = { bind = "127.0.0.1:0", token_file = "$WORK/$1/admin-token" }
listeners = [{ name = "main", bind = "127.0.0.1:0" }]
EOF
}
api() { # $1 method, $2 path, rest: curl options; prints the status (the body: $WORK/resp.json)
    curl -s -o "$WORK/resp.json" -w '%{http_code}' -X "$1" -H "$AUTH" "${@:3}" "$ADMIN$2"
}
plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
addr_of() { # $1 log, $2 listener name -> ip:port
    plain "$1" | grep -oE "listener=\"?$2\"? addr=[0-9.:]+" | awk -F'addr=' 'NR==1{print $2}'
}
# Starts sluice on config $1 logging to $2; sets GW_PID and READY_MS (spawn → `ready` log line
# timestamp; falls back to when the line was seen).
start_gw() {
    local cfg=$1 log=$2 t0 i ts ready_ns
    t0=$(date +%s%N)
    "$BIN" run --config "$cfg" 2>"$log" &
    GW_PID=$!
    for ((i = 0; i < READY_TIMEOUT * 100; i++)); do
        grep -qs ' ready' "$log" && break
        kill -0 "$GW_PID" 2>/dev/null || { cat "$log" >&2; GW_PID=; die "sluice exited ($cfg)"; }
        sleep 0.01
    done
    grep -q ' ready' "$log" || { cat "$log" >&2; die "sluice not ready after $READY_TIMEOUT s"; }
    ts=$(plain "$log" | awk '$NF == "ready" {print $1; exit}')
    ready_ns=$(date -d "$ts" +%s%N 2>/dev/null) || ready_ns=$(date +%s%N)
    READY_MS=$(dt "$t0" "$ready_ns")
}
stop_gw() { kill -TERM "$GW_PID"; wait "$GW_PID" || true; GW_PID=; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (b - a) / 1e6}'; } # ns stamps -> ms
ms() { awk -v s="$1" 'BEGIN{printf "%.1f", s * 1000}'; }
stats() { # numbers on stdin, one a line -> "median min max"
    sort -g | awk '{a[++n] = $1} END { if (!n) { print "– – –"; exit }
        printf "%.1f %.1f %.1f\n", (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2, a[1], a[n] }'
}
load1() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------- wait for a quieter machine
LOAD_BEFORE_WAIT=$(uptime)
waited=0
while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN{exit !(l > m)}' && (( waited < MAX_WAIT )); do
    log "load $(load1) > $MAX_LOAD: waiting (${waited}s of at most ${MAX_WAIT}s)"; sleep 60; waited=$((waited + 60))
done
LOAD_START=$(uptime) START_DATE=$(date)
log "measuring; $LOAD_START"

# ---------------------------------------------------------------- 1. upload → first request
common upload >"$WORK/upload.toml"
start_gw "$WORK/upload.toml" "$WORK/upload.log"
MAIN=http://$(addr_of "$WORK/upload.log" main) ADMIN=http://$(addr_of "$WORK/upload.log" admin)
[[ $MAIN != http:// && $ADMIN != http:// ]] || die "no 'listening' lines for main and admin in the log"
code=$(api POST '/v1/plugins/p/versions?grants=kv' -H 'content-type: application/wasm' --data-binary "@$PLUGINS/noop.wasm")
[[ $code == 201 ]] || die "set-up upload of noop answered $code: $(cat "$WORK/resp.json")"
code=$(api PUT /v1/routes/r -H 'content-type: application/json' \
    --data '{"path_prefix":"/r/","respond":"echo","policies":[{"plugin":"p"}]}')
[[ $code == 201 ]] || die "PUT /v1/routes/r answered $code: $(cat "$WORK/resp.json")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$MAIN/r/kv/k")
[[ $code == 200 ]] || die "GET /r/kv/k behind noop answered $code, expected 200"
log "upload gateway: main $MAIN, admin $ADMIN; p = noop, route r live"

UP=$WORK/uploads.tsv
printf 'upload\tcomponent\tcache\tupload_ms\tget_ms\tgets\ttotal_ms\twall_ms\n' >"$UP"
GET=(-s -o /dev/null -w '%{http_code} %{time_total}\n' "$MAIN/r/kv/k") # curl options of one GET
for ((u = 0; u <= ROUNDS; u++)); do
    if ((u % 2 == 0)); then comp=kv_probe want=404; else comp=noop want=200; fi
    cache=$( ((u == 0)) && echo cold || echo warm)
    t0=$(date +%s%N)
    out=$(curl -s -o "$WORK/resp.json" -w '%{http_code} %{time_total}\n' -X POST -H "$AUTH" \
        -H 'content-type: application/wasm' --data-binary "@$PLUGINS/$comp.wasm" \
        "$ADMIN/v1/plugins/p/versions" --next "${GET[@]}") || die "curl failed (upload $u)"
    { read -r up_code up_s; read -r code get_s; } <<<"$out"
    gets=1 more_s=0
    while [[ $code != "$want" ]] && ((gets < 1000)); do
        read -r code s < <(curl "${GET[@]}")
        gets=$((gets + 1)) more_s=$(awk -v a="$more_s" -v b="$s" 'BEGIN{print a + b}')
    done
    t1=$(date +%s%N)
    [[ $up_code == 201 ]] || die "upload $u ($comp) answered $up_code: $(cat "$WORK/resp.json")"
    [[ $code == "$want" ]] || die "upload $u ($comp): GET /r/kv/k still answers $code after $gets requests"
    total=$(awk -v a="$up_s" -v b="$get_s" -v c="$more_s" 'BEGIN{print a + b + c}')
    printf '%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n' "$u" "$comp" "$cache" "$(ms "$up_s")" "$(ms "$get_s")" \
        "$gets" "$(ms "$total")" "$(dt "$t0" "$t1")" >>"$UP"
    log "upload $u $comp ($cache): $(tail -1 "$UP" | cut -f4-8 | tr '\t' ' ') (upload, GET ms, GETs, total, wall ms)"
done
stop_gw

# ---------------------------------------------------------------- 2 + 3. start → ready, idle RSS
KEY_SHA=$(printf %s bench-key-5b2e7f0c | sha256sum | cut -d' ' -f1)
declare -A CONF=(
    [noop]='{}' [echo_attrs]='{ name = "x" }' [analytics]='{}' [kv_probe]='{}'
    [key_auth]="{ consumers = [{ name = \"bench\", key_sha256 = \"$KEY_SHA\" }] }"
    [rate_limit]='{ requests = 1000000, window = "1m", key = "client_ip" }' [ip_restriction]='{ allow = ["127.0.0.1"] }'
    [cors]='{ origins = ["https://app.example.com"] }' [body_check]='{ max_bytes = 1024, deny_substring = "forbidden" }'
    [request_transformer]='{ headers = { set = { x-gateway = "sluice" } } }'
)
{
    common ten
    for i in "${!COMPONENTS[@]}"; do
        c=${COMPONENTS[$i]} n=$((i + 1))
        printf '\n[plugins.p%d]\npath = "%s"\n%s\n' "$n" "$PLUGINS/$c.wasm" \
            'grants = ["log", "clock", "kv", "rate-limit", "analytics", "outbound-http"]'
        printf '\n[[routes]]\nname = "r%d"\npath_prefix = "/p%d/"\n%s\n' "$n" "$n" \
            'respond = { static = { status = 200, body = "ok" } }'
        printf '[[routes.policies]]\nplugin = "p%d"\nconfig = %s\n' "$n" "${CONF[$c]}"
    done
} >"$WORK/ten.toml"

log "first start with 10 plugins: compiling them into the empty cache"
start_gw "$WORK/ten.toml" "$WORK/ten-cold.log"
READY_COLD_MS=$READY_MS
MAIN=http://$(addr_of "$WORK/ten-cold.log" main)
for i in "${!COMPONENTS[@]}"; do
    want=$([[ ${COMPONENTS[$i]} == key_auth ]] && echo 401 || echo 200)
    code=$(curl -s -o /dev/null -w '%{http_code}' "$MAIN/p$((i + 1))/")
    [[ $code == "$want" ]] || die "/p$((i + 1))/ (${COMPONENTS[$i]}) answered $code, expected $want"
done
stop_gw
log "cold start ready in $READY_COLD_MS ms; every route answers; cache: $(ls "$WORK/ten/cache" | wc -l) files"

RS=$WORK/restarts.tsv
printf 'round\tready_ms\trss_mb\n' >"$RS"
for ((r = 1; r <= ROUNDS; r++)); do
    start_gw "$WORK/ten.toml" "$WORK/ten-$r.log"
    sleep 2
    rss=$(awk '/^VmRSS/{printf "%.1f", $2 / 1024}' "/proc/$GW_PID/status")
    stop_gw
    printf '%d\t%s\t%s\n' "$r" "$READY_MS" "$rss" >>"$RS"
    log "restart $r: ready in $READY_MS ms, idle VmRSS $rss MB"
done
LOAD_END=$(uptime) END_DATE=$(date)

# ---------------------------------------------------------------- report
row() { read -r m lo hi <<<"$3"; printf '| %s | %s | **%s** | %s | %s | %s |\n' "$1" "$2" "$m" "$lo" "$hi" "$4"; }
ups() { awk -F'\t' -v k="$1" -v c="$2" 'NR > 1 && $3 == k {print $c}' "$UP" | stats; }
{
    echo "### Admin plane and start-up: run $START_DATE → $END_DATE"
    echo
    echo "- command: \`$CMDLINE\`"
    echo "- commit: \`$(git rev-parse --short HEAD 2>/dev/null || echo '?')\`; sluice binary: \`$BIN\`, built $(date -u -r "$BIN" '+%F %T UTC')"
    echo "- machine: $(nproc) × $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(uname -r); $(curl --version | head -1 | cut -d' ' -f1-2); no pinning"
    echo "- load: at the start \`$LOAD_BEFORE_WAIT\`; when measuring started \`$LOAD_START\`$( ((waited > 0)) && echo " (after waiting ${waited} s)"); at the end \`$LOAD_END\`"
    echo
    echo "| figure | target | median | min | max | n |"
    echo "|---|---|---|---|---|---|"
    row "upload → first request served by it, ms — cold (kv_probe compiled by Cranelift)" "≤ 50 ms" "$(ups cold 7)" 1
    row "upload → first request served by it, ms — warm (artifact in the cache)" "≤ 50 ms" "$(ups warm 7)" "$ROUNDS"
    row "&nbsp;&nbsp;of which the upload call (warm), ms" "" "$(ups warm 4)" "$ROUNDS"
    row "&nbsp;&nbsp;of which the first GET (warm), ms" "" "$(ups warm 5)" "$ROUNDS"
    row "&nbsp;&nbsp;wall incl. starting curl (warm), ms" "" "$(ups warm 8)" "$ROUNDS"
    row "start → ready, 10 plugins cached, ms" "≤ 200 ms" "$(tail -n +2 "$RS" | cut -f2 | stats)" "$ROUNDS"
    row "idle VmRSS 2 s after ready, 10 plugins loaded, MB" "≤ 25 MB" "$(tail -n +2 "$RS" | cut -f3 | stats)" "$ROUNDS"
    echo
    echo "First start with the 10 plugins and an empty cache (compiling them): ready in $READY_COLD_MS ms."
    echo "The 10 plugins, each on its own route with a minimal config, every grant given: $(
        for i in "${!COMPONENTS[@]}"; do printf 'p%d %s, ' $((i + 1)) "${COMPONENTS[$i]}"; done | sed 's/, $//')."
    echo
    echo "Uploads: POST /v1/plugins/p/versions, then GET /r/kv/k until the new version answers (kv_probe"
    echo "404, noop 200). total = curl's time_total of the upload + the GETs (one curl, \`--next\`);"
    echo "wall = \`date +%s%N\` around it, including starting curl."
    echo
    echo "| upload | component | cache | upload call ms | first GET ms | GETs | total ms | wall ms |"
    echo "|---|---|---|---|---|---|---|---|"
    tail -n +2 "$UP" | awk -F'\t' -v OFS=' | ' '{$1 = $1; print "| " $0 " |"}'
    echo
    echo "Start → ready: \`date +%s%N\` before spawning to the timestamp of the \`ready\` log line."
} >"$WORK/report.md"
cat "$WORK/report.md"
