//! Prior-knowledge h2c detection: read the first bytes of a cleartext connection, decide
//! between HTTP/2 (the client sent the connection preface) and HTTP/1.1, and hand the bytes
//! already read back to the chosen protocol.
//!
//! Each protocol is then served by the same builder, with the same limits, as on a listener
//! without h2c (hyper-util's `auto` builder cannot set HTTP/1's `max_header_size`). The bytes
//! read are put back with tokio's own combinators (`chain` before the read half, `join`ed
//! with the write half).

use std::io;
use std::io::Cursor;

use tokio::io::{AsyncReadExt, Chain, Join, Take, join};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose first bytes were already read: they are read again before the rest.
/// The owned halves of a `TcpStream` take no lock per read or write.
pub(super) type Rewound =
    Join<Chain<Take<Cursor<[u8; PREFACE.len()]>>, OwnedReadHalf>, OwnedWriteHalf>;

/// Reads from `tcp` until the bytes received complete the HTTP/2 preface or stop matching
/// it. Returns whether they are the preface (`None` when the peer closed first), and the
/// connection with those bytes put back in front of its stream.
pub(super) async fn sniff(tcp: TcpStream) -> io::Result<Option<(bool, Rewound)>> {
    let (mut read, write) = tcp.into_split();
    let mut buf = [0u8; PREFACE.len()];
    let mut n = 0;
    let h2 = loop {
        let m = read.read(&mut buf[n..]).await?;
        if m == 0 {
            if n == 0 {
                return Ok(None);
            }
            break false;
        }
        n += m;
        if buf[..n] != PREFACE[..n] {
            break false;
        }
        if n == PREFACE.len() {
            break true;
        }
    };
    let seen = Cursor::new(buf).take(n as u64);
    Ok(Some((h2, join(seen.chain(read), write))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Writes `chunks` from a client (then closes it) and sniffs the server side.
    async fn sniffed(chunks: &[&[u8]]) -> Option<(bool, Vec<u8>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            for c in chunks {
                client.write_all(&c).await.unwrap();
                client.flush().await.unwrap();
            }
            // Dropping the client ends the stream.
        });
        let (server, _) = listener.accept().await.unwrap();
        let r = sniff(server).await.unwrap();
        writer.await.unwrap();
        match r {
            None => None,
            Some((h2, mut io)) => {
                let mut all = Vec::new();
                io.read_to_end(&mut all).await.unwrap();
                Some((h2, all))
            }
        }
    }

    #[tokio::test]
    async fn the_preface_in_pieces_is_http2_and_nothing_is_lost() {
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        let (h2, got) = sniffed(&[&sent[..5], &sent[5..20], &sent[20..]])
            .await
            .unwrap();
        assert!(h2);
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn an_http1_request_is_not_http2_and_nothing_is_lost() {
        for req in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PUT / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PRI * HTTP/1.1\r\n\r\n",
        ] {
            let (h2, got) = sniffed(&[req]).await.unwrap();
            assert!(!h2, "{}", String::from_utf8_lossy(req));
            assert_eq!(got, req);
        }
    }

    #[tokio::test]
    async fn a_truncated_preface_is_not_http2_and_an_empty_stream_is_none() {
        let (h2, got) = sniffed(&[&PREFACE[..10]]).await.unwrap();
        assert!(!h2);
        assert_eq!(got, &PREFACE[..10]);
        assert!(sniffed(&[]).await.is_none());
    }
}
