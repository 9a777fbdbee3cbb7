//! Process lifecycle: validation messages, SIGHUP reload, SIGTERM drain.

use std::time::Duration;

use sluice_tests::gateway::validate;
use sluice_tests::{Gateway, Upstream, get, within};

/// How long a test waits for an event (a request reaching its upstream, an answer).
const WAIT: Duration = Duration::from_secs(20);

use crate::config;

#[test]
fn validate_names_file_line_and_key_of_each_problem() {
    let (code, out) = validate(
        "[gateway]\ntrusted_proxies = [\"10.0.0.0/99\"]\n\n[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"r\"\nupstream = \"missing\"\n",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FILE:2: gateway.trusted_proxies[0]: \"10.0.0.0/99\" is not a CIDR"),
        "{out}"
    );
    assert!(
        out.contains("FILE:10: routes[0].upstream: unknown upstream \"missing\""),
        "{out}"
    );
}

#[test]
fn validate_rejects_unknown_keys_and_missing_certificates() {
    let (code, out) =
        validate("[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nhttp3 = true\n");
    assert_eq!(code, 2);
    assert!(
        out.contains("FILE:4: listeners[0].http3: unknown field `http3`"),
        "{out}"
    );
    let (code, out) = validate(
        "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{ cert = \"/nope/c.pem\", key = \"/nope/k.pem\" }]\n",
    );
    assert_eq!(code, 2);
    assert!(
        out.contains("listeners[0].tls.certificates[0].cert: cannot read /nope/c.pem"),
        "{out}"
    );
}

/// A zero interval would panic the health checker's timer, and a timeout of centuries would
/// overflow the request's deadline: both are refused at the key's line.
#[test]
fn validate_rejects_zero_and_overlong_durations_at_their_key() {
    let (code, out) = validate(
        "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n[upstreams.u]\ntargets = [{ address = \"127.0.0.1:1\" }]\n[upstreams.u.health_check]\npath = \"/h\"\ninterval = \"0s\"\n",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FILE:9: upstreams.u.health_check.interval: invalid duration \"0s\": must be greater than zero"),
        "{out}"
    );
    let (code, out) = validate(
        "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"r\"\nrespond = \"echo\"\ntimeout = \"600000000000s\"\n",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(
            "FILE:8: routes[0].timeout: invalid duration \"600000000000s\": longer than 366 days"
        ),
        "{out}"
    );
}

/// `[admin]` is checked like the rest: a plaintext admin API off loopback, or a missing
/// certificate file of its TLS, is reported at its line before anything starts.
#[test]
fn validate_reports_admin_settings_at_their_line() {
    let (code, out) = validate(
        "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n[admin]\nbind = \"0.0.0.0:9901\"\n",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FILE:6: admin.bind: 0.0.0.0:9901 is not a loopback address"),
        "{out}"
    );
    let (code, out) = validate(
        "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n[admin]\ntls = { certificates = [{ cert = \"/nonexistent.pem\", key = \"/nonexistent.key\" }] }\n",
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("admin.tls.certificates[0].cert"), "{out}");
}

#[test]
fn validate_accepts_the_shipped_configuration() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway.toml");
    let (code, out) = sluice_tests::gateway::validate_file(&shipped);
    assert_eq!(code, 0, "{out}");
}

/// The names of the gateway process's threads.
fn thread_names(gw: &Gateway) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gw.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// `workers = N` runs N runtime worker threads (a multi-threaded runtime); `workers = 1`
/// runs the single-threaded runtime on the main thread, with no worker thread at all.
#[tokio::test(flavor = "multi_thread")]
async fn workers_sets_the_number_of_runtime_threads() {
    for (workers, expected) in [(3, 3), (1, 0)] {
        let gw = Gateway::start(&format!(
            "[gateway]\nworkers = {workers}\n\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[[routes]]\nname = \"e\"\nrespond = \"echo\"\n"
        ));
        assert_eq!(get(&gw.url("main", "/"), &[]).await.status, 200);
        let names = thread_names(&gw);
        let n = names.iter().filter(|n| *n == "sluice-worker").count();
        assert_eq!(n, expected, "workers = {workers}: {names:?}");
        assert!(
            gw.stderr()
                .iter()
                .any(|l| l.contains("configuration loaded")
                    && l.contains(&format!("workers={workers}"))),
            "{:?}",
            gw.stderr()
        );
    }
}

