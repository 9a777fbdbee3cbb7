//! `sluice plugin new NAME`: a Rust policy crate on the SDK that builds and passes its own
//! test at once.

use std::path::{Path, PathBuf};

/// The SDK this binary was built next to (the default for `--sdk`).
pub fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk")
}

fn crate_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?}: a policy name is lowercase letters, digits and '-', starting with a letter"
        ))
    }
}

/// Writes the crate `NAME/` under `dir` using the SDK at `sdk`; returns its directory.
pub fn new_policy(name: &str, dir: &Path, sdk: &Path) -> Result<PathBuf, String> {
    let name = crate_name(name)?;
    let sdk = sdk
        .canonicalize()
        .map_err(|e| format!("--sdk {}: {e}", sdk.display()))?;
    if !sdk.join("Cargo.toml").exists() {
        return Err(format!("--sdk {}: no Cargo.toml", sdk.display()));
    }
    let root = dir.join(&name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let ty: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let files = [
        ("Cargo.toml", cargo_toml(&name, &sdk)),
        (".cargo/config.toml", CARGO_CONFIG.to_owned()),
        (
            "src/lib.rs",
            LIB_RS.replace("Example", &ty).replace("example", &name),
        ),
        ("README.md", README.replace("example", &name)),
    ];
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(root)
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
sluice-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# A standalone crate, even when created inside another workspace.
[workspace]

# Speed over size: a policy runs on every request of its routes.
[profile.release]
opt-level = 3
lto = true
strip = true
panic = "abort"
codegen-units = 1
"#,
        sdk = sdk.display()
    )
}

const CARGO_CONFIG: &str = r#"# Policies run shallow code: a 64 KiB shadow stack (instead of 1 MiB) keeps each instance
# to a few pages of linear memory; 256 KiB of initial heap lets the SDK's allocator serve a
# request without growing the memory (each growth costs the gateway an `mprotect`).
[target.wasm32-unknown-unknown]
rustflags = ["-C", "link-arg=-zstack-size=65536", "-C", "link-arg=--initial-heap=262144"]
"#;

const LIB_RS: &str = r#"//! `example`: a Sluice policy. It refuses requests without the configured header.

use serde::Deserialize;
use sluice_sdk::{Context, Policy, Request, RequestDecision};

/// Configuration (the route's `config` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header every request must carry.
    pub header: String,
}

/// The policy.
#[derive(Debug)]
pub struct Example {
    config: Config,
}

impl Policy for Example {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.header.is_empty() {
            return Err("`header` must not be empty".into());
        }
        Ok(Self { config })
    }

    fn on_request(&self, req: &Request, _ctx: &Context) -> RequestDecision {
        if req.has_header(&self.config.header) {
            RequestDecision::Continue
        } else {
            RequestDecision::respond(400).body(format!("missing header {}\n", self.config.header))
        }
    }
}

sluice_sdk::export_policy!(Example);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing::{TestContext, TestHost, TestRequest, json};

    #[test]
    fn refuses_requests_without_the_header() {
        let host = TestHost::with_grants(&[]);
        let policy: Example = host.init(json!({ "header": "x-tenant" })).unwrap();
        let ctx = TestContext::new();
        let refused = host.on_request(&policy, &TestRequest::get("/"), &ctx);
        assert_eq!(refused.status(), Some(400));
        let req = TestRequest::get("/").header("x-tenant", "t1");
        assert!(host.on_request(&policy, &req, &ctx).is_continue());
        assert!(host.init::<Example>(json!({ "header": "" })).is_err());
    }
}
"#;

const README: &str = r#"# example

A Sluice policy. Test it natively, build the component, and push it to a gateway:

```sh
cargo test
rustup target add wasm32-unknown-unknown
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld" \
  cargo build --release --target wasm32-unknown-unknown
sluice plugin push example target/wasm32-unknown-unknown/release/*.wasm
```
"#;
