//! `History`: one instance's recent samples in a fixed-size ring of 12-byte records.
//!
//! 10,000 instances × 3,600 samples (one hour at a 1 s interval) × 12 bytes is 432 MB
//! (0.40 GiB) once every ring is full; rings grow as samples arrive, so a daemon that
//! started a minute ago holds a minute. Values are stored compactly and saturate:
//! `threads_connected` up to 65,535, `threads_running` up to 255. Queries per second and the
//! lag in seconds are `bfloat16` (an `f32` with its low 16 mantissa bits rounded off: the
//! `f32` range, 2–3 significant digits, so 0.4 % at most off), which is plenty for a chart and
//! takes 2 bytes each instead of 4.

use std::collections::VecDeque;

use model::{IoThreadState, Observation, Rates};

/// One probe, compacted. 12 bytes, no padding.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub(crate) struct Sample {
    /// Milliseconds after the ring's `base_ms`.
    at_offset_ms: u32,
    /// Queries per second since the previous probe, `bfloat16`; NaN when unknown.
    queries_per_s: Bf16,
    /// Replication lag in seconds (from the heartbeat when `LAG_HEARTBEAT`, else
    /// `Seconds_Behind_Master`), `bfloat16`; NaN when unknown.
    lag_s: Bf16,
    /// `Threads_connected`, saturating.
    threads_connected: u16,
    /// `Threads_running`, saturating.
    threads_running: u8,
    /// The `F_*` bits.
    flags: u8,
}

const F_UP: u8 = 1;
const F_REPLICA: u8 = 1 << 1;
const F_IO_RUNNING: u8 = 1 << 2;
const F_SQL_RUNNING: u8 = 1 << 3;
const F_LAG_HEARTBEAT: u8 = 1 << 4;
const F_SEMI_SYNC_PRIMARY: u8 = 1 << 5;
const F_SEMI_SYNC_ON: u8 = 1 << 6;

const _: () = assert!(std::mem::size_of::<Sample>() == 12);

/// The bytes one history sample takes.
pub const SAMPLE_BYTES: usize = std::mem::size_of::<Sample>();

/// A `bfloat16`: the top half of an `f32`. Hand-rolled (two shifts) rather than a crate.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(transparent)]
struct Bf16(u16);

impl Bf16 {
    const NAN: Self = Self(0x7FC0);

    /// Round to nearest, ties to even; NaN stays NaN.
    fn from_f32(v: f32) -> Self {
        if v.is_nan() {
            return Self::NAN;
        }
        let bits = v.to_bits();
        let round = 0x7FFF + ((bits >> 16) & 1);
        Self((bits.wrapping_add(round) >> 16) as u16)
    }

    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }
}

/// Where a point's lag comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagSource {
    /// The heartbeat row: daemon now − the row's timestamp.
    Heartbeat,
    /// `Seconds_Behind_Master`, whole seconds.
    SecondsBehindMaster,
}

/// One decoded point of an instance's history. Fields are `None` when unknown or when they
/// do not apply (replication fields on a primary, anything but `up` on a failed probe).
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryPoint {
    /// When the probe started, ms since the Unix epoch.
    pub at_ms: u64,
    /// Whether the probe got an answer.
    pub up: bool,
    /// Queries per second since the previous probe.
    pub queries_per_second: Option<f32>,
    /// Replication lag in seconds, and where it comes from.
    pub lag_seconds: Option<(f64, LagSource)>,
    /// `Threads_connected`.
    pub threads_connected: Option<u32>,
    /// `Threads_running`.
    pub threads_running: Option<u32>,
    /// `threads_connected / max_connections`, with the latest `max_connections` known.
    pub connections_used_ratio: Option<f32>,
    /// Replicas only: the IO thread is connected.
    pub replication_io_running: Option<bool>,
    /// Replicas only: the SQL thread runs.
    pub replication_sql_running: Option<bool>,
    /// Semi-sync primaries only: semi-sync is on (not fallen back to async).
    pub semi_sync_primary_on: Option<bool>,
}

/// One instance's ring of samples.
#[derive(Debug)]
pub(crate) struct History {
    base_ms: u64,
    samples: VecDeque<Sample>,
    /// The latest `max_connections` seen, for the connections ratio.
    max_connections: Option<u64>,
}

impl History {
    pub(crate) fn new() -> Self {
        Self {
            base_ms: 0,
            samples: VecDeque::new(),
            max_connections: None,
        }
    }

