//! A stalled replication stream: every packet of one replica's connection to its source is
//! dropped (a [`NetworkFault`] with [`NetworkSpec::Connection`]), as when the source's host
//! loses power mid-send. No RST is sent: the replica's IO thread waits, and only gives up
//! after `slave_net_timeout`; the source keeps serving its other replicas and clients.
//!
//! The connection is found in `/proc`: the replica's `mariadbd` (the sandbox's PID) holds a
//! socket whose remote end is its source's port; the local port of that socket is the one
//! the rules name. Linux only.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use probe::{ProbeOptions, Session};
use sandbox::Sandbox;

use super::{loopback_addr, FaultError, NetworkFault, NetworkSpec};

/// How long to wait for the replica's connection to its source to show.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

const ADMIN: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(5),
};

/// Cut `member` (a replica of `sb`) off its source's stream: drop every packet of its open
/// replication connection, both ways. Fails when the member replicates from no source or
/// holds no open connection to it (its IO thread is not connected).
pub async fn stall_replication_stream(
    sb: &Sandbox,
    member: &str,
) -> Result<NetworkFault, FaultError> {
    let sandbox_err = |error| FaultError::Sandbox {
        member: member.to_string(),
        error,
    };
    let addr = sb.member(member).map_err(sandbox_err)?.addr();
    let creds = sb.credentials().map_err(sandbox_err)?.admin.credentials();
    let mut s = Session::connect(&addr, &creds, ADMIN)
        .await
        .map_err(FaultError::sql("connect", &addr))?;
    let state = s.observe().await.map_err(FaultError::sql("observe", &addr));
    s.close().await;
    let Some(repl) = state?.replication else {
        return Err(FaultError::Precondition(format!(
            "{member} ({addr}) replicates from no source: nothing to stall"
        )));
    };
    let source = loopback_addr(&repl.source)?;
    let pid = sb
        .status()
        .into_iter()
        .find(|m| m.name == member)
        .and_then(|m| m.pid)
        .ok_or_else(|| FaultError::NotRunning {
            member: member.to_string(),
        })?;
    // A replica that just (re)started replicating may not have connected yet: wait a
    // little for its connection.
    let deadline = std::time::Instant::now() + CONNECT_WAIT;
    let conns = loop {
        let conns = replication_connections(pid, source)?;
        if !conns.is_empty() || std::time::Instant::now() >= deadline {
            break conns;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Some(client) = conns.first().copied() else {
        return Err(FaultError::Precondition(format!(
            "{member} ({addr}) holds no open connection to its source {source}: its IO \
             thread is not connected"
        )));
    };
    if conns.len() > 1 {
        tracing::warn!(
            member,
            ?conns,
            "several connections to the source; stalling the first"
        );
    }
    let spec = NetworkSpec::Connection {
        client,
        server: source,
    };
    tokio::task::spawn_blocking(move || NetworkFault::inject(spec))
        .await
        .map_err(|e| FaultError::Panicked(e.to_string()))?
}

/// The local addresses of the established TCP connections that process `pid` holds to
/// `server`, read from `/proc/PID/fd` and `/proc/PID/net/tcp` (and `tcp6`, for IPv4-mapped
/// sockets).
pub fn replication_connections(
    pid: i32,
    server: SocketAddr,
) -> Result<Vec<SocketAddr>, FaultError> {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut inodes = HashSet::new();
    for e in std::fs::read_dir(&fd_dir).map_err(FaultError::io(format!("read {fd_dir}")))? {
        let Ok(e) = e else { continue };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(inode) = t
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|i| i.parse::<u64>().ok())
        {
            inodes.insert(inode);
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue; // not ESTABLISHED
            }
            let Ok(inode) = f[9].parse::<u64>() else {
                continue;
            };
            if !inodes.contains(&inode) {
                continue;
            }
            if let (Some(local), Some(remote)) = (proc_addr(f[1]), proc_addr(f[2])) {
                if remote == server {
                    out.push(local);
                }
            }
        }
    }
    Ok(out)
}

/// An IPv4 `HEXIP:HEXPORT` of `/proc/net/tcp` (the address in host byte order as the
/// kernel prints it), or an IPv4-mapped one of `tcp6`.
fn proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let v4 = match ip.len() {
        8 => ip,
        // ::ffff:a.b.c.d is 0000000000000000FFFF0000 then the IPv4 word.
        32 if ip[..24].eq_ignore_ascii_case("0000000000000000FFFF0000") => &ip[24..],
        _ => return None,
    };
    let word = u32::from_str_radix(v4, 16).ok()?;
    // The kernel prints the network-order word as a host-order number.
    Some(SocketAddr::from((Ipv4Addr::from(word.to_ne_bytes()), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        assert_eq!(
            proc_addr("0100007F:0CEA"),
            Some(SocketAddr::from(([127, 0, 0, 1], 3306)))
        );
        assert_eq!(
            proc_addr("0000000000000000FFFF00000100007F:D431"),
            Some(SocketAddr::from(([127, 0, 0, 1], 0xD431)))
        );
        assert_eq!(proc_addr("00000000000000000000000001000000:0050"), None);
        assert_eq!(proc_addr("zz"), None);
    }
}
