//! Fencing on return: a replaced primary that cannot be reached when it is failed over
//! (frozen, cut off, powered off) gets a guard, a task of its own that tries to reach it
//! every [`TRY_EVERY`] and fences it the moment it answers, instead of waiting for a
//! probe round.
//!
//! - Connect attempts overlap: a new one starts every [`TRY_EVERY`] while earlier ones
//!   wait (at most [`MAX_IN_FLIGHT`], each under [`CONNECT_TIMEOUT`]). A frozen server's
//!   kernel has already queued the pending ones, which complete as soon as it runs again; a
//!   silently dropped route gets a fresh SYN every [`TRY_EVERY`] instead of waiting out
//!   TCP's retransmission backoff.
//! - The fence ([`fence_session`]) kills every client connection first, then sets
//!   `read_only=ON`, then kills the clients that connected in between, and turns semi-sync
//!   off as a primary last. Killing first matters: `SET GLOBAL read_only=1` waits behind
//!   commits that wait for a semi-sync acknowledgement. The kills go in an order
//!   ([`kill_clients`]): the commits that wait for an ack last, since one killed commits
//!   its whole binlog group and would acknowledge the members still connected.
//! - A guard ends when the fence succeeded (a `fenced_on_return` event records how long
//!   after the server answered), when the instance rejoins ([`Engine::stop_guard`]), or at
//!   shutdown ([`Engine::stop_tasks`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use model::InstanceAddr;
use probe::commands::Command;
use probe::{ProbeError, ProbeOptions, Session};
use store::{kinds, EventLevel, NewEvent};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{now_ms, Engine};

/// How often a new connect attempt starts.
pub(crate) const TRY_EVERY: Duration = Duration::from_millis(50);
/// How long one connect attempt (TCP and handshake) may wait.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Connect attempts waiting at once, at most.
pub(crate) const MAX_IN_FLIGHT: usize = 16;
/// How long one fencing statement may take before the attempt starts over on a new
/// connection (whose kill then ends the stuck one).
const STATEMENT_TIMEOUT: Duration = Duration::from_millis(500);

/// One running guard.
pub(crate) struct Guard {
    cluster: String,
    id: u64,
    cancel: CancellationToken,
}

/// What a fence did.
pub(crate) struct FenceDone {
    /// Client connections killed.
    pub killed: usize,
    /// When `read_only=ON` took effect.
    pub read_only_at: Instant,
}

/// The state of a commit that waits for its semi-sync ack (MariaDB's
/// `stage_waiting_for_semi_sync_ack_from_slave`).
const ACK_WAIT: &str = "waiting for semi-sync ack";

/// Kill every client connection of the server but this session's and the server's own
/// threads (replication, event scheduler). A connection that ends between the list and the
/// kill is fine.
///
/// The order matters. A commit waiting for its semi-sync ack is the leader of a binlog
/// group commit: killed, it stops waiting and commits its whole group, and every member of
/// the group whose connection is still open receives OK — an acknowledgement no replica
/// backs (measured on 10.11: three grouped commits with no replica, the waiting one killed,
/// the two others acknowledged). So every other client is killed first (a killed
/// connection's socket is shut at once: its commit may still land in the binlog, but its
/// client never hears OK), the list is read again and the newcomers killed, and only then
/// the commits that wait for an ack.
pub(crate) async fn kill_clients(s: &mut Session) -> Result<usize, ProbeError> {
    let mut killed = 0;
    let mut done: Vec<u64> = Vec::new();
    let mut waiting: Vec<u64> = Vec::new();
    for _ in 0..2 {
        for c in s.clients().await? {
            if done.contains(&c.id) {
                continue;
            }
            if c.state.to_ascii_lowercase().contains(ACK_WAIT) {
                if !waiting.contains(&c.id) {
                    waiting.push(c.id);
                }
                continue;
            }
            killed += usize::from(s.kill_connection(c.id).await?);
            done.push(c.id);
        }
    }
    for id in waiting {
        killed += usize::from(s.kill_connection(id).await?);
    }
    Ok(killed)
}

