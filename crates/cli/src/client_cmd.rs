//! `dbfleet clusters`, `topology`, `problems` and `events`: clients of the daemon's HTTP API
//! that print what it answers, as text for humans or (with `--json`) as the API's JSON.
//!
//! The rendering functions are pure (`&Value` in, `String` out) and tested on JSON fixtures;
//! the calls go through [`api::Client`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use api::{ClientError, EventFilter, OperationFilter, Reply};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::term::out;
use crate::{print_json, CliError};

/// Where the daemon's API is, and the token to call it with.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// The daemon's API base URL.
    #[arg(
        long,
        env = "DBFLEET_API",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub api: String,
    /// File holding an API token (read on demand); needed when the daemon requires tokens
    /// for reads.
    #[arg(long, env = "DBFLEET_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed an `https://` API's certificate (besides the
    /// built-in roots).
    #[arg(long, env = "DBFLEET_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// `dbfleet clusters`: every cluster at a glance.
pub async fn clusters(api: &ApiArgs, json: bool) -> Result<(), CliError> {
    let answer = client(api)?.clusters().await.map_err(api_error)?;
    show(&answer, json, render_clusters)
}

/// `dbfleet topology CLUSTER`: the replication tree of one cluster.
pub async fn topology(api: &ApiArgs, cluster: &str, json: bool) -> Result<(), CliError> {
    let answer = client(api)?.topology(cluster).await.map_err(api_error)?;
    show(&answer, json, render_topology)
}

/// `dbfleet problems [CLUSTER]`: the open problems, with their evidence; with `history`, a
/// page of problems open and cleared, newest opening first.
pub async fn problems(
    api: &ApiArgs,
    cluster: Option<&str>,
    history: Option<HistoryPage>,
    json: bool,
) -> Result<(), CliError> {
    let c = client(api)?;
    match history {
        None => {
            let answer = c.problems(cluster).await.map_err(api_error)?;
            show(&answer, json, |v| render_problems(v, now_ms()))
        }
        Some(page) => {
            let answer = c
                .problem_history(cluster, page.before, Some(page.limit))
                .await
                .map_err(api_error)?;
            show(&answer, json, |v| render_problem_history(v, now_ms()))
        }
    }
}

/// One page of a list read newest first: at most `limit`, older than `before` when given.
#[derive(Clone, Copy, Debug)]
pub struct HistoryPage {
    /// How many.
    pub limit: usize,
    /// Only records with an id below this one (the `--before` of the page after).
    pub before: Option<i64>,
}

/// `dbfleet events [CLUSTER]`: the newest `limit` events, oldest first.
pub async fn events(
    api: &ApiArgs,
    cluster: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<(), CliError> {
    let filter = EventFilter {
        cluster: cluster.map(str::to_string),
        limit: Some(limit),
    };
    let answer = client(api)?.events(&filter).await.map_err(api_error)?;
    show(&answer, json, render_events)
}

/// `dbfleet failover CLUSTER`: fail over a cluster whose primary is dead.
pub async fn failover(api: &ApiArgs, cluster: &str, json: bool) -> Result<(), CliError> {
    let answer = client(api)?.failover(cluster).await.map_err(api_error)?;
    show(&answer, json, render_operation)
}

/// `dbfleet switchover CLUSTER [--to INSTANCE]`.
pub async fn switchover(
    api: &ApiArgs,
    cluster: &str,
    to: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let answer = client(api)?
        .switchover(cluster, to)
        .await
        .map_err(api_error)?;
    show(&answer, json, render_operation)
}

/// `dbfleet rejoin CLUSTER INSTANCE`.
pub async fn rejoin(
    api: &ApiArgs,
    cluster: &str,
    instance: &str,
    json: bool,
) -> Result<(), CliError> {
    let answer = client(api)?
        .rejoin(cluster, instance)
        .await
        .map_err(api_error)?;
    show(&answer, json, render_operation)
}

/// `dbfleet forget CLUSTER INSTANCE`.
pub async fn forget(
    api: &ApiArgs,
    cluster: &str,
    instance: &str,
    json: bool,
) -> Result<(), CliError> {
    let addr: model::InstanceAddr = instance.parse().map_err(CliError::usage)?;
    let answer = client(api)?
        .forget(cluster, &addr.to_string())
        .await
        .map_err(api_error)?;
    show(&answer, json, |v| {
        format!(
            "{} of {}: forgotten at its next probe (no longer watched)\n",
            text(&v["instance"]),
            text(&v["cluster"])
        )
    })
}

/// `dbfleet recoveries ...`.
pub async fn recoveries(
    api: &ApiArgs,
    action: RecoveriesAction,
    json: bool,
) -> Result<(), CliError> {
    let c = client(api)?;
    let answer = match &action {
        RecoveriesAction::Status => c.recoveries().await,
        RecoveriesAction::Ack { cluster } => c.recoveries_ack(cluster, &who()).await,
        RecoveriesAction::Enable => c.recoveries_switch(true, &who()).await,
        RecoveriesAction::Disable => c.recoveries_switch(false, &who()).await,
    }
    .map_err(api_error)?;
    show(&answer, json, render_recoveries)
}

/// What `dbfleet recoveries` does.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum RecoveriesAction {
    /// Show the fleet-wide switch, each cluster's policy, block window and rejoin policy,
    /// and fenced instances.
    Status,
    /// Lift a cluster's block window: its next automatic failover may run. A refused
    /// automatic failover waiting to be retried runs at once.
    Ack {
        /// The cluster.
        cluster: String,
    },
    /// Allow automatic failovers fleet-wide.
    Enable,
    /// Stop every automatic failover fleet-wide (detection and alerts go on).
    Disable,
}

