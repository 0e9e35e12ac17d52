//! The wall clock, read here and nowhere else in the workspace. The rest of `model` is pure:
//! its functions take times as arguments; callers read them from here.
//!
//! (The DRT runner keeps its own timeline clock, `drt::faults::now_ms`: the wall clock read
//! once and advanced by the monotonic one, so that a clock step cannot reorder a run.)

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Microseconds since the Unix epoch (the heartbeat's time base); 0 if the clock is before
/// it.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
