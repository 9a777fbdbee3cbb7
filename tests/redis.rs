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
    extra: Vec<String>,
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
        Self::start_with(&[])
    }

    /// Starts a server that speaks only TLS (on its port) with `cert` and `key`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        Self::start_with(&[
            "--port",
            "0",
            "--tls-port",
            "{port}",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-auth-clients",
            "no",
        ])
    }

    /// Starts a server on a free port with extra arguments (`{port}` is replaced by the
    /// port).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // A port found free can be taken before redis binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, dir.path(), &extra) {
                return Self {
                    child: Some(child),
                    port,
                    dir,
                    extra,
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
        self.child =
            Some(spawn(self.port, self.dir.path(), &self.extra).expect("redis-server restarts"));
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

/// A three-master Redis Cluster (no replicas).
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    /// Starts three cluster-enabled servers and joins them (`redis-cli --cluster create`),
    /// then waits until every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_with(&["--cluster-enabled", "yes"]))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            // Polling the nodes' own view: the cluster bus converges on its own schedule.
            while !n.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cluster never became ok"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Self { nodes }
    }

    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port));
        }
        url
    }
}

/// A Redis Sentinel monitoring one master as `mymaster`.
pub struct Sentinel {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    /// Starts a sentinel for `master`, ready once it logs that it monitors it.
    pub fn start(master: &RedisServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\n",
                    dir.path().display(),
                    master.port
                ),
            )
            .expect("sentinel.conf");
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            let out = child.stdout.take().expect("stdout");
            let mut lines = BufReader::new(out).lines();
            let ready = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|l| l.contains("+monitor master mymaster"));
            if ready {
                std::thread::spawn(move || for _ in lines {});
                return Self {
                    child,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis sentinel did not start");
    }

    /// `redis-sentinel://127.0.0.1:PORT/0?sentinelServiceName=mymaster`.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster",
            self.port
        )
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns redis-server on `port` and waits for its "Ready to accept connections" line;
/// `None` when it exits first (e.g. the port was taken).
fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(extra.iter().map(|a| a.replace("{port}", &port.to_string())))
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
