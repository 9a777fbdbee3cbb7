//! Policies through the real gateway: pipeline order, every decision kind, conditions,
//! failure modes, hostile plugins (battery row 7), capability checks at load, each
//! first-party policy, instance modes and hot reload.

use std::sync::Once;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use sluice_tests::gateway::validate;
use sluice_tests::{Gateway, Resp, Upstream, get, plugin_path, send};

use crate::config;

/// `printf %s s3cret | sha256sum`: alice's API key and its hash.
const ALICE_KEY: &str = "s3cret";
const ALICE_SHA256: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
/// `printf %s b0b-key | sha256sum`: bob's API key and its hash.
const BOB_KEY: &str = "b0b-key";
const BOB_SHA256: &str = "a8d03014f0b310a87ce329e6cad51d77e4ef3b2529f27424c2b31fd1f6f96311";

/// Upper bound on one request to a hostile policy: its CPU deadline is 50 ms and its wall
/// deadline 2 s; the rest is slack for a debug build on a loaded machine.
const HOSTILE_DEADLINE: Duration = Duration::from_secs(5);

/// The first-party components and fixtures these tests load (file stems).
const COMPONENTS: [&str; 12] = [
    "noop",
    "kv_probe",
    "echo_attrs",
    "hostile",
    "hostile_sync",
    "hostile_body",
    "key_auth",
    "rate_limit",
    "analytics",
    "cors",
    "ip_restriction",
    "request_transformer",
];

/// A compiled-artifact cache shared by every gateway of this module: compiling a component
/// in a debug build takes seconds, deserializing the artifact milliseconds.
pub(crate) fn cache_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-policy-cache")
}

/// `[policy]` pointing at the shared cache.
pub(crate) fn policy_settings() -> String {
    format!("[policy]\ncache_dir = \"{}\"\n\n", cache_dir().display())
}

/// Compiles every component once into the shared cache (with `sluice validate`, which has
/// no start-up deadline), so that gateways started by the tests come up quickly.
pub(crate) fn warm_cache() {
    static WARM: Once = Once::new();
    WARM.call_once(|| {
        let mut cfg = policy_settings();
        for (i, c) in COMPONENTS.iter().enumerate() {
            cfg.push_str(&plugin(&format!("p{i}"), c, "grants = [\"kv\"]"));
        }
        let (code, out) = validate(&config(&cfg));
        assert_eq!(code, 0, "{out}");
    });
}

/// `[plugins.NAME]` for the component `file` plus `extra` TOML lines.
pub(crate) fn plugin(name: &str, file: &str, extra: &str) -> String {
    format!(
        "[plugins.{name}]\npath = \"{}\"\n{extra}\n\n",
        plugin_path(file).display()
    )
}

/// `[upstreams.u]` with `up` as its one target.
fn upstream(up: &Upstream) -> String {
    format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n",
        up.addr
    )
}

/// The whole configuration: the `main` listener, the shared cache and `body`.
fn full_config(body: &str) -> String {
    config(&format!("{}{body}", policy_settings()))
}

/// Starts a gateway on `body` (see [`full_config`]).
fn start(body: &str) -> Gateway {
    warm_cache();
    Gateway::start(&full_config(body))
}

/// Sends `method url` with `headers` and an empty body.
pub(crate) async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// The last request `up` saw, as (uri, header value).
fn last_seen(up: &Upstream, header: &str) -> (String, Option<String>) {
    let seen = up.seen();
    let s = seen.last().expect("the upstream saw a request");
    (
        s.uri.clone(),
        s.headers
            .get(header)
            .map(|v| v.to_str().unwrap().to_string()),
    )
}

/// Whether the gateway process is still running.
fn alive(gw: &mut Gateway) -> bool {
    gw.wait_exit(Duration::ZERO).is_none()
}

/// Requests `path`, whose policy misbehaves, and checks that the request fails closed within
/// [`HOSTILE_DEADLINE`] (503 `policy_failed`, no `x-huge` header leaked), that the `/ok`
/// route answers 200 right after and that the gateway is still up. Returns the error body.
async fn hostile_request_fails(gw: &mut Gateway, path: &str, what: &str) -> serde_json::Value {
    let t = Instant::now();
    let r = get(&gw.url("main", path), &[]).await;
    let took = t.elapsed();
    let what = format!("{what}: {r:?}");
    assert!(took < HOSTILE_DEADLINE, "{what} took {took:?}");
    assert_eq!(r.status, 503, "{what}");
    let j = r.json();
    assert_eq!(j["error"], "policy_failed", "{what}");
    assert_eq!(r.header("x-huge"), None, "{what}");
    let ok = get(&gw.url("main", "/ok"), &[]).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok"), "after {what}");
    assert!(alive(gw), "the gateway died after {what}");
    j
}

/// The `consumers` entry of a key-auth configuration with alice and bob.
fn consumers() -> String {
    format!(
        "consumers = [{{ name = \"alice\", key_sha256 = \"{ALICE_SHA256}\" }}, {{ name = \"bob\", key_sha256 = \"{BOB_SHA256}\" }}]"
    )
}

