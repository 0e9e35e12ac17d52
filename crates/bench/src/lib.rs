//! The benchmarks behind `dbfleet bench …`: each runs real servers (or the simulated fleet)
//! and returns its figures; the CLI parses the arguments and prints them. Speed claims in
//! docs/BENCHMARKS.md come from here, never from timed assertions in tests.
//!
//! - [`api_reads`]: many concurrent readers of a real daemon's API (latency, RSS, threads).
//! - [`monitor`]: the watch loop against a simulated fleet (`sim`), optionally against
//!   `mysqld_exporter`.
//! - [`detection`]: fault → `DeadPrimary` on a sandbox.
//! - [`failover`]: automatic failover and switchover end to end under a write load.
//! - [`sandbox_cycle`]: `sandbox up` and `down`.
//! - [`route_checks`]: the route checks HAProxy calls, at a fixed rate, against a daemon
//!   watching a sandbox (latency p50/p99).

pub mod api_reads;
pub mod detection;
pub mod failover;
pub mod monitor;
pub mod route_checks;
pub mod sandbox_cycle;

/// A temporary directory of this process for a bench's sandboxes.
fn temp_root() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("dbfleet-bench-{}", std::process::id()))
}
