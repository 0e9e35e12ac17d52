//! [`Client`]: the one HTTP client of the daemon's API, used by the CLI and the DRT runner.
//!
//! Every call answers a [`Reply`]: the typed value and the body as received (the CLI prints
//! the body unchanged with `--json`). A call that fails is a [`ClientError`] a caller can
//! branch on; a rejoin refused for errant GTIDs is [`ClientError::ErrantGtids`] with the list.
//! The token is sent as a bearer header and never appears in an error or a log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::wire::{ClusterList, EventList, ProblemList, Topology};

/// How long a read (or a small write) may take, connect included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long an operation (failover, switchover, rejoin) may take before the client stops
/// waiting; the operation goes on in the daemon, and `GET /api/v1/operations` shows it.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an `http://` URL that can hold a path.
    #[error("--api {url:?} {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token file cannot be read, or holds no token.
    #[error("{0}")]
    TokenFile(String),
    /// Nothing listens at the base URL.
    #[error("cannot reach the dbfleet daemon at {api}: is `dbfleet serve` running?")]
    Unreachable {
        /// The base URL.
        api: String,
    },
    /// The daemon did not answer in time.
    #[error("the dbfleet daemon at {api} did not answer within {} s", timeout.as_secs())]
    Timeout {
        /// The base URL.
        api: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The call failed on the way (neither refused nor timed out).
    #[error("call the dbfleet daemon at {api}")]
    Http {
        /// The base URL.
        api: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The daemon refused a rejoin: the instance holds GTIDs the writer lacks.
    #[error("{message}")]
    ErrantGtids {
        /// The instance refused.
        instance: String,
        /// Its errant GTIDs, as the daemon lists them.
        gtids: Vec<String>,
        /// The daemon's text.
        message: String,
        /// The rejoin's operation record.
        operation: Value,
    },
    /// The daemon answered with an error status (`{"error": ...}`).
    #[error("{message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The daemon's text, or the status when the body holds none.
        message: String,
        /// The operation the error is about, when one ended other than succeeded.
        operation: Option<Value>,
    },
    /// The daemon answered 2xx with a body that is not what the route answers.
    #[error("the daemon at {api} answered something that is not {what}")]
    Decode {
        /// The base URL.
        api: String,
        /// What was expected.
        what: &'static str,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Whether the error is the caller's input (bad URL, token file), not the daemon's.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::BadUrl { .. } | Self::TokenFile(_))
    }

    /// The HTTP status the daemon answered, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::ErrantGtids { .. } => Some(409),
            _ => None,
        }
    }
}

/// A successful answer: typed, and the body as received.
#[derive(Debug)]
pub struct Reply<T> {
    /// The answer, parsed.
    pub value: T,
    /// The body as the daemon sent it.
    pub body: Vec<u8>,
}

/// Which operations `GET /api/v1/operations` lists.
#[derive(Clone, Debug, Default)]
pub struct OperationFilter {
    /// Only this cluster's.
    pub cluster: Option<String>,
    /// Only in this state (`running`, `succeeded`, ...).
    pub state: Option<String>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
    /// Only those older than this id: the page after one whose last operation it is.
    pub before_id: Option<i64>,
}

/// Which events `GET /api/v1/events` lists.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this cluster's.
    pub cluster: Option<String>,
    /// The newest this many.
    pub limit: Option<usize>,
}

/// A client of one daemon's API.
#[derive(Clone)]
pub struct Client {
    /// The base URL as given, for messages.
    shown: String,
    base: reqwest::Url,
    http: reqwest::Client,
    /// Never printed.
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("api", &self.shown)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client of the daemon at `api` (`http://host:port` or `https://host:port`,
    /// possibly with a base path), calling with `token` when given.
    pub fn new(api: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::with_ca(api, token, None)
    }

    /// [`Client::new`], trusting the CA certificate(s) in the PEM file `ca_file` for an
    /// `https://` API besides the built-in roots (a daemon's own CA, `--ca-file`).
    pub fn with_ca(
        api: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: api.to_string(),
            reason,
        };
        let base = reqwest::Url::parse(api).map_err(|e| bad(format!("is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad(
                "must be an http:// or https:// URL such as http://127.0.0.1:7070".into(),
            ));
        }
        let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                ClientError::TokenFile(format!("read the CA file {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::TokenFile(format!(
                    "the CA file {} holds no PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(ClientError::TokenFile(format!(
                    "the CA file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|source| ClientError::Http {
            api: api.to_string(),
            source,
        })?;
        Ok(Self {
            shown: api.trim_end_matches('/').to_string(),
            base,
            http,
            token,
        })
    }