// ---------------------------------------------------------------------------------------
// Pipeline order and decision kinds
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn request_phases_run_in_pipeline_order_and_response_phases_in_reverse() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{echo}
[[routes]]
name = "r"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "a" }}
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "b" }}
"#,
        up = upstream(&up),
        echo = plugin("echo-attrs", "echo_attrs", ""),
    ));
    let r = get(&gw.url("main", "/x"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(last_seen(&up, "x-trace").1.as_deref(), Some("a,b"));
    assert_eq!(r.header("x-trace"), Some("b,a"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continue_decision_forwards_the_request_unchanged() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        "{}{}[[routes]]\nname = \"r\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"noop\"\n",
        upstream(&up),
        plugin("noop", "noop", ""),
    ));
    let r = get(&gw.url("main", "/items?a=1&b=2"), &[("x-custom", "v")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/items?a=1&b=2");
    assert_eq!(seen[0].headers.get("x-custom").unwrap(), "v");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_transformer_edits_of_headers_and_query_reach_the_upstream() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{rt}
[[routes]]
name = "r"
upstream = "u"
[[routes.policies]]
plugin = "request-transformer"
[routes.policies.config.headers]
remove = ["x-internal-debug"]
rename = {{ "x-user" = "x-forwarded-user" }}
set = {{ "x-gateway" = "sluice" }}
add = {{ "x-tenant" = "default" }}
[routes.policies.config.query]
remove = ["debug"]
set = {{ "v" = "2" }}
add = {{ "lang" = "en gb" }}
"#,
        up = upstream(&up),
        rt = plugin("request-transformer", "request_transformer", ""),
    ));
    let r = get(
        &gw.url("main", "/search?q=a%20b&debug=1&v=1"),
        &[
            ("x-internal-debug", "1"),
            ("x-user", "alice"),
            ("x-gateway", "client-value"),
            ("x-tenant", "acme"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &up.seen()[0];
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("x-internal-debug"), None);
    assert_eq!(h("x-user"), None);
    assert_eq!(h("x-forwarded-user").as_deref(), Some("alice"));
    assert_eq!(h("x-gateway").as_deref(), Some("sluice"));
    assert_eq!(
        h("x-tenant").as_deref(),
        Some("acme"),
        "add keeps a present header"
    );
    let (path, query) = seen.uri.split_once('?').expect("a query");
    assert_eq!(path, "/search");
    let mut params: Vec<&str> = query.split('&').collect();
    params.sort_unstable();
    assert_eq!(params, ["lang=en+gb", "q=a%20b", "v=2"]);
}

/// A policy's path edit (request-transformer's `path`) is what the upstream is asked for;
/// the query goes along unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn a_path_edited_by_a_policy_reaches_the_upstream_with_the_query() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{rt}
[[routes]]
name = "r"
path_prefix = "/v1/"
upstream = "u"
[[routes.policies]]
plugin = "request-transformer"
config = {{ path = "/internal/users" }}
"#,
        up = upstream(&up),
        rt = plugin("request-transformer", "request_transformer", ""),
    ));
    let r = get(&gw.url("main", "/v1/users/7?expand=1&x=a%20b"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.seen()[0].uri, "/internal/users?expand=1&x=a%20b");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_responds_401_without_a_key_and_passes_the_consumer_to_later_policies() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{ka}{echo}
[[routes]]
name = "r"
upstream = "u"
[[routes.policies]]
plugin = "key-auth"
config = {{ {consumers} }}
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "after", echo = ["consumer", "credential"] }}
"#,
        up = upstream(&up),
        ka = plugin("key-auth", "key_auth", "grants = [\"kv\", \"log\"]"),
        echo = plugin("echo-attrs", "echo_attrs", ""),
        consumers = consumers(),
    ));
    let url = gw.url("main", "/orders");

    let denied = get(&url, &[]).await;
    assert_eq!(denied.status, 401);
    assert_eq!(
        up.hits(),
        0,
        "a respond decision must not reach the upstream"
    );
    assert_eq!(denied.json()["error"], "unauthorized");
    // The policy after the one that responded never ran, so neither did its response phase.
    assert_eq!(denied.header("x-trace"), None);

    let ok = get(&url, &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));
    assert_eq!(ok.header("x-ctx-consumer"), Some("alice"));
    assert_eq!(
        ok.header("x-ctx-credential"),
        Some("apikey:1ec1c26b50d5d3c5")
    );
    assert_eq!(ok.header("x-trace"), Some("after"));
    assert_eq!(up.hits(), 1);
    let (_, key) = last_seen(&up, "x-api-key");
    assert_eq!(key, None, "the key is removed before forwarding");
    assert_eq!(last_seen(&up, "x-trace").1.as_deref(), Some("after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn response_phases_run_for_policies_before_a_short_circuit() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{ka}{echo}
[[routes]]
name = "r"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "outer" }}
[[routes.policies]]
plugin = "key-auth"
config = {{ {consumers} }}
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "inner" }}
"#,
        up = upstream(&up),
        ka = plugin("key-auth", "key_auth", "grants = [\"kv\", \"log\"]"),
        echo = plugin("echo-attrs", "echo_attrs", ""),
        consumers = consumers(),
    ));
    let denied = get(&gw.url("main", "/"), &[]).await;
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("x-trace"), Some("outer"));
    assert_eq!(
        denied.header("www-authenticate"),
        Some("ApiKey realm=\"sluice\"")
    );
    assert_eq!(up.hits(), 0);

    let ok = get(&gw.url("main", "/"), &[("x-api-key", BOB_KEY)]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-trace"), Some("inner,outer"));
    assert_eq!(last_seen(&up, "x-trace").1.as_deref(), Some("outer,inner"));
}

// ---------------------------------------------------------------------------------------
// Conditions
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn policies_with_conditions_run_only_on_matching_requests() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{ka}{echo}
[[routes]]
name = "r"
path_prefix = "/api"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "post-only" }}
when = {{ methods = ["POST"] }}
[[routes.policies]]
plugin = "key-auth"
config = {{ {consumers} }}
when = {{ path_prefix = "/api/admin" }}
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "debug" }}
when = {{ headers = [{{ name = "x-debug", value = "1" }}] }}
"#,
        up = upstream(&up),
        ka = plugin("key-auth", "key_auth", "grants = [\"kv\", \"log\"]"),
        echo = plugin("echo-attrs", "echo_attrs", ""),
        consumers = consumers(),
    ));
    let u = |p: &str| gw.url("main", p);

    let plain = get(&u("/api/items"), &[]).await;
    assert_eq!((plain.status, plain.header("x-trace")), (200, None));
    assert_eq!(last_seen(&up, "x-trace").1, None);

    let post = request("POST", &u("/api/items"), &[]).await;
    assert_eq!(
        (post.status, post.header("x-trace")),
        (200, Some("post-only"))
    );

    let debug = get(&u("/api/items"), &[("x-debug", "1")]).await;
    assert_eq!(
        (debug.status, debug.header("x-trace")),
        (200, Some("debug"))
    );
    let not_debug = get(&u("/api/items"), &[("x-debug", "0")]).await;
    assert_eq!(not_debug.header("x-trace"), None);

    let hits = up.hits();
    assert_eq!(get(&u("/api/admin/users"), &[]).await.status, 401);
    assert_eq!(up.hits(), hits);
    let admin = get(&u("/api/admin/users"), &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(admin.status, 200);
    assert_eq!(get(&u("/api/public"), &[]).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// Failure modes
// ---------------------------------------------------------------------------------------

/// The `hostile` plugin: granted kv, 50 ms of CPU and 2 s of wall time per call, and a
/// memory cap above the 10 MiB of `huge-header` so that the header reaches the host.
fn hostile_plugin() -> String {
    plugin(
        "hostile",
        "hostile",
        "grants = [\"kv\"]\ncpu_timeout = \"50ms\"\ntimeout = \"2s\"\nmax_memory_bytes = 67108864",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_policy_fails_closed_with_its_status_and_a_json_body_naming_it() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{hostile}{echo}
[[routes]]
name = "closed"
path = "/closed"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "first" }}
[[routes.policies]]
plugin = "hostile"
config = {{ mode = "trap" }}
on_failure = "closed"
failure_status = 503

[[routes]]
name = "default-status"
path = "/default"
upstream = "u"
[[routes.policies]]
plugin = "hostile"
config = {{ mode = "trap" }}

[[routes]]
name = "response-closed"
path = "/response"
upstream = "u"
[[routes.policies]]
plugin = "hostile"
config = {{ mode = "trap", phase = "response" }}
failure_status = 502
"#,
        up = upstream(&up),
        hostile = hostile_plugin(),
        echo = plugin("echo-attrs", "echo_attrs", ""),
    ));
    let r = get(&gw.url("main", "/closed"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["error"], "policy_failed");
    assert_eq!(j["policy"], "closed/hostile#1");
    assert_eq!(j["route"], "closed");
    assert_eq!(
        r.header("x-trace"),
        Some("first"),
        "the response phase of the policy before the failing one ran"
    );
    assert_eq!(up.hits(), 0, "a policy failing closed stops the request");

    let d = get(&gw.url("main", "/default"), &[]).await;
    assert_eq!(d.status, 500, "failure_status defaults to 500");
    assert_eq!(d.json()["policy"], "default-status/hostile#0");

    let resp = get(&gw.url("main", "/response"), &[]).await;
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["policy"], "response-closed/hostile#0");
    assert_eq!(up.hits(), 1, "the request phase continued to the upstream");
    assert!(gw.wait_stderr(
        |l| l.contains("policy failed") && l.contains("closed/hostile#1"),
        Duration::from_secs(10)
    ));
}