/// `sluice run` with no `--config`, in a directory holding the repository's `plugins/`:
/// with the shipped `gateway.toml` copied there, and with no file at all (the embedded
/// copy). Either way `/echo`, the demo upstream listener, the demo route and the
/// key-protected demo API answer as the README says. Listeners bind port 0 through the
/// environment variables the file reads; the `demo` upstream points at a test upstream
/// (the demo listener's own port is only known once it is bound).
#[tokio::test(flavor = "multi_thread")]
async fn run_without_config_serves_the_shipped_configuration_from_file_or_embedded_copy() {
    crate::policies::warm_cache();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for with_file in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(repo.join("plugins"), dir.path().join("plugins")).unwrap();
        // The shared compiled-component cache, so that start-up does not recompile.
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::os::unix::fs::symlink(crate::policies::cache_dir(), dir.path().join("data/cache"))
            .unwrap();
        if with_file {
            std::fs::copy(repo.join("gateway.toml"), dir.path().join("gateway.toml")).unwrap();
        }
        let up = Upstream::named("upstream").await;
        let up_addr = up.addr.to_string();
        let gw = Gateway::try_run_in(
            dir,
            &["run"],
            &[
                ("SLUICE_BIND", "127.0.0.1:0"),
                ("SLUICE_DEMO_BIND", "127.0.0.1:0"),
                ("SLUICE_DEMO_UPSTREAM", &up_addr),
                ("SLUICE_ADMIN_BIND", "127.0.0.1:0"),
            ],
        )
        .unwrap_or_else(|e| panic!("with_file = {with_file}: {e}"));
        let source = if with_file {
            "config=gateway.toml "
        } else {
            "config=<embedded gateway.toml> "
        };
        assert!(
            gw.stderr()
                .iter()
                .any(|l| l.contains("configuration loaded") && l.contains(source)),
            "{with_file}: {:?}",
            gw.stderr()
        );
        let r = get(&gw.url("demo-upstream", "/anything"), &[]).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "hello from the demo upstream\n")
        );
        let public = gw.addr("public");
        let url = |p: &str| format!("http://{public}{p}");
        let r = get(&url("/echo"), &[]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.contains("\"path\":\"/echo\""), "{}", r.body);
        let r = get(&url("/demo/hello"), &[]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "upstream"));
        assert_eq!(r.header("x-served-by"), Some("sluice"));
        // The prefix is stripped (the health checker's probes may come in between).
        assert!(
            up.seen().iter().any(|s| s.uri == "/hello"),
            "{:?}",
            up.seen()
        );
        assert_eq!(get(&url("/api/hello"), &[]).await.status, 401);
        let r = get(&url("/api/hello"), &[("x-api-key", "sluice-demo-key")]).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("ratelimit-limit"), Some("10"));
        // Analytics runs first, so the refused request is counted as well.
        let stats = get(&url("/analytics"), &[]).await;
        assert_eq!(stats.status, 200);
        let rows = stats.json();
        let count = |consumer: &str, status: &str| {
            rows.as_array()
                .expect("a list")
                .iter()
                .find(|r| r["route"] == "api" && r["consumer"] == consumer && r["status"] == status)
                .map(|r| r["count"].clone())
        };
        assert_eq!(count("", "401"), Some(1.into()), "{rows}");
        assert_eq!(count("demo", "200"), Some(1.into()), "{rows}");
    }
}