    /// A client whose token is read from `token_file` now, when one is given.
    pub fn with_token_file(api: &str, token_file: Option<&Path>) -> Result<Self, ClientError> {
        let token = token_file.map(read_token).transpose()?;
        Self::new(api, token)
    }

    /// [`Client::with_token_file`] with a CA file for an `https://` API.
    pub fn with_token_and_ca_files(
        api: &str,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let token = token_file.map(read_token).transpose()?;
        Self::with_ca(api, token, ca_file)
    }

    /// The base URL, for messages.
    pub fn api(&self) -> &str {
        &self.shown
    }

    /// The URL of the path `segments` (each percent-encoded) under the base, with `query`.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in Client::new: an http URL can be a base")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    // ---- reads ----

    /// `GET /api/v1/clusters`.
    pub async fn clusters(&self) -> Result<Reply<ClusterList>, ClientError> {
        self.get(&["api", "v1", "clusters"], &[]).await
    }

    /// `GET /api/v1/clusters/{cluster}/topology`.
    pub async fn topology(&self, cluster: &str) -> Result<Reply<Topology>, ClientError> {
        self.get(&["api", "v1", "clusters", cluster, "topology"], &[])
            .await
    }

    /// `GET /api/v1/problems`: the open problems, of one cluster or all.
    pub async fn problems(&self, cluster: Option<&str>) -> Result<Reply<ProblemList>, ClientError> {
        let query: Vec<(&str, String)> = cluster
            .map(|c| ("cluster", c.to_string()))
            .into_iter()
            .collect();
        self.get(&["api", "v1", "problems"], &query).await
    }

