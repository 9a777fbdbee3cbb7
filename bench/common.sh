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

# Prints the fast path every bench gateway serves: the listener `bench` (port 0) and the
# route `plain` to the upstream `up` at $1.
bench_plain_route() { # $1: upstream address
    cat <<TOML

[[listeners]]
name = "bench"
bind = "127.0.0.1:0"

[upstreams.up]
targets = [{ address = "$1" }]

[[routes]]
name = "plain"
upstream = "up"
TOML
}

# Prints the demo pipeline (issue 3's bar): its three plugins from $1 and the route
# `pipeline` (/pipeline/ to `up`) running key-auth (the key whose SHA-256 is $2), a local
# rate limit and analytics.
bench_demo_pipeline() { # $1: plugins directory, $2: SHA-256 of the API key
    cat <<TOML

[plugins.analytics]
path = "$1/analytics.wasm"
grants = ["analytics", "clock"]

[plugins.key-auth]
path = "$1/key_auth.wasm"
grants = ["kv", "log"]

[plugins.rate-limit]
path = "$1/rate_limit.wasm"
grants = ["rate-limit"]

[[routes]]
name = "pipeline"
path_prefix = "/pipeline/"
upstream = "up"

[[routes.policies]]
plugin = "analytics"

[[routes.policies]]
plugin = "key-auth"
config = { header = "x-api-key", consumers = [{ name = "bench", key_sha256 = "$2" }] }

[[routes.policies]]
plugin = "rate-limit"
config = { requests = 1000000, window = "1s", key = "consumer" }
TOML
}
