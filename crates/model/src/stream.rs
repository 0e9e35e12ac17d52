//! `StreamTracker`: how long each replica's received stream has not moved, from successive
//! observations. Pure bookkeeping: the caller hands observations in, with their own times.
//!
//! A replica's IO thread says `Yes` for up to `slave_net_timeout` (60 s by default) after
//! its source froze or its packets started to vanish. What it has received tells sooner: a
//! source sends an event or, after `heartbeat_period` of nothing, a heartbeat, so the
//! replica's heartbeat count, received GTID position (`Gtid_IO_Pos`) or read position
//! (`Read_Master_Log_Pos`) move at least once per period while the source lives. The
//! tracker remembers, per replica, those counters and the first observation that showed
//! them; an observation that shows the same counters gets
//! [`StreamProgress::stalled_ms`] = its time minus that first one's.
//!
//! The figure is a lower bound of the silence: the stream last moved at or before the first
//! observation that showed its present counters.
//!
//! The tracker also follows each MariaDB replica's applied position (`gtid_slave_pos`)
//! while it is behind what it received (`Gtid_IO_Pos`): [`StreamProgress::apply_stalled_ms`]
//! is how long that position has not moved. A replica whose disk is frozen or full still
//! says both threads `Yes`, but applies nothing.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::addr::InstanceAddr;
use crate::observation::{IoThreadState, Observation, ReplicationStatus, StreamProgress};

/// What identifies one state of a replica's received stream.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StreamKey {
    source: InstanceAddr,
    heartbeats: u64,
    received_gtid: String,
    source_log_file: String,
    read_pos: Option<u64>,
}

impl StreamKey {
    /// The key of a replication status that can be tracked: IO thread `Yes`, a heartbeat
    /// counter and a non-zero heartbeat period. Without heartbeats, an idle source's
    /// stream does not move either, and silence proves nothing.
    fn of(r: &ReplicationStatus) -> Option<Self> {
        let s: &StreamProgress = &r.stream;
        if r.io_thread != IoThreadState::Yes || s.heartbeat_period_ms.unwrap_or(0) == 0 {
            return None;
        }
        Some(Self {
            source: r.source.clone(),
            heartbeats: s.received_heartbeats?,
            received_gtid: r.received_gtid.clone(),
            source_log_file: s.source_log_file.clone(),
            read_pos: s.read_source_log_pos,
        })
    }
}

#[derive(Clone, Debug)]
struct Mark {
    key: StreamKey,
    /// The first observation (ms since the epoch) that showed `key`.
    since_ms: u64,
    /// The latest observation that was noted.
    last_ms: u64,
}

/// Per replica, the present state of its received stream and since when (see the module
/// docs).
#[derive(Debug, Default)]
pub struct StreamTracker {
    marks: HashMap<InstanceAddr, Mark>,
    /// Per replica behind what it received: its applied position and since when.
    applied: HashMap<InstanceAddr, (String, u64)>,
}

/// The applied position of a MariaDB replica that is behind what it received, as text;
/// `None` when it applied all it received, or when either is unknown.
fn behind(state: &crate::observation::ServerState, r: &ReplicationStatus) -> Option<String> {
    let crate::observation::GtidState::Mariadb { slave_pos, .. } = &state.gtid else {
        return None;
    };
    let received: crate::gtid::MariadbGtidList = r.received_gtid.parse().ok()?;
    let ahead = received.iter().any(|g| {
        slave_pos
            .get(g.domain)
            .is_none_or(|applied| applied.seq < g.seq)
    });
    ahead.then(|| slave_pos.to_string())
}

