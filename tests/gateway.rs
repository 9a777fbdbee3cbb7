//! The real `sluice` binary as a test fixture.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Path of the `sluice` binary built by `cargo build -p sluice` (or `$SLUICE_BIN`).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("sluice{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p sluice` first (the justfile does)",
        bin.display()
    );
    bin
}

#[derive(Default)]
struct Lines {
    stderr: Vec<String>,
    stdout: Vec<String>,
    closed: usize,
}

/// A running gateway process with its captured output.
pub struct Gateway {
    child: Option<Child>,
    dir: tempfile::TempDir,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    /// Listener name → bound address.
    pub addrs: HashMap<String, SocketAddr>,
}

impl Gateway {
    /// Starts `sluice run` on `config` (TOML) and waits until it logs `ready`.
    pub fn start(config: &str) -> Self {
        Self::try_start(config).unwrap_or_else(|e| panic!("gateway did not start: {e}"))
    }

    /// Starts the gateway; on failure returns its stderr.
    pub fn try_start(config: &str) -> Result<Self, String> {
        Self::try_start_with_env(config, &[])
    }

    /// Starts the gateway with extra environment variables; on failure returns its stderr.
    pub fn try_start_with_env(config: &str, env: &[(&str, &str)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gateway.toml");
        // Every gateway gets its admin API on a random port (tests run in parallel).
        let config = if config.contains("[admin]") {
            config.to_string()
        } else {
            format!("{config}\n[admin]\nbind = \"127.0.0.1:0\"\n")
        };
        std::fs::write(&path, config).expect("write config");
        let path = path.display().to_string();
        Self::spawn(dir, None, &["run", "--config", &path], env)
    }

    /// Runs `sluice ARGS` with `dir` as its working directory (the gateway owns `dir` and
    /// removes it when dropped) and waits until it logs `ready`; on failure returns its
    /// stderr.
    pub fn try_run_in(
        dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let cwd = dir.path().to_path_buf();
        Self::spawn(dir, Some(&cwd), args, env)
    }

    /// Runs `sluice ARGS` (in `cwd`, else in the test's own directory), owning `dir`.
    fn spawn(
        dir: tempfile::TempDir,
        cwd: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut cmd = Command::new(binary());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            // Each gateway generates its own admin token (see `admin_token`).
            .env_remove("SLUICE_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let lines: Arc<(Mutex<Lines>, Condvar)> = Arc::default();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (stream, is_err) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, false),
            (Box::new(err), true),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let (m, cv) = &*lines;
                    let mut l = m.lock().unwrap();
                    if is_err {
                        l.stderr.push(line);
                    } else {
                        l.stdout.push(line);
                    }
                    cv.notify_all();
                }
                let (m, cv) = &*lines;
                m.lock().unwrap().closed += 1;
                cv.notify_all();
            });
        }
        let mut gw = Self {
            child: Some(child),
            dir,
            lines,
            addrs: HashMap::new(),
        };
        if !gw.wait_stderr(|l| l.contains(" ready"), Duration::from_secs(20)) {
            let text = gw.stderr().join("\n");
            return Err(text);
        }
        for line in gw.stderr() {
            if line.contains(" listening ") {
                let name = field(&line, "listener=").expect("listener name");
                let addr = field(&line, "addr=").expect("listener addr");
                gw.addrs.insert(name, addr.parse().expect("addr"));
            }
        }
        Ok(gw)
    }

    /// The bound address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// `http://addr` of listener `name`.
    pub fn url(&self, name: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(name))
    }

    /// The admin API's base URL (`http://addr`).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.addr("admin"))
    }

    /// The bootstrap admin token the gateway generated (`data/admin-token`).
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/admin-token"))
            .expect("admin token file")
            .trim()
            .to_string()
    }

    /// The directory holding the configuration file (and, by default, `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the configuration file the gateway was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends a signal by name (`HUP`, `TERM`, `KILL` …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Captured stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().stderr.clone()
    }

    /// Captured stdout (access log) lines so far.
    pub fn stdout(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().stdout.clone()
    }

    /// Waits until a stderr line satisfies `pred` (counting lines already seen).
    pub fn wait_stderr(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        self.wait_lines(|l| l.stderr.iter().any(|x| pred(x)), timeout)
    }

    /// Waits until the number of stderr lines matching `pred` reaches `n`.
    pub fn wait_stderr_count(
        &self,
        pred: impl Fn(&str) -> bool,
        n: usize,
        timeout: Duration,
    ) -> bool {
        self.wait_lines(
            |l| l.stderr.iter().filter(|x| pred(x)).count() >= n,
            timeout,
        )
    }

    /// Waits until a stdout line satisfies `pred`.
    pub fn wait_stdout(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        self.wait_lines(|l| l.stdout.iter().any(|x| pred(x)), timeout)
    }

    fn wait_lines(&self, done: impl Fn(&Lines) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut l = m.lock().unwrap();
        loop {
            if done(&l) {
                return true;
            }
            if l.closed == 2 {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            l = cv.wait_timeout(l, deadline - now).unwrap().0;
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling the exit status: there is no portable blocking wait with a timeout.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// File descriptors the process has open, from /proc.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A failing test shows what its gateway logged (the last lines), to tell why.
        if std::thread::panicking() {
            let l = self.lines.0.lock().unwrap_or_else(|p| p.into_inner());
            let tail = &l.stderr[l.stderr.len().saturating_sub(40)..];
            eprintln!("--- gateway stderr (last {} lines) ---", tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_string())
}

/// Runs `sluice validate PATH` on an existing file and returns (exit code, output).
pub fn validate_file(path: &Path) -> (i32, String) {
    let out = Command::new(binary())
        .arg("validate")
        .arg(path)
        .output()
        .expect("run validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs `sluice validate FILE` and returns (exit code, stdout+stderr).
pub fn validate(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(binary())
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), text)
}
