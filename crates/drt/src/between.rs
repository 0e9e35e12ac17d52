//! Between two runs of a scenario (`--repeat`, and the daemon's scheduled DRTs): every
//! member running again, a fenced old primary rejoined through the daemon, exactly one
//! writable primary, every replica replicating.

use std::time::Duration;

use sandbox::Sandbox;

use crate::runner::{catch_up, look_all, wait_one_writable, RunTarget};

/// Why the cluster could not be made ready for the next run.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A stopped member did not start.
    #[error("start {member}: {error}")]
    Start { member: String, error: String },
    /// Not exactly one writable primary, `after_failover` a failover was asked for.
    #[error("between runs: expected one writable primary, found {found}{}", if *after_failover { " even after asking for a failover" } else { "" })]
    Writable { found: usize, after_failover: bool },
    /// The daemon could not be asked.
    #[error(transparent)]
    Api(#[from] api::ClientError),
    /// A member does not replicate from the writer even after a rejoin was asked for: the
    /// next run would measure a cluster already short of a replica.
    #[error("between runs: {member} does not replicate from the primary {writer}: {why}")]
    NotReplicating {
        member: String,
        writer: String,
        why: String,
    },
}

/// Why `state` (a member that is not the writer) does not replicate from `writer` with both
/// threads running; `None` when it does.
fn not_replicating(state: &model::ServerState, writer: &model::InstanceAddr) -> Option<String> {
    let Some(r) = &state.replication else {
        return Some("it has no replication configured".into());
    };
    if &r.source != writer {
        return Some(format!("it replicates from {}", r.source));
    }
    if r.io_thread != model::IoThreadState::Yes || !r.sql_running {
        return Some(format!(
            "its threads are IO {:?}, SQL {} (last IO error {} {:?}, last SQL error {} {:?})",
            r.io_thread,
            if r.sql_running { "running" } else { "stopped" },
            r.last_io_errno,
            r.last_io_error,
            r.last_sql_errno,
            r.last_sql_error
        ));
    }
    None
}

/// How long the replicas may take to replicate from the writer after the rejoins.
const REPLICATING_WAIT: Duration = Duration::from_secs(30);