impl StreamTracker {
    /// Note `obs` and set its replication's `stream.stalled_ms`. An unreachable
    /// observation is left alone and keeps the mark (the replica answering again with the
    /// same counters is still stalled since then). An observation older than the latest
    /// noted one changes nothing: with the same counters it gets the latest figure (they
    /// had not moved by then either), with other counters `None`.
    pub fn note(&mut self, obs: &mut Observation) {
        let at = obs.at_unix_ms;
        let addr = obs.addr.clone();
        let crate::observation::Reachability::Reachable(state) = &mut obs.reachability else {
            return;
        };
        let Some(r) = state.replication.as_ref() else {
            self.marks.remove(&addr);
            self.applied.remove(&addr);
            return;
        };
        let apply_stalled = match behind(state, r) {
            Some(applied) => match self.applied.get(&addr) {
                Some((had, since)) if *had == applied => Some(at.saturating_sub(*since)),
                Some((_, since)) if at < *since => None,
                _ => {
                    self.applied.insert(addr.clone(), (applied, at));
                    Some(0)
                }
            },
            None => {
                self.applied.remove(&addr);
                None
            }
        };
        let Some(r) = state.replication.as_mut() else {
            return;
        };
        r.stream.apply_stalled_ms = apply_stalled;
        let Some(key) = StreamKey::of(r) else {
            r.stream.stalled_ms = None;
            self.marks.remove(&addr);
            return;
        };
        match self.marks.get_mut(&addr) {
            // A probe that started before the latest noted one and finished after it (the
            // engine's fresh look waits for a frozen primary's probe to time out while the
            // monitor probes the replicas): the counters it shows have not moved up to
            // the latest observation, so it gets that newer, longer figure. Without it, a
            // failover's first look saw the replicas' streams as "unknown", hence still
            // receiving, and refused the failover the monitor had just confirmed.
            Some(m) if m.key == key && at < m.last_ms => {
                r.stream.stalled_ms = Some(m.last_ms.saturating_sub(m.since_ms));
            }
            // Older and different: the stream has moved since; this says nothing new.
            Some(m) if at < m.last_ms => r.stream.stalled_ms = None,
            Some(m) if m.key == key => {
                m.last_ms = at;
                r.stream.stalled_ms = Some(at.saturating_sub(m.since_ms));
            }
            _ => {
                self.marks.insert(
                    addr,
                    Mark {
                        key,
                        since_ms: at,
                        last_ms: at,
                    },
                );
                r.stream.stalled_ms = Some(0);
            }
        }
    }
}

/// A [`StreamTracker`] shared by the tasks that observe (the monitor's probes and fast
/// path, the engine's fresh looks), so that each sees the history the others noted.
///
/// It also keeps each instance's last *reachable* observation from every probe noted. A
/// round carries only the latest observation of each instance when it is analysed: a
/// probe that lands between rounds and is then overwritten by a failed one (the fast path
/// after a death) is in no round. A failover judges a replica that died with the primary
/// by what it was last seen holding ([`SharedStreams::last_reachable`]), the newest
/// evidence there is.
#[derive(Debug, Default)]
pub struct SharedStreams {
    tracker: Mutex<StreamTracker>,
    last_reachable: Mutex<HashMap<InstanceAddr, Observation>>,
}

impl SharedStreams {
    /// [`StreamTracker::note`] under the lock; a reachable observation becomes the
    /// instance's last reachable one unless a newer one is there.
    pub fn note(&self, obs: &mut Observation) {
        self.tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(obs);
        self.keep_reachable(std::slice::from_ref(obs));
    }

    /// Note several observations, oldest first.
    pub fn note_all(&self, observations: &mut [Observation]) {
        {
            let mut t = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
            let mut order: Vec<usize> = (0..observations.len()).collect();
            order.sort_by_key(|&i| observations[i].at_unix_ms);
            for i in order {
                t.note(&mut observations[i]);
            }
        }
        self.keep_reachable(observations);
    }

    /// The last reachable observation of `addr` noted here, if any.
    pub fn last_reachable(&self, addr: &InstanceAddr) -> Option<Observation> {
        self.last_reachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(addr)
            .cloned()
    }

    fn keep_reachable(&self, observations: &[Observation]) {
        let mut last = self
            .last_reachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for o in observations.iter().filter(|o| o.state().is_some()) {
            match last.get(&o.addr) {
                Some(prev) if prev.at_unix_ms >= o.at_unix_ms => {}
                _ => {
                    last.insert(o.addr.clone(), o.clone());
                }
            }
        }
    }
}