/// The gateway's own error answers (here 502 from a refusing upstream and 413 from a body
/// policy's buffer) pass back through the response phases of the policies that ran, as the
/// target's responses do.
#[tokio::test(flavor = "multi_thread")]
async fn response_phases_also_run_on_the_gateways_error_answers() {
    let down = crate::upstreams::refused_addr().await;
    let gw = start(&format!(
        r#"[upstreams.down]
targets = [{{ address = "{down}" }}]

{echo}{body}
[[routes]]
name = "r"
upstream = "down"
max_body_bytes = 16
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "outer" }}
[[routes.policies]]
plugin = "body-check"
config = {{ max_bytes = 1000, deny_substring = "zzz" }}
"#,
        down = down.addr,
        echo = plugin("echo-attrs", "echo_attrs", ""),
        body = plugin("body-check", "body_check", "grants = [\"log\"]"),
    ));
    let r = get(&gw.url("main", "/"), &[]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_connect_failed");
    assert_eq!(r.header("x-trace"), Some("outer"));

    // Chunked, so that only buffering the body for body-check finds it too large (a
    // Content-Length over the limit is refused before any policy runs).
    let chunk = "x".repeat(100);
    let r = sluice_tests::raw(
        gw.addr("main"),
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.statuses(), [413], "{}", r.text);
    assert!(r.text.contains("\r\nx-trace: outer\r\n"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_policy_with_on_failure_open_is_skipped_and_the_request_proceeds() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{hostile}{echo}
[[routes]]
name = "open"
path = "/open"
upstream = "u"
[[routes.policies]]
plugin = "hostile"
config = {{ mode = "trap" }}
on_failure = "open"
failure_status = 503
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "after" }}

[[routes]]
name = "response-open"
path = "/response"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "outer" }}
[[routes.policies]]
plugin = "hostile"
config = {{ mode = "trap", phase = "response" }}
on_failure = "open"
failure_status = 503
"#,
        up = upstream(&up),
        hostile = hostile_plugin(),
        echo = plugin("echo-attrs", "echo_attrs", ""),
    ));
    for _ in 0..2 {
        let r = get(&gw.url("main", "/open"), &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert_eq!(r.header("x-trace"), Some("after"));
    }
    assert_eq!(up.hits(), 2);
    let r = get(&gw.url("main", "/response"), &[]).await;
    assert_eq!((r.status, r.header("x-trace")), (200, Some("outer")));
    assert!(gw.wait_stderr(
        |l| l.contains("policy failed") && l.contains("open/hostile#0"),
        Duration::from_secs(10)
    ));
    // Each skip is counted, as a failure and as a skip, for the policy that failed.
    for (label, n) in [("open/hostile#0", 2), ("response-open/hostile#1", 1)] {
        assert_eq!(counter(&gw, label, "failures").await, n, "{label}");
        assert_eq!(counter(&gw, label, "skipped").await, n, "{label}");
    }
    assert_eq!(counter(&gw, "open/echo-attrs#1", "skipped").await, 0);
}

/// Instance lifecycles, told apart by the instantiation counter: a pooled instance serves
/// `recycle_after` calls and is replaced; an isolated policy gets a fresh instance for every
/// call (each phase of each request); a pooled instance whose call trapped is discarded.
/// Every policy is instantiated once at load, to prove its configuration.
#[tokio::test(flavor = "multi_thread")]
async fn instances_are_recycled_after_n_calls_fresh_when_isolated_and_discarded_after_a_trap() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{echo}{echo3}{hostile}
[[routes]]
name = "pooled"
path = "/pooled"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "p" }}

[[routes]]
name = "recycled"
path = "/recycled"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs-3"
config = {{ name = "r" }}

[[routes]]
name = "isolated"
path = "/isolated"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "i" }}
mode = "isolated"