/// Between repeats, with no writable primary, after the daemon refused a failover because
/// the primary it names is alive: `SET GLOBAL read_only=0` on that primary, as the human the
/// daemon handed the failover to would, once the killed members run again.
///
/// Why it exists: when the daemon hands a failover to a human (`needs_human`, e.g.
/// `lose-primary-and-best-replica`), it promotes nobody, and the old primary comes back
/// read-only from the heal with its replicas still attached. The API has no call that opens
/// it (`failover` refuses a live primary, `switchover` needs a writable one). It never
/// opens an instance the daemon holds fenced (an old primary a failover replaced): the
/// daemon keeps those read-only on purpose, and only a rejoin brings them back.
async fn open_named_primary(client: &api::Client, cluster: &str, target: &RunTarget) {
    let named = match client.topology(cluster).await {
        Ok(t) => t.value.primary,
        Err(e) => {
            eprintln!("warning: between runs: read the topology: {e}");
            return;
        }
    };
    let Some(addr) = named.and_then(|n| target.members.iter().find(|m| m.to_string() == n)) else {
        eprintln!("between runs: the daemon names no primary among the members");
        return;
    };
    let fenced = match client.recoveries().await {
        Ok(r) => r.value["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["cluster"] == cluster)
            .flat_map(|c| c["fenced"].as_array().cloned().unwrap_or_default())
            .any(|f| f.as_str() == Some(addr.to_string().as_str())),
        Err(e) => {
            eprintln!("warning: between runs: read the fenced instances: {e}");
            return;
        }
    };
    if fenced {
        eprintln!(
            "between runs: the daemon holds {addr} fenced; it stays read-only until a rejoin"
        );
        return;
    }
    let opts = probe::ProbeOptions {
        connect_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(10),
    };
    match probe::Session::connect(addr, &target.admin, opts).await {
        Ok(mut s) => {
            let r = s.exec("open the primary", "SET GLOBAL read_only=0").await;
            s.close().await;
            match r {
                Ok(()) => eprintln!(
                    "between runs: opened {addr} (read_only=0), the primary the daemon names"
                ),
                Err(e) => eprintln!("warning: between runs: open {addr}: {e}"),
            }
        }
        Err(e) => eprintln!("warning: between runs: connect to {addr}: {e}"),
    }
}

/// Start every member whose process is not running.
pub async fn start_stopped(sb: &Sandbox) -> Result<(), RestoreError> {
    for m in sb.status() {
        if !m.running {
            sb.start(&m.name).await.map_err(|e| RestoreError::Start {
                member: m.name.clone(),
                error: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// Between repeats: members running, a fenced old primary rejoined (when `client`, a
/// client of the daemon with a token, is given), exactly one writable primary, every replica
/// replicating.
pub async fn restore(
    sb: &Sandbox,
    target: &RunTarget,
    client: Option<&api::Client>,
    cluster: &str,
) -> Result<(), RestoreError> {
    start_stopped(sb).await?;
    // The runs break the cluster on purpose: lift the anti-flapping block window the last
    // failover opened, or the next run's failover would be blocked.
    if let Some(client) = client {
        if let Err(e) = client.recoveries_ack(cluster, "drt").await {
            eprintln!("warning: recoveries ack failed: {e}");
        }
    }
    let writer = match wait_one_writable(&target.members, &target.admin, Duration::from_secs(30))
        .await
    {
        Ok(w) => w,
        // No primary at all, e.g. the control plane handed the failover to a human
        // (lose-primary-and-best-replica): be that human, now that every member runs again.
        Err(w) if w.is_empty() && client.is_some() => {
            if let Some(client) = client {
                match client.failover(cluster).await {
                    Ok(r) => eprintln!(
                        "between runs: no writable primary; asked for a failover: {}",
                        r.value["state"].as_str().unwrap_or("?")
                    ),
                    // Refused: the daemon names a primary that answers (restarted
                    // read-only by the heal).
                    Err(e @ api::ClientError::Status { status: 409, .. })
                        if e.to_string().contains("is alive") =>
                    {
                        eprintln!("between runs: no writable primary; asked for a failover: {e}");
                        open_named_primary(client, cluster, target).await;
                    }
                    Err(e) => {
                        eprintln!("between runs: no writable primary; asked for a failover: {e}")
                    }
                }
            }
            wait_one_writable(&target.members, &target.admin, Duration::from_secs(30))
                .await
                .map_err(|w| RestoreError::Writable {
                    found: w.len(),
                    after_failover: true,
                })?
        }
        Err(w) => {
            return Err(RestoreError::Writable {
                found: w.len(),
                after_failover: false,
            })
        }
    };
    if let Some(client) = client {
        // A reachable read-only member that does not replicate from the writer is rejoined
        // through the daemon (errant-GTID check, fence, repoint): a fenced old primary (no
        // replication), and a replica left stopped by a heal that restarted it with
        // `skip_slave_start` while its source was dead, or still pointing at an old
        // primary. A replica whose SQL thread broke is left to the scenario's heal.
        for l in look_all(&target.members, &target.admin).await {
            let why = l
                .state
                .as_ref()
                .filter(|s| {
                    l.addr != writer
                        && s.read_only
                        && s.replication.as_ref().is_none_or(|r| r.last_sql_errno == 0)
                })
                .and_then(|s| not_replicating(s, &writer));
            let Some(why) = why else {
                continue;
            };
            eprintln!("between runs: {} does not replicate from {writer} ({why}); asking the daemon to rejoin it", l.addr);
            let instance = l.addr.to_string();
            for attempt in 0..2 {
                match client.rejoin(cluster, &instance).await {
                    Ok(_) => break,
                    Err(api::ClientError::ErrantGtids { gtids, .. }) if attempt == 0 => {
                        // Killed mid-commit under semi-sync AFTER_SYNC: a write in its binlog
                        // that no client was told about. Remove it, as a DBA would, then
                        // rejoin.
                        match crate::runner::discard_unacknowledged(
                            &l.addr,
                            &writer,
                            &target.admin,
                            &crate::load::TableName::default().quoted(),
                        )
                        .await
                        {
                            Ok(n) => eprintln!(
                                "{} held an unacknowledged write ({n} ledger row(s), errant \
                                 GTIDs {}); removed it before the rejoin",
                                l.addr,
                                gtids.join(",")
                            ),
                            Err(e) => {
                                eprintln!("warning: {}: {e}", l.addr);
                                break;
                            }
                        }
                    }
                    Err(e @ api::ClientError::Status { .. })
                    | Err(e @ api::ClientError::ErrantGtids { .. }) => {
                        eprintln!("warning: rejoin {} failed: {e}", l.addr);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    if client.is_some() {
        wait_replicating(&writer, target).await?;
    }
    wait_writes_commit(&writer, target).await;
    // Every replica applies what the last run wrote first: a replica rejoined late (an old
    // primary whose errant write was removed) applies about as fast as the load writes, so
    // its backlog would carry into the next run, and a failover choosing it would wait for
    // that backlog (`relay_apply_timeout`), which is no part of the next run's fault.
    let others: Vec<model::InstanceAddr> = target
        .members
        .iter()
        .filter(|a| **a != writer)
        .cloned()
        .collect();
    let started = std::time::Instant::now();
    catch_up(&writer, &others, &target.admin, CATCH_UP_WAIT).await;
    if started.elapsed() >= Duration::from_secs(2) {
        eprintln!(
            "between runs: the replicas applied {writer}'s position after {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    // Give the replicas a moment to settle so the next run starts from a healthy cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

/// Wait (bounded by [`REPLICATING_WAIT`]) until every reachable member but `writer`
/// replicates from it with both threads running; the first member that still does not is
/// the error. A member that does not answer is left to the next run's checks.
async fn wait_replicating(
    writer: &model::InstanceAddr,
    target: &RunTarget,
) -> Result<(), RestoreError> {
    let started = std::time::Instant::now();
    loop {
        let looks = look_all(&target.members, &target.admin).await;
        let bad = looks.iter().find_map(|l| {
            let s = l.state.as_ref()?;
            if &l.addr == writer {
                return None;
            }
            not_replicating(s, writer).map(|why| (l.addr.to_string(), why))
        });
        let Some((member, why)) = bad else {
            return Ok(());
        };
        if started.elapsed() >= REPLICATING_WAIT {
            return Err(RestoreError::NotReplicating {
                member,
                writer: writer.to_string(),
                why,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long the replicas may take to apply the primary's position between runs.
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);

/// How long the primary may take to commit again between runs: MariaDB waits for space on a
/// disk that was full and retries once a minute (`fill_disk`).
const COMMIT_WAIT: Duration = Duration::from_secs(90);

/// Wait (bounded by [`COMMIT_WAIT`]) until `writer` commits a binlogged no-op again: a
/// primary whose disk was full stays writable (`read_only=0`) but commits nothing until
/// MariaDB retries, up to a minute after the space came back, and the next run's first
/// write would time out. A primary that never commits is left to the next run to report.
async fn wait_writes_commit(writer: &model::InstanceAddr, target: &RunTarget) {
    let opts = probe::ProbeOptions {
        connect_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(10),
    };
    let started = std::time::Instant::now();
    let mut said = false;
    while started.elapsed() < COMMIT_WAIT {
        let r = match probe::Session::connect(writer, &target.admin, opts).await {
            Ok(mut s) => {
                // Binlogged even though the schema exists: it needs the binlog, as a write does.
                let r = s
                    .exec("commit check", "CREATE DATABASE IF NOT EXISTS app")
                    .await;
                s.close().await;
                r
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                if said {
                    eprintln!(
                        "between runs: {writer} commits again after {:.1}s",
                        started.elapsed().as_secs_f64()
                    );
                }
                return;
            }
            Err(e) => {
                if !said {
                    eprintln!("between runs: {writer} does not commit yet ({e}); waiting");
                    said = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    eprintln!(
        "warning: between runs: {writer} commits nothing after {}s",
        COMMIT_WAIT.as_secs()
    );
}
