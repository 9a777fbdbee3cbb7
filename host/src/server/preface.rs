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

use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, Chain, Join, ReadHalf, WriteHalf, join, split,
};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose first bytes were already read: they are read again before the rest.
pub(super) type Rewound<T> = Join<Chain<Cursor<Vec<u8>>, ReadHalf<T>>, WriteHalf<T>>;

/// Reads from `io` until the bytes received complete the HTTP/2 preface or stop matching
/// it. Returns whether they are the preface (`None` when the peer closed first), and `io`
/// with those bytes put back in front of its stream.
pub(super) async fn sniff<T: AsyncRead + AsyncWrite>(
    io: T,
) -> io::Result<Option<(bool, Rewound<T>)>> {
    let (mut read, write) = split(io);
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
    let seen = Cursor::new(buf[..n].to_vec());
    Ok(Some((h2, join(seen.chain(read), write))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(chunks: &[&[u8]]) -> Option<(bool, Vec<u8>)> {
        let (mut client, server) = tokio::io::duplex(1024);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for c in chunks {
                client.write_all(&c).await.unwrap();
            }
            // Dropping the client ends the stream.
        });
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