/// Fence a server through `s`: clients killed, `read_only=ON`, the clients that connected
/// meanwhile killed too, then semi-sync off as a primary, unless `keep_semi_sync` (a
/// primary failed over for stalled writes: semi-sync on it is never relaxed, so that a
/// commit its frozen disk still holds is acknowledged to no one).
pub(crate) async fn fence_session(
    s: &mut Session,
    keep_semi_sync: bool,
) -> Result<FenceDone, ProbeError> {
    let mut killed = kill_clients(s).await?;
    s.run(Command::ReadOnly).await?;
    let read_only_at = Instant::now();
    killed += kill_clients(s).await?;
    if keep_semi_sync {
        return Ok(FenceDone {
            killed,
            read_only_at,
        });
    }
    // Semi-sync goes off last, as in `Conns::fence`: switched off while a commit of a
    // client that connected meanwhile waits, it would acknowledge it with no second copy.
    s.run(Command::SemiSyncPrimaryOff).await?;
    Ok(FenceDone {
        killed,
        read_only_at,
    })
}

impl Engine {
    /// Start the guard of `addr`, a replaced primary of `cluster`, unless one runs.
    pub(crate) fn guard_fenced(&self, cluster: &str, addr: &InstanceAddr) {
        let Some(me) = self.me.upgrade() else { return };
        let Ok(setup) = self.setup(cluster) else {
            return;
        };
        let id = self.next_run.fetch_add(1, Ordering::SeqCst);
        let cancel = {
            let mut guards = self.guards.lock().unwrap_or_else(|p| p.into_inner());
            if guards.get(addr).is_some_and(|g| !g.cancel.is_cancelled()) {
                return;
            }
            let cancel = self.stop.child_token();
            guards.insert(
                addr.clone(),
                Guard {
                    cluster: cluster.to_string(),
                    id,
                    cancel: cancel.clone(),
                },
            );
            cancel
        };
        let creds = setup.admin.clone();
        let (cluster, addr) = (cluster.to_string(), addr.clone());
        info!(cluster = %cluster, instance = %addr, "fence guard started: the replaced primary is fenced the moment it answers");
        self.spawn(async move {
            let keep = me.keeps_semi_sync(&addr);
            let r = guard(&addr, creds, keep, &cancel).await;
            {
                let mut guards = me.guards.lock().unwrap_or_else(|p| p.into_inner());
                if guards.get(&addr).is_some_and(|g| g.id == id) {
                    guards.remove(&addr);
                }
            }
            let Some(f) = r else { return };
            let took_ms = f.fenced.duration_since(f.answered).as_secs_f64() * 1000.0;
            info!(cluster = %cluster, instance = %addr, answered_to_fenced_ms = took_ms, killed = f.killed, "fenced on return");
            let msg = format!(
                "replaced primary {addr} answered again and was fenced {took_ms:.0} ms later: {} client connection(s) killed, read-only, {}",
                f.killed,
                if keep { "semi-sync left on (failed over for stalled writes)" } else { "semi-sync off" }
            );
            let _ = me
                .store
                .append_event(
                    &NewEvent::new(now_ms(), kinds::FENCED_ON_RETURN, EventLevel::Warning, msg)
                        .with_cluster(cluster.as_str())
                        .with_instance(addr.clone())
                        .with_data(serde_json::json!({
                            "answered_to_fenced_ms": took_ms,
                            "killed": f.killed,
                            "guarded_ms": f.fenced.duration_since(f.started).as_millis() as u64,
                        })),
                )
                .await;
        });
    }

    /// Stop the guard of `addr` (it rejoined, or is no longer fenced).
    pub(crate) fn stop_guard(&self, addr: &InstanceAddr) {
        if let Some(g) = self
            .guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr)
        {
            g.cancel.cancel();
        }
    }

    /// The instances guarded now, by cluster, for status and tests.
    pub fn fence_guards(&self) -> Vec<(String, InstanceAddr)> {
        self.guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, g)| !g.cancel.is_cancelled())
            .map(|(a, g)| (g.cluster.clone(), a.clone()))
            .collect()
    }
}

