//! WASI guests (ADR 0002): a policy written in Python (`plugins/python/deny-header`, built
//! by componentize-py, which always imports WASI 0.2) loads and works through the gateway,
//! and the WASI context such components get grants nothing real. The Python policy probes
//! what its runtime exposes (environment, files, clocks; it has no socket module); the
//! Rust `wasi-probe` fixture (wasm32-wasip2) calls WASI directly, sockets included.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Once;

use sluice_tests::gateway::validate;
use sluice_tests::{Gateway, Upstream, get};

use crate::config;

/// The Python policy, built by `just python-plugin`.
const PYTHON: (&str, &str) = ("python/deny_header.wasm", "just python-plugin");
/// The WASI probe fixture, built by `just wasi-probe`.
const PROBE: (&str, &str) = ("wasm32-wasip2/release/wasi_probe.wasm", "just wasi-probe");

/// Limits of the Python policy: instantiating CPython (its memory starts at 12.4 MiB, within
/// the 16 MiB default) runs under the per-call CPU deadline, and the default 50 ms is
/// too tight for a debug build on a loaded machine.
const PYTHON_LIMITS: &str = "cpu_timeout = \"2s\"\ntimeout = \"5s\"";

/// Absolute path of a component under `plugins/target` (`(file, how to build it)`).
fn component((file, build): (&str, &str)) -> PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target")
        .join(file);
    assert!(p.exists(), "{} not found: run `{build}` first", p.display());
    p.canonicalize().expect("component path")
}

/// A compiled-artifact cache shared by the gateways of this module: compiling the ~18 MB
/// Python component takes tens of seconds in a debug build, loading its artifact
/// milliseconds.
fn cache_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-wasi-cache")
}

/// `[policy]` with the shared cache, `[upstreams.u]` (when `up` is given) and the plugins
/// `py` (the Python policy) and `probe` (the WASI probe), each with `extra` TOML lines.
fn settings(up: Option<&Upstream>, extra: &str) -> String {
    let upstream = up.map_or(String::new(), |u| {
        format!(
            "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n",
            u.addr
        )
    });
    format!(
        "[policy]\ncache_dir = \"{cache}\"\n\n{upstream}\
         [plugins.py]\npath = \"{py}\"\n{PYTHON_LIMITS}\n{extra}\n\n\
         [plugins.probe]\npath = \"{probe}\"\n{extra}\n\n",
        cache = cache_dir().display(),
        py = component(PYTHON).display(),
        probe = component(PROBE).display(),
    )
}

/// Compiles both components once into the shared cache with `sluice validate` (which has
/// no start-up deadline), so that the gateways of the tests come up quickly.
fn warm_cache() {
    static WARM: Once = Once::new();
    WARM.call_once(|| {
        let (code, out) = validate(&config(&settings(None, "")));
        assert_eq!(code, 0, "{out}");
    });
}

/// A gateway with one route to `up` through `plugin` (configured with `policy_config`, a
/// TOML inline table); both plugins get `extra` TOML lines.
fn start(up: &Upstream, plugin: &str, extra: &str, policy_config: &str) -> Gateway {
    warm_cache();
    Gateway::start(&config(&format!(
        "{}[[routes]]\nname = \"r\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"{plugin}\"\nconfig = {policy_config}\n",
        settings(Some(up), extra)
    )))
}

