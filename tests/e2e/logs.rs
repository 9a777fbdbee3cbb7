//! The access log and the analytics events file: what they record, where, and rotation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::{Gateway, Upstream, get};

use crate::config;

#[tokio::test(flavor = "multi_thread")]
async fn access_log_has_one_json_line_per_request() {
    let gw = Gateway::start(&config(
        "[[routes]]\nname = \"echo\"\npath = \"/echo\"\nrespond = \"echo\"\n",
    ));
    let r = get(&gw.url("main", "/echo"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(gw.wait_stdout(
        |l| l.contains("\"route\":\"echo\""),
        Duration::from_secs(10)
    ));
    let line = gw
        .stdout()
        .into_iter()
        .find(|l| l.contains("\"route\":\"echo\""))
        .unwrap();
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/echo");
    assert_eq!(j["status"], 200);
    assert_eq!(j["bytes"].as_u64().unwrap() as usize, r.body.len());
    assert_eq!(j["client"], "127.0.0.1");
    assert!(j["duration_us"].is_u64() && j["time"].is_string());
}

/// The lines of `path` once `pred` holds for them (bounded: panics after 10 s).
fn wait_lines(path: &std::path::Path, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if pred(&lines) {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {lines:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `done` holds (bounded: panics after 10 s).
fn wait_until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gateway logging requests to `dir/access.log` and analytics events to
/// `dir/events.jsonl`, with one route (`r`, the analytics policy) to the returned upstream.
async fn logging_to_files(dir: &Path) -> (Gateway, Upstream, PathBuf, PathBuf) {
    use crate::policies::{plugin, policy_settings, warm_cache};
    warm_cache();
    let up = Upstream::named("up").await;
    let (access, events) = (dir.join("access.log"), dir.join("events.jsonl"));
    let route = format!(
        "[upstreams.u]\ntargets = [{{ address = \"{}\" }}]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n[[routes.policies]]\nplugin = \"analytics\"\n",
        up.addr
    );
    let settings = policy_settings().replace(
        "[policy]\n",
        &format!("[policy]\nanalytics_path = \"{}\"\n", events.display()),
    );
    let analytics = plugin(
        "analytics",
        "analytics",
        "grants = [\"analytics\", \"clock\"]",
    );
    let gw = Gateway::start(&config(&format!(
        "[access_log]\npath = \"{}\"\n\n{settings}{analytics}{route}",
        access.display()
    )));
    (gw, up, access, events)
}

/// The `path` fields of the JSON lines.
fn paths(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).unwrap();
            j["path"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// `[access_log] path` appends one JSON line per request to a file, naming the upstream
/// target; `[policy] analytics_path` gets one JSON line per analytics event; with
/// `enabled = false` nothing is logged and the file is never created.
#[tokio::test(flavor = "multi_thread")]
async fn access_log_and_analytics_events_go_to_their_files_and_the_access_log_can_be_off() {
    let files = tempfile::tempdir().unwrap();
    let (gw, up, access, events) = logging_to_files(files.path()).await;
    for p in ["/a", "/b"] {
        assert_eq!(get(&gw.url("main", p), &[]).await.status, 200);
    }
    let lines = wait_lines(&access, |l| l.len() >= 2);
    for (line, path) in lines.iter().zip(["/a", "/b"]) {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            (&j["route"], &j["path"], &j["status"]),
            (&"r".into(), &path.into(), &200.into())
        );
        assert_eq!(j["upstream"], up.addr.to_string());
    }
    assert!(!gw.stdout().iter().any(|l| l.contains("\"route\"")));
    let lines = wait_lines(&events, |l| l.len() >= 2);
    for line in &lines {
        let j: serde_json::Value = serde_json::from_str(line).unwrap();
        // Event fields are the strings the policy emitted.
        assert_eq!(
            (&j["route"], &j["status"], &j["plugin"]),
            (&"r".into(), &"200".into(), &"r/analytics#0".into()),
            "{j}"
        );
    }
    drop(gw);

    let off = files.path().join("off.log");
    let mut gw = Gateway::start(&config(&format!(
        "[access_log]\nenabled = false\npath = \"{}\"\n\n[[routes]]\nname = \"e\"\nrespond = \"echo\"\n",
        off.display()
    )));
    assert_eq!(get(&gw.url("main", "/"), &[]).await.status, 200);
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert!(!off.exists());
    assert!(
        !gw.stdout().iter().any(|l| l.contains("\"route\"")),
        "{:?}",
        gw.stdout()
    );
}

/// After log rotation renames the files away, SIGUSR1 makes the gateway write to new files
/// at the configured paths; the renamed ones keep exactly the lines written before.
#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_reopens_the_access_log_and_analytics_files_after_rotation() {
    let files = tempfile::tempdir().unwrap();
    let (gw, _up, access, events) = logging_to_files(files.path()).await;
    for p in ["/a", "/b"] {
        assert_eq!(get(&gw.url("main", p), &[]).await.status, 200);
    }
    wait_lines(&access, |l| l.len() >= 2);
    wait_lines(&events, |l| l.len() >= 2);
    let (old_access, old_events) = (
        files.path().join("access.log.1"),
        files.path().join("events.jsonl.1"),
    );
    std::fs::rename(&access, &old_access).unwrap();
    std::fs::rename(&events, &old_events).unwrap();
    gw.signal("USR1");
    // Each writer creates its new file when it reopens; lines queued after that go there.
    wait_until(|| access.exists() && events.exists());
    assert_eq!(get(&gw.url("main", "/c"), &[]).await.status, 200);
    assert_eq!(paths(&wait_lines(&access, |l| !l.is_empty())), ["/c"]);
    let new_events = wait_lines(&events, |l| !l.is_empty());
    assert_eq!(new_events.len(), 1, "{new_events:?}");
    assert_eq!(paths(&wait_lines(&old_access, |_| true)), ["/a", "/b"]);
    assert_eq!(wait_lines(&old_events, |_| true).len(), 2);
    assert!(gw.stderr().iter().any(|l| l.contains("reopening")));
}
