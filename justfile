# Sluice task runner. `just --list` shows the recipes.

# Run every test: guest (policy) unit tests and components, host unit tests, then
# end-to-end tests against the real binary and the built policy components. Incremental
# compilation is off: this is a from-scratch run, and its caches would only cost disk.
test: plugins python-plugin wasi-probe redis openapi-validator
    cd plugins && CARGO_INCREMENTAL=0 cargo test --locked --workspace
    CARGO_INCREMENTAL=0 cargo build --locked -p sluice --bin sluice
    CARGO_INCREMENTAL=0 cargo test --locked --workspace

# Install the OpenAPI validator the admin API's test checks its document with (pinned).
openapi-validator:
    python3 -c 'import importlib.metadata as m; assert m.version("openapi-spec-validator") == "0.9.0"' 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check "openapi-spec-validator==0.9.0"

# Install redis-server (the state tests start their own instances) when it is absent.
redis:
    #!/usr/bin/env bash
    set -euo pipefail
    command -v redis-server >/dev/null && exit 0
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server
    # The packaged service is not needed: tests run their own servers on free ports.
    $sudo systemctl disable --now redis-server 2>/dev/null || true

# Build the SDK and every policy to WebAssembly components
# (plugins/target/wasm32-unknown-unknown/release/*.wasm).
plugins:
    #!/usr/bin/env bash
    set -euo pipefail
    rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
    host=$(rustc -vV | sed -n 's/^host: //p')
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$(rustc --print sysroot)/lib/rustlib/$host/bin/wasm-component-ld"
    cd plugins && cargo build --locked --release --target wasm32-unknown-unknown --workspace

# Build the Python example policy (plugins/python/deny-header) with componentize-py
# (installed with pip, pinned, when absent) into plugins/target/python/deny_header.wasm.
# Skipped when the component is newer than its sources and the contract.
python-plugin:
    #!/usr/bin/env bash
    set -euo pipefail
    version=0.25.1
    cpy="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/componentize-py"
    if ! [ -x "$cpy" ] || [ "$("$cpy" --version)" != "componentize-py $version" ]; then
        python3 -m pip install --quiet --disable-pip-version-check "componentize-py==$version"
    fi
    out="$PWD/plugins/target/python/deny_header.wasm"
    mkdir -p "$(dirname "$out")"
    cd plugins/python/deny-header
    if [ -f "$out" ] && [ -z "$(find app.py wit ../../../wit -newer "$out" -print -quit)" ]; then
        echo "deny_header.wasm is up to date"
        exit 0
    fi
    "$cpy" -q -d ../../../wit -d wit -w sluice:policy/policy \
        componentize app -i sluice-python:deny-header/grants -o "$out.tmp"
    mv "$out.tmp" "$out"

# Build the WASI probe fixture (plugins/wasi-probe, its own workspace) for wasm32-wasip2
# (plugins/target/wasm32-wasip2/release/wasi_probe.wasm).
wasi-probe:
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
    cargo build --locked --release --target wasm32-wasip2 --manifest-path plugins/wasi-probe/Cargo.toml --target-dir plugins/target

# Run the gateway on the shipped configuration (builds the demo policies first).
run: plugins
    cargo run --release -p sluice -- run

# Format and lint exactly as CI expects.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The fast-path benchmark against nginx (see bench/README.md).
bench-proxy:
    bench/proxy.sh
