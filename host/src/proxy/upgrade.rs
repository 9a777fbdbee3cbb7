//! WebSocket pass-through: after the upstream answers 101, the two upgraded connections are
//! joined and bytes are copied both ways until either side closes.

use http::{Method, Request, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Whether the request asks for a WebSocket upgrade (HTTP/1.1 GET with
/// `Connection: upgrade` and `Upgrade: websocket`).
pub(super) fn is_websocket<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let conn_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let websocket = h
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    req.method() == Method::GET && req.version() == Version::HTTP_11 && conn_upgrade && websocket
}

/// Joins the client's and the upstream's upgraded connections in a background task.
pub(super) fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let mut c = TokioIo::new(c);
        let mut u = TokioIo::new(u);
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
            tracing::debug!(error = %e, "websocket tunnel ended with an error");
        }
    });
}
