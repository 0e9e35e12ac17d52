//! The daemon's watch loop: discovery from seeds, a probe task per instance under timeouts,
//! and a round that analyses each cluster and records problems and events. It never blocks
//! on one slow server: each instance is probed by its own task.

mod stats;

pub use stats::{Stats, StatsSnapshot};
pub mod watch;

pub use watch::{now_ms, run, ClusterWatch, WatchOptions};
