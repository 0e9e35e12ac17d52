//! Large answers and shared answers: what keeps concurrent reads from ballooning memory
//! and from doing the same work once per request.
//!
//! - [`AnswerGate`]: at most a few large answers (up to [`store::MAX_EVENT_LIMIT`] records:
//!   events, problem history, operations, instances, DRT runs) are alive at once. A request
//!   takes a permit before it reads the store and keeps it while its answer is serialised
//!   and sent, in chunks of [`CHUNK_BYTES`] (or until [`SEND_DEADLINE`]: a client that does
//!   not read cannot hold a permit for ever); the others wait holding nothing. Without it,
//!   200 concurrent `events?limit=1000` each held their records, their wire copy and their
//!   JSON at the same time, because the store hands out answers faster than two async
//!   workers serialise them, and hyper copied each whole answer into its connection's write
//!   buffer: 200 MiB above idle (docs/BENCHMARKS.md, "API reads").
//! - [`Coalesced`]: one computation of an answer serves every request that arrived before
//!   it started (`GET /api/v1/clusters`), so 200 concurrent readers cost one store read
//!   and one serialisation per turn, not 200, and no reader gets an answer older than its
//!   request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use serde::Serialize;
use tokio::sync::{oneshot, Mutex, OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How many large answers are built at once by default: enough to keep the store's four
/// reader threads busy, few enough that their memory stays small (about 1 MB each for
/// 1,000 events, records and JSON together).
pub const DEFAULT_LARGE_ANSWERS: usize = 4;

/// A large answer goes to hyper this many bytes at a time, so that a connection's write
/// buffer holds a few chunks, never a whole answer.
pub const CHUNK_BYTES: usize = 16 * 1024;

/// How long a large answer keeps its permit while it is being sent. A client that reads
/// slower than that gives the permit back (its answer stays, with its connection, until
/// sent or closed: at most `api.max_connections` answers of one page each).
pub const SEND_DEADLINE: Duration = Duration::from_secs(10);

/// What keeps concurrent reads cheap; cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    /// The large answers built at once.
    pub large: AnswerGate,
    /// `GET /api/v1/clusters`, computed once for the requests that wait for it.
    pub clusters: Arc<Coalesced>,
}

/// JSON bytes, answered with `Content-Type: application/json`.
#[derive(Clone, Debug)]
pub struct JsonBytes(pub Bytes);

impl JsonBytes {
    /// `value` as JSON, or a 500 (logged) when it cannot be (a map with non-string keys).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, ApiError> {
        serde_json::to_vec(value)
            .map(|v| Self(Bytes::from(v)))
            .map_err(|e| ApiError::Internal(format!("serialise an answer: {e}")))
    }
}

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// At most `limit` large answers alive at once, each from its store read to its JSON
/// bytes. Cloning shares the gate.
#[derive(Clone, Debug)]
pub struct AnswerGate(Arc<GateInner>);

#[derive(Debug)]
struct GateInner {
    permits: Arc<Semaphore>,
    limit: usize,
    send_deadline: Duration,
    alive: AtomicUsize,
    peak: AtomicUsize,
    served: AtomicU64,
}

impl Default for AnswerGate {
    fn default() -> Self {
        Self::new(DEFAULT_LARGE_ANSWERS)
    }
}

impl AnswerGate {
    /// A gate of `limit` permits (at least 1), each kept up to [`SEND_DEADLINE`] while its
    /// answer is sent.
    pub fn new(limit: usize) -> Self {
        Self::with_send_deadline(limit, SEND_DEADLINE)
    }

    /// A gate of `limit` permits (at least 1), each kept up to `send_deadline` while its
    /// answer is sent.
    pub fn with_send_deadline(limit: usize, send_deadline: Duration) -> Self {
        let limit = limit.max(1);
        Self(Arc::new(GateInner {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            send_deadline,
            alive: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            served: AtomicU64::new(0),
        }))
    }

    /// How many large answers may be alive at once.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Large answers being built now.
    pub fn alive(&self) -> usize {
        self.0.alive.load(Ordering::SeqCst)
    }

    /// The most large answers that were alive at once since the gate was made.
    pub fn peak(&self) -> usize {
        self.0.peak.load(Ordering::SeqCst)
    }

    /// Large answers built (or failed) since the gate was made.
    pub fn served(&self) -> u64 {
        self.0.served.load(Ordering::SeqCst)
    }

    /// Build an answer with `build` (its store reads) and serialise it, holding one permit
    /// throughout and while the answer is sent (up to [`SEND_DEADLINE`]); the records are
    /// dropped as soon as they are JSON. A request whose client goes away gives its permit
    /// back then.
    pub async fn json<T, F>(&self, build: F) -> Result<LargeAnswer, ApiError>
    where
        T: Serialize,
        F: Future<Output = Result<T, ApiError>>,
    {
        self.bytes(HeaderValue::from_static("application/json"), async {
            let value = build.await?;
            let JsonBytes(json) = JsonBytes::of(&value)?;
            Ok(json)
        })
        .await
    }

