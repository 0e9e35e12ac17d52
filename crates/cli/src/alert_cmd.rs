//! `dbfleet alerts`, `dbfleet downtime`, `dbfleet downtimes` and `dbfleet downtime-remove`:
//! thin clients of `/api/v1/alerts` and `/api/v1/downtimes`.

use std::fmt::Write as _;

use serde_json::Value;

use crate::client_cmd::{api_error, client, show, ApiArgs};
use crate::CliError;

/// `dbfleet alerts`: the open alerts, firing first.
pub async fn alerts(api: &ApiArgs, json: bool) -> Result<(), CliError> {
    let answer = client(api)?.alerts().await.map_err(api_error)?;
    show(&answer, json, render_alerts)
}

/// `dbfleet downtime TARGET --for D --reason TEXT`: silence a cluster's or an instance's
/// pages for a while.
pub async fn add_downtime(
    api: &ApiArgs,
    target: &str,
    duration: &str,
    reason: &str,
    who: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let who = who
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "dbfleet-cli".to_string());
    let body = serde_json::json!({
        "target": target,
        "for": duration,
        "reason": reason,
        "who": who,
    });
    let answer = client(api)?.post_downtime(&body).await.map_err(api_error)?;
    show(&answer, json, |d| {
        format!(
            "downtime {} on {} {} until {} ({} by {})\n",
            d["id"],
            field(&d["target_kind"]),
            field(&d["target"]),
            time(&d["ends_ms"]),
            field(&d["reason"]),
            field(&d["who"]),
        )
    })
}

/// `dbfleet downtimes`: the downtimes in force.
pub async fn downtimes(api: &ApiArgs, json: bool) -> Result<(), CliError> {
    let answer = client(api)?.downtimes().await.map_err(api_error)?;
    show(&answer, json, render_downtimes)
}

/// `dbfleet downtime-remove ID`: end a downtime now.
pub async fn remove_downtime(api: &ApiArgs, id: u64, json: bool) -> Result<(), CliError> {
    let id = id.to_string();
    let answer = client(api)?.delete_downtime(&id).await.map_err(api_error)?;
    show(&answer, json, |d| {
        format!(
            "downtime {} on {} {} removed\n",
            d["id"],
            field(&d["target_kind"]),
            field(&d["target"])
        )
    })
}

fn time(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => "-".into(),
    }
}

fn render_alerts(v: &Value) -> String {
    let empty = Vec::new();
    let mut alerts: Vec<&Value> = v["alerts"].as_array().unwrap_or(&empty).iter().collect();
    if alerts.is_empty() {
        return "no open alerts\n".into();
    }
    // Firing before pending; the API's key order within each.
    alerts.sort_by_key(|a| a["state"].as_str() != Some("firing"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<9} {:<20} {:<26} {:<10} SUMMARY",
        "STATE", "SEVERITY", "CLUSTER", "RULE/INSTANCE", "SILENCED"
    );
    for a in alerts {
        let target = match a["instance"].as_str() {
            Some(i) => format!("{}/{}", field(&a["rule"]), crate::term::escape(i)),
            None => field(&a["rule"]).to_string(),
        };
        let silenced = match (a["silenced"].as_bool(), a["downtime_id"].as_u64()) {
            (Some(true), Some(d)) => format!("yes ({d})"),
            (Some(true), None) => "yes".into(),
            (_, Some(d)) => format!("dt {d}"),
            _ => "no".into(),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<9} {:<20} {:<26} {:<10} {}",
            field(&a["state"]),
            field(&a["severity"]),
            field(&a["cluster"]),
            target,
            silenced,
            field(&a["summary"])
        );
    }
    out
}

fn render_downtimes(v: &Value) -> String {
    let empty = Vec::new();
    let list = v["downtimes"].as_array().unwrap_or(&empty);
    if list.is_empty() {
        return "no downtimes in force\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<30} {:<21} {:<16} REASON",
        "ID", "TARGET", "ENDS", "WHO"
    );
    for d in list {
        let _ = writeln!(
            out,
            "{:<5} {:<30} {:<21} {:<16} {}",
            d["id"],
            format!("{} {}", field(&d["target_kind"]), field(&d["target"])),
            time(&d["ends_ms"]),
            field(&d["who"]),
            field(&d["reason"])
        );
    }
    out
}

/// A JSON string field's text, control characters escaped; empty when it is not a string.
fn field(v: &Value) -> String {
    crate::term::escape(v.as_str().unwrap_or("")).into_owned()
}