    /// Bytes held by the ring's buffer.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<Sample>()
    }

    /// Append the sample of `obs` (with `rates` since the previous probe), keeping at most
    /// `capacity` samples. A sample older than the newest one is ignored.
    pub(crate) fn push(&mut self, obs: &Observation, rates: Option<&Rates>, capacity: usize) {
        let capacity = capacity.max(1);
        if let Some(last) = self.samples.back() {
            if obs.at_unix_ms <= self.base_ms + u64::from(last.at_offset_ms) {
                return;
            }
        } else {
            self.base_ms = obs.at_unix_ms;
        }
        if obs.at_unix_ms - self.base_ms > u64::from(u32::MAX) {
            self.rebase(obs.at_unix_ms);
        }
        let mut s = Sample {
            at_offset_ms: (obs.at_unix_ms - self.base_ms) as u32,
            queries_per_s: Bf16::NAN,
            lag_s: Bf16::NAN,
            threads_connected: 0,
            threads_running: 0,
            flags: 0,
        };
        if let Some(state) = obs.state() {
            s.flags |= F_UP;
            s.threads_connected = state.threads_connected.min(u64::from(u16::MAX)) as u16;
            s.threads_running = state.threads_running.min(u64::from(u8::MAX)) as u8;
            if let Some(q) = rates.and_then(|r| r.queries) {
                s.queries_per_s = Bf16::from_f32(q as f32);
            }
            if let Some(m) = &state.metrics {
                if m.max_connections.is_some() {
                    self.max_connections = m.max_connections;
                }
            }
            if let Some(r) = &state.replication {
                s.flags |= F_REPLICA;
                if r.io_thread == IoThreadState::Yes {
                    s.flags |= F_IO_RUNNING;
                }
                if r.sql_running {
                    s.flags |= F_SQL_RUNNING;
                }
                let beat = state.metrics.as_ref().and_then(|m| m.heartbeat);
                if let Some(h) = beat {
                    s.flags |= F_LAG_HEARTBEAT;
                    let ms = h.read_at_us.saturating_sub(h.ts_us) / 1000;
                    s.lag_s = Bf16::from_f32(ms as f32 / 1000.0);
                } else if let Some(sbm) = r.seconds_behind_source {
                    s.lag_s = Bf16::from_f32(sbm as f32);
                }
            }
            if state.semi_sync.source_enabled {
                s.flags |= F_SEMI_SYNC_PRIMARY;
                if state.semi_sync.source_active {
                    s.flags |= F_SEMI_SYNC_ON;
                }
            }
        }
        while self.samples.len() >= capacity {
            self.samples.pop_front();
        }
        if self.samples.len() == self.samples.capacity() {
            // Grow by doubling, never past the capacity, so a full ring holds no slack.
            let want = self
                .samples
                .len()
                .max(16)
                .min(capacity - self.samples.len());
            self.samples.reserve_exact(want);
        }
        self.samples.push_back(s);
    }

    /// Move the base to the oldest sample still held (or `at_ms`), so offsets fit in `u32`.
    fn rebase(&mut self, at_ms: u64) {
        let new_base = self
            .samples
            .front()
            .map_or(at_ms, |s| self.base_ms + u64::from(s.at_offset_ms));
        let shift = new_base - self.base_ms;
        for s in &mut self.samples {
            s.at_offset_ms -= shift as u32;
        }
        self.base_ms = new_base;
        // Samples older than 49 days cannot be held with the new base: drop them all when
        // the newest sample is still too far (a ring this stale is of no use).
        if at_ms - self.base_ms > u64::from(u32::MAX) {
            self.samples.clear();
            self.base_ms = at_ms;
        }
    }

    /// The points at or after `since_ms`, oldest first.
    pub(crate) fn since(&self, since_ms: u64) -> Vec<HistoryPoint> {
        self.samples
            .iter()
            .map(|s| (self.base_ms + u64::from(s.at_offset_ms), s))
            .filter(|(at, _)| *at >= since_ms)
            .map(|(at, s)| self.decode(at, s))
            .collect()
    }

    fn decode(&self, at_ms: u64, s: &Sample) -> HistoryPoint {
        let up = s.flags & F_UP != 0;
        let replica = up && s.flags & F_REPLICA != 0;
        let semi = up && s.flags & F_SEMI_SYNC_PRIMARY != 0;
        let when = |cond: bool, v: bool| cond.then_some(v);
        HistoryPoint {
            at_ms,
            up,
            queries_per_second: Some(s.queries_per_s.to_f32()).filter(|q| up && !q.is_nan()),
            lag_seconds: Some(s.lag_s.to_f32())
                .filter(|l| replica && !l.is_nan())
                .map(|lag| {
                    let source = if s.flags & F_LAG_HEARTBEAT != 0 {
                        LagSource::Heartbeat
                    } else {
                        LagSource::SecondsBehindMaster
                    };
                    (f64::from(lag), source)
                }),
            threads_connected: up.then_some(u32::from(s.threads_connected)),
            threads_running: up.then_some(u32::from(s.threads_running)),
            connections_used_ratio: match self.max_connections {
                Some(m) if up && m > 0 => Some(f32::from(s.threads_connected) / m as f32),
                _ => None,
            },
            replication_io_running: when(replica, s.flags & F_IO_RUNNING != 0),
            replication_sql_running: when(replica, s.flags & F_SQL_RUNNING != 0),
            semi_sync_primary_on: when(semi, s.flags & F_SEMI_SYNC_ON != 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bf16;

    #[test]
    fn bfloat16_round_trips_within_half_a_percent() {
        for v in [
            0.0f32, 0.001, 0.25, 1.0, 2.5, 200.0, 1234.5, 3_600.0, 99_999.0, 1e9,
        ] {
            let back = Bf16::from_f32(v).to_f32();
            assert!((back - v).abs() <= v.abs() * 0.004, "{v} -> {back}");
        }
        assert!(Bf16::from_f32(f32::NAN).to_f32().is_nan());
        assert_eq!(Bf16::from_f32(200.0).to_f32(), 200.0);
        assert_eq!(Bf16::from_f32(2.5).to_f32(), 2.5);
    }
}
