//! A real `redis-server` as a test fixture: started on a free loopback port with no
//! persistence, ready when it logs so (no polling), killable and restartable on the same
//! port, driven with raw RESP for the commands the tests need (`CLIENT PAUSE`, `FLUSHALL`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running (or killed) redis-server.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, dir.path()) {
                return Self {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.child = Some(spawn(self.port, self.dir.path()).expect("redis-server restarts"));
    }

    /// Sends one command and returns the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).expect("write");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("read reply");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// `CLIENT PAUSE ms ALL`: the server stops answering every client for `ms`.
    pub fn pause(&self, ms: u64) {
        let r = self.command(&["CLIENT", "PAUSE", &ms.to_string(), "ALL"]);
        assert!(r.starts_with("+OK"), "{r}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns redis-server on `port` and waits for its "Ready to accept connections" line;
/// `None` when it exits first (e.g. the port was taken).
fn spawn(port: u16, dir: &std::path::Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server not found: install it (the justfile's test recipe does)");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("Ready to accept connections"));
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Some(child)
}
