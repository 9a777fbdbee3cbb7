#!/usr/bin/env bash
# Sluice's resident set (VmRSS, and its anonymous and file-backed parts from /proc/PID/status)
# with 0, 3 and 10 plugins loaded: the fast-path bar of issue 2 (idle ≤ 15 MB, measured on the
# plain-route configuration of bench/proxy.sh, no policy) and the benchmarking note's
# "idle RSS with 10 plugins loaded / at 1k connections ≤ 25 MB / ≤ 64 MB".
#
# Each configuration: workers = 1, access log and admin API off, one listener, proxy.sh's
# plain route (to an upstream, never called here) and a route answering a static 200 on /ok/.
# The plugins' compiled artifacts are cached first (one start that compiles them, stopped),
# then the gateway is started again ROUNDS times (a restart with the cache warm, the state
# that counts) and read 2 s after it logs `ready`. With 10 plugins, after the idle reading
# `wrk -c1000` holds 1000 keep-alive connections for 6 s and the RSS is read at 4 s (with the
# connections open) and 2 s after wrk ends.
#   none:   proxy.sh's fast-path configuration: the plain route, no plugin.
#   demo:   the demo pipeline (analytics, key-auth, rate-limit) on a second route, as in proxy.sh.
#   ten:    every first-party plugin (7) plus the noop, echo-attrs and require-header fixtures,
#           each in a pipeline on its own route.
# Prints a markdown report on stdout (progress on stderr); it never asserts.
#
# Usage: bench/rss.sh > report.md
# Environment (defaults in brackets):
#   ROUNDS [3]  SLUICE_BIN [target/dist/sluice: the production build, `cargo build --profile
#   dist -p sluice`]  PLUGINS_DIR [plugins/target/wasm32-unknown-unknown/release; `just plugins`]
#   CPU [1] the CPU sluice is pinned to (taskset; wrk runs on the other one when there are 2).
# Needs: wrk (apt), curl.
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
BIN=${SLUICE_BIN:-target/dist/sluice}
PLUGINS=${PLUGINS_DIR:-plugins/target/wasm32-unknown-unknown/release}
CPU=${CPU:-1}

# shellcheck source=bench/common.sh
. bench/common.sh
[[ -x $BIN ]] || die "$BIN not found (build it, or set SLUICE_BIN)"
BIN=$(realpath "$BIN")
PLUGINS=$(realpath "$PLUGINS")
command -v wrk >/dev/null || die "wrk not found (apt-get install -y wrk)"
PIN=()
GEN=()
if (($(nproc) >= 2)); then
    PIN=(taskset -c "$CPU")
    GEN=(taskset -c "$((CPU == 0 ? 1 : 0))")
fi