[[routes]]
name = "trap"
path = "/trap"
upstream = "u"
[[routes.policies]]
plugin = "hostile"
config = {{ mode = "trap" }}
failure_status = 503
"#,
        up = upstream(&up),
        echo = plugin("echo-attrs", "echo_attrs", ""),
        echo3 = plugin("echo-attrs-3", "echo_attrs", "recycle_after = 3"),
        hostile = hostile_plugin(),
    ));
    // Sequential requests: 6 requests are 12 calls (request and response phases).
    for route in ["pooled", "recycled", "isolated"] {
        for _ in 0..6 {
            let r = get(&gw.url("main", &format!("/{route}")), &[]).await;
            assert_eq!(r.status, 200, "{route}: {r:?}");
        }
    }
    for _ in 0..3 {
        assert_eq!(get(&gw.url("main", "/trap"), &[]).await.status, 503);
    }
    let n = |label: &'static str| counter(&gw, label, "instantiations");
    // The instance made at load serves every call.
    assert_eq!(n("pooled/echo-attrs#0").await, 1);
    // 12 calls, 3 per instance: 4 instances, the first made at load.
    assert_eq!(n("recycled/echo-attrs-3#0").await, 4);
    // One at load, then one per call.
    assert_eq!(n("isolated/echo-attrs#0").await, 1 + 12);
    // One at load (trapped on the first request), then one per request after a trap.
    assert_eq!(n("trap/hostile#0").await, 3);
}

// ---------------------------------------------------------------------------------------
// Battery row 7: hostile plugins
// ---------------------------------------------------------------------------------------

/// Modes of the hostile fixture that must make the call fail.
const FAILING_MODES: [&str; 5] = ["loop", "memory", "recursion", "trap", "huge-header"];

/// How the host refuses to copy more than a few MiB out of a guest in one go (wasmtime's
/// host-call fuel, which the gateway sets from the policy's kv caps plus 4 MiB).
const COPY_LIMIT: &str = "too much data is being copied between the host and the guest";

