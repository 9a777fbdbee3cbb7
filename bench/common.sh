# Sourced by the bench scripts: logging, and the start of every bench gateway's
# configuration.

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

# Prints the TOML a bench gateway starts with: one worker, no admin API, no access log,
# compiled plugins cached in $1. The script adds listeners, upstreams, plugins and routes.
bench_gateway() { # $1: cache directory
    cat <<TOML
[admin]
enabled = false

[gateway]
workers = 1
drain_timeout = "1s"

[access_log]
enabled = false

[policy]
cache_dir = "$1"
TOML
}
