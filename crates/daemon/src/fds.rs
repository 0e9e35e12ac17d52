//! File descriptors: the daemon raises its own `RLIMIT_NOFILE` soft limit to the hard limit
//! at start-up, and keeps a share of the limit for what is not the API (probes above all), so
//! that a flood of API connections can never starve the probes of descriptors.
//!
//! The arithmetic (docs/API.md#connections): the descriptors kept aside are
//! [`BASE_RESERVE`] (the store's files or etcd connections, the listener, stdio, hooks,
//! notifiers, the runtime's own) plus [`PER_INSTANCE_RESERVE`] per declared instance (its
//! probe session, sentinel, heartbeat writer, an operation's connections, a fence guard,
//! discovery). The API may use at most half of what is left, and never more than
//! `api.max_connections`; the accept loop holds a connection only within that limit.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept for the daemon's own needs whatever the fleet.
pub const BASE_RESERVE: u64 = 64;
/// Descriptors kept per declared instance.
pub const PER_INSTANCE_RESERVE: u64 = 8;

/// The `RLIMIT_NOFILE` the daemon runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit in force: the most descriptors the process may hold.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The soft limit before it was raised, when it was.
    pub raised_from: Option<u64>,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit and return what the process has. A
/// refusal leaves the soft limit as it was (and says so in the log).
pub fn raise_nofile_limit() -> std::io::Result<FdLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= hard {
        return Ok(FdLimit {
            soft,
            hard,
            raised_from: None,
        });
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Ok(FdLimit {
            soft: hard,
            hard,
            raised_from: Some(soft),
        }),
        Err(e) => {
            tracing::warn!(soft, hard, error = %e, "could not raise the file-descriptor limit");
            Ok(FdLimit {
                soft,
                hard,
                raised_from: None,
            })
        }
    }
}

/// The descriptors kept aside from the API for a fleet of `instances` declared instances.
pub fn reserved(instances: usize) -> u64 {
    BASE_RESERVE + PER_INSTANCE_RESERVE * instances as u64
}

/// The API's connection limit: `wanted` (`api.max_connections`), lowered to half of what
/// `fd_limit` leaves beside [`reserved`], and at least 1.
pub fn api_connection_limit(wanted: usize, fd_limit: u64, instances: usize) -> usize {
    let room = fd_limit.saturating_sub(reserved(instances)) / 2;
    (wanted as u64).min(room).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_gets_at_most_half_of_what_the_probes_leave() {
        // A large limit: the configured one holds.
        assert_eq!(api_connection_limit(256, 1_048_576, 30), 256);
        // 1024 with 30 instances: 64 + 240 kept, (1024 - 304) / 2 = 360 ≥ 256.
        assert_eq!(api_connection_limit(256, 1024, 30), 256);
        // 1024 with 100 instances: 864 kept, 80 for the API.
        assert_eq!(api_connection_limit(256, 1024, 100), 80);
        // Nothing left: one connection, so that the API still answers someone.
        assert_eq!(api_connection_limit(256, 100, 100), 1);
        for (fd, n) in [(1024u64, 30usize), (4096, 300), (65_536, 1000)] {
            let api = api_connection_limit(10_000, fd, n) as u64;
            assert!(api + reserved(n) <= fd, "{fd} {n}: {api}");
        }
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Start from a low soft limit, as many systems set it (1024).
        let low = hard.min(256);
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        let got = raise_nofile_limit().unwrap();
        assert_eq!(got.soft, hard);
        assert_eq!(got.hard, hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
        if low < hard {
            assert_eq!(got.raised_from, Some(low));
        }
    }
}