    /// [`Self::json`] for an answer `build` encodes itself, of type `content_type`.
    pub async fn bytes<F>(
        &self,
        content_type: HeaderValue,
        build: F,
    ) -> Result<LargeAnswer, ApiError>
    where
        F: Future<Output = Result<Bytes, ApiError>>,
    {
        let permit = self
            .0
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable("the API is shutting down".into()))?;
        let held = Held::enter(self.0.clone(), permit);
        let body = build.await?;
        Ok(LargeAnswer {
            body,
            content_type,
            held,
        })
    }
}

/// One large answer's permit, counted as alive until dropped (also when the request is
/// cancelled).
struct Held {
    gate: Arc<GateInner>,
    _permit: OwnedSemaphorePermit,
}

impl Held {
    fn enter(gate: Arc<GateInner>, permit: OwnedSemaphorePermit) -> Self {
        let now = gate.alive.fetch_add(1, Ordering::SeqCst) + 1;
        gate.peak.fetch_max(now, Ordering::SeqCst);
        Self {
            gate,
            _permit: permit,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gate.alive.fetch_sub(1, Ordering::SeqCst);
        self.gate.served.fetch_add(1, Ordering::SeqCst);
    }
}

/// A large answer's bytes with its permit: answered with its type and length, sent
/// [`CHUNK_BYTES`] at a time.
pub struct LargeAnswer {
    body: Bytes,
    content_type: HeaderValue,
    held: Held,
}

impl LargeAnswer {
    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

impl IntoResponse for LargeAnswer {
    fn into_response(self) -> Response {
        // The permit goes to a watch that gives it back when the body is done or dropped,
        // or at the deadline, whichever is first: hyper stops polling a body whose client
        // does not read, so the body could not see the deadline itself.
        let (done, sent) = oneshot::channel::<()>();
        let held = self.held;
        let deadline = held.gate.send_deadline;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(deadline, sent).await;
            drop(held);
        });
        let body = ChunkedBody {
            json: self.body,
            done: Some(done),
            just_sent: false,
        };
        ([(header::CONTENT_TYPE, self.content_type)], Body::new(body)).into_response()
    }
}

/// Bytes handed out [`CHUNK_BYTES`] at a time; dropping `done` (at the last chunk, or with
/// the body) ends the permit's watch.
///
/// After each chunk the body says "not yet" once (and wakes its task at once): hyper then
/// writes what it holds to the socket before it asks for more. Otherwise it fills its
/// connection's write buffer up to its limit (`max_buf_size`, 72 KiB) first, and every
/// connection that ever sent a large answer keeps a buffer of that size.
struct ChunkedBody {
    json: Bytes,
    done: Option<oneshot::Sender<()>>,
    just_sent: bool,
}

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if std::mem::take(&mut self.just_sent) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self.json.is_empty() {
            self.done = None;
            return Poll::Ready(None);
        }
        let n = self.json.len().min(CHUNK_BYTES);
        // A copy, so that the answer is freed once its last chunk is handed over, not kept
        // whole by a slice of it in hyper's buffer.
        let chunk = Bytes::copy_from_slice(&self.json[..n]);
        self.json = self.json.slice(n..);
        if self.json.is_empty() {
            self.json = Bytes::new();
            self.done = None;
        }
        self.just_sent = true;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.json.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.json.len() as u64)
    }
}

/// An answer computed once for every request that arrived before the computation started.
///
/// A request notes how many computations had started when it arrived, then queues (in
/// order) for the one computing slot. When its turn comes, the answer of a computation that
/// started after it arrived is fresh enough: it is returned as is. Otherwise the request
/// computes a new answer, which the requests queued behind it take. So under load a
/// request waits for at most two computations, and never gets an answer that began before
/// it did (a write that finished before the request is in it). Failures are not kept: the
/// next in line computes again.
#[derive(Debug, Default)]
pub struct Coalesced {
    /// Computations started.
    started: AtomicU64,
    /// Computations that ran (for tests and figures).
    computed: AtomicU64,
    /// The computing slot, with the last answer and the number of its computation.
    slot: Mutex<Option<(u64, JsonBytes)>>,
}