fn who() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

/// `dbfleet operations`.
pub async fn operations(
    api: &ApiArgs,
    cluster: Option<&str>,
    state: Option<&str>,
    page: HistoryPage,
    json: bool,
) -> Result<(), CliError> {
    let filter = OperationFilter {
        cluster: cluster.map(str::to_string),
        state: state.map(str::to_string),
        limit: Some(page.limit),
        before_id: page.before,
    };
    let answer = client(api)?.operations(&filter).await.map_err(api_error)?;
    show(&answer, json, render_operations)
}

/// `dbfleet operation ID`.
pub async fn operation(api: &ApiArgs, id: &str, json: bool) -> Result<(), CliError> {
    let answer = client(api)?.operation(id).await.map_err(api_error)?;
    show(&answer, json, render_operation)
}

/// Print the API's JSON unchanged (pretty, keys in the order the API sent them), or its
/// rendering.
pub(crate) fn show<T>(
    answer: &Reply<T>,
    json: bool,
    render: impl Fn(&Value) -> String,
) -> Result<(), CliError> {
    if json {
        let doc: Ordered =
            serde_json::from_slice(&answer.body).context("read the daemon's answer")?;
        print_json(&doc)
    } else {
        let value: Value =
            serde_json::from_slice(&answer.body).context("read the daemon's answer")?;
        out!("{}", render(&value));
        Ok(())
    }
}

/// The client of the daemon `api` names; reads the token file now, if one is given.
pub(crate) fn client(api: &ApiArgs) -> Result<api::Client, CliError> {
    api::Client::with_token_and_ca_files(
        &api.api,
        api.token_file.as_deref(),
        api.ca_file.as_deref(),
    )
    .map_err(api_error)
}

/// A failed call as the CLI reports it: bad input exits 2; a 401 says how to give a token;
/// an operation that ended other than succeeded is rendered below the daemon's text.
pub(crate) fn api_error(e: ClientError) -> CliError {
    if e.is_usage() {
        return CliError::usage(e);
    }
    let (status, operation) = match &e {
        ClientError::Status {
            status, operation, ..
        } => (Some(*status), operation.as_ref()),
        ClientError::ErrantGtids { operation, .. } => (Some(409), Some(operation)),
        _ => (None, None),
    };
    if status.is_none() {
        return e.into();
    }
    let hint = match status {
        Some(401) => " (give a token with --token-file or DBFLEET_TOKEN_FILE)",
        _ => "",
    };
    let op = operation
        .map(|o| format!("\n{}", render_operation(o)))
        .unwrap_or_default();
    anyhow!("{e}{hint}{op}").into()
}

/// A JSON value that keeps its objects' keys in order (`serde_json::Value` sorts them), so
/// `--json` prints the API's answer as it came, only re-indented.
#[derive(Debug, PartialEq)]
enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Number(n) => n.serialize(s),
            Self::String(t) => s.serialize_str(t),
            Self::Array(items) => s.collect_seq(items),
            Self::Object(entries) => s.collect_map(entries.iter().map(|(k, v)| (k, v))),
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OrderedVisitor)
    }
}

