//! WebSocket pass-through: after the upstream answers 101, the two upgraded connections are
//! joined and bytes are copied both ways until either side closes or nothing moves for the
//! listener's idle timeout. The tunnel keeps the client connection counted (`max_connections`,
//! the drain) and the target's in-flight count for as long as it runs.

use std::sync::Arc;

use http::{Method, Request, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::ConnInfo;
use super::tracked::Guards;

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

/// Joins the client's and the upstream's upgraded connections in a background task, holding
/// `conn` and `guards` until it ends.
pub(super) fn tunnel(client: OnUpgrade, upstream: OnUpgrade, conn: Arc<ConnInfo>, guards: Guards) {
    tokio::spawn(async move {
        let _guards = guards;
        let (c, u) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let mut c = TokioIo::new(c);
        let mut u = TokioIo::new(u);
        // The client side is still wrapped by the connection's activity tracking, and every
        // byte either way crosses it.
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => if let Err(e) = r {
                tracing::debug!(error = %e, "websocket tunnel ended with an error");
            },
            _ = conn.activity.idle_for(conn.idle_timeout) => {
                tracing::debug!("closing idle websocket tunnel");
            }
        }
    });
}