/// Sends one request through `plugin` configured with `policy_config` and returns the
/// `key=outcome` pairs the policy reported to the upstream in `header`.
async fn probe(
    plugin: &str,
    extra: &str,
    policy_config: &str,
    header: &str,
) -> HashMap<String, String> {
    let up = Upstream::named("ok").await;
    let policy_config = policy_config.replace("UPSTREAM", &up.addr.to_string());
    let gw = start(&up, plugin, extra, &policy_config);
    let r = get(&gw.url("main", "/probe"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok"),
        "{:?}",
        gw.stderr()
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let report = seen[0]
        .headers
        .get(header)
        .unwrap_or_else(|| panic!("no {header} header reached the upstream"))
        .to_str()
        .expect("ASCII report")
        .to_string();
    report
        .split(';')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The outcome reported under `key`.
fn field<'a>(p: &'a HashMap<String, String>, key: &str) -> &'a str {
    p.get(key)
        .unwrap_or_else(|| panic!("{key} missing from {p:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn python_policy_denies_with_403_or_forwards_with_its_header() {
    let up = Upstream::named("ok").await;
    let gw = start(&up, "py", "", "{}");

    let r = get(&gw.url("main", "/a"), &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok"),
        "{:?}",
        gw.stderr()
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/a");
    assert_eq!(seen[0].headers.get("x-python").unwrap(), "yes");
    assert!(seen[0].headers.get("x-python-probe").is_none());

    let r = get(&gw.url("main", "/b"), &[("x-deny", "1")]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "denied by python"));
    assert_eq!(up.hits(), 1, "a denied request never reaches the upstream");

    // The pooled instance keeps serving, alternating both decisions.
    for i in 0..20 {
        let headers: &[(&str, &str)] = if i % 2 == 0 { &[("x-deny", "")] } else { &[] };
        let r = get(&gw.url("main", "/c"), headers).await;
        assert_eq!(r.status, if i % 2 == 0 { 403 } else { 200 });
    }
    assert_eq!(up.hits(), 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn python_policy_sees_no_env_files_network_or_clocks() {
    let p = probe("py", "", "{ probe = true }", "x-python-probe").await;
    // No environment variables: not even the gateway's own PATH.
    assert_eq!(field(&p, "env"), "0", "{p:?}");
    assert_eq!(field(&p, "path_var"), "unset", "{p:?}");
    // No preopened directory: neither a file nor the root resolves.
    assert_eq!(field(&p, "file"), "denied:FileNotFoundError", "{p:?}");
    assert_eq!(field(&p, "root"), "denied:FileNotFoundError", "{p:?}");
    // No network from Python (its runtime has no socket module; see the WASI probe below
    // for wasi:sockets itself).
    assert_ne!(field(&p, "socket"), "connected", "{p:?}");
    // Without the `clock` grant both WASI clocks are frozen at zero.
    assert_eq!(field(&p, "wall"), "0", "{p:?}");
    assert_eq!(field(&p, "mono"), "0", "{p:?}");
    assert_eq!(field(&p, "mono_advances"), "no", "{p:?}");
    // Randomness is not withheld.
    assert_eq!(field(&p, "random"), "8", "{p:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clock_grant_gives_python_real_wasi_clocks_and_nothing_else() {
    let p = probe(
        "py",
        "grants = [\"clock\"]",
        "{ probe = true }",
        "x-python-probe",
    )
    .await;
    let wall: u64 = field(&p, "wall").parse().expect("seconds");
    assert!(wall > 1_700_000_000, "a real wall clock, not zero: {p:?}");
    assert_eq!(field(&p, "mono_advances"), "yes", "{p:?}");
    assert_eq!(field(&p, "env"), "0", "{p:?}");
    assert!(field(&p, "file").starts_with("denied:"), "{p:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasip2_guest_calling_wasi_directly_reaches_nothing_real() {
    // `connect` is the upstream's own address: a live listener, so only the sandbox can
    // make that connection fail.
    let p = probe("probe", "", "{ connect = \"UPSTREAM\" }", "x-wasi-probe").await;
    assert_eq!(field(&p, "env"), "0", "{p:?}");
    assert_eq!(field(&p, "args"), "0", "{p:?}");
    // No preopened directory: no path resolves.
    for key in ["file", "root", "cwd"] {
        assert!(field(&p, key).contains("NotFound"), "{key}: {p:?}");
    }
    // TCP and UDP are refused by the sandbox itself, before any address is tried.
    for key in ["tcp", "tcp_listen", "udp"] {
        assert!(field(&p, key).contains("PermissionDenied"), "{key}: {p:?}");
    }
    assert!(field(&p, "dns").starts_with("denied:"), "{p:?}");
    assert_eq!(field(&p, "wall"), "0", "{p:?}");
    assert_eq!(field(&p, "mono_advances"), "no", "{p:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasip2_guest_granted_clock_gets_real_clocks_and_still_no_network() {
    let p = probe(
        "probe",
        "grants = [\"clock\"]",
        "{ connect = \"UPSTREAM\" }",
        "x-wasi-probe",
    )
    .await;
    let wall: u64 = field(&p, "wall").parse().expect("seconds");
    assert!(wall > 1_700_000_000, "a real wall clock, not zero: {p:?}");
    assert_eq!(field(&p, "mono_advances"), "yes", "{p:?}");
    assert_eq!(field(&p, "env"), "0", "{p:?}");
    assert!(field(&p, "file").contains("NotFound"), "{p:?}");
    for key in ["tcp", "udp"] {
        assert!(field(&p, key).contains("PermissionDenied"), "{key}: {p:?}");
    }
    assert!(field(&p, "dns").starts_with("denied:"), "{p:?}");
}
