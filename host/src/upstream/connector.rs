//! Connections to upstream targets: TCP with a connect timeout, optionally TLS with a
//! custom CA and an SNI override, advertised through ALPN.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP handshake did not finish within the connect timeout.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The TCP connection failed.
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The URI had no usable host or port.
    #[error("invalid upstream address {0}")]
    Address(String),
}

/// Connects to upstream targets.
#[derive(Clone)]
pub struct Connector {
    timeout: Duration,
    tls: Option<(TlsConnector, Option<ServerName<'static>>)>,
}

impl Connector {
    /// A connector with a connect timeout and optional TLS (`sni` overrides the name
    /// sent and verified; default: the target's host).
    pub fn new(
        timeout: Duration,
        tls: Option<(Arc<rustls::ClientConfig>, Option<ServerName<'static>>)>,
    ) -> Self {
        let tls = tls.map(|(cfg, sni)| (TlsConnector::from(cfg), sni));
        Self { timeout, tls }
    }
}

/// An upstream connection, plain or TLS.
pub enum Stream {
    /// Cleartext TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(_) => Connected::new(),
            Self::Tls(s) => {
                let c = Connected::new();
                if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                    c.negotiated_h2()
                } else {
                    c
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| ConnectError::Address(uri.to_string()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            // Upstream targets always name their port; an outbound URL may leave the
            // scheme's default implied.
            let port = uri
                .port_u16()
                .or_else(|| default_port(&uri))
                .ok_or_else(|| ConnectError::Address(uri.to_string()))?;
            let tcp = tokio::time::timeout(this.timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| ConnectError::Timeout(this.timeout))??;
            tcp.set_nodelay(true)?;
            // A peer that vanished without a reset is found by the kernel within about a
            // minute of silence, for connections waiting in the pool too.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(30))
                .with_interval(Duration::from_secs(10))
                .with_retries(3);
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
            let stream = match &this.tls {
                None => Stream::Plain(tcp),
                Some((connector, sni)) => {
                    let name = match sni {
                        Some(n) => n.clone(),
                        None => ServerName::try_from(host.clone())
                            .map_err(|_| ConnectError::Address(host.clone()))?,
                    };
                    let tls = tokio::time::timeout(this.timeout, connector.connect(name, tcp))
                        .await
                        .map_err(|_| ConnectError::Timeout(this.timeout))?
                        .map_err(ConnectError::Tls)?;
                    Stream::Tls(Box::new(tls))
                }
            };
            Ok(TokioIo::new(stream))
        })
    }
}
/// The default port of `uri`'s scheme (`http` 80, `https` 443; none for any other).
pub fn default_port(uri: &Uri) -> Option<u16> {
    match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    }
}
