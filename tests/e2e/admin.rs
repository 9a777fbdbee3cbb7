//! The admin API and the `sluice` CLI against the real binary: authentication and roles,
//! every upload refusal (413, 422 for random bytes, a core module, an empty component, an
//! ungranted import, a bad signature), ETags (412), nothing half-applied, hot swap and
//! rollback, restart, 30 swaps under load with no failed request (battery row 12), kill -9
//! during admin writes (row 14), the OpenAPI document against the served routes, and the
//! CLI's commands and exit codes.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use sluice_tests::gateway::binary;
use sluice_tests::{Gateway, Resp, plugin_path, send};
use tokio::io::AsyncReadExt;

use crate::policies::{policy_settings, warm_cache};

/// A gateway with the shared compile cache and `extra` configuration.
fn gateway(extra: &str) -> Gateway {
    warm_cache();
    Gateway::start(&crate::config(&format!("{}{extra}", policy_settings())))
}

/// One admin call.
async fn admin(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Resp {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", gw.admin_url()));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap(),
    )
    .await
}

async fn as_admin(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> Resp {
    let token = gw.admin_token();
    admin(
        gw,
        method,
        path,
        Some(&token),
        body.map(|b| b.to_string().into_bytes()),
        &[],
    )
    .await
}

async fn push(gw: &Gateway, name: &str, file: &str, grants: &str) -> Resp {
    let bytes = std::fs::read(plugin_path(file)).unwrap();
    let token = gw.admin_token();
    let path = format!("/v1/plugins/{name}/versions?grants={grants}");
    admin(gw, "POST", &path, Some(&token), Some(bytes), &[]).await
}

async fn get(gw: &Gateway, path: &str) -> Resp {
    sluice_tests::get(&gw.url("main", path), &[]).await
}

fn problem(r: &Resp, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    let j = r.json();
    assert_eq!(j["status"], status);
    assert!(j["type"].as_str().unwrap().starts_with("https://"));
    j
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_valid_token_get_401_and_health_endpoints_are_open() {
    let gw = gateway("");
    assert_eq!(
        admin(&gw, "GET", "/healthz", None, None, &[]).await.status,
        200
    );
    assert_eq!(
        admin(&gw, "GET", "/readyz", None, None, &[]).await.status,
        200
    );
    for token in [None, Some("wrong-token-value")] {
        for (method, path) in [
            ("GET", "/v1/status"),
            ("PUT", "/v1/routes/x"),
            ("GET", "/v1/openapi.json"),
        ] {
            let r = admin(&gw, method, path, token, Some(b"{}".to_vec()), &[]).await;
            problem(&r, 401);
            assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        }
    }
    let r = as_admin(&gw, "GET", "/v1/status", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], env!("CARGO_PKG_VERSION"));
    // The bootstrap token file is readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(gw.dir().join("data/admin-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_tokens_read_but_every_write_gets_403() {
    let gw = gateway("");
    let r = as_admin(
        &gw,
        "POST",
        "/v1/tokens",
        Some(json!({ "name": "viewer", "role": "read-only" })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let viewer = r.json()["token"].as_str().unwrap().to_string();
    let read = admin(&gw, "GET", "/v1/routes", Some(&viewer), None, &[]).await;
    assert_eq!(read.status, 200);
    // The configuration document shows credential hashes to admin tokens only.
    let created = as_admin(&gw, "PUT", "/v1/consumers/alice", Some(json!({}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let cred = as_admin(&gw, "POST", "/v1/consumers/alice/credentials", None).await;
    assert_eq!(cred.status, 201, "{}", cred.body);
    let credential = |config: &Resp| config.json()["consumers"]["alice"]["credentials"][0].clone();
    let full = as_admin(&gw, "GET", "/v1/config", None).await;
    assert_eq!(
        credential(&full)["sha256"].as_str().map(str::len),
        Some(64),
        "{}",
        full.body
    );
    let seen = admin(&gw, "GET", "/v1/config", Some(&viewer), None, &[]).await;
    assert_eq!(seen.status, 200);
    assert!(credential(&seen).get("sha256").is_none(), "{}", seen.body);
    assert_eq!(credential(&seen)["id"], credential(&full)["id"]);
    for (method, path) in [
        ("PUT", "/v1/routes/x"),
        ("POST", "/v1/tokens"),
        ("DELETE", "/v1/tokens/viewer"),
        ("POST", "/v1/plugins/p/versions"),
        ("PUT", "/v1/config"),
    ] {
        let r = admin(&gw, method, path, Some(&viewer), Some(b"{}".to_vec()), &[]).await;
        problem(&r, 403);
    }
    // Deleting the token revokes it.
    assert_eq!(
        as_admin(&gw, "DELETE", "/v1/tokens/viewer", None)
            .await
            .status,
        204
    );
    problem(
        &admin(&gw, "GET", "/v1/routes", Some(&viewer), None, &[]).await,
        401,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_are_refused_with_the_reason_and_change_nothing() {
    let gw = gateway("[admin]\nbind = \"127.0.0.1:0\"\nmax_plugin_bytes = 200000\n");
    let token = gw.admin_token();
    let upload = |body: Vec<u8>, grants: &'static str| {
        let (gw, token) = (&gw, token.clone());
        async move {
            let path = format!("/v1/plugins/p/versions?grants={grants}");
            admin(gw, "POST", &path, Some(&token), Some(body), &[]).await
        }
    };
    let too_big = upload(vec![0u8; 200_001], "").await;
    assert!(
        problem(&too_big, 413)["detail"]
            .as_str()
            .unwrap()
            .contains("max_plugin_bytes")
    );

    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("random bytes", random, "", "not a usable component"),
        (
            "a core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "",
            "not a usable component",
        ),
        (
            "an empty component of no sluice world",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "",
            "not a sluice:policy component",
        ),
        (
            "an ungranted import",
            std::fs::read(plugin_path("kv_probe")).unwrap(),
            "log",
            "sluice:policy/kv",
        ),
        (
            "an unknown capability",
            std::fs::read(plugin_path("noop")).unwrap(),
            "files",
            "unknown capability",
        ),
    ];
    for (what, body, grants, reason) in cases {
        let r = upload(body, grants).await;
        let j = problem(&r, 422);
        assert!(r.body.contains(reason), "{what}: {}", r.body);
        assert!(j["detail"].is_string());
    }
    // A name is a kv namespace and the part before `@` of a pinned reference: `a}:x` would
    // share Redis keys with plugin `a`, `a@x` would read as a pin.
    for name in ["a%7D%3Ax", "a%40x", "a%20b"] {
        let path = format!("/v1/plugins/{name}/versions");
        let bytes = std::fs::read(plugin_path("noop")).unwrap();
        let r = admin(&gw, "POST", &path, Some(&token), Some(bytes), &[]).await;
        problem(&r, 422);
        assert!(r.body.contains("invalid name"), "{name}: {}", r.body);
    }
    let config = as_admin(&gw, "GET", "/v1/config", None).await;
    assert_eq!(config.header("etag"), Some("\"0\""), "nothing was stored");
    assert_eq!(config.json()["plugins"], json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_need_a_signature_by_a_trusted_key_when_keys_are_configured_until_restart() {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let public = b64.encode(ring::signature::KeyPair::public_key(&key).as_ref());
    let gw = gateway(&format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntrusted_keys = [\"{public}\"]\n"
    ));
    let token = gw.admin_token();
    let bytes = std::fs::read(plugin_path("noop")).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let good = b64.encode(key.sign(digest.as_ref()).as_ref());
    let wrong = b64.encode(key.sign(b"something else").as_ref());
    let path = "/v1/plugins/p/versions";
    let unsigned = admin(&gw, "POST", path, Some(&token), Some(bytes.clone()), &[]).await;
    assert!(
        problem(&unsigned, 422)["detail"]
            .as_str()
            .unwrap()
            .contains("signature")
    );
    let bad = [("x-sluice-signature", wrong.as_str())];
    let r = admin(&gw, "POST", path, Some(&token), Some(bytes.clone()), &bad).await;
    assert!(
        problem(&r, 422)["detail"]
            .as_str()
            .unwrap()
            .contains("does not verify")
    );
    let signed = [("x-sluice-signature", good.as_str())];
    let r = admin(&gw, "POST", path, Some(&token), Some(bytes), &signed).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let p = as_admin(&gw, "GET", "/v1/plugins/p", None).await.json();
    assert_eq!(p["versions"][0]["signed"], true);

    // `[admin]` is read at start only: a reload of a file without the keys does not turn
    // the check off (it logs that the change needs a restart).
    let file = std::fs::read_to_string(gw.config_path()).unwrap();
    let without_keys: String = file
        .lines()
        .filter(|l| !l.starts_with("trusted_keys"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(file, without_keys);
    std::fs::write(gw.config_path(), without_keys).unwrap();
    gw.signal("HUP");
    assert!(gw.wait_stderr(
        |l| l.contains("configuration reloaded"),
        std::time::Duration::from_secs(10)
    ));
    let bytes = std::fs::read(plugin_path("noop")).unwrap();
    let unsigned = admin(&gw, "POST", path, Some(&token), Some(bytes), &[]).await;
    assert!(
        problem(&unsigned, 422)["detail"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{}",
        unsigned.body
    );
}

/// A gateway with `[admin] trusted_keys` uses an uploaded version only if its stored
/// signature verifies against the keys it runs with: once a key is removed, a rollback to a
/// version it signed and a route pinning one are refused (422, naming the version), and a
/// start whose active version it signed is refused, naming the plugin.
#[tokio::test(flavor = "multi_thread")]
async fn only_versions_signed_by_a_currently_trusted_key_are_used() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let keypair = || {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    };
    let (k1, k2) = (keypair(), keypair());
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = std::fs::read(plugin_path("noop")).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let sign = |k: &Ed25519KeyPair| b64.encode(k.sign(digest.as_ref()).as_ref());
    let state = tempfile::tempdir().unwrap();
    let token = "sk_test_trusted_keys_0123456789abcdef";
    let start = |keys: &[&Ed25519KeyPair]| {
        warm_cache();
        let keys: Vec<String> = keys
            .iter()
            .map(|k| format!("\"{}\"", b64.encode(k.public_key().as_ref())))
            .collect();
        Gateway::try_start_with_env(
            &crate::config(&format!(
                "{}[state]\npath = \"{}\"\n\n[admin]\nbind = \"127.0.0.1:0\"\ntrusted_keys = [{}]\n",
                policy_settings(),
                state.path().join("store.redb").display(),
                keys.join(", ")
            )),
            &[("SLUICE_ADMIN_TOKEN", token)],
        )
    };

    // Both keys trusted: version 1 is signed by k1, version 2 (active) by k2.
    let gw = start(&[&k1, &k2]).expect("start with both keys");
    for k in [&k1, &k2] {
        let sig = sign(k);
        let r = admin(
            &gw,
            "POST",
            "/v1/plugins/p/versions",
            Some(token),
            Some(bytes.clone()),
            &[("x-sluice-signature", sig.as_str())],
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    drop(gw);

    // k1 removed: version 2 serves, version 1 is not used.
    let gw = start(&[&k2]).expect("start with k2: the active version is k2's");
    let json_body = |v: Value| Some(v.to_string().into_bytes());
    let r = admin(
        &gw,
        "POST",
        "/v1/plugins/p/rollback",
        Some(token),
        json_body(json!({ "version": 1 })),
        &[],
    )
    .await;
    problem(&r, 422);
    assert!(
        r.body.contains("version 1 of plugin")
            && r.body.contains("no longer in admin.trusted_keys"),
        "{}",
        r.body
    );
    let p = admin(&gw, "GET", "/v1/plugins/p", Some(token), None, &[]).await;
    assert_eq!(p.json()["active"], 2, "{}", p.body);
    for (reference, status) in [("p@1", 422), ("p@2", 201)] {
        let route = json!({ "path_prefix": "/pin/", "respond": "echo", "policies": [{ "plugin": reference }] });
        let r = admin(
            &gw,
            "PUT",
            "/v1/routes/pin",
            Some(token),
            json_body(route),
            &[],
        )
        .await;
        assert_eq!(r.status, status, "{reference}: {}", r.body);
    }
    assert_eq!(get(&gw, "/pin/x").await.status, 200);
    drop(gw);

    // k2 removed: the active version is no longer trusted, and the gateway does not start.
    let err = start(&[&k1])
        .err()
        .expect("a start with an untrusted active version");
    assert!(
        err.contains("plugins.p")
            && err.contains("version 2 of plugin \"p\" was signed by a key no longer"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_have_etags_stale_writes_get_412_and_invalid_ones_change_nothing() {
    let gw = gateway("");
    let token = gw.admin_token();
    let route = json!({ "path": "/api-route", "respond": "echo" });
    let created = as_admin(&gw, "PUT", "/v1/routes/r", Some(route)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let etag = created.header("etag").unwrap().to_string();
    assert_eq!(
        get(&gw, "/api-route").await.status,
        200,
        "live after the call returns"
    );
    assert_eq!(
        as_admin(&gw, "GET", "/v1/routes/r", None)
            .await
            .header("etag"),
        Some(etag.as_str())
    );

    let v2 = json!({ "path": "/api-route-2", "respond": "echo" }).to_string();
    let r = admin(
        &gw,
        "PUT",
        "/v1/routes/r",
        Some(&token),
        Some(v2.clone().into_bytes()),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The old ETag is now stale.
    let stale = admin(
        &gw,
        "PUT",
        "/v1/routes/r",
        Some(&token),
        Some(v2.into_bytes()),
        &[("if-match", &etag)],
    )
    .await;
    problem(&stale, 412);
    let stale_delete = admin(
        &gw,
        "DELETE",
        "/v1/routes/r",
        Some(&token),
        None,
        &[("if-match", &etag)],
    )
    .await;
    problem(&stale_delete, 412);

    // A route naming an unknown upstream: 422 with the field path; nothing changes.
    let before = as_admin(&gw, "GET", "/v1/config", None).await;
    let bad = json!({ "path": "/bad", "upstream": "nowhere" });
    let r = as_admin(&gw, "PUT", "/v1/routes/bad", Some(bad)).await;
    let j = problem(&r, 422);
    assert!(
        j["errors"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("routes["),
        "{j}"
    );
    assert!(r.body.contains("nowhere"), "{}", r.body);
    let after = as_admin(&gw, "GET", "/v1/config", None).await;
    assert_eq!(before.body, after.body);
    assert_eq!(before.header("etag"), after.header("etag"));
    assert_eq!(get(&gw, "/bad").await.status, 404);
    assert_eq!(get(&gw, "/api-route-2").await.status, 200);

    // A file route's name cannot be taken over.
    let gw2 = gateway("[[routes]]\nname = \"fixed\"\npath = \"/fixed\"\nrespond = \"echo\"\n");
    let r = as_admin(
        &gw2,
        "PUT",
        "/v1/routes/fixed",
        Some(json!({ "path": "/x", "respond": "echo" })),
    )
    .await;
    assert!(
        problem(&r, 422)["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("defined in the file")
    );
}

/// A route `/r/…` answered by the echo responder behind plugin `p`.
fn route_with_plugin(tag: u32) -> Value {
    json!({
        "path_prefix": "/r/",
        "respond": "echo",
        "response_headers": { "set": { "x-rev": tag.to_string() } },
        "policies": [{ "plugin": "p" }],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_plugin_serves_the_next_request_and_rollback_restores_the_previous_one() {
    let gw = gateway("");
    let r = push(&gw, "p", "noop", "kv").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["version"], 1);
    let r = as_admin(&gw, "PUT", "/v1/routes/r", Some(route_with_plugin(0))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // noop continues: the echo responder answers.
    assert_eq!(get(&gw, "/r/kv/k").await.status, 200);

    // Version 2 (the kv probe) answers /kv/ paths itself: 404 for a missing key.
    let r = push(&gw, "p", "kv_probe", "").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["version"], 2);
    assert_eq!(
        get(&gw, "/r/kv/k").await.status,
        404,
        "v2 serves the next request"
    );
    // A route may pin a version, by number or by digest.
    let v1 = as_admin(&gw, "GET", "/v1/plugins/p", None).await.json()["versions"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for (name, reference) in [
        ("pin-n", "p@1".to_string()),
        ("pin-d", format!("p@sha256:{}", &v1[..12])),
    ] {
        let route = json!({
            "path_prefix": format!("/{name}/"),
            "respond": "echo",
            "policies": [{ "plugin": reference }],
        });
        let r = as_admin(&gw, "PUT", &format!("/v1/routes/{name}"), Some(route)).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(
            get(&gw, &format!("/{name}/kv/k")).await.status,
            200,
            "{name} runs v1"
        );
        assert_eq!(
            as_admin(&gw, "DELETE", &format!("/v1/routes/{name}"), None)
                .await
                .status,
            204
        );
    }
    let missing =
        json!({ "path_prefix": "/pin-x/", "respond": "echo", "policies": [{ "plugin": "p@9" }] });
    let r = as_admin(&gw, "PUT", "/v1/routes/pin-x", Some(missing)).await;
    assert!(
        problem(&r, 422)["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no version")
    );

    let r = as_admin(&gw, "POST", "/v1/plugins/p/rollback", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"], 1);
    assert_eq!(get(&gw, "/r/kv/k").await.status, 200, "v1 again");

    let status = as_admin(&gw, "GET", "/v1/status", None).await.json();
    let p = &status["plugins"].as_array().unwrap()[0];
    assert_eq!(
        (p["name"].as_str(), p["version"].as_u64()),
        (Some("p"), Some(1))
    );
    let policy = &status["policies"].as_array().unwrap()[0];
    assert_eq!(policy["plugin"], "p");
    assert!(policy["instantiations"].as_u64().unwrap() >= 1, "{policy}");
    assert_eq!(policy["failures"], 0);

    // A plugin in use cannot be removed; the route goes first.
    problem(&as_admin(&gw, "DELETE", "/v1/plugins/p", None).await, 422);
    assert_eq!(
        as_admin(&gw, "DELETE", "/v1/routes/r", None).await.status,
        204
    );
    assert_eq!(
        as_admin(&gw, "DELETE", "/v1/plugins/p", None).await.status,
        204
    );
}

/// A configuration whose store and token file live in `dir` (so a second process finds
/// them).
fn persistent(dir: &std::path::Path) -> String {
    format!(
        "[state]\npath = \"{0}/store.redb\"\n\n[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"{0}/token\"\n",
        dir.display()
    )
}

fn token_in(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("token"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_routes_plugins_consumers_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway(&persistent(dir.path()));
    let token = token_in(dir.path());
    let call = |gw: &Gateway, m: &'static str, p: &'static str, b: Option<Value>| {
        let token = token.clone();
        let gw_url = gw.admin_url();
        async move {
            let mut req = http::Request::builder()
                .method(m)
                .uri(format!("{gw_url}{p}"))
                .header("authorization", format!("Bearer {token}"));
            req = req.header("content-type", "application/json");
            send(
                req.body(Full::new(Bytes::from(
                    b.map(|b| b.to_string()).unwrap_or_default(),
                )))
                .unwrap(),
            )
            .await
        }
    };
    let bytes = std::fs::read(plugin_path("noop")).unwrap();
    let up = admin(
        &gw,
        "POST",
        "/v1/plugins/p/versions",
        Some(&token),
        Some(bytes),
        &[],
    )
    .await;
    assert_eq!(up.status, 201, "{}", up.body);
    assert_eq!(
        call(&gw, "PUT", "/v1/routes/r", Some(route_with_plugin(7)))
            .await
            .status,
        201
    );
    assert_eq!(
        call(
            &gw,
            "PUT",
            "/v1/consumers/alice",
            Some(json!({ "tags": ["gold"] }))
        )
        .await
        .status,
        201
    );
    let before = call(&gw, "GET", "/v1/config", None).await;
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(10)).expect("exits");

    let gw = gateway(&persistent(dir.path()));
    let after = call(&gw, "GET", "/v1/config", None).await;
    assert_eq!(
        after.status, 200,
        "the old token still works: {}",
        after.body
    );
    assert_eq!(before.body, after.body);
    let r = get(&gw, "/r/anything").await;
    assert_eq!((r.status, r.header("x-rev")), (200, Some("7")));
    assert!(
        gw.stderr()
            .iter()
            .any(|l| l.contains("plugin compiled") && l.contains("plugin=p"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_swaps_and_route_changes_under_load_fail_no_request() {
    let gw = Arc::new(gateway(""));
    assert_eq!(push(&gw, "p", "noop", "kv").await.status, 201);
    assert_eq!(
        as_admin(&gw, "PUT", "/v1/routes/r", Some(route_with_plugin(0)))
            .await
            .status,
        201
    );
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop) = (gw.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = get(&gw, "/r/load").await;
                    seen.push((r.status, r.header("x-rev").map(String::from)));
                }
                seen
            })
        })
        .collect();
    for i in 1..=30u32 {
        let r = if i % 2 == 0 {
            let file = if i % 4 == 0 { "noop" } else { "kv_probe" };
            push(&gw, "p", file, "").await
        } else {
            as_admin(&gw, "PUT", "/v1/routes/r", Some(route_with_plugin(i))).await
        };
        assert!(r.status == 200 || r.status == 201, "change {i}: {}", r.body);
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for l in loaders {
        for (status, rev) in l.await.unwrap() {
            total += 1;
            assert_eq!(status, 200);
            let rev: u32 = rev.expect("x-rev").parse().unwrap();
            assert!(rev <= 29 && rev % 2 == 1 || rev == 0, "x-rev {rev}");
        }
    }
    assert!(total > 30, "{total} requests");
    // The listener was never rebound.
    assert_eq!(
        gw.stderr()
            .iter()
            .filter(|l| l.contains(" listening ") && l.contains("listener=main"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_admin_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = gateway(&persistent(dir.path()));
    let token = token_in(dir.path());
    let url = gw.admin_url();
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (acked, token) = (acked.clone(), token.clone());
        tokio::spawn(async move {
            let client = sluice_tests::client();
            for i in 0.. {
                let req = http::Request::put(format!("{url}/v1/consumers/c{i}"))
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap();
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(r)) if r.status() == 201 => acked.lock().unwrap().push(format!("c{i}")),
                    Ok(Ok(r)) => panic!("write answered {}", r.status()),
                    _ => return,
                }
            }
        })
    };
    // Kill once a few dozen writes are acknowledged, while more are in flight.
    while acked.lock().unwrap().len() < 40 {
        tokio::task::yield_now().await;
    }
    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(10)).expect("killed");
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();

    let gw = gateway(&persistent(dir.path()));
    let r = admin(&gw, "GET", "/v1/consumers", Some(&token), None, &[]).await;
    assert_eq!(r.status, 200);
    let names: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for a in &acked {
        assert!(names.contains(a), "{a} was acknowledged but is gone");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_exactly_the_served_endpoints() {
    let gw = gateway("");
    let doc = as_admin(&gw, "GET", "/v1/openapi.json", None).await.json();
    // The document is valid OpenAPI 3.1 (openapi-spec-validator, installed by the justfile).
    let file = gw.dir().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let check = Command::new("python3")
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()
        .expect("python3");
    assert!(
        check.status.success(),
        "invalid OpenAPI document: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{} paths", paths.len());
    for (path, item) in paths {
        let concrete = path.replace("{name}", "x").replace("{id}", "y");
        for method in ["get", "put", "post", "delete"] {
            let documented = item.get(method).is_some();
            let r = as_admin(&gw, &method.to_uppercase(), &concrete, None).await;
            let unrouted =
                r.status == 405 || (r.status == 404 && r.body.contains("no such endpoint"));
            assert_eq!(
                documented, !unrouted,
                "{method} {path}: {} {}",
                r.status, r.body
            );
        }
    }
    // And an undocumented path is not served.
    let r = as_admin(&gw, "GET", "/v1/nothing-here", None).await;
    assert!(
        problem(&r, 404)["detail"]
            .as_str()
            .unwrap()
            .contains("no such endpoint")
    );
}

/// Connections that never send a request cannot hold the admin API's connection slots: each
/// is closed after the 10 s request-head deadline, and the API answers again.
#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_cannot_lock_out_the_admin_api() {
    const SLOTS: usize = 64;
    let gw = gateway("");
    let addr = gw.addr("admin");
    let mut silent = Vec::new();
    for _ in 0..SLOTS + 4 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let start = std::time::Instant::now();
    let health = sluice_tests::within(
        Duration::from_secs(30),
        admin(&gw, "GET", "/healthz", None, None, &[]),
    )
    .await;
    assert_eq!(health.status, 200);
    assert!(
        start.elapsed() >= Duration::from_secs(5),
        "answered after {:?}: the slots were not all taken",
        start.elapsed()
    );
    for mut s in silent {
        let mut buf = [0u8; 64];
        let n = sluice_tests::within(Duration::from_secs(30), s.read(&mut buf))
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "a silent connection got {:?}", &buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_admin_bind_without_tls_is_refused() {
    warm_cache();
    let err = Gateway::try_start(&crate::config("[admin]\nbind = \"0.0.0.0:0\"\n"))
        .err()
        .expect("refused");
    assert!(err.contains("not a loopback address"), "{err}");
    // Located, as `validate` would say it: the file's line 9, the key.
    assert!(err.contains(":9: admin.bind: 0.0.0.0:0"), "{err}");
}

/// Runs the CLI against `gw`; returns (exit code, stdout, stderr).
fn cli(gw: &Gateway, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env("SLUICE_ADMIN_URL", gw.admin_url())
        .env("SLUICE_ADMIN_TOKEN", token)
        .output()
        .expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_pushes_lists_rolls_back_applies_exports_and_reports_failures_by_exit_code() {
    let gw = gateway("");
    let token = gw.admin_token();
    let noop = plugin_path("noop").display().to_string();
    let probe = plugin_path("kv_probe").display().to_string();

    let (code, out, err) = cli(
        &gw,
        &token,
        &["plugin", "push", "p", &noop, "--grants", "kv"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("p version 1 is live"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.toml");
    std::fs::write(
        &file,
        "[[routes]]\nname = \"r\"\npath_prefix = \"/r/\"\nrespond = \"echo\"\n[[routes.policies]]\nplugin = \"p\"\n\n[upstreams.u]\ntargets = [{ address = \"127.0.0.1:9\" }]\n",
    )
    .unwrap();
    let (code, out, err) = cli(&gw, &token, &["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("+ route r") && out.contains("+ upstream u"),
        "{out}"
    );
    let (code, out, _) = cli(&gw, &token, &["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(
        (code, out.contains("no changes")),
        (0, true),
        "idempotent: {out}"
    );
    assert_eq!(get(&gw, "/r/kv/k").await.status, 200);

    let (code, out, err) = cli(&gw, &token, &["plugin", "push", "p", &probe]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 2"), "{out}");
    assert_eq!(get(&gw, "/r/kv/k").await.status, 404);
    let (code, out, _) = cli(&gw, &token, &["plugin", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("p ") && l.contains(" 2 ")),
        "{out}"
    );
    let (code, out, _) = cli(&gw, &token, &["plugin", "rollback", "p"]);
    assert_eq!((code, out.trim()), (0, "p: version 1 is live"));
    assert_eq!(get(&gw, "/r/kv/k").await.status, 200);

    let (code, out, _) = cli(&gw, &token, &["route", "list"]);
    assert!(
        code == 0 && out.contains("r ") && out.contains("/r/"),
        "{out}"
    );
    let (code, out, _) = cli(&gw, &token, &["route", "get", "r"]);
    assert!(
        code == 0 && out.contains("[[routes]]") && out.contains("path_prefix = \"/r/\""),
        "{out}"
    );
    let (code, out, _) = cli(&gw, &token, &["--json", "status"]);
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["plugins"][0]["version"], 1);

    let (code, out, _) = cli(
        &gw,
        &token,
        &["consumer", "add", "alice", "--tag", "gold", "--key"],
    );
    assert!(
        code == 0 && out.contains("api key (shown once): sk_"),
        "{out}"
    );
    let (code, out, _) = cli(&gw, &token, &["consumer", "list"]);
    assert!(
        code == 0 && out.contains("alice") && out.contains("gold"),
        "{out}"
    );
    let (code, out, _) = cli(
        &gw,
        &token,
        &["token", "create", "ci", "--role", "read-only"],
    );
    assert!(code == 0 && out.contains("shown once: sk_"), "{out}");
    let viewer = out.trim().rsplit(' ').next().unwrap().to_string();
    let (code, _, err) = cli(&gw, &viewer, &["consumer", "rm", "alice"]);
    assert_eq!(code, 1, "a refused call exits 1: {err}");
    assert!(err.contains("403") && err.contains("read-only"), "{err}");
    let (code, _, _) = cli(&gw, &token, &["token", "rm", "ci"]);
    assert_eq!(code, 0);

    // export → apply round-trips.
    let (code, exported, _) = cli(&gw, &token, &["export"]);
    assert_eq!(code, 0);
    let again = dir.path().join("exported.toml");
    std::fs::write(&again, &exported).unwrap();
    let (code, out, err) = cli(&gw, &token, &["apply", "-f", again.to_str().unwrap()]);
    assert_eq!((code, out.contains("no changes")), (0, true), "{out}{err}");

    let (code, _, err) = cli(&gw, "wrong-token-value", &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");
    let (code, _, _) = cli(&gw, &token, &["route", "rm", "r"]);
    assert_eq!(code, 0);
    let (code, _, err) = cli(&gw, &token, &["route", "rm", "r"]);
    assert_eq!(code, 1, "{err}");

    let unreachable = Command::new(binary())
        .args(["status", "--admin", "http://127.0.0.1:9"])
        .env("SLUICE_ADMIN_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_copies_the_store_while_the_gateway_runs() {
    let gw = gateway("");
    assert_eq!(
        as_admin(&gw, "PUT", "/v1/consumers/bob", Some(json!({})))
            .await
            .status,
        201
    );
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("backup.redb");
    let state = gw.dir().join("data/sluice.redb");
    let out = Command::new(binary())
        .args([
            "backup",
            "--state",
            state.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The copy opens as a store and holds the consumer.
    let copy = sluice::state::Db::open(&to).unwrap();
    let (managed, revision) = copy.managed().unwrap();
    assert!(managed.consumers.contains_key("bob"));
    assert_eq!(revision, 1);
}

/// A change whose stored form would nest deeper than the store can read back is refused
/// with 422 and stores nothing: the configuration stays readable, and changeable.
#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_nested_too_deeply_to_read_back_is_refused_and_nothing_breaks() {
    let gw = gateway(&crate::policies::plugin("noop", "noop", ""));
    // As deep as a request body may be, which the stored document exceeds.
    let mut config = json!(1);
    for _ in 0..123 {
        config = json!({ "a": config });
    }
    let route = json!({ "path": "/deep", "respond": "echo",
                        "policies": [{ "plugin": "noop", "config": { "a": config } }] });
    let r = as_admin(&gw, "PUT", "/v1/routes/deep", Some(route)).await;
    assert!(
        problem(&r, 422)["errors"]
            .to_string()
            .contains("nested too deeply"),
        "{}",
        r.body
    );
    let got = as_admin(&gw, "GET", "/v1/config", None).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let ok = json!({ "path": "/shallow", "respond": "echo" });
    assert_eq!(
        as_admin(&gw, "PUT", "/v1/routes/shallow", Some(ok))
            .await
            .status,
        201
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_auth_accepts_the_api_keys_of_stored_consumers_until_they_are_deleted() {
    let gw = gateway(&crate::policies::plugin(
        "key-auth",
        "key_auth",
        "grants = [\"kv\", \"log\"]",
    ));
    assert_eq!(
        as_admin(&gw, "PUT", "/v1/consumers/alice", Some(json!({})))
            .await
            .status,
        201
    );
    let cred = as_admin(&gw, "POST", "/v1/consumers/alice/credentials", None).await;
    assert_eq!(cred.status, 201, "{}", cred.body);
    let (key, id) = {
        let j = cred.json();
        (
            j["key"].as_str().unwrap().to_string(),
            j["id"].as_str().unwrap().to_string(),
        )
    };
    // Only the hash is stored.
    let config = as_admin(&gw, "GET", "/v1/config", None).await;
    assert!(!config.body.contains(&key));
    let route = json!({
        "path_prefix": "/secure/",
        "respond": "echo",
        "policies": [{ "plugin": "key-auth", "config": { "consumers": "@consumers" } }],
    });
    let r = as_admin(&gw, "PUT", "/v1/routes/secure", Some(route)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let url = gw.url("main", "/secure/x");
    assert_eq!(sluice_tests::get(&url, &[]).await.status, 401);
    assert_eq!(
        sluice_tests::get(&url, &[("x-api-key", &key)]).await.status,
        200
    );

    // A second consumer's key works at once; deleting alice's credential revokes hers.
    assert_eq!(
        as_admin(&gw, "PUT", "/v1/consumers/bob", Some(json!({})))
            .await
            .status,
        201
    );
    let bob = as_admin(&gw, "POST", "/v1/consumers/bob/credentials", None)
        .await
        .json();
    let bob_key = bob["key"].as_str().unwrap().to_string();
    assert_eq!(
        sluice_tests::get(&url, &[("x-api-key", &bob_key)])
            .await
            .status,
        200
    );
    let path = format!("/v1/consumers/alice/credentials/{id}");
    assert_eq!(as_admin(&gw, "DELETE", &path, None).await.status, 204);
    assert_eq!(
        sluice_tests::get(&url, &[("x-api-key", &key)]).await.status,
        401
    );
    assert_eq!(
        sluice_tests::get(&url, &[("x-api-key", &bob_key)])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scaffolded_policy_passes_its_test_builds_and_serves_once_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["plugin", "new", "tenant-check", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let krate = dir.path().join("tenant-check");
    // Share the guest workspace's build directory: its dependencies are already built.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target");
    let cargo = |args: &[&str]| {
        let sysroot = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .unwrap();
        let sysroot = String::from_utf8(sysroot.stdout).unwrap();
        let host = Command::new("rustc").arg("-vV").output().unwrap();
        let host = String::from_utf8(host.stdout).unwrap();
        let host = host
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap()
            .to_string();
        let linker = format!(
            "{}/lib/rustlib/{host}/bin/wasm-component-ld",
            sysroot.trim()
        );
        Command::new(env!("CARGO"))
            .args(args)
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target)
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", linker)
            .output()
            .unwrap()
    };
    let test = cargo(&["test", "--offline"]);
    let text = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(text.contains("test result: ok. 1 passed"), "{text}");
    let build = cargo(&[
        "build",
        "--offline",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
    ]);
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-unknown-unknown/release/tenant_check.wasm");
    let bytes = std::fs::read(&wasm).unwrap();
    let _ = std::fs::remove_file(&wasm);

    let gw = gateway("");
    let token = gw.admin_token();
    let up = admin(
        &gw,
        "POST",
        "/v1/plugins/tenant-check/versions",
        Some(&token),
        Some(bytes),
        &[],
    )
    .await;
    assert_eq!(up.status, 201, "{}", up.body);
    let route = json!({
        "path_prefix": "/t/",
        "respond": "echo",
        "policies": [{ "plugin": "tenant-check", "config": { "header": "x-tenant" } }],
    });
    assert_eq!(
        as_admin(&gw, "PUT", "/v1/routes/t", Some(route))
            .await
            .status,
        201
    );
    let url = gw.url("main", "/t/x");
    assert_eq!(sluice_tests::get(&url, &[]).await.status, 400);
    assert_eq!(
        sluice_tests::get(&url, &[("x-tenant", "a")]).await.status,
        200
    );
}

/// `GET /v1/status` over an mTLS connection presenting `identity`; `Err` when the server
/// refuses the handshake.
async fn status_over_tls(
    gw: &Gateway,
    ca: &sluice_tests::tls::Ca,
    identity: Option<&sluice_tests::tls::Leaf>,
) -> Result<u16, String> {
    use http_body_util::BodyExt;
    use sluice_tests::tls::{self, Trust};
    let cfg = tls::client_config(Trust::Ca(ca), &[&rustls::version::TLS13], identity, &[]);
    let stream = tls::connect(gw.addr("admin"), cfg, "localhost")
        .await
        .map_err(|e| e.to_string())?;
    let (mut send_req, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/v1/status")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {}", gw.admin_token()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // TLS 1.3: a refused client certificate arrives as an alert on the first read.
    let resp = send_req
        .send_request(req)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_serves_tls_with_client_certificates_and_the_cli_speaks_https() {
    use sluice_tests::tls::Ca;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("admin-ca");
    let (cert, key) = ca.leaf(&["localhost"]).write(dir.path(), "admin");
    let ca_file = ca.write(dir.path(), "ca");
    let clients = Ca::new("client-ca");
    let clients_file = clients.write(dir.path(), "client-ca");
    let tls = |mtls: bool| {
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n[admin.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n{}",
            cert.display(),
            key.display(),
            if mtls {
                format!("client_ca = \"{}\"\n", clients_file.display())
            } else {
                String::new()
            }
        )
    };

    let gw = gateway(&tls(true));
    let operator = clients.leaf(&["operator"]);
    assert_eq!(status_over_tls(&gw, &ca, Some(&operator)).await, Ok(200));
    assert!(
        status_over_tls(&gw, &ca, None).await.is_err(),
        "no client certificate"
    );
    let stranger = Ca::new("other").leaf(&["stranger"]);
    assert!(
        status_over_tls(&gw, &ca, Some(&stranger)).await.is_err(),
        "untrusted client"
    );

    let gw = gateway(&tls(false));
    let url = format!("https://localhost:{}", gw.addr("admin").port());
    let out = Command::new(binary())
        .args(["status", "--admin", &url, "--ca"])
        .arg(&ca_file)
        .env("SLUICE_ADMIN_TOKEN", gw.admin_token())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config revision"));
}

/// A certificate renewed in place (same files, as certbot does) is served by the admin
/// API after SIGHUP, as the listeners' are.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_serves_a_certificate_renewed_in_place_after_sighup() {
    use sluice_tests::tls::Ca;
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old-ca"), Ca::new("new-ca"));
    let (cert, key) = old_ca.leaf(&["localhost"]).write(dir.path(), "admin");
    let gw = gateway(&format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n[admin.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        cert.display(),
        key.display(),
    ));
    assert_eq!(status_over_tls(&gw, &old_ca, None).await, Ok(200));
    new_ca.leaf(&["localhost"]).write(dir.path(), "admin");
    gw.signal("HUP");
    assert!(gw.wait_stderr(
        |l| l.contains("configuration reloaded"),
        std::time::Duration::from_secs(10)
    ));
    assert_eq!(status_over_tls(&gw, &new_ca, None).await, Ok(200));
    assert!(
        status_over_tls(&gw, &old_ca, None).await.is_err(),
        "the old certificate is still served"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_consumers_and_tokens_are_created_read_replaced_and_deleted() {
    let gw = gateway("");
    let up = json!({ "name": "u", "targets": [{ "address": "127.0.0.1:9" }] });
    assert_eq!(
        as_admin(&gw, "POST", "/v1/upstreams", Some(up.clone()))
            .await
            .status,
        201
    );
    problem(&as_admin(&gw, "POST", "/v1/upstreams", Some(up)).await, 409);
    let got = as_admin(&gw, "GET", "/v1/upstreams/u", None).await;
    assert_eq!(got.json()["targets"][0]["address"], "127.0.0.1:9");
    let replaced = json!({ "targets": [{ "address": "127.0.0.1:10" }] });
    assert_eq!(
        as_admin(&gw, "PUT", "/v1/upstreams/u", Some(replaced))
            .await
            .status,
        200
    );
    assert_eq!(
        as_admin(&gw, "DELETE", "/v1/upstreams/u", None)
            .await
            .status,
        204
    );
    problem(&as_admin(&gw, "GET", "/v1/upstreams/u", None).await, 404);

    let c = json!({ "name": "carol", "tags": ["a"] });
    assert_eq!(
        as_admin(&gw, "POST", "/v1/consumers", Some(c.clone()))
            .await
            .status,
        201
    );
    problem(&as_admin(&gw, "POST", "/v1/consumers", Some(c)).await, 409);
    let put = as_admin(
        &gw,
        "PUT",
        "/v1/consumers/carol",
        Some(json!({ "tags": ["b"] })),
    )
    .await;
    assert_eq!(
        (put.status, put.json()["tags"][0].as_str()),
        (200, Some("b"))
    );
    assert_eq!(
        as_admin(&gw, "DELETE", "/v1/consumers/carol", None)
            .await
            .status,
        204
    );

    let t = as_admin(
        &gw,
        "POST",
        "/v1/tokens",
        Some(json!({ "name": "ops", "role": "read-only" })),
    )
    .await;
    let secret = t.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        as_admin(&gw, "GET", "/v1/tokens/ops", None).await.json()["role"],
        "read-only"
    );
    let consumer = Some(b"{}".to_vec());
    problem(
        &admin(
            &gw,
            "PUT",
            "/v1/consumers/d",
            Some(&secret),
            consumer.clone(),
            &[],
        )
        .await,
        403,
    );
    let r = as_admin(
        &gw,
        "PUT",
        "/v1/tokens/ops",
        Some(json!({ "role": "admin" })),
    )
    .await;
    assert_eq!((r.status, r.json()["role"].as_str()), (200, Some("admin")));
    let r = admin(&gw, "PUT", "/v1/consumers/d", Some(&secret), consumer, &[]).await;
    assert_eq!(r.status, 201, "the same secret now writes: {}", r.body);
    assert_eq!(
        as_admin(&gw, "DELETE", "/v1/tokens/ops", None).await.status,
        204
    );
    problem(&as_admin(&gw, "GET", "/v1/tokens/ops", None).await, 404);

    // The last admin token can be neither demoted nor deleted (a lock-out).
    let demote = json!({ "role": "read-only" });
    let r = as_admin(&gw, "PUT", "/v1/tokens/bootstrap", Some(demote)).await;
    assert!(
        problem(&r, 409)["detail"]
            .as_str()
            .unwrap()
            .contains("last admin")
    );
    let r = as_admin(&gw, "DELETE", "/v1/tokens/bootstrap", None).await;
    assert!(
        problem(&r, 409)["detail"]
            .as_str()
            .unwrap()
            .contains("last admin")
    );
    assert_eq!(
        as_admin(&gw, "GET", "/v1/tokens/bootstrap", None)
            .await
            .json()["role"],
        "admin"
    );
}

/// Deleting a plugin and rolling it back honour `If-Match`, so that a change made since
/// the client read the plugin (a new version pushed) is never undone blindly; an `If-Match`
/// that cannot be read matches nothing.
#[tokio::test(flavor = "multi_thread")]
async fn plugin_delete_and_rollback_with_a_stale_etag_get_412_and_change_nothing() {
    let gw = gateway("");
    assert_eq!(push(&gw, "p", "noop", "").await.status, 201);
    let etag = |r: &Resp| r.header("etag").unwrap().to_string();
    let v1 = etag(&as_admin(&gw, "GET", "/v1/plugins/p", None).await);
    assert_eq!(push(&gw, "p", "noop", "").await.status, 201);
    let call = |method: &'static str, path: &'static str, etag: String| {
        let gw = &gw;
        async move {
            let token = gw.admin_token();
            admin(gw, method, path, Some(&token), None, &[("if-match", &etag)]).await
        }
    };
    problem(
        &call("POST", "/v1/plugins/p/rollback", v1.clone()).await,
        412,
    );
    problem(&call("DELETE", "/v1/plugins/p", v1).await, 412);
    // Bytes beyond ASCII (here UTF-8) are legal in a field value but not a readable ETag.
    problem(
        &call("DELETE", "/v1/plugins/p", "\"\u{e9}\"".into()).await,
        412,
    );
    let p = as_admin(&gw, "GET", "/v1/plugins/p", None).await;
    assert_eq!(p.json()["active"], 2, "{}", p.body);
    let r = call("POST", "/v1/plugins/p/rollback", etag(&p)).await;
    assert_eq!(
        (r.status, &r.json()["active"]),
        (200, &json!(1)),
        "{}",
        r.body
    );
    let now = etag(&as_admin(&gw, "GET", "/v1/plugins/p", None).await);
    let r = call("DELETE", "/v1/plugins/p", now).await;
    assert_eq!(r.status, 204, "{}", r.body);
}
