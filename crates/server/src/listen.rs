//! The API's listener: the accept loop, its connection limit, and hyper's HTTP/1.1 settings
//! (head size limits, the header-read timeout that also closes idle connections).
//!
//! Why not `axum::serve`: it takes neither a connection limit nor timeouts, and a client that
//! opens connections and sends nothing holds them (and their file descriptors) for ever.
//!
//! Every error this listener answers is JSON, like the router's. The router itself answers
//! a URI or a head over [`crate::guard`]'s limits; a head beyond hyper's own, larger limits
//! (or a request line hyper cannot parse) is answered by hyper before any router runs, with
//! an empty body: [`JsonParseErrors`] rewrites that one response into JSON on its way out.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::guard;

/// The most connections the API serves at once by default (`api.max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to send a request's head, and how long a kept-alive
/// connection may sit idle between requests, by default (`api.header_timeout`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Hyper's own limit on a request head (request line and headers), above the router's
/// [`guard::MAX_HEAD_BYTES`] so that the router answers most oversized heads itself.
const HYPER_MAX_HEAD: usize = 64 * 1024;
/// Hyper's read buffer: the head must fit in it.
const HYPER_MAX_BUF: usize = HYPER_MAX_HEAD + 8 * 1024;
/// Hyper's own limit on the number of headers, above [`guard::MAX_HEADERS`].
const HYPER_MAX_HEADERS: usize = 2 * guard::MAX_HEADERS;
/// How long a request's whole body may take to arrive by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The start of the error a body that does not arrive in time fails with; [`crate::guard`]
/// answers it with 408.
pub const BODY_TIMEOUT_MESSAGE: &str = "the request body did not arrive within";
/// How long the accept loop pauses after `accept` fails (out of file descriptors), so that
/// it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the API's listener treats connections.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The most connections served at once. Past it, new connections wait in the kernel's
    /// accept queue (they are not accepted, so they hold no file descriptor of the daemon)
    /// until a served one closes.
    pub max_connections: usize,
    /// How long a connection may take to send a whole request head, counted from when the
    /// daemon starts reading it: from the accept for the first request, from the end of the
    /// last response for the next ones. A connection that sends nothing for this long is
    /// closed, idle or half-sent alike.
    pub header_timeout: Duration,
    /// How long a request's whole body may take to arrive, from when a handler starts
    /// reading it; a body still incomplete then fails the request with a 408.
    pub body_timeout: Duration,
    /// HTTPS: every connection's TLS handshake, within `header_timeout`, before any
    /// request ([`tls_config`]). `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            tls: None,
        }
    }
}