/// A guard's success.
struct Fenced {
    started: Instant,
    answered: Instant,
    fenced: Instant,
    killed: usize,
}

/// Try to reach `addr` until it answers, then fence it; `None` when cancelled first.
async fn guard(
    addr: &InstanceAddr,
    creds: probe::Credentials,
    keep_semi_sync: bool,
    cancel: &CancellationToken,
) -> Option<Fenced> {
    let started = Instant::now();
    let opts = ProbeOptions {
        connect_timeout: CONNECT_TIMEOUT,
        query_timeout: STATEMENT_TIMEOUT,
    };
    let mut tries: JoinSet<(Result<Session, ProbeError>, Instant)> = JoinSet::new();
    let mut tick = tokio::time::interval(TRY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut attempts = 0u64;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tick.tick() => {
                if tries.len() < MAX_IN_FLIGHT {
                    attempts += 1;
                    let (a, c) = (addr.clone(), creds.clone());
                    tries.spawn(async move {
                        let r = Session::connect(&a, &c, opts).await;
                        (r, Instant::now())
                    });
                }
            }
            Some(done) = tries.join_next(), if !tries.is_empty() => {
                let Ok((Ok(mut s), answered)) = done else { continue };
                match fence_session(&mut s, keep_semi_sync).await {
                    Ok(done) => {
                        tries.abort_all();
                        return Some(Fenced { started, answered, fenced: done.read_only_at, killed: done.killed });
                    }
                    Err(e) => {
                        debug!(instance = %addr, attempts, error = %e, "fence on return failed; trying again");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox::testing::TestSandbox;

    const T: ProbeOptions = ProbeOptions {
        connect_timeout: Duration::from_secs(2),
        query_timeout: Duration::from_secs(30),
    };

    /// A semi-sync primary with no replica left (a frozen old primary that resumed) has a
    /// binlog group commit of three waiting for an ack; the fence must acknowledge none of
    /// them. The group's leader is the connection listed first (the newest), so a fence that
    /// kills in list order kills it first and its two followers get OK. Ports 27400..27402.
    #[tokio::test]
    async fn the_fence_acknowledges_no_member_of_a_waiting_group_commit() {
        let sb = TestSandbox::up_with("fence-group", 2, 27400, true).await;
        let creds = sb.credentials().unwrap();
        let (admin, app) = (creds.admin.credentials(), creds.app.credentials());
        let (m1, m2, m3) = (sb.addr("m1"), sb.addr("m2"), sb.addr("m3"));
        let mut s = Session::connect(&m1, &admin, T).await.unwrap();
        s.exec("table", "CREATE TABLE app.g (id INT PRIMARY KEY)")
            .await
            .unwrap();
        for r in [&m2, &m3] {
            let mut r = Session::connect(r, &admin, T).await.unwrap();
            r.exec("stop io", "STOP SLAVE IO_THREAD").await.unwrap();
        }
        s.exec(
            "group commits",
            "SET GLOBAL binlog_commit_wait_count=3, binlog_commit_wait_usec=3000000",
        )
        .await
        .unwrap();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(Session::connect(&m1, &app, T).await.unwrap());
        }
        // The newest connection commits first: it leads the group.
        let mut tasks = Vec::new();
        for (i, mut c) in clients.into_iter().enumerate().rev() {
            tasks.push(tokio::spawn(async move {
                c.exec("insert", &format!("INSERT INTO app.g VALUES ({i})"))
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = s
                .query_rows(
                    "waiting",
                    "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST \
                     WHERE STATE LIKE 'Waiting for semi-sync ACK%'",
                )
                .await
                .unwrap();
            if rows[0]["n"].as_deref() == Some("1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the group never waited for an ack"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let done = fence_session(&mut s, false).await.expect("fence");
        let mut acked = Vec::new();
        for t in tasks {
            let r = tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("the insert ends")
                .unwrap();
            acked.push(r.is_ok());
        }
        assert_eq!(
            acked,
            vec![false; 3],
            "acknowledged by a fenced primary with no replica ({} killed)",
            done.killed
        );
    }
}
