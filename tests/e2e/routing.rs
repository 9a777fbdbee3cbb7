//! Routing, built-in responders and per-route edits.

use sluice_tests::{Gateway, Upstream, get};

use crate::config;

#[tokio::test(flavor = "multi_thread")]
async fn echo_route_returns_the_request_as_json() {
    let gw = Gateway::start(&config(
        "[[routes]]\nname = \"echo\"\npath = \"/echo\"\nrespond = \"echo\"\n",
    ));
    let r = get(&gw.url("main", "/echo?a=1"), &[("x-test", "yes")]).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/echo");
    assert_eq!(j["query"], "a=1");
    assert_eq!(j["headers"]["x-test"], "yes");
    assert_eq!(j["route"], "echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_request_gets_404_with_json_body() {
    let gw = Gateway::start(&config(
        "[[routes]]\nname = \"echo\"\npath = \"/echo\"\nrespond = \"echo\"\n",
    ));
    let r = get(&gw.url("main", "/elsewhere"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "no_route");
}

#[tokio::test(flavor = "multi_thread")]
async fn static_responder_answers_with_fixed_status_headers_and_body() {
    let gw = Gateway::start(&config(
        "[[routes]]\nname = \"s\"\npath = \"/s\"\nrespond = { static = { status = 418, headers = { \"x-a\" = \"b\" }, body = \"teapot\" } }\n",
    ));
    let r = get(&gw.url("main", "/s"), &[]).await;
    assert_eq!(
        (r.status, r.header("x-a"), r.body.as_str()),
        (418, Some("b"), "teapot")
    );
}

fn st(name: &str) -> String {
    format!("respond = {{ static = {{ body = \"{name}\" }} }}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn most_specific_route_wins_by_host_then_path_then_conditions() {
    let routes = [
        ("any-prefix", "path_prefix = \"/\"\n".to_string()),
        ("users-prefix", "path_prefix = \"/users\"\n".into()),
        ("users-regex", "path_regex = \"/users/[0-9]+\"\n".into()),
        (
            "orders-regex",
            "path_regex = \"/orders/[0-9]+/items\"\n".into(),
        ),
        ("users-template", "path = \"/users/{id}\"\n".into()),
        ("users-me", "path = \"/users/me\"\n".into()),
        (
            "users-me-post",
            "path = \"/users/me\"\nmethods = [\"POST\"]\n".into(),
        ),
        (
            "wild",
            "hosts = [\"*.example.com\"]\npath_prefix = \"/\"\n".into(),
        ),
        (
            "exact-host",
            "hosts = [\"api.example.com\"]\npath_prefix = \"/\"\n".into(),
        ),
        (
            "header",
            "path = \"/h\"\nheaders = [{ name = \"x-env\", value = \"prod\" }]\n".into(),
        ),
        (
            "header-regex",
            "path = \"/h\"\nheaders = [{ name = \"x-env\", regex = \"st.*\" }]\n".into(),
        ),
        (
            "query",
            "path = \"/q\"\nquery = [{ name = \"v\", value = \"2\" }]\n".into(),
        ),
    ];
    let mut cfg = String::new();
    for (name, m) in &routes {
        cfg.push_str(&format!("[[routes]]\nname = \"{name}\"\n{m}{}\n", st(name)));
    }
    let gw = Gateway::start(&config(&cfg));
    let u = |p: &str| gw.url("main", p);
    assert_eq!(get(&u("/x"), &[]).await.body, "any-prefix");
    assert_eq!(get(&u("/users/me"), &[]).await.body, "users-me");
    assert_eq!(get(&u("/users/42"), &[]).await.body, "users-template");
    assert_eq!(get(&u("/users/42/x"), &[]).await.body, "users-prefix");
    // A regex route matches the whole path (anchored at both ends).
    assert_eq!(get(&u("/orders/7/items"), &[]).await.body, "orders-regex");
    assert_eq!(get(&u("/orders/7/items/x"), &[]).await.body, "any-prefix");
    assert_eq!(get(&u("/v1/orders/7/items"), &[]).await.body, "any-prefix");
    assert_eq!(get(&u("/orders/x/items"), &[]).await.body, "any-prefix");
    assert_eq!(
        get(&u("/x"), &[("host", "www.example.com")]).await.body,
        "wild"
    );
    assert_eq!(
        get(&u("/x"), &[("host", "API.example.com:80")]).await.body,
        "exact-host"
    );
    assert_eq!(get(&u("/h"), &[("x-env", "prod")]).await.body, "header");
    assert_eq!(
        get(&u("/h"), &[("x-env", "staging")]).await.body,
        "header-regex"
    );
    assert_eq!(get(&u("/h"), &[("x-env", "dev")]).await.body, "any-prefix");
    assert_eq!(get(&u("/q?v=2"), &[]).await.body, "query");
    assert_eq!(get(&u("/q?v=3"), &[]).await.body, "any-prefix");
    let post = sluice_tests::send(
        http::Request::post(u("/users/me"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(post.body, "users-me-post");
}

#[tokio::test(flavor = "multi_thread")]
async fn strip_prefix_rewrite_and_header_edits_are_visible_upstream_and_downstream() {
    let up = Upstream::with(|_req| async {
        let mut r = http::Response::new(sluice_tests::upstream::full("ok"));
        r.headers_mut()
            .insert("x-internal", "secret".parse().unwrap());
        r.headers_mut().insert("x-keep", "1".parse().unwrap());
        r
    })
    .await;
    let gw = Gateway::start(&config(&format!(
        r#"
[upstreams.u]
targets = [{{ address = "{addr}" }}]

[[routes]]
name = "strip"
path_prefix = "/api/"
strip_prefix = "/api"
upstream = "u"
request_headers = {{ set = {{ "x-set" = "s" }}, add = {{ "x-add" = "a" }}, remove = ["x-drop"] }}
response_headers = {{ remove = ["x-internal"], set = {{ "x-gw" = "sluice" }} }}

[[routes]]
name = "rewrite"
path = "/users/{{id}}/profile"
rewrite_path = "/v2/profiles/{{id}}"
upstream = "u"
"#,
        addr = up.addr
    )));
    let r = get(
        &gw.url("main", "/api/items?x=1"),
        &[("x-drop", "1"), ("x-set", "old")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-internal"), None);
    assert_eq!(r.header("x-gw"), Some("sluice"));
    assert_eq!(r.header("x-keep"), Some("1"));
    let r2 = get(&gw.url("main", "/users/7/profile"), &[]).await;
    assert_eq!(r2.status, 200);
    let seen = up.seen();
    assert_eq!(seen[0].uri, "/items?x=1");
    assert_eq!(seen[0].headers.get("x-set").unwrap(), "s");
    assert_eq!(seen[0].headers.get("x-add").unwrap(), "a");
    assert!(seen[0].headers.get("x-drop").is_none());
    assert_eq!(seen[1].uri, "/v2/profiles/7");
}

/// A prefix is stripped only where it ends a path segment: `/svcadmin/x` does not become
/// `/admin/x` (another route's path upstream) on a route stripping `/svc`.
#[tokio::test(flavor = "multi_thread")]
async fn strip_prefix_removes_only_whole_path_segments() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&config(&format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n[[routes]]\nname = \"svc\"\npath_prefix = \"/svc\"\nstrip_prefix = \"/svc\"\nupstream = \"u\"\n\n[[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\nstrip_prefix = \"/api/\"\nupstream = \"u\"\n",
        up.addr
    )));
    for (path, upstream_path) in [
        ("/svc", "/"),
        ("/svc/x?q=1", "/x?q=1"),
        ("/svcadmin/x", "/svcadmin/x"),
        ("/api/items", "/items"),
    ] {
        assert_eq!(get(&gw.url("main", path), &[]).await.status, 200, "{path}");
        assert_eq!(up.seen().last().unwrap().uri, upstream_path, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_route_limit_is_refused_with_413() {
    let up = Upstream::named("up").await;
    let gw = Gateway::start(&config(&format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nmax_body_bytes = 10\n",
        up.addr
    )));
    let big = http::Request::post(gw.url("main", "/"))
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            11
        ])))
        .unwrap();
    let r = sluice_tests::send(big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(up.hits(), 0);
    let ok = http::Request::post(gw.url("main", "/"))
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            10
        ])))
        .unwrap();
    assert_eq!(sluice_tests::send(ok).await.status, 200);
}