    /// `GET /api/v1/problems?history=true`: one page of problems open and cleared, newest
    /// opening first, older than `before_id` when given; a full page has `next`.
    pub async fn problem_history(
        &self,
        cluster: Option<&str>,
        before_id: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Reply<ProblemList>, ClientError> {
        let mut query = vec![("history", "true".to_string())];
        if let Some(c) = cluster {
            query.push(("cluster", c.to_string()));
        }
        if let Some(b) = before_id {
            query.push(("before_id", b.to_string()));
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        self.get(&["api", "v1", "problems"], &query).await
    }

    /// `GET /api/v1/events`.
    pub async fn events(&self, filter: &EventFilter) -> Result<Reply<EventList>, ClientError> {
        let mut query = Vec::new();
        if let Some(l) = filter.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = &filter.cluster {
            query.push(("cluster", c.clone()));
        }
        self.get(&["api", "v1", "events"], &query).await
    }

    /// `GET /api/v1/operations`.
    pub async fn operations(&self, filter: &OperationFilter) -> Result<Reply<Value>, ClientError> {
        let mut query = Vec::new();
        if let Some(l) = filter.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = &filter.cluster {
            query.push(("cluster", c.clone()));
        }
        if let Some(s) = &filter.state {
            query.push(("state", s.clone()));
        }
        if let Some(b) = filter.before_id {
            query.push(("before_id", b.to_string()));
        }
        self.get(&["api", "v1", "operations"], &query).await
    }

    /// `GET /api/v1/operations/{id}`.
    pub async fn operation(&self, id: &str) -> Result<Reply<Value>, ClientError> {
        self.get(&["api", "v1", "operations", id], &[]).await
    }

    /// `GET /api/v1/recoveries`: the recovery switches and fenced instances.
    pub async fn recoveries(&self) -> Result<Reply<Value>, ClientError> {
        self.get(&["api", "v1", "recoveries"], &[]).await
    }

    /// `GET /api/v1/drt/runs`.
    pub async fn drt_runs(&self, limit: usize) -> Result<Reply<Value>, ClientError> {
        self.get(
            &["api", "v1", "drt", "runs"],
            &[("limit", limit.to_string())],
        )
        .await
    }

    /// `GET /api/v1/drt/runs/{id}`.
    pub async fn drt_run(&self, id: &str) -> Result<Reply<Value>, ClientError> {
        self.get(&["api", "v1", "drt", "runs", id], &[]).await
    }

    /// `GET /api/v1/alerts`.
    pub async fn alerts(&self) -> Result<Reply<Value>, ClientError> {
        self.get(&["api", "v1", "alerts"], &[]).await
    }

    /// `GET /api/v1/downtimes`.
    pub async fn downtimes(&self) -> Result<Reply<Value>, ClientError> {
        self.get(&["api", "v1", "downtimes"], &[]).await
    }

    // ---- operations: each waits up to OPERATION_TIMEOUT ----

    /// `POST /api/v1/clusters/{cluster}/failover`.
    pub async fn failover(&self, cluster: &str) -> Result<Reply<Value>, ClientError> {
        self.post::<Value, Value>(
            &["api", "v1", "clusters", cluster, "failover"],
            None,
            OPERATION_TIMEOUT,
        )
        .await
    }

    /// `POST /api/v1/clusters/{cluster}/switchover`, to `to` or the best replica.
    pub async fn switchover(
        &self,
        cluster: &str,
        to: Option<&str>,
    ) -> Result<Reply<Value>, ClientError> {
        self.post(
            &["api", "v1", "clusters", cluster, "switchover"],
            Some(&serde_json::json!({ "to": to })),
            OPERATION_TIMEOUT,
        )
        .await
    }

    /// `POST /api/v1/clusters/{cluster}/rejoin`. A refusal for errant GTIDs is
    /// [`ClientError::ErrantGtids`].
    pub async fn rejoin(&self, cluster: &str, instance: &str) -> Result<Reply<Value>, ClientError> {
        self.post(
            &["api", "v1", "clusters", cluster, "rejoin"],
            Some(&serde_json::json!({ "instance": instance })),
            OPERATION_TIMEOUT,
        )
        .await
    }

    /// `POST /api/v1/clusters/{cluster}/recoveries/ack`: lift its block window.
    pub async fn recoveries_ack(
        &self,
        cluster: &str,
        by: &str,
    ) -> Result<Reply<Value>, ClientError> {
        self.post(
            &["api", "v1", "clusters", cluster, "recoveries", "ack"],
            Some(&serde_json::json!({ "by": by })),
            TIMEOUT,
        )
        .await
    }

    /// `POST /api/v1/recoveries/enable` or `/disable`.
    pub async fn recoveries_switch(
        &self,
        enable: bool,
        by: &str,
    ) -> Result<Reply<Value>, ClientError> {
        let what = if enable { "enable" } else { "disable" };
        self.post(
            &["api", "v1", "recoveries", what],
            Some(&serde_json::json!({ "by": by })),
            TIMEOUT,
        )
        .await
    }

    // ---- DRT and alerting ----

    /// `POST /api/v1/drt/runs`: store a run set's report.
    pub async fn post_drt_run(&self, report: &impl Serialize) -> Result<Reply<Value>, ClientError> {
        self.post(
            &["api", "v1", "drt", "runs"],
            Some(report),
            Duration::from_secs(30),
        )
        .await
    }

    /// `POST /api/v1/drt/abort`: abort the daemon's scheduled DRT.
    pub async fn drt_abort(&self) -> Result<Reply<Value>, ClientError> {
        self.post::<Value, Value>(
            &["api", "v1", "drt", "abort"],
            None,
            Duration::from_secs(10),
        )
        .await
    }

    /// `POST /api/v1/downtimes`.
    pub async fn post_downtime(&self, body: &Value) -> Result<Reply<Value>, ClientError> {
        self.post(
            &["api", "v1", "downtimes"],
            Some(body),
            Duration::from_secs(10),
        )
        .await
    }

    /// `DELETE /api/v1/downtimes/{id}`.
    pub async fn delete_downtime(&self, id: &str) -> Result<Reply<Value>, ClientError> {
        self.call::<Value, Value>(
            reqwest::Method::DELETE,
            &["api", "v1", "downtimes", id],
            &[],
            None,
            TIMEOUT,
        )
        .await
    }

    /// `DELETE /api/v1/clusters/{name}/instances/{addr}`: forget a discovered instance.
    pub async fn forget(&self, cluster: &str, addr: &str) -> Result<Reply<Value>, ClientError> {
        self.call::<Value, Value>(
            reqwest::Method::DELETE,
            &["api", "v1", "clusters", cluster, "instances", addr],
            &[],
            None,
            TIMEOUT,
        )
        .await
    }

    // ---- the calls ----

    /// GET a JSON document.
    pub async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Reply<T>, ClientError> {
        self.call::<T, Value>(reqwest::Method::GET, segments, query, None, TIMEOUT)
            .await
    }

    /// POST a JSON body (or none) and wait up to `timeout` for the answer.
    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        segments: &[&str],
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<Reply<T>, ClientError> {
        self.call(reqwest::Method::POST, segments, &[], body, timeout)
            .await
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<Reply<T>, ClientError> {
        let mut request = self
            .http
            .request(method, self.url(segments, query))
            .timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.send_error(e, timeout))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.send_error(e, timeout))?
            .to_vec();
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        let value = serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            api: self.shown.clone(),
            what: if serde_json::from_slice::<Value>(&body).is_ok() {
                "the route's answer"
            } else {
                "JSON"
            },
            source,
        })?;
        Ok(Reply { value, body })
    }

    /// Why a call did not get an answer.
    fn send_error(&self, e: reqwest::Error, timeout: Duration) -> ClientError {
        let api = self.shown.clone();
        if e.is_connect() {
            ClientError::Unreachable { api }
        } else if e.is_timeout() {
            ClientError::Timeout { api, timeout }
        } else {
            ClientError::Http {
                api,
                source: e.without_url(),
            }
        }
    }
}