/// The API's TLS from a PEM certificate chain and its private key (rustls on the ring
/// provider; TLS 1.2 and 1.3).
pub fn tls_config(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("read the certificate {}: {e}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| anyhow::anyhow!("read the private key {}: {e}", key_file.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .with_context(|| {
        format!(
            "{} and {} do not make a certificate and its key",
            cert_file.display(),
            key_file.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// Serve `app` on `listener` until `shutdown` is cancelled; then stop accepting, let the
/// requests in flight finish (idle connections close at once) and return.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.max_connections > 0,
        "the API's max_connections must be at least 1"
    );
    anyhow::ensure!(
        !opts.header_timeout.is_zero() && !opts.body_timeout.is_zero(),
        "the API's header and body timeouts must be above zero"
    );
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let tracker = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(HYPER_MAX_BUF)
        .max_header_size(HYPER_MAX_HEAD)
        .max_headers(HYPER_MAX_HEADERS)
        // One flat buffer per write, so that JsonParseErrors sees a parse error's whole head.
        .writev(false);
    let builder = Arc::new(builder);
    // At most one line a minute about the limit being reached, and about failing accepts
    // (which repeat every ACCEPT_BACKOFF).
    let at_limit = crate::auth::LogThrottle::new(Duration::from_secs(60));
    let accept_errors = crate::auth::LogThrottle::new(Duration::from_secs(60));
    loop {
        // A free slot first: past the limit, connections are left in the accept queue.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if let Some(suppressed) = at_limit.note(std::time::Instant::now()) {
                    tracing::warn!(
                        max_connections = opts.max_connections,
                        suppressed,
                        "the API serves its most connections: new ones wait until one closes"
                    );
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => p.context("the connection limit closed")?,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: the connection stays queued; try again shortly.
                    if let Some(suppressed) = accept_errors.note(std::time::Instant::now()) {
                        tracing::warn!(error = %e, suppressed, "the API could not accept a connection");
                    }
                    drop(permit);
                    tokio::select! {
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = opts.body_timeout;
        let service = app.clone().map_request(move |r: hyper::Request<Incoming>| {
            r.map(|b| axum::body::Body::new(DeadlineBody::new(b, body_timeout)))
        });
        let service = TowerToHyperService::new(service);
        let shutdown = shutdown.clone();
        let builder = builder.clone();
        let tls = opts.tls.clone();
        let handshake_limit = opts.header_timeout;
        tracker.spawn(async move {
            match tls {
                None => serve_conn(&builder, stream, service, &shutdown).await,
                Some(tls) => {
                    // The handshake in this connection's task, under the head's deadline:
                    // a client that connects and says nothing holds only its own slot.
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    match tokio::time::timeout(handshake_limit, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve_conn(&builder, s, service, &shutdown).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "API TLS handshake failed"),
                        Err(_) => tracing::debug!("API TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Serve one connection until it ends, or gracefully once `shutdown` is cancelled.
async fn serve_conn<S, Svc>(
    builder: &hyper::server::conn::http1::Builder,
    stream: S,
    service: Svc,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(JsonParseErrors::new(stream)), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "API connection ended with an error");
    }
}

/// A request body that fails once it has taken longer than its timeout to arrive, counted
/// from the first read: a client that sends a head, then a body byte by byte (or not at
/// all), cannot hold a handler and its connection for ever.
struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(format!(
                "{BODY_TIMEOUT_MESSAGE} {}",
                humantime::format_duration(timeout)
            )
            .into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose one automatic response from hyper (a 400, 414 or 431 for a request
/// head it could not parse, sent with an empty body before the router sees anything) is
/// rewritten into the API's JSON error shape. Every other byte passes through.
///
/// The rewrite only ever applies to a write that is a whole response head of status 4xx with
/// `content-length: 0`: the router never sends one (its errors all have JSON bodies), so only
/// hyper's parse-error answers match. Hyper closes the connection after them.
pub struct JsonParseErrors<S = TcpStream> {
    inner: S,
    /// The rewritten response still to be sent.
    pending: Vec<u8>,
    sent: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Wrap an accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }

    /// Send what is left of a rewritten response.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// The JSON response that replaces hyper's empty automatic one, if `buf` is that.
fn rewrite_parse_error(buf: &[u8]) -> Option<Vec<u8>> {
    let head = std::str::from_utf8(buf).ok()?;
    let rest = head
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| head.strip_prefix("HTTP/1.0 "))?;
    if !head.ends_with("\r\n\r\n") || head.matches("\r\n\r\n").count() != 1 {
        return None;
    }
    let has_empty_body = head
        .split("\r\n")
        .any(|line| line.eq_ignore_ascii_case("content-length: 0"));
    let code: u16 = rest.get(..3)?.parse().ok()?;
    if !has_empty_body || !(400..500).contains(&code) {
        return None;
    }
    let (reason, message) = match code {
        414 => (
            "URI Too Long",
            format!(
                "the request's URI is too long: at most {} bytes",
                guard::MAX_URI_BYTES
            ),
        ),
        431 => (
            "Request Header Fields Too Large",
            format!(
                "the request's head is too large: at most {} headers and {} bytes of headers",
                guard::MAX_HEADERS,
                guard::MAX_HEAD_BYTES
            ),
        ),
        400 => (
            "Bad Request",
            "malformed HTTP request: the request line or a header cannot be parsed".to_string(),
        ),
        _ => return None,
    };
    let body = serde_json::to_vec(&api::wire::ErrorBody {
        error: message,
        operation: None,
    })
    .ok()?;
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(json) = rewrite_parse_error(buf) {
            self.pending = json;
            self.sent = 0;
            // Taken whole: the rest of the rewrite goes out with the next write or flush.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_empty_4xx_heads_are_rewritten() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 14:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_parse_error(hyper_431).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("content-type: application/json\r\n"), "{out}");
        let body = out.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("too large"), "{v}");
        for kept in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n",
            b"HTTP/1.1 431 x\r\ncontent-length: 0\r\n\r\n{\"error\":1}",
            b"{\"HTTP/1.1 400 \": 1}",
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert!(rewrite_parse_error(kept).is_none());
        }
    }
}