/// Each first-party policy validates its own configuration in `init`; `validate` reports
/// every policy's error with its line, its place in the route and the offending key.
#[test]
fn validate_names_the_line_policy_and_key_of_each_policy_configuration_error() {
    crate::policies::warm_cache();
    let cfg = format!(
        "{}[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n{}{}[[routes]]\nname = \"r\"\nrespond = \"echo\"\n[[routes.policies]]\nplugin = \"key-auth\"\nconfig = {{ header = \"x-api-key\", consumers = [{{ name = \"a\", key_sha256 = \"zz\" }}] }}\n[[routes.policies]]\nplugin = \"rate-limit\"\nconfig = {{ requests = 10, window = \"1m\", bogus = 3 }}\n",
        crate::policies::policy_settings(),
        crate::policies::plugin("key-auth", "key_auth", "grants = [\"kv\", \"log\"]"),
        crate::policies::plugin("rate-limit", "rate_limit", "grants = [\"rate-limit\"]"),
    );
    let line_of = |needle: &str| cfg.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let (code, out) = validate(&cfg);
    assert_eq!(code, 2, "{out}");
    for expected in [
        format!(
            ":{}: routes[0].policies[0].config: plugin \"key-auth\": init refused the configuration: consumers[0] (a): `key_sha256` must be 64 hexadecimal digits",
            line_of("key_sha256")
        ),
        format!(
            ":{}: routes[0].policies[1].config: plugin \"rate-limit\": init refused the configuration: invalid configuration: unknown field `bogus`",
            line_of("bogus")
        ),
    ] {
        assert!(out.contains(&expected), "{expected}\nnot in:\n{out}");
    }
}

/// The instance pool is shared: idle instances of one policy are reclaimed when another
/// finds no slot, so more pooled policies than slots start and serve (one slot here, two
/// policies on one route: each call takes the slot the other's idle instance held).
#[tokio::test(flavor = "multi_thread")]
async fn policies_outnumbering_the_instance_pool_reclaim_idle_instances_and_serve() {
    let noop = sluice_tests::plugin_path("noop");
    let cfg = format!(
        "[policy]\nmax_instances = 1\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n[plugins.noop]\npath = \"{}\"\n[[routes]]\nname = \"r\"\nrespond = \"echo\"\n[[routes.policies]]\nplugin = \"noop\"\n[[routes.policies]]\nplugin = \"noop\"\n",
        noop.display()
    );
    let (code, out) = validate(&cfg);
    assert_eq!(code, 0, "{out}");
    let gw = Gateway::start(&cfg);
    for _ in 0..3 {
        let r = get(&gw.url("main", "/"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// SIGHUP swaps in a good file while a request is in flight (it finishes on the snapshot it
/// started on); a file with a semantic error or a TOML syntax error is rejected with a log
/// line naming the problem, and the running configuration keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_good_file_and_keeps_serving_after_a_bad_one() {
    let (held, release, mut arrived) = Upstream::held("finished").await;
    let file = |body: &str| {
        config(&format!(
            "[upstreams.h]\ntargets = [{{ address = \"{}\" }}]\n\n[[routes]]\nname = \"held\"\npath = \"/held\"\nupstream = \"h\"\n\n[[routes]]\nname = \"r\"\npath = \"/\"\nrespond = {{ static = {{ body = \"{body}\" }} }}\n",
            held.addr
        ))
    };
    let gw = Gateway::start(&file("one"));
    assert_eq!(get(&gw.url("main", "/"), &[]).await.body, "one");
    let url = gw.url("main", "/held");
    let inflight = tokio::spawn(async move { get(&url, &[]).await });
    within(WAIT, arrived.recv()).await.unwrap();

    std::fs::write(gw.config_path(), file("two")).unwrap();
    gw.signal("HUP");
    assert!(gw.wait_stderr(
        |l| l.contains("configuration reloaded"),
        Duration::from_secs(10)
    ));
    assert_eq!(get(&gw.url("main", "/"), &[]).await.body, "two");
    release.add_permits(1);
    let r = within(WAIT, inflight).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "finished"));

    std::fs::write(
        gw.config_path(),
        config("[[routes]]\nname = \"r\"\nupstream = \"nope\"\n"),
    )
    .unwrap();
    gw.signal("HUP");
    assert!(gw.wait_stderr(
        |l| l.contains("reload rejected") && l.contains("unknown upstream"),
        Duration::from_secs(10)
    ));
    assert_eq!(get(&gw.url("main", "/"), &[]).await.body, "two");

    std::fs::write(gw.config_path(), "[[routes]\nname = \"r\"\n").unwrap();
    gw.signal("HUP");
    assert!(
        gw.wait_stderr_count(
            |l| l.contains("reload rejected"),
            2,
            Duration::from_secs(10)
        ),
        "{:?}",
        gw.stderr()
    );
    let rejected = gw
        .stderr()
        .into_iter()
        .filter(|l| l.contains("reload rejected"))
        .nth(1)
        .unwrap();
    assert!(rejected.contains("gateway.toml:1"), "{rejected}");
    assert_eq!(get(&gw.url("main", "/"), &[]).await.body, "two");
}

/// A reload that changes a setting read only at start (here `limits.max_connections`) says
/// so, naming it; `drain_timeout` is reloaded: the stop after the reload waits only the new,
/// shorter time for a request that never finishes.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_names_settings_that_need_a_restart_and_reloads_the_drain_timeout() {
    let (up, _release, mut arrived) = Upstream::held("never").await;
    let file = |drain: &str, max_connections: u32| {
        format!(
            "[gateway]\ndrain_timeout = \"{drain}\"\n\n[limits]\nmax_connections = {max_connections}\n\n\
             [[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n\
             [upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
            up.addr
        )
    };
    let mut gw = Gateway::start(&file("60s", 1000));
    std::fs::write(gw.config_path(), file("1s", 999)).unwrap();
    gw.signal("HUP");
    assert!(
        gw.wait_stderr(
            |l| l.contains("take effect at the next restart")
                && l.contains("limits.max_connections")
                && !l.contains("drain"),
            Duration::from_secs(10)
        ),
        "{:?}",
        gw.stderr()
    );
    assert!(gw.wait_stderr(
        |l| l.contains("configuration reloaded"),
        Duration::from_secs(10)
    ));
    let url = gw.url("main", "/held");
    let _inflight = tokio::spawn(async move { get(&url, &[]).await });
    within(WAIT, arrived.recv()).await.unwrap();
    gw.signal("TERM");
    assert!(gw.wait_stderr(|l| l.contains("draining"), Duration::from_secs(10)));
    let status = gw
        .wait_exit(Duration::from_secs(20))
        .expect("the reloaded 1 s drain timeout did not apply");
    assert!(status.success(), "{status:?}");
    assert!(
        gw.stderr()
            .iter()
            .any(|l| l.contains("drain timeout reached")),
        "{:?}",
        gw.stderr()
    );
}