impl Coalesced {
    /// The answer, from a computation that started after this call: a shared one if one
    /// did, else `compute`'s.
    pub async fn get<F, Fut>(&self, compute: F) -> Result<JsonBytes, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<JsonBytes, ApiError>>,
    {
        let arrived_after = self.started.load(Ordering::SeqCst);
        let mut slot = self.slot.lock().await;
        if let Some((number, answer)) = slot.as_ref() {
            if *number > arrived_after {
                return Ok(answer.clone());
            }
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        self.computed.fetch_add(1, Ordering::SeqCst);
        let answer = compute().await?;
        *slot = Some((number, answer.clone()));
        Ok(answer)
    }

    /// How many computations ran.
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_gate_lets_at_most_its_limit_build_at_once() {
        let gate = AnswerGate::new(3);
        let building = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (gate, building, most) = (gate.clone(), building.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                gate.json(async {
                    let now = building.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    building.fetch_sub(1, Ordering::SeqCst);
                    Ok(vec![i; 100])
                })
                .await
            }));
        }
        for t in tasks {
            let json = t.await.unwrap().unwrap();
            assert!(json.body().starts_with(b"["));
        }
        assert!(most.load(Ordering::SeqCst) <= 3);
        assert!(gate.peak() <= 3 && gate.peak() >= 1, "{}", gate.peak());
        assert_eq!(gate.alive(), 0);
        assert_eq!(gate.served(), 40);
    }

    #[tokio::test]
    async fn a_cancelled_request_gives_its_permit_back() {
        let gate = AnswerGate::new(1);
        let stuck = gate.json(std::future::pending::<Result<(), ApiError>>());
        // Polled once (it takes the permit), then dropped as a gone client's would be.
        assert!(tokio::time::timeout(Duration::from_millis(10), stuck)
            .await
            .is_err());
        assert_eq!(gate.alive(), 0);
        let json = gate.json(async { Ok("ok") }).await.unwrap();
        assert_eq!(&json.body()[..], b"\"ok\"");
    }

    #[tokio::test]
    async fn an_answer_being_sent_keeps_its_permit_until_sent_or_its_deadline() {
        // Sent whole: the permit comes back when the body ends, long before the deadline.
        let gate = AnswerGate::with_send_deadline(1, Duration::from_secs(3_600));
        let response = gate.json(async { Ok(vec![7u8; 50_000]) }).await.unwrap();
        let body = response.into_response().into_body();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        assert!(bytes.len() > CHUNK_BYTES);
        let again = gate.json(async { Ok(1) });
        let again = tokio::time::timeout(Duration::from_secs(20), again).await;
        drop(again.expect("the permit came back").unwrap());

        // Never read (a client that stops reading): the permit comes back at the deadline,
        // while the answer itself stays with its connection.
        let gate = AnswerGate::with_send_deadline(1, Duration::from_millis(50));
        let unread = gate
            .json(async { Ok("never read") })
            .await
            .unwrap()
            .into_response();
        assert_eq!(gate.alive(), 1);
        let after = gate.json(async { Ok(2) });
        let after = tokio::time::timeout(Duration::from_secs(20), after).await;
        drop(
            after
                .expect("the permit came back at the deadline")
                .unwrap(),
        );
        drop(unread);
    }

    #[tokio::test]
    async fn a_coalesced_answer_is_never_older_than_the_request() {
        let shared = Coalesced::default();
        let version = AtomicU64::new(1);
        let answer = || async { JsonBytes::of(&version.load(Ordering::SeqCst)) };
        assert_eq!(&shared.get(answer).await.unwrap().0[..], b"1");
        // A write, then a request: the request computes again and sees it.
        version.store(2, Ordering::SeqCst);
        assert_eq!(&shared.get(answer).await.unwrap().0[..], b"2");
        assert_eq!(shared.computed(), 2);
        // A failure is not kept.
        let failed = shared
            .get(|| async { Err::<JsonBytes, _>(ApiError::Unavailable("no".into())) })
            .await;
        assert!(failed.is_err());
        assert_eq!(&shared.get(answer).await.unwrap().0[..], b"2");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_computation_hands_over_to_a_waiting_request() {
        let shared = Arc::new(Coalesced::default());
        let first = shared.clone();
        let first = tokio::spawn(async move {
            first
                .get(std::future::pending::<Result<JsonBytes, ApiError>>)
                .await
        });
        tokio::task::yield_now().await; // the first computes, for ever
        let second = shared.clone();
        let second =
            tokio::spawn(async move { second.get(|| async { JsonBytes::of("second") }).await });
        tokio::task::yield_now().await; // the second waits for it
        first.abort(); // its client went away
        let got = tokio::time::timeout(Duration::from_secs(20), second)
            .await
            .expect("the waiting request computed")
            .unwrap()
            .unwrap();
        assert_eq!(&got.0[..], b"\"second\"");
        assert_eq!(shared.computed(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_requests_share_computations() {
        let shared = Arc::new(Coalesced::default());
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                shared
                    .get(|| async {
                        tokio::task::yield_now().await;
                        JsonBytes::of("answer")
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(&t.await.unwrap().0[..], b"\"answer\"");
        }
        // On one thread: the first request computes; the other 99 arrive while it does, so
        // its answer is older than they are and the second computes again; the 98 queued
        // behind it take that one.
        assert_eq!(shared.computed(), 2);
    }
}
