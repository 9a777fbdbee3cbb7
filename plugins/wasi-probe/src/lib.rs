//! Test fixture: a policy that, on every request, tries to reach what a WASI guest could
//! ask for (randomness aside: the Python policy's probe covers it) and reports each
//! outcome in the request header `x-wasi-probe` (`key=outcome;…`). Built for `wasm32-wasip2`, so Rust's standard library calls WASI 0.2
//! at run time: `std::env` reads `wasi:cli/environment`, `std::fs` resolves paths against
//! `wasi:filesystem/preopens`, `std::net` uses `wasi:sockets`.
//!
//! Configuration: `{"connect": "IP:PORT"}`, an address with a live listener (the test's
//! upstream), so that a connection refused by the sandbox cannot be mistaken for a closed
//! port.

use std::cell::RefCell;
use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

wit_bindgen::generate!({
    path: "../../wit",
    world: "sluice:policy/policy",
});

use sluice::policy::types::{Header, RequestEdits};

thread_local! {
    static CONNECT: RefCell<Option<SocketAddr>> = const { RefCell::new(None) };
}

/// `ok` on success, else `denied:<the error's Debug, made header-safe>`.
fn outcome<T, E: std::fmt::Debug>(r: Result<T, E>, ok: &str) -> String {
    match r {
        Ok(_) => ok.to_string(),
        Err(e) => format!(
            "denied:{}",
            format!("{e:?}").replace([';', '=', ' ', '"'], "_")
        ),
    }
}

/// Every probe's outcome, `key=outcome` joined by `;`.
fn probe() -> String {
    let mut out = Vec::new();
    out.push(format!("env={}", std::env::vars_os().count()));
    out.push(format!("args={}", std::env::args_os().count()));
    out.push(format!(
        "file={}",
        outcome(
            std::fs::File::open("/etc/hostname").and_then(|mut f| {
                let mut s = String::new();
                f.read_to_string(&mut s)
            }),
            "open",
        )
    ));
    out.push(format!(
        "root={}",
        outcome(std::fs::read_dir("/"), "listed")
    ));
    out.push(format!("cwd={}", outcome(std::fs::read_dir("."), "listed")));
    if let Some(addr) = CONNECT.with(|c| *c.borrow()) {
        out.push(format!(
            "tcp={}",
            outcome(
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
                "connected"
            )
        ));
    }
    out.push(format!(
        "tcp_listen={}",
        outcome(std::net::TcpListener::bind("127.0.0.1:0"), "bound")
    ));
    out.push(format!(
        "udp={}",
        outcome(UdpSocket::bind("127.0.0.1:0"), "bound")
    ));
    out.push(format!(
        "dns={}",
        outcome(("localhost", 80).to_socket_addrs(), "resolved")
    ));
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.push(format!("wall={wall}"));
    let start = Instant::now();
    let advances = (0..1000).any(|_| Instant::now() > start);
    out.push(format!(
        "mono_advances={}",
        if advances { "yes" } else { "no" }
    ));
    out.join(";")
}

struct Probe;

impl Guest for Probe {
    fn init(config: String) -> Result<(), String> {
        let addr = match config.split_once("\"connect\":\"") {
            None => None,
            Some((_, rest)) => {
                let end = rest.find('"').ok_or("bad connect value")?;
                Some(
                    rest[..end]
                        .parse::<SocketAddr>()
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        CONNECT.with(|c| *c.borrow_mut() = addr);
        Ok(())
    }

    fn on_request(_req: &RequestHead, _ctx: &Context) -> RequestDecision {
        RequestDecision::Edit(RequestEdits {
            set_headers: vec![Header {
                name: "x-wasi-probe".into(),
                value: probe().into_bytes(),
            }],
            append_headers: vec![],
            remove_headers: vec![],
            path: None,
            query: None,
        })
    }

    fn on_response(_req: &RequestHead, _resp: &ResponseHead, _ctx: &Context) -> ResponseDecision {
        ResponseDecision::Continue
    }
}

export!(Probe);