/// SIGTERM and SIGINT alike: stop accepting, let the request in flight finish, exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sigint_drain_the_request_in_flight_then_exit_zero() {
    for sig in ["TERM", "INT"] {
        let (up, release, mut arrived) = Upstream::held("finished").await;
        let mut gw = Gateway::start(&config(&format!(
            "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
            up.addr
        )));
        let url = gw.url("main", "/slow");
        let inflight = tokio::spawn(async move { get(&url, &[]).await });
        within(WAIT, arrived.recv()).await.unwrap();
        gw.signal(sig);
        assert!(gw.wait_stderr(|l| l.contains("draining"), Duration::from_secs(10)));
        // New connections are refused once draining has begun.
        let refused = tokio::net::TcpStream::connect(gw.addr("main")).await;
        assert!(
            refused.is_err(),
            "{sig}: listener still accepting during drain"
        );
        release.add_permits(1);
        let r = within(WAIT, inflight).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "finished"), "{sig}");
        let status = gw.wait_exit(Duration::from_secs(10)).expect("exited");
        assert!(status.success(), "{sig}: {status:?}");
    }
}

/// On an h2c listener a connection that has not yet sent its first bytes (a pre-connect,
/// a TCP probe) does not hold up a drain: the gateway exits long before the head timeout
/// or the drain timeout would end the wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_connection_to_an_h2c_listener_does_not_delay_the_drain() {
    let gw = Gateway::start(
        "[gateway]\ndrain_timeout = \"30s\"\n\n[limits]\nheader_read_timeout = \"30s\"\n\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nh2c = true\n\n[[routes]]\nname = \"e\"\nrespond = \"echo\"\n",
    );
    assert_a_silent_connection_does_not_delay_the_drain(gw, "main").await;
}

