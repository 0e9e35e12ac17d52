//! What the monitor's sandbox tests share.

use std::time::Duration;

use monitor::{FastPathOptions, WatchOptions};
use probe::ProbeOptions;

/// The loop's options for a test: `interval`, 500 ms probe timeouts, no fast path, every
/// observation persisted. Tests change what they need with `..watch_options(i)`.
pub fn watch_options(interval: Duration) -> WatchOptions {
    WatchOptions {
        interval,
        discovery_interval: Duration::from_secs(60),
        probe: ProbeOptions {
            connect_timeout: Duration::from_millis(500),
            query_timeout: Duration::from_millis(500),
        },
        concurrency: 16,
        fast_path: FastPathOptions {
            enabled: false,
            ..FastPathOptions::default()
        },
        persist_every: Duration::ZERO,
    }
}