/// Builds an [`Ordered`] from any JSON value.
struct OrderedVisitor;

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Ordered, E> {
        Ok(Ordered::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Ordered, E> {
        Ok(Ordered::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ordered, E> {
        Ok(Ordered::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ordered, E> {
        Ok(Ordered::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Ordered, E> {
        serde_json::Number::from_f64(v)
            .map(Ordered::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ordered, E> {
        Ok(Ordered::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Ordered, E> {
        Ok(Ordered::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Ordered::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Ordered>()? {
            entries.push(entry);
        }
        Ok(Ordered::Object(entries))
    }
}

use model::clock::now_ms;

// ---- rendering: pure ----

/// The text of a JSON string field, or `-` when it is null or missing; control characters
/// (from a server's error text, say) escaped.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => crate::term::escape(s).into_owned(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The items of a JSON list field, none when missing.
fn items<'v>(v: &'v Value, field: &str) -> &'v [Value] {
    v[field].as_array().map_or(&[], Vec::as_slice)
}

/// Rows in columns padded to their widest cell (the last column is not padded), each row
/// followed by its extra lines.
fn table(header: &[&str], rows: &[(Vec<String>, Vec<String>)]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (cells, _) in rows {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for (cells, extra) in rows {
        out.push_str(&line(cells));
        for e in extra {
            let _ = writeln!(out, "{e}");
        }
    }
    out
}

/// `GET /api/v1/clusters` as a table.
pub fn render_clusters(v: &Value) -> String {
    let clusters = items(v, "clusters");
    if clusters.is_empty() {
        return "no clusters: declare them in dbfleet.toml\n".into();
    }
    let rows: Vec<(Vec<String>, Vec<String>)> = clusters
        .iter()
        .map(|c| {
            let cells = vec![
                text(&c["name"]),
                text(&c["primary"]),
                text(&c["writer"]),
                text(&c["instance_count"]),
                text(&c["reachable_count"]),
                text(&c["open_problem_count"]),
                text(&c["worst_severity"]),
            ];
            (cells, Vec::new())
        })
        .collect();
    table(
        &[
            "NAME",
            "PRIMARY",
            "WRITER",
            "INSTANCES",
            "REACHABLE",
            "PROBLEMS",
            "WORST",
        ],
        &rows,
    )
}

/// `GET /api/v1/clusters/{name}/topology` as a tree: the primary's tree first, then the
/// instances outside it, each line with role, address, threads, lag, GTID and errors.
pub fn render_topology(v: &Value) -> String {
    let nodes = items(v, "nodes");
    let (tree, orphans): (Vec<&Value>, Vec<&Value>) = nodes
        .iter()
        .partition(|n| n["orphan"] == Value::Bool(false));
    let cluster = text(&v["cluster"]);
    let mut out = String::new();
    if tree.is_empty() {
        let _ = writeln!(out, "{cluster}  no primary can be named");
    } else {
        for (i, (prefix, node)) in tree_lines(&tree).into_iter().enumerate() {
            let lead = if i == 0 {
                format!("{cluster}  ")
            } else {
                prefix
            };
            let _ = writeln!(out, "{lead}{}", describe(node));
        }
        if !orphans.is_empty() {
            let _ = writeln!(out, "outside the primary's tree:");
        }
    }
    for (prefix, node) in tree_lines(&orphans) {
        let _ = writeln!(out, "  {prefix}{}", describe(node));
    }
    out
}

/// Each node with its tree-drawing prefix, from the nodes' depth-first order and depths.
fn tree_lines<'v>(nodes: &[&'v Value]) -> Vec<(String, &'v Value)> {
    let depth = |n: &Value| n["depth"].as_u64().unwrap_or(0) as usize;
    // open[k]: whether the ancestor at depth k + 1 has siblings still to come.
    let mut open: Vec<bool> = Vec::new();
    let mut out = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let d = depth(node);
        if d == 0 {
            open.clear();
            out.push((String::new(), *node));
            continue;
        }
        let last = nodes[i + 1..]
            .iter()
            .map(|n| depth(n))
            .take_while(|&later| later >= d)
            .all(|later| later > d);
        open.resize(d - 1, false);
        let mut prefix: String = open
            .iter()
            .map(|&more| if more { "│  " } else { "   " })
            .collect();
        prefix.push_str(if last { "└─ " } else { "├─ " });
        open.push(!last);
        out.push((prefix, *node));
    }
    out
}

/// One node's line, without its tree prefix.
fn describe(n: &Value) -> String {
    let mut parts = vec![format!("{} {}", text(&n["role"]), text(&n["addr"]))];
    if n["reachable"] != Value::Bool(true) {
        match &n["failure"] {
            Value::Object(f) => parts.push(format!(
                "UNREACHABLE ({}: {})",
                f.get("kind").map_or("-".into(), text),
                f.get("message").map_or("-".into(), text)
            )),
            _ if n["observed_at_ms"].is_null() => parts.push("not probed yet".into()),
            _ => parts.push("UNREACHABLE".into()),
        }
    } else {
        if !n["io_thread"].is_null() {
            let io = match n["io_thread"].as_str() {
                Some("yes") => "Yes",
                Some("connecting") => "Connecting",
                Some("no") => "No",
                _ => "?",
            };
            let sql = if n["sql_running"] == Value::Bool(true) {
                "Yes"
            } else {
                "No"
            };
            let lag = n["seconds_behind_source"]
                .as_u64()
                .map_or("NULL".into(), |s| format!("{s}s"));
            let mut threads = format!("io={io} sql={sql} lag={lag}");
            if let Some(delay) = n["sql_delay_s"].as_u64().filter(|d| *d > 0) {
                let _ = write!(threads, " delay={delay}s");
            }
            parts.push(threads);
        }
        if let Some(g) = n["gtid"].as_str() {
            parts.push(format!("gtid {}", crate::term::escape(g)));
        }
        parts.push(match n["read_only"].as_bool() {
            Some(true) => "[ro]".into(),
            Some(false) => "[rw]".into(),
            None => "[?]".into(),
        });
    }
    if n["origin"] == "discovered" {
        parts.push("(discovered)".into());
    }
    for (thread, errno, error) in [
        ("IO", "last_io_errno", "last_io_error"),
        ("SQL", "last_sql_errno", "last_sql_error"),
    ] {
        match (
            n[errno].as_u64(),
            n[error].as_str().map(crate::term::escape),
        ) {
            (Some(no), Some(e)) => parts.push(format!("{thread} error {no}: {e}")),
            (Some(no), None) => parts.push(format!("{thread} error {no}")),
            (None, Some(e)) => parts.push(format!("{thread} error: {e}")),
            (None, None) => {}
        }
    }
    parts.join("  ")
}

/// `GET /api/v1/problems` as a table, evidence indented below each problem; `SINCE` is the
/// time open as of `now_ms`.
pub fn render_problems(v: &Value, now_ms: u64) -> String {
    let problems = items(v, "problems");
    if problems.is_empty() {
        return "no open problems\n".into();
    }
    let rows: Vec<(Vec<String>, Vec<String>)> = problems
        .iter()
        .map(|p| {
            let since = p["first_seen_ms"]
                .as_u64()
                .map_or("-".into(), |t| age(now_ms.saturating_sub(t)));
            let cells = vec![
                text(&p["severity"]),
                text(&p["kind"]),
                text(&p["cluster"]),
                text(&p["instance"]),
                since,
                text(&p["summary"]),
            ];
            let evidence = items(p, "evidence")
                .iter()
                .map(|e| format!("    {}: {}", text(&e["instance"]), text(&e["fact"])))
                .collect();
            (cells, evidence)
        })
        .collect();
    table(
        &[
            "SEVERITY", "KIND", "CLUSTER", "INSTANCE", "SINCE", "SUMMARY",
        ],
        &rows,
    )
}

/// `GET /api/v1/events` as a table, oldest first, times in UTC.
pub fn render_events(v: &Value) -> String {
    let events = items(v, "events");
    if events.is_empty() {
        return "no events\n".into();
    }
    let rows: Vec<(Vec<String>, Vec<String>)> = events
        .iter()
        .map(|e| {
            let at = e["at_ms"].as_u64().map_or("-".into(), |ms| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string()
            });
            let cells = vec![
                text(&e["id"]),
                at,
                text(&e["level"]),
                text(&e["kind"]),
                text(&e["cluster"]),
                text(&e["instance"]),
                text(&e["message"]),
            ];
            (cells, Vec::new())
        })
        .collect();
    table(
        &[
            "ID", "TIME", "LEVEL", "KIND", "CLUSTER", "INSTANCE", "MESSAGE",
        ],
        &rows,
    )
}

/// A duration in ms as its two largest units: `42s`, `5m 3s`, `3h 12m`, `2d 4h`.
/// One operation: its state, step, and the facts that matter.
pub fn render_operation(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "operation {} {} of {}: {} (step {}, trigger {})",
        text(&v["id"]),
        text(&v["kind"]),
        text(&v["cluster"]),
        text(&v["state"]),
        text(&v["step"]),
        text(&v["trigger"]),
    );
    let d = &v["data"];
    for (label, key) in [
        ("old primary", "old_primary"),
        ("candidate", "candidate"),
        ("target", "target"),
        ("instance", "instance"),
        ("writer", "writer"),
        ("fenced", "fenced"),
        ("write block (ms)", "write_block_ms"),
    ] {
        if !d[key].is_null() {
            let _ = writeln!(out, "  {label}: {}", text(&d[key]));
        }
    }
    if let (Some(w), Some(s)) = (
        d["writable_ms"].as_u64(),
        d["detected_ms"].as_u64().or(d["started_ms"].as_u64()),
    ) {
        let _ = writeln!(
            out,
            "  writable {} ms after {}",
            w.saturating_sub(s),
            if d["detected_ms"].is_u64() {
                "detection"
            } else {
                "the start"
            }
        );
    }
    for key in ["repointed", "errant"] {
        if let Some(list) = d[key].as_array().filter(|l| !l.is_empty()) {
            let _ = writeln!(
                out,
                "  {key}: {}",
                list.iter().map(text).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if let Some(w) = d["warnings"].as_array() {
        for x in w {
            let _ = writeln!(out, "  warning: {}", text(x));
        }
    }
    if !v["error"].is_null() {
        let _ = writeln!(out, "  error: {}", text(&v["error"]));
    }
    out
}

/// A table of operations, newest first.
pub fn render_operations(v: &Value) -> String {
    let rows: Vec<(Vec<String>, Vec<String>)> = items(v, "operations")
        .iter()
        .map(|o| {
            (
                vec![
                    text(&o["id"]),
                    text(&o["cluster"]),
                    text(&o["kind"]),
                    text(&o["state"]),
                    text(&o["step"]),
                    text(&o["trigger"]),
                    age(now_ms().saturating_sub(o["created_ms"].as_u64().unwrap_or(0))),
                ],
                o["error"]
                    .as_str()
                    .map(|e| vec![format!("  error: {}", crate::term::escape(e))])
                    .unwrap_or_default(),
            )
        })
        .collect();
    if rows.is_empty() {
        return "no operations\n".into();
    }
    let mut out = table(
        &["ID", "CLUSTER", "KIND", "STATE", "STEP", "TRIGGER", "AGE"],
        &rows,
    );
    out.push_str(&older_hint(v, "operations", "operations"));
    out
}

/// The line that says how to see the page after a full one (the answer has `next`): the
/// same command with `--before` the last record's id.
fn older_hint(v: &Value, list: &str, what: &str) -> String {
    if !v["next"].is_string() {
        return String::new();
    }
    match items(v, list).last().and_then(|r| r["id"].as_i64()) {
        Some(id) => format!("(more: older {what} with --before {id})\n"),
        None => String::new(),
    }
}

/// A page of problem history: each opening, newest first, open or when it cleared.
pub fn render_problem_history(v: &Value, now_ms: u64) -> String {
    let problems = items(v, "problems");
    if problems.is_empty() {
        return "no problems in the history\n".into();
    }
    let ago = |t: &Value| {
        t.as_u64()
            .map_or("-".into(), |t| age(now_ms.saturating_sub(t)))
    };
    let rows: Vec<(Vec<String>, Vec<String>)> = problems
        .iter()
        .map(|p| {
            let cleared = if p["cleared_ms"].is_null() {
                "open".to_string()
            } else {
                ago(&p["cleared_ms"])
            };
            let cells = vec![
                text(&p["id"]),
                text(&p["severity"]),
                text(&p["kind"]),
                text(&p["cluster"]),
                text(&p["instance"]),
                ago(&p["first_seen_ms"]),
                cleared,
                text(&p["summary"]),
            ];
            (cells, Vec::new())
        })
        .collect();
    let mut out = table(
        &[
            "ID", "SEVERITY", "KIND", "CLUSTER", "INSTANCE", "OPENED", "CLEARED", "SUMMARY",
        ],
        &rows,
    );
    out.push_str(&older_hint(v, "problems", "problems"));
    out
}

/// The recovery switches.
pub fn render_recoveries(v: &Value) -> String {
    let mut out = format!(
        "automatic recoveries: {}\n",
        if v["enabled"].as_bool() == Some(false) {
            "DISABLED fleet-wide"
        } else {
            "enabled"
        }
    );
    let rows: Vec<(Vec<String>, Vec<String>)> = items(v, "clusters")
        .iter()
        .map(|c| {
            let blocked = match c["blocked_until_ms"].as_u64() {
                Some(u) => format!(
                    "blocked by operation {} for {}",
                    text(&c["blocked_by"]),
                    age(u.saturating_sub(now_ms()))
                ),
                None => "-".into(),
            };
            let fenced: Vec<String> = c["fenced"]
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default();
            (
                vec![
                    text(&c["cluster"]),
                    text(&c["mode"]),
                    format!("{}s", text(&c["block_window_s"])),
                    blocked,
                    if fenced.is_empty() {
                        "-".into()
                    } else {
                        fenced.join(",")
                    },
                    text(&c["rejoin"]),
                ],
                Vec::new(),
            )
        })
        .collect();
    out.push_str(&table(
        &["CLUSTER", "MODE", "WINDOW", "BLOCK", "FENCED", "REJOIN"],
        &rows,
    ));
    out
}

fn age(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What `GET /api/v1/clusters/main/topology` answers for a primary, a healthy replica,
    /// a replica whose SQL thread stopped, a chained replica, and two instances outside
    /// the tree.
    fn topology_fixture() -> Value {
        let node = |addr: &str, role: &str, depth: u64, orphan: bool| {
            json!({
                "addr": addr, "role": role, "origin": "config", "orphan": orphan,
                "depth": depth, "reachable": true, "failure": null, "source": null,
                "flavor": "mariadb", "read_only": true, "io_thread": null,
                "sql_running": null, "seconds_behind_source": null, "sql_delay_s": null,
                "last_io_errno": null, "last_io_error": null, "last_sql_errno": null,
                "last_sql_error": null, "gtid": "0-1-5", "server_id": 1,
                "version": "10.11.6-MariaDB", "observed_at_ms": 1_700_000_000_000u64,
            })
        };
        let replica = |addr: &str, depth: u64, source: &str| {
            let mut n = node(addr, "replica", depth, false);
            n["source"] = json!(source);
            n["io_thread"] = json!("yes");
            n["sql_running"] = json!(true);
            n["seconds_behind_source"] = json!(0);
            n["sql_delay_s"] = json!(0);
            n
        };
        let mut primary = node("127.0.0.1:23306", "primary", 0, false);
        primary["read_only"] = json!(false);
        let healthy = replica("127.0.0.1:23307", 1, "127.0.0.1:23306");
        let mut chained = replica("127.0.0.1:23310", 2, "127.0.0.1:23307");
        chained["sql_delay_s"] = json!(3600);
        chained["seconds_behind_source"] = json!(3590);
        chained["origin"] = json!("discovered");
        let mut broken = replica("127.0.0.1:23308", 1, "127.0.0.1:23306");
        broken["sql_running"] = json!(false);
        broken["seconds_behind_source"] = json!(null);
        broken["gtid"] = json!("0-1-4");
        broken["last_sql_errno"] = json!(1062);
        broken["last_sql_error"] = json!("Duplicate entry '42' for key 'PRIMARY'");
        let mut gone = node("127.0.0.1:23309", "unreachable", 0, true);
        gone["reachable"] = json!(false);
        gone["gtid"] = json!(null);
        gone["read_only"] = json!(null);
        gone["failure"] = json!({"kind": "refused", "message": "connection refused"});
        let mut stray = node("127.0.0.1:23311", "unknown", 0, true);
        stray["read_only"] = json!(false);
        stray["gtid"] = json!("0-11-2");
        json!({
            "cluster": "main",
            "primary": "127.0.0.1:23306",
            "nodes": [primary, healthy, chained, broken, gone, stray],
        })
    }

    #[test]
    fn topology_is_a_tree_then_the_instances_outside_it() {
        assert_eq!(
            render_topology(&topology_fixture()),
            "\
main  primary 127.0.0.1:23306  gtid 0-1-5  [rw]
├─ replica 127.0.0.1:23307  io=Yes sql=Yes lag=0s  gtid 0-1-5  [ro]
│  └─ replica 127.0.0.1:23310  io=Yes sql=Yes lag=3590s delay=3600s  gtid 0-1-5  [ro]  (discovered)
└─ replica 127.0.0.1:23308  io=Yes sql=No lag=NULL  gtid 0-1-4  [ro]  SQL error 1062: Duplicate entry '42' for key 'PRIMARY'
outside the primary's tree:
  unreachable 127.0.0.1:23309  UNREACHABLE (refused: connection refused)
  unknown 127.0.0.1:23311  gtid 0-11-2  [rw]
"
        );
    }

    #[test]
    fn topology_without_a_primary_lists_every_instance() {
        let mut v = topology_fixture();
        v["primary"] = Value::Null;
        let nodes = v["nodes"].as_array_mut().unwrap();
        nodes.retain(|n| n["orphan"] == true);
        assert_eq!(
            render_topology(&v),
            "\
main  no primary can be named
  unreachable 127.0.0.1:23309  UNREACHABLE (refused: connection refused)
  unknown 127.0.0.1:23311  gtid 0-11-2  [rw]
"
        );
    }

    #[test]
    fn tree_prefixes_follow_depth() {
        let nodes: Vec<Value> = [0, 1, 2, 2, 1, 2, 3, 1]
            .iter()
            .map(|d| json!({ "depth": d }))
            .collect();
        let refs: Vec<&Value> = nodes.iter().collect();
        let prefixes: Vec<String> = tree_lines(&refs).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            prefixes,
            [
                "",
                "├─ ",
                "│  ├─ ",
                "│  └─ ",
                "├─ ",
                "│  └─ ",
                "│     └─ ",
                "└─ ",
            ]
        );
    }

    #[test]
    fn problems_with_evidence_below() {
        let v = json!({"problems": [
            {
                "id": 3, "cluster": "main", "key": "ReplicaNotReplicating/127.0.0.1:23308",
                "kind": "ReplicaNotReplicating", "instance": "127.0.0.1:23308",
                "severity": "error", "summary": "127.0.0.1:23308 is not replicating",
                "evidence": [{"instance": "127.0.0.1:23308",
                              "fact": "io_thread=Yes sql_thread=No last_sql_errno=1062"}],
                "first_seen_ms": 10_000_000, "last_seen_ms": 10_300_000, "cleared_ms": null
            },
            {
                "id": 4, "cluster": "main", "key": "ReplicaMissing", "kind": "ReplicaMissing",
                "instance": null, "severity": "warning",
                "summary": "the primary has 1 of 2 replicas", "evidence": [],
                "first_seen_ms": 2_803_000, "last_seen_ms": 10_300_000,
                "cleared_ms": null
            }
        ]});
        assert_eq!(
            render_problems(&v, 10_303_000),
            "\
SEVERITY  KIND                   CLUSTER  INSTANCE         SINCE  SUMMARY
error     ReplicaNotReplicating  main     127.0.0.1:23308  5m 3s  127.0.0.1:23308 is not replicating
    127.0.0.1:23308: io_thread=Yes sql_thread=No last_sql_errno=1062
warning   ReplicaMissing         main     -                2h 5m  the primary has 1 of 2 replicas
"
        );
        assert_eq!(
            render_problems(&json!({"problems": []}), 0),
            "no open problems\n"
        );
    }

    #[test]
    fn clusters_and_events_tables() {
        let v = json!({"clusters": [
            {"name": "main", "primary": "127.0.0.1:23306", "writer": "127.0.0.1:23306",
             "instance_count": 4, "reachable_count": 3, "open_problem_count": 2,
             "worst_severity": "error"},
            {"name": "other", "primary": null, "writer": null, "instance_count": 0,
             "reachable_count": 0, "open_problem_count": 0, "worst_severity": null}
        ]});
        assert_eq!(
            render_clusters(&v),
            "\
NAME   PRIMARY          WRITER           INSTANCES  REACHABLE  PROBLEMS  WORST
main   127.0.0.1:23306  127.0.0.1:23306  4          3          2         error
other  -                -                0          0          0         -
"
        );
        let v = json!({"events": [
            {"id": 7, "at_ms": 1_700_000_000_000u64, "cluster": null, "instance": null,
             "kind": "daemon_started", "level": "info", "message": "dbfleet started",
             "data": null},
            {"id": 8, "at_ms": 1_700_000_005_000u64, "cluster": "main",
             "instance": "127.0.0.1:23308", "kind": "problem_opened", "level": "error",
             "message": "problem ReplicaNotReplicating/127.0.0.1:23308 opened", "data": {}}
        ]});
        assert_eq!(
            render_events(&v),
            "\
ID  TIME                  LEVEL  KIND            CLUSTER  INSTANCE         MESSAGE
7   2023-11-14T22:13:20Z  info   daemon_started  -        -                dbfleet started
8   2023-11-14T22:13:25Z  error  problem_opened  main     127.0.0.1:23308  problem ReplicaNotReplicating/127.0.0.1:23308 opened
"
        );
    }

    /// `v` with escape sequences, a CR and a line break appended to every string in it.
    fn poison(v: &mut Value) {
        match v {
            Value::String(s) => s.push_str("\x1b]0;pwned\x07\x1b[2J\r\nFAKE\u{9b}"),
            Value::Array(a) => a.iter_mut().for_each(poison),
            Value::Object(o) => o.values_mut().for_each(poison),
            _ => {}
        }
    }

    #[test]
    fn every_renderer_escapes_control_characters_in_every_field() {
        let mut topology = topology_fixture();
        topology["nodes"][3]["last_io_errno"] = json!(1045);
        topology["nodes"][3]["last_io_error"] = json!("Access denied");
        let operation = json!({"id": "op-1", "cluster": "main", "kind": "failover",
            "state": "failed", "step": "promote", "trigger": "auto", "created_ms": 1,
            "error": "boom", "data": {"old_primary": "a", "candidate": "b",
            "repointed": ["c"], "errant": ["d"], "warnings": ["w"]}});
        type Render = fn(&Value) -> String;
        let mut cases: Vec<(&str, Value, Render)> = vec![
            ("topology", topology, render_topology),
            ("operation", operation.clone(), render_operation),
            (
                "operations",
                json!({"operations": [operation]}),
                render_operations,
            ),
            (
                "problems",
                json!({"problems": [{"severity": "error", "kind": "K",
                "cluster": "main", "instance": "i", "first_seen_ms": 1, "summary": "s",
                "evidence": [{"instance": "i", "fact": "f"}]}]}),
                |v| render_problems(v, 2),
            ),
            (
                "events",
                json!({"events": [{"id": 1, "at_ms": 1, "level": "error",
                "kind": "k", "cluster": "c", "instance": "i", "message": "m"}]}),
                render_events,
            ),
            (
                "clusters",
                json!({"clusters": [{"name": "n", "primary": "p",
                "writer": "w", "instance_count": 1, "reachable_count": 1,
                "open_problem_count": 0, "worst_severity": "error"}]}),
                render_clusters,
            ),
            (
                "recoveries",
                json!({"enabled": true, "clusters": [{"cluster": "c",
                "mode": "auto", "block_window_s": 1, "blocked_until_ms": null,
                "blocked_by": null, "fenced": ["f"], "rejoin": "manual"}]}),
                render_recoveries,
            ),
        ];
        for (name, v, render) in &mut cases {
            let plain = render(v).lines().count();
            poison(v);
            let shown = render(v);
            assert!(
                !shown.chars().any(|c| c.is_control() && c != '\n'),
                "{name}: {shown:?}"
            );
            assert!(shown.contains("\\x1b]0;pwned\\x07"), "{name}: {shown}");
            assert_eq!(
                shown.lines().count(),
                plain,
                "{name}: a line break in a field starts no new line: {shown}"
            );
        }
    }

    #[test]
    fn ordered_json_round_trips_in_order() {
        let text = r#"{"z":1,"a":[true,null,"x",1.5,-2,18446744073709551615],"m":{"y":{},"b":[]}}"#;
        let doc: Ordered = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&doc).unwrap(), text);
    }

    #[test]
    fn a_full_page_says_how_to_see_the_next() {
        let op = |id: i64| {
            json!({"id": id, "cluster": "main", "kind": "failover",
            "state": "succeeded", "step": "done", "trigger": "auto", "created_ms": 0})
        };
        let full = json!({"operations": [op(9), op(7)],
            "next": "/api/v1/operations?before_id=7&limit=2"});
        let text = render_operations(&full);
        assert!(
            text.ends_with("(more: older operations with --before 7)\n"),
            "{text}"
        );
        let last = json!({"operations": [op(3)]});
        assert!(!render_operations(&last).contains("more"));

        let problem = |id: i64, cleared: Value| {
            json!({"id": id, "severity": "error",
            "kind": "ReplicaLagging", "cluster": "main", "instance": "db:3306",
            "first_seen_ms": 1_000, "cleared_ms": cleared, "summary": "lag"})
        };
        let page = json!({"problems": [problem(12, Value::Null), problem(4, json!(2_000))],
            "next": "/api/v1/problems?history=true&before_id=4&limit=2"});
        let text = render_problem_history(&page, 62_000);
        assert!(text.contains("open"), "{text}");
        assert!(text.contains("1m 0s"), "{text}");
        assert!(
            text.ends_with("(more: older problems with --before 4)\n"),
            "{text}"
        );
        assert_eq!(
            render_problem_history(&json!({"problems": []}), 0),
            "no problems in the history\n"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(999), "0s");
        assert_eq!(age(42_000), "42s");
        assert_eq!(age(303_000), "5m 3s");
        assert_eq!(age(3 * 3_600_000 + 12 * 60_000 + 5_000), "3h 12m");
        assert_eq!(age(2 * 86_400_000 + 4 * 3_600_000), "2d 4h");
    }

    fn args(api: &str) -> ApiArgs {
        ApiArgs {
            api: api.into(),
            token_file: None,
            ca_file: None,
        }
    }

    #[test]
    fn a_bad_url_or_token_file_is_bad_input() {
        for bad in ["127.0.0.1:7070", "ftp://x", "not a url"] {
            assert_eq!(client(&args(bad)).err().unwrap().code, 2, "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "# nothing\n").unwrap();
        let e = client(&ApiArgs {
            api: "http://127.0.0.1:7070".into(),
            token_file: Some(path),
            ca_file: None,
        })
        .unwrap_err();
        assert_eq!(e.code, 2);
        assert!(!format!("{:#}", e.error).contains("nothing"));
    }

    #[tokio::test]
    async fn a_daemon_that_is_not_running_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let e = clusters(&args(&api), false).await.unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(
            format!("{:#}", e.error),
            format!("cannot reach the dbfleet daemon at {api}: is `dbfleet serve` running?")
        );
    }

    /// A real API server over an in-memory store with one cluster.
    async fn serve() -> (String, tokio_util::sync::CancellationToken) {
        use std::sync::Arc;
        use store::Store as _;

        let store = store::SqliteStore::open_in_memory().unwrap();
        let spec = model::ClusterSpec {
            name: "main".into(),
            instances: Vec::new(),
            expected_replicas: 0,
            semi_sync: false,
            max_lag: Duration::from_secs(10),
            stall_confirm: model::DEFAULT_STALL_CONFIRM,
            storage: Default::default(),
        };
        store.upsert_cluster(&spec, 1).await.unwrap();
        let state = server::AppState {
            store: Arc::new(store),
            stats: Arc::new(monitor::Stats::default()),
            auth: server::Auth::default(),
            version: "test",
            engine: None,
            drt: Default::default(),
            alerts: None,
            answers: Default::default(),
            routing: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        let cancel = tokio_util::sync::CancellationToken::new();
        tokio::spawn(server::serve(listener, state, cancel.clone()));
        (api, cancel)
    }

    #[tokio::test]
    async fn answers_and_errors_of_a_real_daemon() {
        let (api, cancel) = serve().await;
        let client = client(&args(&api)).unwrap();
        let topo = client.topology("main").await.unwrap();
        assert_eq!(topo.value.cluster, "main");
        let value: Value = serde_json::from_slice(&topo.body).unwrap();
        assert_eq!(render_topology(&value), "main  no primary can be named\n");
        let doc: Ordered = serde_json::from_slice(&topo.body).unwrap();
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"cluster":"main","primary":null,"nodes":[]}"#,
            "--json keeps the API's key order"
        );
        let e = topology(&args(&api), "nope", false).await.unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(format!("{:#}", e.error), "no cluster named \"nope\"");
        let e = client
            .get::<Value>(&["api", "v1", "events"], &[("limit", "x".into())])
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400));
        assert!(api_error(e).error.to_string().contains("`limit`"));
        cancel.cancel();
    }
}
