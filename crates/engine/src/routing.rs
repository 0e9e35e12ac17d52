//! The push of a primary change to the cluster's HAProxy (`[cluster.haproxy] runtime_api`),
//! over its Runtime API ([`haproxy`]): the route checks (the pull) move HAProxy within a
//! few check intervals; the push moves it at once.
//!
//! - When the new primary opens writes: the old primary's server goes to maintenance in the
//!   writer backend with every session to it cut, then the new one is set ready and up
//!   without waiting for a check. In that order, so the backend never has two servers up.
//! - When the old primary is fenced: maintenance and the sessions cut again, for a server
//!   that came back meanwhile.
//!
//! A failed push never fails the operation: it is a warning on it and a
//! `routing_push_failed` event (critical, paged as `operation_warning`), and the pull still
//! converges.

use model::InstanceAddr;
use serde_json::json;
use store::{kinds, EventLevel};

use crate::ops::Op;

/// Push "`new` replaces `old`" to `api`. `None` when it succeeded; else the warning, also
/// recorded as a `routing_push_failed` event.
pub(crate) async fn push_open(
    api: &haproxy::RuntimeApi,
    op: &Op<'_>,
    old: &InstanceAddr,
    new: &InstanceAddr,
) -> Option<String> {
    let cluster = op.rec.cluster.clone();
    let result = async {
        let mut done = haproxy::fence_writer(api, &cluster, old).await?.done;
        done.extend(haproxy::open_writer(api, &cluster, new).await?.done);
        Ok::<_, haproxy::HaproxyError>(done)
    }
    .await;
    record(op, api, "open_writes", result).await
}

/// Push "`old` is fenced" to `api`.
pub(crate) async fn push_fence(
    api: &haproxy::RuntimeApi,
    op: &Op<'_>,
    old: &InstanceAddr,
) -> Option<String> {
    let cluster = op.rec.cluster.clone();
    let result = haproxy::fence_writer(api, &cluster, old)
        .await
        .map(|r| r.done);
    record(op, api, "fence_old", result).await
}

async fn record(
    op: &Op<'_>,
    api: &haproxy::RuntimeApi,
    step: &str,
    result: Result<Vec<String>, haproxy::HaproxyError>,
) -> Option<String> {
    let cluster = &op.rec.cluster;
    match result {
        Ok(done) => {
            op.event(
                kinds::ROUTING_PUSHED,
                EventLevel::Info,
                format!(
                    "{cluster}: HAProxy at {} told at {step}: {}",
                    api.socket(),
                    done.join("; ")
                ),
                json!({ "operation_id": op.rec.id, "step": step, "commands": done }),
            )
            .await;
            None
        }
        Err(e) => {
            let msg = format!(
                "the push to HAProxy at {} at {step} failed: {e}; HAProxy follows when its route checks do",
                api.socket()
            );
            op.event(
                kinds::ROUTING_PUSH_FAILED,
                EventLevel::Critical,
                format!("{cluster}: {msg}"),
                json!({ "operation_id": op.rec.id, "step": step, "error": e.to_string() }),
            )
            .await;
            Some(msg)
        }
    }
}
