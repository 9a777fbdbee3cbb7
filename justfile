# Sluice task runner. `just --list` shows the recipes.

# Run every test: unit tests, then end-to-end tests against the real binary.
test:
    cargo build --locked -p sluice --bin sluice
    cargo test --locked --workspace

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
