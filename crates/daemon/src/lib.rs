//! dbfleet's daemon, what `dbfleet serve` runs: it loads the config, opens the store, starts
//! the engine, the watch loop, the API, the alerting task and the DRT scheduler, hands each
//! round to the engine and the alerting, and shuts all of it down in order. In-process, so
//! the CLI only parses `serve`'s arguments and restarts it for a reload.

mod alerting;
mod drt_schedule;
pub mod fds;
mod serve;

pub use serve::{load_config, round_consumer_with, run, DaemonError, Outcome, RunOptions};
