# Sluice task runner. `just --list` shows the recipes.

# Run every test: guest (policy) unit tests and components, host unit tests, then
# end-to-end tests against the real binary and the built policy components.
test: plugins
    cd plugins && cargo test --locked --workspace
    cargo build --locked -p sluice --bin sluice
    cargo test --locked --workspace

# Build the SDK and every policy to WebAssembly components
# (plugins/target/wasm32-unknown-unknown/release/*.wasm).
plugins:
    #!/usr/bin/env bash
    set -euo pipefail
    rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
    host=$(rustc -vV | sed -n 's/^host: //p')
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$(rustc --print sysroot)/lib/rustlib/$host/bin/wasm-component-ld"
    cd plugins && cargo build --locked --release --target wasm32-unknown-unknown --workspace

# Run the gateway on the shipped configuration.
run:
    cargo run --release -p sluice -- run

# Format and lint exactly as CI expects.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The fast-path benchmark against nginx (see bench/README.md).
bench-proxy:
    bench/proxy.sh