/// Opens a connection to `listener` that says nothing, then stops `gw` with SIGTERM and
/// asserts that it exits at once (the gateway must have no other client connection, so
/// that its descriptor count changes only with this one).
pub(crate) async fn assert_a_silent_connection_does_not_delay_the_drain(
    mut gw: Gateway,
    listener: &str,
) {
    let before = gw.open_fds();
    let _silent = tokio::net::TcpStream::connect(gw.addr(listener))
        .await
        .unwrap();
    // Wait until the gateway has accepted it (one more descriptor open), bounded.
    let t = std::time::Instant::now();
    while gw.open_fds() <= before {
        assert!(t.elapsed() < Duration::from_secs(10), "never accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("the drain waited on the silent connection");
    assert!(status.success(), "{status:?}");
}

/// A request still in flight when `drain_timeout` runs out does not keep the gateway up:
/// its connection is closed and the process exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn drain_timeout_closes_a_request_that_never_finishes_and_exits_zero() {
    let (up, _release, mut arrived) = Upstream::held("finished").await;
    let mut gw = Gateway::start(&format!(
        "[gateway]\ndrain_timeout = \"300ms\"\n\n[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\n\n[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n",
        up.addr
    ));
    let url = gw.url("main", "/forever");
    let inflight = tokio::spawn(async move {
        sluice_tests::client()
            .get(url.parse().unwrap())
            .await
            .map(|r| r.status())
    });
    within(WAIT, arrived.recv()).await.unwrap();
    let signalled = std::time::Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() >= Duration::from_millis(300));
    assert!(
        gw.stderr()
            .iter()
            .any(|l| l.contains("drain timeout reached"))
    );
    // The client saw its connection closed, not an answer.
    let r = tokio::time::timeout(Duration::from_secs(10), inflight)
        .await
        .expect("the client's request did not end")
        .unwrap();
    assert!(r.is_err(), "{r:?}");
}

/// A gateway with the no-op policy on its one route.
fn noop_policy_config() -> String {
    use crate::policies::{plugin, policy_settings, warm_cache};
    warm_cache();
    config(&format!(
        "{}{}[[routes]]\nname = \"r\"\nrespond = \"echo\"\n[[routes.policies]]\nplugin = \"noop\"\n",
        policy_settings(),
        plugin("noop", "noop", "")
    ))
}

#[tokio::test]
async fn wasm_profiler_perfmap_names_the_policies_code_for_perf() {
    let gw = Gateway::try_start_with_env(
        &noop_policy_config(),
        &[("SLUICE_WASM_PROFILER", "perfmap")],
    )
    .unwrap();
    assert_eq!(get(&gw.url("main", "/"), &[]).await.status, 200);
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", gw.pid()));
    let text = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    // One `<address> <size> <name>` line per compiled function of the policy.
    assert!(
        text.lines()
            .any(|l| l.starts_with("0x") && l.split(' ').count() >= 3),
        "{map:?}: {text:?}"
    );
}

#[test]
fn an_unknown_wasm_profiler_stops_the_gateway_naming_the_variable() {
    let err = match Gateway::try_start_with_env(
        &noop_policy_config(),
        &[("SLUICE_WASM_PROFILER", "vtune")],
    ) {
        Ok(_) => panic!("started with SLUICE_WASM_PROFILER=vtune"),
        Err(e) => e,
    };
    assert!(
        err.contains("SLUICE_WASM_PROFILER") && err.contains("vtune"),
        "{err}"
    );
}

/// Settings that size buffers and threads are checked before anything starts: `run` stops
/// with the same located message as `validate`.
#[test]
fn run_stops_on_a_sizing_setting_out_of_range_naming_its_line_and_key() {
    let err = match Gateway::try_start_with_env(&config("[limits]\nmax_headers = 100000000\n"), &[])
    {
        Ok(_) => panic!("started with max_headers = 100000000"),
        Err(e) => e,
    };
    assert!(
        err.contains(":9: limits.max_headers: must be 1 to 10000"),
        "{err}"
    );
}

/// A plugin's name is its kv namespace and the part before `@` of a pinned reference, so a
/// file plugin follows the admin API's naming rule.
#[test]
fn validate_rejects_a_plugin_name_that_could_alias_another() {
    let (code, out) = validate(
        "[[listeners]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n[plugins.\"a@x\"]\npath = \"/nope.wasm\"\n",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("plugins.a@x: a plugin name has 1 to 128 letters"),
        "{out}"
    );
}