WORK=$(mktemp -d /tmp/sluice-rss.XXXXXX)
GW_PID=
cleanup() {
    [[ -n $GW_PID ]] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

KEY_SHA=$(printf %s bench-key | sha256sum | cut -d' ' -f1)
# The plain route's upstream (as in proxy.sh) is never called here: idle readings open no
# upstream connection, and the load below goes to the static route /ok/.
UPSTREAM_PORT=${UPSTREAM_PORT:-9}
base() {
    bench_gateway "$WORK/cache"
    bench_plain_route "127.0.0.1:$UPSTREAM_PORT"
    cat <<EOF

[[routes]]
name = "ok"
path_prefix = "/ok/"
respond = { static = { status = 200, body = "ok" } }
EOF
}
plugin() { # $1: name, $2: file, $3: grants
    printf '\n[plugins.%s]\npath = "%s/%s.wasm"\ngrants = %s\n' "$1" "$PLUGINS" "$2" "$3"
}
route() { # $1: name, then policy tables
    local name=$1
    shift
    printf '\n[[routes]]\nname = "%s"\npath_prefix = "/%s/"\nrespond = { static = { status = 200, body = "ok" } }\n' "$name" "$name"
    local p
    for p in "$@"; do printf '\n[[routes.policies]]\n%s\n' "$p"; done
}

base >"$WORK/none.toml"
{
    base
    bench_demo_pipeline "$PLUGINS" "$KEY_SHA"
} >"$WORK/demo.toml"
{
    base
    bench_demo_pipeline "$PLUGINS" "$KEY_SHA"
    plugin jwt-auth jwt_auth '["clock", "log", "kv", "outbound-http"]'
    plugin cors cors '[]'
    plugin ip-restriction ip_restriction '[]'
    plugin request-transformer request_transformer '[]'
    plugin noop noop '[]'
    plugin echo-attrs echo_attrs '[]'
    plugin require-header require_header '["log"]'
    route jwt 'plugin = "jwt-auth"
config = { issuer = "bench", keys = [{ kid = "k", secret = "0123456789abcdef0123456789abcdef", algorithms = ["HS256"] }] }'
    route cors 'plugin = "cors"
config = { origins = ["https://app.example"] }'
    route ip 'plugin = "ip-restriction"
config = { allow = ["127.0.0.0/8"] }'
    route rt 'plugin = "request-transformer"
config = { headers = { set = { x-bench = "1" } } }'
    route fixtures 'plugin = "noop"' 'plugin = "echo-attrs"
config = { name = "bench" }' 'plugin = "require-header"
config = { header = "x-tenant" }'
} >"$WORK/ten.toml"

start() { # $1: config; sets GW_PID and ADDR
    local i
    "${PIN[@]}" "$BIN" run --config "$1" 2>"$WORK/log" &
    GW_PID=$!
    for i in $(seq 600); do
        grep -q ' ready' "$WORK/log" 2>/dev/null && break
        kill -0 "$GW_PID" 2>/dev/null || { cat "$WORK/log" >&2; die "sluice exited on $1"; }
        sleep 0.01
    done
    grep -q ' ready' "$WORK/log" || die "sluice not ready on $1"
    ADDR=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/log" | grep -o 'addr=[0-9.:]*' | head -1 | cut -d= -f2)
}
stop() {
    kill "$GW_PID" && wait "$GW_PID" 2>/dev/null || true
    GW_PID=
}
rss() { # VmRSS (anonymous + file-backed), MB
    awk '/^VmRSS/{r=$2} /^RssAnon/{a=$2} /^RssFile/{f=$2} END{printf "%.1f (%.1f + %.1f)", r/1024, a/1024, f/1024}' "/proc/$GW_PID/status"
}

declare -A IDLE LOADED AFTER
WRK_NOTES=""
for cfg in none demo ten; do
    log "$cfg: first start (compiles the plugins into the cache)"
    start "$WORK/$cfg.toml"
    [[ $(curl -s "http://$ADDR/ok/") == ok ]] || die "$cfg: the static route does not answer ok"
    stop
    for r in $(seq "$ROUNDS"); do
        start "$WORK/$cfg.toml"
        sleep 2
        IDLE[$cfg]+="${IDLE[$cfg]:+ · }$(rss)"
        if [[ $cfg == ten ]]; then
            "${GEN[@]}" wrk -t1 -c1000 -d6s "http://$ADDR/ok/" >"$WORK/wrk.txt" 2>&1 &
            sleep 4
            LOADED[$cfg]+="${LOADED[$cfg]:+ · }$(rss)"
            wait $!
            WRK_NOTES+="${WRK_NOTES:+; }$(awk '/Requests\/sec/{r=$2} /Socket errors/{sub(/^ +/, ""); e=$0} END{printf "%s req/s, %s", r, (e ? e : "no socket errors")}' "$WORK/wrk.txt")"
            sleep 2
            AFTER[$cfg]+="${AFTER[$cfg]:+ · }$(rss)"
        fi
        stop
    done
    log "$cfg: idle ${IDLE[$cfg]}"
done

echo "### RSS run $(date -u '+%F %T') UTC"
echo
echo "- binary: \`$BIN\`, built $(date -u -r "$BIN" '+%F %T') UTC; plugins: \`$PLUGINS\`"
echo "- per configuration: one start to fill the artifact cache, then $ROUNDS restarts, each read 2 s after \`ready\`; MB = VmRSS (RssAnon + RssFile)"
echo
echo "| configuration | idle, each restart (MB) | with 1000 connections open (MB) | 2 s after they closed (MB) |"
echo "|---|---|---|---|"
echo "| none: the plain route (to an upstream), no plugin | ${IDLE[none]} | | |"
echo "| demo: 3 plugins (analytics, key-auth, rate-limit) | ${IDLE[demo]} | | |"
echo "| ten: 10 plugins, 6 routes with pipelines | ${IDLE[ten]} | ${LOADED[ten]} | ${AFTER[ten]} |"
echo
echo "wrk -c1000 on the static route, each restart: $WRK_NOTES"
