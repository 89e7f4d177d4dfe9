//! How Huddle serves HTTP on its TCP listener. Each connection is sniffed for the HTTP/2 preface
//! (without reading it) and then served as that one version: hyper's own version detection hands
//! HTTP/1 the first 24 bytes on their own, and its read buffer then doubles to 16 KiB for every
//! connection (most of what an idle stream cost).
//!
//! hyper answers a request it cannot parse (a URL over 64 KiB, a malformed request line or header,
//! a head too large) itself, before any handler sees it, and with an empty body. Each connection
//! accepted here gives those answers a JSON body that says why, as every other error of the API
//! has.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::ApiError;

/// The peer's address, as `ConnectInfo`.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// How long a new connection may stay silent before it is closed.
const FIRST_BYTES_DEADLINE: Duration = Duration::from_secs(30);

/// What a client starts an HTTP/2 connection with (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One builder per version a connection can be known to speak, and hyper's detection for the rest.
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    either: auto::Builder<TokioExecutor>,
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting and returns once every
/// open connection has finished (each is told to finish its requests and close).
pub async fn serve(
    mut listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let builders = Arc::new(Builders {
        http1: hyper::server::conn::http1::Builder::new(),
        http2: hyper::server::conn::http2::Builder::new(TokioExecutor::new()),
        either: auto::Builder::new(TokioExecutor::new()),
    });
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, addr) = tokio::select! {
            // axum's accept waits out errors such as too many open files.
            accepted = axum::serve::Listener::accept(&mut listener) => accepted,
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(Peer(addr)));
                req
            },
        ));
        let (builders, watcher, shutdown) =
            (builders.clone(), graceful.watcher(), shutdown.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 24];
            // A connection that has said nothing yet goes at once at shutdown.
            let n = tokio::select! {
                peeked = tokio::time::timeout(FIRST_BYTES_DEADLINE, tcp.peek(&mut first)) => match peeked {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => return,
                },
                () = shutdown.cancelled() => return,
            };
            let (first, io) = (&first[..n], TokioIo::new(Explained::new(tcp)));
            // Each kind in a task of its own size: an idle HTTP/1 stream does not carry the room
            // an HTTP/2 connection's state takes.
            if first == &H2_PREFACE[..] {
                let conn = builders.http2.serve_connection(io, service);
                tokio::spawn(until_closed(watcher.watch(conn), addr));
            } else if H2_PREFACE.starts_with(first) {
                // Part of the preface so far: hyper reads on until it knows.
                let conn = builders.either.serve_connection(io, service).into_owned();
                tokio::spawn(until_closed(watcher.watch(conn), addr));
            } else {
                let conn = builders.http1.serve_connection(io, service);
                tokio::spawn(until_closed(watcher.watch(conn), addr));
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The connection, and a trace line if it ended with an error. A combinator, not an `async fn`:
/// that would hold the connection twice (its argument and the future it awaits).
fn until_closed<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    conn.map(move |ended| {
        if let Err(e) = ended {
            tracing::trace!(%peer, error = %e, "connection ended with an error");
        }
    })
}

/// A connection that rewrites hyper's bodiless parse-error answers into explained ones.
pub struct Explained<T> {
    inner: T,
    /// The explained answer being written, how much of it is written, and how many bytes of
    /// hyper's answer it stands for (reported written once all of it is).
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> Explained<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The explained form of `head` when it is one of hyper's parse-error answers: its status line,
/// no body (`content-length: 0`), and nothing after the head. Huddle's own error answers always
/// have a body, so they never match.
fn explain(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let (status_line, rest) = text.split_once("\r\n")?;
    let message = match status_line.strip_prefix("HTTP/1.1 ")? {
        "400 Bad Request" => "Malformed request: it is not valid HTTP.",
        "414 URI Too Long" => "The URL is too long: at most 65,534 bytes.",
        "431 Request Header Fields Too Large" => "The request's headers are too large.",
        _ => return None,
    };
    let headers = rest.strip_suffix("\r\n\r\n")?;
    if !headers
        .split("\r\n")
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let body = serde_json::to_vec(&ApiError::bad_request(message)).ok()?;
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for h in headers.split("\r\n") {
        if h.to_ascii_lowercase().starts_with("date:") {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<T: AsyncRead + Unpin> AsyncRead for Explained<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> Explained<T> {
    /// Writes the pending explained answer to its end; then hyper's `claimed` bytes count as
    /// written.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((out, done, claimed)) = &mut self.pending {
            if *done == out.len() {
                let claimed = *claimed;
                self.pending = None;
                return Poll::Ready(Ok(claimed));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &out[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(0))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Explained<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none()
            && let Some(out) = explain(buf)
        {
            this.pending = Some((out, 0, buf.len()));
        }
        if this.pending.is_some() {
            return this.poll_pending(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper writes a head in one piece, first.
        let first = bufs.iter().find(|b| !b.is_empty());
        if self.pending.is_some() || first.is_some_and(|b| explain(b).is_some()) {
            return self.poll_write(cx, first.map_or(&[][..], |b| &b[..]));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() {
            ready!(self.poll_pending(cx))?;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::explain;

    #[test]
    fn only_bodiless_parse_error_answers_are_explained() {
        let hyper = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 20:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(explain(hyper).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("date: Sun"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "bad_request");
        assert!(json["message"].as_str().unwrap().contains("too long"));
        // Huddle's own answers carry a body (or are not errors): left alone.
        for own in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 52\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\nmore",
        ] {
            assert!(explain(own).is_none());
        }
    }
}
