//! A slow replication link: one replica is pointed at its source through a [`LatencyProxy`]
//! that delays every chunk, then pointed back when healed.
//!
//! The kernel here has no `netem`, so latency is added in user space. The proxy listens on
//! 127.0.0.1 on a free port and forwards to the replica's source; the replica's `CHANGE
//! MASTER` keeps its account and GTID position (`MASTER_USE_GTID = slave_pos`) and only the
//! host and port change. The heartbeat period is read first and given again both times,
//! since a `CHANGE MASTER` that changes the host resets it.
//!
//! Heal order: point the replica back at the source it had, then close the proxy. If the
//! process is interrupted, the registry heals newest first, which is the same order: the
//! repoint is registered after the proxy.

use std::net::SocketAddr;
use std::time::Duration;

use model::InstanceAddr;
use probe::{Credentials, ProbeOptions, Session};
use sandbox::Sandbox;

use super::{
    block_on_fresh, guard_methods, lock, loopback_addr, FaultError, FaultHandle, FaultKind,
    LatencyProxy, ProxyFaults, ProxyOptions,
};

/// Timeouts of the admin session; `STOP SLAVE` waits for the applier's current event.
const ADMIN: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(10),
};

/// One replica replicating through a latency proxy.
#[must_use = "a fault is healed when its guard is dropped"]
#[derive(Debug)]
pub struct SlowReplica {
    handle: FaultHandle,
    member: String,
    proxy_addr: SocketAddr,
}

impl SlowReplica {
    /// Point `member` of `sb` (a replica) at its current source through a proxy that applies
    /// `faults`.
    pub async fn inject(
        sb: &Sandbox,
        member: &str,
        faults: ProxyFaults,
    ) -> Result<Self, FaultError> {
        let sandbox_err = |error| FaultError::Sandbox {
            member: member.to_string(),
            error,
        };
        let addr = sb.member(member).map_err(sandbox_err)?.addr();
        let creds = sb.credentials().map_err(sandbox_err)?.admin.credentials();
        let mut s = Session::connect(&addr, &creds, ADMIN)
            .await
            .map_err(FaultError::sql("connect", &addr))?;
        let source = source_of(&mut s, member, &addr).await;
        let heartbeat = heartbeat_period(&mut s, &addr).await;
        s.close().await;
        let (source, heartbeat) = (source?, heartbeat?);
        let target = loopback_addr(&source)?;

        let mut opts = ProxyOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), target);
        opts.faults = faults;
        let proxy = LatencyProxy::start(opts)?;
        let proxy_addr = proxy.addr();
        let through = InstanceAddr::new("127.0.0.1", proxy_addr.port());

        // Registered after the proxy, so the registry heals it first (newest first).
        let back = (addr.clone(), creds.clone(), source.clone());
        let proxy = std::sync::Mutex::new(Some(proxy));
        let handle = FaultHandle::register(
            FaultKind::SlowReplica,
            format!("slow link {member} ← {source} through {proxy_addr}"),
            Box::new(move || {
                let (addr, creds, source) = &back;
                block_on_fresh(repoint(addr, creds, source, heartbeat))??;
                let note = match lock(&proxy).take() {
                    Some(p) => {
                        p.heal_blocking()?;
                        p.event().note
                    }
                    None => None,
                };
                Ok(Some(format!(
                    "{} points at {source} again{}",
                    addr,
                    note.map(|n| format!("; proxy {n}")).unwrap_or_default()
                )))
            }),
        );
        let fault = Self {
            handle,
            member: member.to_string(),
            proxy_addr,
        };
        // On an error, dropping `fault` points the replica back and closes the proxy.
        repoint(&addr, &creds, &through, heartbeat).await?;
        fault.handle.mark_injected();
        Ok(fault)
    }

    /// The replica.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Where the proxy listens.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }
}

guard_methods!(SlowReplica);

/// The replica's source now, from `SHOW SLAVE STATUS`.
async fn source_of(
    s: &mut Session,
    member: &str,
    addr: &InstanceAddr,
) -> Result<InstanceAddr, FaultError> {
    let state = s
        .observe()
        .await
        .map_err(FaultError::sql("observe", addr))?;
    match state.replication {
        Some(r) => Ok(r.source),
        None => Err(FaultError::Precondition(format!(
            "{member} ({addr}) replicates from no source: a slow link needs a replica"
        ))),
    }
}

/// `Slave_heartbeat_period`, in seconds, as the replica has it now.
async fn heartbeat_period(s: &mut Session, addr: &InstanceAddr) -> Result<f64, FaultError> {
    let rows = s
        .query_rows(
            "heartbeat period",
            "SHOW GLOBAL STATUS LIKE 'Slave_heartbeat_period'",
        )
        .await
        .map_err(FaultError::sql("heartbeat period", addr))?;
    Ok(rows
        .first()
        .and_then(|r| r.get("Value").cloned().flatten())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(1.0))
}

/// Point the replica at `source`, keeping its account and GTID position.
async fn repoint(
    addr: &InstanceAddr,
    creds: &Credentials,
    source: &InstanceAddr,
    heartbeat: f64,
) -> Result<(), FaultError> {
    let mut s = Session::connect(addr, creds, ADMIN)
        .await
        .map_err(FaultError::sql("connect", addr))?;
    let sql = format!(
        "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, \
         MASTER_USE_GTID=slave_pos, MASTER_HEARTBEAT_PERIOD={heartbeat:.3}; START SLAVE",
        probe::sql_escape(&source.host),
        source.port
    );
    let r = s
        .exec("change master", &sql)
        .await
        .map_err(FaultError::sql("change master", addr));
    s.close().await;
    r
}