/// The error of a non-2xx answer: the daemon's `{"error": ..., "operation": ...}`.
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"].as_str())
        .map_or_else(|| format!("the daemon answered {status}"), str::to_string);
    let operation = parsed
        .as_ref()
        .map(|v| v["operation"].clone())
        .filter(Value::is_object);
    if let Some(op) = &operation {
        let gtids: Vec<String> = op["data"]["errant"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if op["kind"] == "rejoin" && !gtids.is_empty() {
            return ClientError::ErrantGtids {
                instance: op["data"]["instance"].as_str().unwrap_or("?").to_string(),
                gtids,
                message,
                operation: op.clone(),
            };
        }
    }
    ClientError::Status {
        status: status.as_u16(),
        message,
        operation,
    }
}

/// The token in a token file: its first line that is not blank or a `#` comment.
pub fn read_token(path: &Path) -> Result<String, ClientError> {
    let shown = || PathBuf::from(path).display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::TokenFile(format!("read the token file {}: {e}", shown())))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| ClientError::TokenFile(format!("the token file {} holds no token", shown())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_segments_and_keep_a_base_path() {
        let c = Client::new("http://127.0.0.1:7070", None).unwrap();
        assert_eq!(
            c.url(
                &["api", "v1", "clusters", "a b/c", "topology"],
                &[("limit", "5".into())]
            )
            .as_str(),
            "http://127.0.0.1:7070/api/v1/clusters/a%20b%2Fc/topology?limit=5"
        );
        let c = Client::new("http://proxy:80/dbfleet/", None).unwrap();
        assert_eq!(
            c.url(&["api", "v1", "events"], &[]).as_str(),
            "http://proxy/dbfleet/api/v1/events"
        );
        for bad in ["127.0.0.1:7070", "ftp://x", "not a url"] {
            assert!(Client::new(bad, None).unwrap_err().is_usage(), "{bad}");
        }
        assert!(Client::new("https://db-ctl:7070", None).is_ok());
    }

    #[test]
    fn token_files_skip_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "# ops token\n\n  s3cret  \nsecond\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "s3cret");
        std::fs::write(&path, "# nothing\n").unwrap();
        let e = read_token(&path).unwrap_err();
        assert!(e.is_usage());
        assert!(!e.to_string().contains("nothing"));
    }

    #[test]
    fn the_token_is_never_shown() {
        let c = Client::new("http://127.0.0.1:7070", Some("s3cret".into())).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_rejoin_refused_for_errant_gtids_carries_the_list() {
        let body = serde_json::json!({
            "error": "operation 7 (rejoin) on main ended failed: 127.0.0.1:23306 has errant GTIDs the writer 127.0.0.1:23307 lacks: 0-1-9",
            "operation": {"id": 7, "kind": "rejoin", "state": "failed",
                          "data": {"instance": "127.0.0.1:23306", "errant": ["0-1-9", "0-1-10"]}}
        });
        match refusal(reqwest::StatusCode::CONFLICT, body.to_string().as_bytes()) {
            ClientError::ErrantGtids {
                instance, gtids, ..
            } => {
                assert_eq!(instance, "127.0.0.1:23306");
                assert_eq!(gtids, ["0-1-9", "0-1-10"]);
            }
            other => panic!("{other:?}"),
        }
        // A rejoin that failed otherwise is a plain refusal with its record.
        let body = serde_json::json!({
            "error": "operation 8 (rejoin) on main ended failed: 127.0.0.1:23306 is unreachable",
            "operation": {"id": 8, "kind": "rejoin", "data": {"errant": []}}
        });
        let e = refusal(reqwest::StatusCode::CONFLICT, body.to_string().as_bytes());
        assert!(matches!(
            &e,
            ClientError::Status {
                status: 409,
                operation: Some(_),
                ..
            }
        ));
        assert_eq!(e.status(), Some(409));
        // A body that is not JSON still gives the status.
        assert_eq!(
            refusal(reqwest::StatusCode::BAD_GATEWAY, b"bad gateway").to_string(),
            "the daemon answered 502 Bad Gateway"
        );
    }
}