/// An absolute-form request target names the host the route is chosen by, and the upstream
/// gets that host in `Host`, not a differing `Host` the client also sent (which would let a
/// request routed as one virtual host reach a shared upstream as another).
#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_target_host_replaces_a_differing_host_header_upstream() {
    let up = Upstream::named("public").await;
    let gw = Gateway::start(&config(&format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n\
         [[routes]]\nname = \"public\"\nhosts = [\"public.example\"]\nupstream = \"u\"\n\n\
         [[routes]]\nname = \"admin\"\nhosts = [\"admin.example\"]\nrespond = {{ static = {{ status = 403 }} }}\n",
        up.addr
    )));
    let r = sluice_tests::raw(
        gw.addr("main"),
        b"GET http://public.example/x HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.statuses(), [200], "{}", r.text);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get("host").unwrap(), "public.example");
}

/// Paths are normalised before routing, and forwarded normalised: dot segments (also
/// percent-encoded) and doubled slashes cannot reach `/admin` through another route.
#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_and_doubled_slashes_are_normalised_before_routing_and_forwarding() {
    let up = Upstream::named("public").await;
    let gw = Gateway::start(&config(&format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n\
         [[routes]]\nname = \"admin\"\npath = \"/admin\"\nrespond = {{ static = {{ status = 403 }} }}\n\n\
         [[routes]]\nname = \"public\"\npath_prefix = \"/\"\nupstream = \"u\"\n",
        up.addr
    )));
    for path in [
        "/public/../admin",
        "/public/%2e%2E/admin",
        "//admin",
        "/%61dmin",
    ] {
        let r = sluice_tests::raw(
            gw.addr("main"),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(r.statuses(), [403], "{path}: {}", r.text);
    }
    assert_eq!(up.hits(), 0);
    let r = sluice_tests::raw(
        gw.addr("main"),
        b"GET /public/a/./../b//c?x=/../y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.statuses(), [200], "{}", r.text);
    assert_eq!(up.seen()[0].uri, "/public/b/c?x=/../y");
}