/// The body phase of a body policy is bounded like the others: a policy misbehaving in
/// `on-request-body` fails that request within its deadline; failing open, it is skipped
/// whole, so the edit its `on-request` made before never reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_body_phases_fail_within_their_deadline_and_open_ones_are_skipped_whole() {
    let up = Upstream::named("ok").await;
    let mut cfg = format!(
        "{}{}{}[[routes]]\nname = \"ok\"\npath = \"/ok\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"noop\"\n\n",
        upstream(&up),
        plugin(
            "hostile-body",
            "hostile_body",
            "grants = [\"kv\"]\ncpu_timeout = \"50ms\"\ntimeout = \"2s\"\nmax_memory_bytes = 67108864",
        ),
        plugin("noop", "noop", ""),
    );
    let modes = [
        "loop",
        "recursion",
        "trap",
        "huge-header",
        "host-error-unwrap",
    ];
    for mode in modes {
        cfg.push_str(&format!(
            "[[routes]]\nname = \"{mode}\"\npath = \"/{mode}\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"hostile-body\"\nconfig = {{ mode = \"{mode}\", phase = \"body\" }}\nfailure_status = 503\n\n"
        ));
    }
    cfg.push_str(
        "[[routes]]\nname = \"open\"\npath = \"/open\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"hostile-body\"\nconfig = { mode = \"trap\", phase = \"body\" }\non_failure = \"open\"\n",
    );
    let mut gw = start(&cfg);
    for mode in modes {
        let j = hostile_request_fails(&mut gw, &format!("/{mode}"), mode).await;
        assert_eq!(j["policy"], format!("{mode}/hostile-body#0"), "{j}");
    }
    let r = get(&gw.url("main", "/open"), &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(
        last_seen(&up, "x-hostile-edited"),
        ("/open".to_string(), None),
        "the skipped policy's request edit reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_policies_fail_within_their_deadline_and_the_gateway_keeps_serving() {
    // (route, plugin, mode): the memory mode gets a small cap so that the cap, not the CPU
    // deadline, stops it; `huge-header-roomy` gets the CPU time to produce its 10 MiB so
    // that the host's bound on what it copies out of a guest, not the deadline, refuses it.
    const CASES: [(&str, &str, &str); 8] = [
        ("loop", "hostile", "loop"),
        ("memory", "hostile-small", "memory"),
        ("recursion", "hostile", "recursion"),
        ("trap", "hostile", "trap"),
        ("huge-header", "hostile", "huge-header"),
        ("huge-header-roomy", "hostile-roomy", "huge-header"),
        // Framing headers are the gateway's: a policy's `content-length` would desync the
        // connection.
        ("false-length", "hostile", "false-length"),
        // A host function that fails, and a policy that does not handle the error.
        ("host-error-unwrap", "hostile", "host-error-unwrap"),
    ];
    let up = Upstream::named("ok").await;
    let mut cfg = format!(
        "{}{}{}{}{}",
        upstream(&up),
        hostile_plugin(),
        plugin(
            "hostile-small",
            "hostile",
            "grants = [\"kv\"]\ncpu_timeout = \"50ms\"\nmax_memory_bytes = 4194304",
        ),
        plugin(
            "hostile-roomy",
            "hostile",
            "grants = [\"kv\"]\ncpu_timeout = \"2s\"\nmax_memory_bytes = 67108864",
        ),
        plugin("noop", "noop", ""),
    );
    cfg.push_str(
        "[[routes]]\nname = \"ok\"\npath = \"/ok\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"noop\"\n\n",
    );
    for (name, p, mode) in CASES
        .iter()
        .chain(&[("host-error", "hostile", "host-error")])
    {
        for phase in ["request", "response"] {
            cfg.push_str(&format!(
                "[[routes]]\nname = \"{name}-{phase}\"\npath = \"/{name}/{phase}\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"{p}\"\nconfig = {{ mode = \"{mode}\", phase = \"{phase}\" }}\nfailure_status = 503\n\n"
            ));
        }
    }
    let mut gw = start(&cfg);

    let mut causes = std::collections::HashMap::new();
    for (name, plugin, _) in CASES {
        for phase in ["request", "response"] {
            // Twice: the instance that failed is discarded and the next call gets a new one.
            for attempt in 0..2 {
                let what = format!("{name} in {phase} (attempt {attempt})");
                let path = format!("/{name}/{phase}");
                let j = hostile_request_fails(&mut gw, &path, &what).await;
                assert_eq!(
                    j["policy"],
                    format!("{name}-{phase}/{plugin}#0"),
                    "{what}: {j}"
                );
                causes.insert(
                    format!("{name}/{phase}"),
                    j["message"].as_str().unwrap().to_string(),
                );
            }
        }
    }
    // What stopped each misbehaviour.
    for (case, cause) in [
        ("loop/request", "CPU deadline exceeded"),
        ("loop/response", "CPU deadline exceeded"),
        ("memory/request", "growing memory"),
        ("trap/request", "unreachable"),
        ("host-error-unwrap/request", "unreachable"),
        ("host-error-unwrap/response", "unreachable"),
        // The host stops copying a decision out of the guest past a few MiB (host-call
        // fuel), before its own bound on header values would refuse it.
        ("huge-header-roomy/request", COPY_LIMIT),
        ("huge-header-roomy/response", COPY_LIMIT),
        ("false-length/request", "the gateway's to set"),
        ("false-length/response", "the gateway's to set"),
    ] {
        assert!(causes[case].contains(cause), "{case}: {}", causes[case]);
    }

    // A host function reporting an error is not a failure of the policy: the fixture
    // answers with the host's error itself, promptly.
    let t = Instant::now();
    let r = get(&gw.url("main", "/host-error/request"), &[]).await;
    assert!(t.elapsed() < HOSTILE_DEADLINE);
    assert_eq!((r.status, r.body.as_str()), (500, "kv key too large"));
    let r = get(&gw.url("main", "/host-error/response"), &[]).await;
    assert_eq!(
        (r.status, r.header("x-hostile-error")),
        (200, Some("kv key too large"))
    );
    assert_eq!(get(&gw.url("main", "/ok"), &[]).await.status, 200);
    assert!(alive(&mut gw));

    // Every failure is logged, labelled with the policy.
    for (name, _, _) in CASES {
        assert!(
            gw.wait_stderr(
                |l| l.contains("policy failed") && l.contains(&format!("{name}-request/")),
                Duration::from_secs(10)
            ),
            "no failure logged for {name}"
        );
    }

    // …and counted, per policy, in the admin API's status.
    let status = policy_counters(&gw).await;
    for (name, _, _) in CASES {
        let failures: u64 = status
            .iter()
            .filter(|p| {
                p["policy"]
                    .as_str()
                    .is_some_and(|l| l.starts_with(&format!("{name}-request/")))
            })
            .map(|p| p["failures"].as_u64().unwrap())
            .sum();
        assert!(failures >= 1, "{name}: {status:?}");
    }
}

/// The per-policy counters of the admin API's `/v1/status` (`policy`, `plugin`,
/// `failures`, `skipped`, `instantiations`).
async fn policy_counters(gw: &Gateway) -> Vec<serde_json::Value> {
    let status = send(
        http::Request::get(format!("{}/v1/status", gw.admin_url()))
            .header("authorization", format!("Bearer {}", gw.admin_token()))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .json();
    status["policies"].as_array().unwrap().clone()
}

/// The counter `key` of the policy labelled `label` (e.g. `route/plugin#0`).
async fn counter(gw: &Gateway, label: &str, key: &str) -> u64 {
    let all = policy_counters(gw).await;
    let p = all
        .iter()
        .find(|p| p["policy"] == label)
        .unwrap_or_else(|| panic!("no policy {label} in {all:?}"));
    p[key].as_u64().unwrap()
}

/// A plugin granted nothing that waits on I/O runs without a fiber and without a wall-clock
/// timer around its calls: the CPU deadline, the memory cap, the stack limit and the bounds
/// on decisions must stop it exactly as they stop a plugin that runs on a fiber, pooled or
/// isolated.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_policies_granted_no_io_fail_within_their_deadline_too() {
    const CASES: [(&str, &str, &str, &str); 5] = [
        ("loop", "sync", "loop", "CPU deadline exceeded"),
        ("memory", "sync-small", "memory", "growing memory"),
        // The guest's shadow stack in linear memory or the host's stack limit: either traps.
        ("recursion", "sync", "recursion", "wasm trap"),
        ("trap", "sync", "trap", "unreachable"),
        ("huge-header", "sync-roomy", "huge-header", COPY_LIMIT),
    ];
    let up = Upstream::named("ok").await;
    let mut cfg = format!(
        "{}{}{}{}",
        upstream(&up),
        plugin(
            "sync",
            "hostile_sync",
            "cpu_timeout = \"50ms\"\ntimeout = \"2s\""
        ),
        plugin(
            "sync-small",
            "hostile_sync",
            "cpu_timeout = \"50ms\"\nmax_memory_bytes = 4194304",
        ),
        plugin(
            "sync-roomy",
            "hostile_sync",
            "cpu_timeout = \"2s\"\nmax_memory_bytes = 67108864",
        ),
    );
    // `/ok` runs a policy that traps in every response phase and fails open: that pooled
    // fiber-less instance is discarded and replaced on every request.
    cfg.push_str(
        "[[routes]]\nname = \"ok\"\npath = \"/ok\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"sync\"\nconfig = { mode = \"trap\", phase = \"response\" }\non_failure = \"open\"\n\n",
    );
    for (name, p, mode, _) in CASES {
        for phase in ["request", "response"] {
            for instances in ["pooled", "isolated"] {
                cfg.push_str(&format!(
                    "[[routes]]\nname = \"{name}-{phase}-{instances}\"\npath = \"/{name}/{phase}/{instances}\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"{p}\"\nconfig = {{ mode = \"{mode}\", phase = \"{phase}\" }}\nmode = \"{instances}\"\nfailure_status = 503\n\n"
                ));
            }
        }
    }
    let mut gw = start(&cfg);
    for (name, _, _, cause) in CASES {
        for phase in ["request", "response"] {
            for instances in ["pooled", "isolated"] {
                // Twice: the failed instance is discarded and the next call gets a new one.
                for attempt in 0..2 {
                    let what = format!("{name} in {phase}, {instances} (attempt {attempt})");
                    let path = format!("/{name}/{phase}/{instances}");
                    let j = hostile_request_fails(&mut gw, &path, &what).await;
                    let message = j["message"].as_str().unwrap();
                    assert!(message.contains(cause), "{what}: {message}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_hostile_requests_leaves_the_gateway_serving() {
    let up = Upstream::named("ok").await;
    let mut cfg = format!(
        "{}{}{}[[routes]]\nname = \"ok\"\npath = \"/ok\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"noop\"\n\n",
        upstream(&up),
        hostile_plugin(),
        plugin("noop", "noop", ""),
    );
    for mode in FAILING_MODES {
        cfg.push_str(&format!(
            "[[routes]]\nname = \"{mode}\"\npath = \"/{mode}\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"hostile\"\nconfig = {{ mode = \"{mode}\" }}\nfailure_status = 503\n\n"
        ));
    }
    let mut gw = start(&cfg);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let hostile = gw.url(
            "main",
            &format!("/{}", FAILING_MODES[i % FAILING_MODES.len()]),
        );
        tasks.push(tokio::spawn(async move { (503, get(&hostile, &[]).await) }));
        if i % 3 == 0 {
            let ok = gw.url("main", "/ok");
            tasks.push(tokio::spawn(async move { (200, get(&ok, &[]).await) }));
        }
    }
    for t in tasks {
        let (want, r) = t.await.unwrap();
        assert_eq!(r.status, want, "{r:?}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the burst took {:?}",
        t.elapsed()
    );
    for _ in 0..20 {
        let r = get(&gw.url("main", "/ok"), &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    }
    assert!(alive(&mut gw));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spinning_policy_is_stopped_at_its_wall_timeout_when_that_comes_first() {
    let up = Upstream::named("ok").await;
    let mut gw = start(&format!(
        r#"{up}{hostile}
[[routes]]
name = "loop"
path = "/loop"
upstream = "u"
[[routes.policies]]
plugin = "hostile"
config = {{ mode = "loop" }}
failure_status = 503

[[routes]]
name = "ok"
path = "/ok"
upstream = "u"
"#,
        up = upstream(&up),
        hostile = plugin(
            "hostile",
            "hostile",
            "grants = [\"kv\"]\ncpu_timeout = \"60s\"\ntimeout = \"300ms\"",
        ),
    ));
    let t = Instant::now();
    let r = get(&gw.url("main", "/loop"), &[]).await;
    assert!(t.elapsed() < HOSTILE_DEADLINE, "took {:?}", t.elapsed());
    assert_eq!(
        (r.status, &r.json()["error"]),
        (503, &"policy_failed".into())
    );
    assert_eq!(get(&gw.url("main", "/ok"), &[]).await.status, 200);
    assert!(alive(&mut gw));
}

/// A configuration whose only policy is the hostile fixture misbehaving in `init`.
fn hostile_init_config(mode: &str) -> String {
    full_config(&format!(
        "{}[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = \"echo\"\n[[routes.policies]]\nplugin = \"hostile\"\nconfig = {{ mode = \"{mode}\", phase = \"init\" }}\n",
        hostile_plugin()
    ))
}

#[test]
fn a_policy_misbehaving_in_init_is_refused_naming_it() {
    warm_cache();
    for mode in FAILING_MODES.iter().chain(&["host-error"]) {
        let t = Instant::now();
        let (code, out) = validate(&hostile_init_config(mode));
        assert!(t.elapsed() < Duration::from_secs(20), "{mode}");
        assert_eq!(code, 2, "{mode}: {out}");
        // An error `init` returned points at the policy's `config`; a trap at the policy
        // (huge-header's 10 MiB error is refused while it is copied out: a trap).
        let at = if *mode == "host-error" {
            "routes[0].policies[0].config: plugin \"hostile\": init refused"
        } else {
            "routes[0].policies[0]: plugin \"hostile\": init failed"
        };
        assert!(out.contains(at), "{mode}: {out}");
        // A hostile init error is not echoed in full (huge-header makes it 10 MiB).
        assert!(out.len() < 8192, "{mode}: {} bytes of output", out.len());
    }
    let (_, out) = validate(&hostile_init_config("loop"));
    assert!(out.contains("CPU deadline exceeded"), "{out}");
    let (_, out) = validate(&hostile_init_config("host-error"));
    assert!(
        out.contains("init refused the configuration: kv key too large"),
        "{out}"
    );
}

#[test]
fn the_gateway_refuses_to_start_with_a_policy_that_traps_in_init() {
    warm_cache();
    let err = match Gateway::try_start(&hostile_init_config("trap")) {
        Ok(_) => panic!("the gateway started with a policy that traps in init"),
        Err(e) => e,
    };
    assert!(
        err.contains("routes[0].policies[0]: plugin \"hostile\": init failed"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Capabilities at load
// ---------------------------------------------------------------------------------------

/// The hostile fixture (which imports kv) with plugin `grants` and optional route `grants`.
fn granted_config(plugin_grants: &str, route_grants: Option<&str>) -> String {
    let route = route_grants.map_or(String::new(), |g| format!("grants = {g}\n"));
    full_config(&format!(
        "{}[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = \"echo\"\n[[routes.policies]]\nplugin = \"hostile\"\nconfig = {{ mode = \"trap\", phase = \"response\" }}\n{route}",
        plugin("hostile", "hostile", &format!("grants = {plugin_grants}"))
    ))
}

#[test]
fn a_plugin_importing_an_ungranted_capability_is_refused_at_load() {
    warm_cache();
    let (code, out) = validate(&granted_config("[\"kv\"]", None));
    assert_eq!(code, 0, "the control configuration is valid: {out}");
    for grants in ["[]", "[\"log\", \"clock\"]"] {
        let (code, out) = validate(&granted_config(grants, None));
        assert_eq!(code, 2, "{grants}: {out}");
        assert!(
            out.contains(
                "routes[0].policies[0]: plugin \"hostile\": the component imports sluice:policy/kv@0.1.0, which is not granted to it"
            ),
            "{grants}: {out}"
        );
    }
    let err = match Gateway::try_start(&granted_config("[]", None)) {
        Ok(_) => panic!("the gateway started with an ungranted import"),
        Err(e) => e,
    };
    assert!(err.contains("sluice:policy/kv@0.1.0"), "{err}");
}

#[test]
fn a_route_policy_cannot_widen_its_plugins_grants_or_drop_an_imported_one() {
    warm_cache();
    let (code, out) = validate(&granted_config("[\"kv\"]", Some("[\"kv\"]")));
    assert_eq!(code, 0, "the control configuration is valid: {out}");
    let (code, out) = validate(&granted_config("[\"kv\"]", Some("[\"kv\", \"log\"]")));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "routes[0].policies[0].grants: sluice:policy/log is not granted to plugin \"hostile\""
        ),
        "{out}"
    );
    let (code, out) = validate(&granted_config("[\"kv\", \"log\"]", Some("[\"log\"]")));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("sluice:policy/kv@0.1.0, which is not granted"),
        "{out}"
    );
    let (code, out) = validate(&granted_config("[\"kv\", \"telepathy\"]", None));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown capability \"telepathy\""), "{out}");
}

// ---------------------------------------------------------------------------------------
// First-party policies
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_accepts_hashed_keys_from_the_header_or_query_and_refuses_others() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{ka}{echo}
[[routes]]
name = "r"
upstream = "u"
[[routes.policies]]
plugin = "key-auth"
config = {{ header = "x-api-key", query_param = "api_key", {consumers} }}
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "e", echo = ["consumer"] }}
"#,
        up = upstream(&up),
        ka = plugin("key-auth", "key_auth", "grants = [\"kv\", \"log\"]"),
        echo = plugin("echo-attrs", "echo_attrs", ""),
        consumers = consumers(),
    ));
    let u = |p: &str| gw.url("main", p);

    let h = get(&u("/a"), &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!((h.status, h.header("x-ctx-consumer")), (200, Some("alice")));
    assert_eq!(last_seen(&up, "x-api-key"), ("/a".to_string(), None));

    let q = get(&u(&format!("/b?x=1&api_key={BOB_KEY}&y=2")), &[]).await;
    assert_eq!((q.status, q.header("x-ctx-consumer")), (200, Some("bob")));
    assert_eq!(last_seen(&up, "x-api-key").0, "/b?x=1&y=2");

    let hits = up.hits();
    for (headers, url, message) in [
        (vec![], u("/c"), "missing API key"),
        (vec![("x-api-key", "wrong")], u("/c"), "invalid API key"),
        (vec![], u("/c?api_key=wrong"), "invalid API key"),
        (
            vec![("x-api-key", ALICE_SHA256)],
            u("/c"),
            "invalid API key",
        ),
    ] {
        let r = get(&url, &headers).await;
        assert_eq!(r.status, 401, "{url} {headers:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("ApiKey realm=\"sluice\"")
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["message"], message, "{url} {headers:?}");
        assert_eq!(r.header("x-ctx-consumer"), None);
    }
    assert_eq!(up.hits(), hits);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_allows_n_per_window_then_answers_429_per_consumer() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{ka}{rl}
[[routes]]
name = "r"
upstream = "u"
[[routes.policies]]
plugin = "key-auth"
config = {{ {consumers} }}
[[routes.policies]]
plugin = "rate-limit"
config = {{ requests = 3, window = "1h", key = "consumer" }}
"#,
        up = upstream(&up),
        ka = plugin("key-auth", "key_auth", "grants = [\"kv\", \"log\"]"),
        rl = plugin("rate-limit", "rate_limit", "grants = [\"rate-limit\"]"),
        consumers = consumers(),
    ));
    let url = gw.url("main", "/");
    let alice = [("x-api-key", ALICE_KEY)];
    for remaining in ["2", "1", "0"] {
        let r = get(&url, &alice).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
        assert_eq!(r.header("ratelimit-remaining"), Some(remaining));
        assert_eq!(r.header("ratelimit-policy"), Some("3;w=3600"));
        let reset: u64 = r.header("ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&reset), "{reset}");
    }
    let refused = get(&url, &alice).await;
    assert_eq!(refused.status, 429);
    assert_eq!(up.hits(), 3);
    assert_eq!(refused.header("ratelimit-limit"), Some("3"));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    assert!(refused.header("ratelimit-reset").is_some());
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=1200).contains(&retry),
        "one request per 20 minutes: {retry}"
    );
    let j = refused.json();
    assert_eq!(j["error"], "too_many_requests");
    assert_eq!(j["retry_after"], retry);

    let bob = get(&url, &[("x-api-key", BOB_KEY)]).await;
    assert_eq!(bob.status, 200, "bob's allowance is his own");
    assert_eq!(bob.header("ratelimit-remaining"), Some("2"));
    assert_eq!(up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_events_appear_in_the_aggregate_by_route_consumer_and_status() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{an}{ka}
[[routes]]
name = "api"
path_prefix = "/api"
upstream = "u"
[[routes.policies]]
plugin = "analytics"
[[routes.policies]]
plugin = "key-auth"
config = {{ {consumers} }}

[[routes]]
name = "stats"
path = "/_analytics"
respond = "analytics"
"#,
        up = upstream(&up),
        an = plugin(
            "analytics",
            "analytics",
            "grants = [\"analytics\", \"clock\"]"
        ),
        ka = plugin("key-auth", "key_auth", "grants = [\"kv\", \"log\"]"),
        consumers = consumers(),
    ));
    let u = |p: &str| gw.url("main", p);
    for _ in 0..2 {
        assert_eq!(
            get(&u("/api/a"), &[("x-api-key", ALICE_KEY)]).await.status,
            200
        );
    }
    assert_eq!(
        get(&u("/api/b"), &[("x-api-key", BOB_KEY)]).await.status,
        200
    );
    assert_eq!(get(&u("/api/c"), &[]).await.status, 401);

    let stats = get(&u("/_analytics"), &[]).await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.header("content-type"), Some("application/json"));
    let rows = stats.json();
    let rows = rows.as_array().expect("a list");
    let row = |consumer: &str, status: &str| {
        rows.iter()
            .find(|r| r["route"] == "api" && r["consumer"] == consumer && r["status"] == status)
            .unwrap_or_else(|| panic!("no row for {consumer} {status}: {rows:?}"))
    };
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(row("alice", "200")["count"], 2);
    assert_eq!(row("bob", "200")["count"], 1);
    assert_eq!(row("", "401")["count"], 1);
    assert!(row("alice", "200")["latency_us_sum"].as_u64().unwrap() > 0);
    // The upstream's body is "ok": two bytes per response.
    assert_eq!(row("alice", "200")["bytes_sum"], 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_answers_preflights_and_marks_responses_for_allowed_origins_only() {
    let up = Upstream::with(|_req| async {
        let mut r = http::Response::new(sluice_tests::upstream::full("ok"));
        r.headers_mut()
            .insert("access-control-allow-origin", "*".parse().unwrap());
        r
    })
    .await;
    let gw = start(&format!(
        r#"{up}{cors}
[[routes]]
name = "r"
upstream = "u"
[[routes.policies]]
plugin = "cors"
config = {{ origins = ["https://app.example.com"], methods = ["GET", "POST", "PUT"], max_age = 600, expose_headers = ["x-request-id"] }}
"#,
        up = upstream(&up),
        cors = plugin("cors", "cors", ""),
    ));
    let url = gw.url("main", "/api");
    const APP: &str = "https://app.example.com";
    const EVIL: &str = "https://evil.example.net";

    let pre = request(
        "OPTIONS",
        &url,
        &[
            ("origin", APP),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "content-type, x-id"),
        ],
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET, POST, PUT")
    );
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("content-type, x-id")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert_eq!(up.hits(), 0, "the gateway answers preflights itself");

    let bad_pre = request(
        "OPTIONS",
        &url,
        &[("origin", EVIL), ("access-control-request-method", "PUT")],
    )
    .await;
    assert_eq!(bad_pre.status, 403);
    assert_eq!(bad_pre.header("access-control-allow-origin"), None);
    assert_eq!(up.hits(), 0);

    let simple = get(&url, &[("origin", APP)]).await;
    assert_eq!(simple.status, 200);
    assert_eq!(simple.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        simple.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    let vary: Vec<_> = simple.headers.get_all("vary").iter().collect();
    assert!(vary.iter().any(|v| *v == "Origin"), "{vary:?}");

    for headers in [vec![("origin", EVIL)], vec![]] {
        let r = get(&url, &headers).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "the upstream's own header is removed for {headers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_restriction_refuses_denied_and_unlisted_client_addresses() {
    let up = Upstream::named("ok").await;
    let route = |name: &str, cfg: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\npath = \"/{name}\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"ip-restriction\"\nconfig = {{ {cfg} }}\n\n"
        )
    };
    let gw = start(&format!(
        "{}{}{}{}{}{}",
        upstream(&up),
        plugin("ip-restriction", "ip_restriction", ""),
        route("deny-local", "deny = [\"127.0.0.1\"]"),
        route("allow-other", "allow = [\"10.0.0.0/8\", \"2001:db8::/32\"]"),
        route("allow-local", "allow = [\"127.0.0.0/8\"]"),
        route(
            "deny-wins",
            "allow = [\"127.0.0.0/8\"], deny = [\"127.0.0.1/32\"], message = \"go away\""
        ),
    ));
    let u = |p: &str| gw.url("main", p);

    let r = get(&u("/deny-local"), &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(r.json()["message"], "client IP not allowed");
    assert_eq!(get(&u("/allow-other"), &[]).await.status, 403);
    // X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
    let spoofed = get(&u("/allow-other"), &[("x-forwarded-for", "10.1.2.3")]).await;
    assert_eq!(spoofed.status, 403);
    let denied = get(&u("/deny-wins"), &[]).await;
    assert_eq!(
        (denied.status, denied.json()["message"].as_str()),
        (403, Some("go away"))
    );
    assert_eq!(up.hits(), 0);

    let ok = get(&u("/allow-local"), &[]).await;
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));
    assert_eq!(up.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// Instance modes and reload
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn isolated_policies_give_the_same_answers_as_pooled_ones() {
    let up = Upstream::named("ok").await;
    let gw = start(&format!(
        r#"{up}{ka}{echo}{hostile}
[[routes]]
name = "r"
path = "/r"
upstream = "u"
[[routes.policies]]
plugin = "key-auth"
config = {{ {consumers} }}
mode = "isolated"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "e", echo = ["consumer"] }}
mode = "isolated"

[[routes]]
name = "trap"
path = "/trap"
upstream = "u"
[[routes.policies]]
plugin = "hostile"
config = {{ mode = "trap" }}
mode = "isolated"
failure_status = 503
"#,
        up = upstream(&up),
        ka = plugin("key-auth", "key_auth", "grants = [\"kv\", \"log\"]"),
        echo = plugin("echo-attrs", "echo_attrs", ""),
        hostile = hostile_plugin(),
        consumers = consumers(),
    ));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let url = gw.url("main", "/r");
        tasks.push(tokio::spawn(async move {
            let (key, want) = match i % 3 {
                0 => (Some(ALICE_KEY), (200, Some("alice"))),
                1 => (Some(BOB_KEY), (200, Some("bob"))),
                _ => (None, (401, None)),
            };
            let headers: Vec<_> = key.map(|k| ("x-api-key", k)).into_iter().collect();
            let r = get(&url, &headers).await;
            assert_eq!(
                (r.status, r.header("x-ctx-consumer")),
                want,
                "request {i}: {r:?}"
            );
            assert_eq!(r.header("x-trace"), (want.0 == 200).then_some("e"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.hits(), 8);
    for _ in 0..2 {
        assert_eq!(get(&gw.url("main", "/trap"), &[]).await.status, 503);
        assert_eq!(
            get(&gw.url("main", "/r"), &[("x-api-key", ALICE_KEY)])
                .await
                .status,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_changed_policy_configuration_and_keeps_rate_limit_state() {
    let up = Upstream::named("ok").await;
    let cfg = |name: &str| {
        full_config(&format!(
            r#"{up}{echo}{rl}
[[routes]]
name = "r"
upstream = "u"
[[routes.policies]]
plugin = "echo-attrs"
config = {{ name = "{name}" }}
[[routes.policies]]
plugin = "rate-limit"
config = {{ requests = 2, window = "1h", key = "client_ip" }}
"#,
            up = upstream(&up),
            echo = plugin("echo-attrs", "echo_attrs", ""),
            rl = plugin("rate-limit", "rate_limit", "grants = [\"rate-limit\"]"),
        ))
    };
    warm_cache();
    let gw = Gateway::start(&cfg("v1"));
    let url = gw.url("main", "/");
    let r = get(&url, &[]).await;
    assert_eq!((r.status, r.header("x-trace")), (200, Some("v1")));
    assert_eq!(r.header("ratelimit-remaining"), Some("1"));

    std::fs::write(gw.config_path(), cfg("v2")).unwrap();
    gw.signal("HUP");
    assert!(gw.wait_stderr(
        |l| l.contains("configuration reloaded"),
        Duration::from_secs(20)
    ));
    let r = get(&url, &[]).await;
    assert_eq!((r.status, r.header("x-trace")), (200, Some("v2")));
    assert_eq!(
        r.header("ratelimit-remaining"),
        Some("0"),
        "the limiter's state survives the reload"
    );
    let r = get(&url, &[]).await;
    assert_eq!((r.status, r.header("x-trace")), (429, Some("v2")));

    // A policy refusing its new configuration rejects the whole reload.
    std::fs::write(gw.config_path(), cfg("bad,name")).unwrap();
    gw.signal("HUP");
    assert!(gw.wait_stderr(
        |l| l.contains("reload rejected") && l.contains("echo-attrs"),
        Duration::from_secs(20)
    ));
    let r = get(&url, &[]).await;
    assert_eq!(r.header("x-trace"), Some("v2"));
    assert_eq!(up.hits(), 2);
}
