//! Choosing the replica to promote: a pure function over what each replica of the dead
//! primary has applied and received, now or, for one that cannot be read, at its last
//! observation.
//!
//! The rules, in order (ARCHITECTURE.md invariant 3):
//!
//! 1. **What a replica holds** is what it applied (`@@gtid_binlog_state`, errant entries
//!    left out) and what its IO thread received (`Gtid_IO_Pos`), per domain the higher seq.
//!    With `gtid_strict_mode`, seqs grow in each domain's order, so a replica at a seq holds
//!    every transaction before it (this also judges rightly a replica whose binlog was
//!    reset). Received but not applied counts: the candidate applies its relay log before
//!    writes open, and a delayed replica has its delay lifted for that.
//! 2. **Usable** replicas are reachable, errant-free, write binary logs (`log_bin` and
//!    `log_slave_updates`) and have a working SQL thread. The *required* position is, per
//!    domain, the highest seq a usable replica holds: the candidate will hold all of it.
//! 3. **Possible loss.** Whatever another replica holds beyond the required position (one
//!    unreachable, by its last observation; one whose SQL thread broke; one with errant
//!    GTIDs) no usable replica can give: acknowledged writes may be among them. They are
//!    named, per replica and domain, in [`Choice::possible_loss`]; the caller's policy
//!    decides whether to promote. When the stream of every usable replica was cut before
//!    the primary died ([`ReplicaFacts::stream_cut`]), an unreachable semi-sync replica may
//!    have acknowledged anything the primary committed after that, beyond its last
//!    observation too: everything after the required position is then named as possibly
//!    lost, open-ended ([`PossibleLoss::open_ended`]).
//! 4. **Never promote** a replica that is not usable, or is marked `must_not`.
//! 5. Among the others: `prefer` before `neutral`; then the dead primary's site; then one
//!    with no `MASTER_DELAY`; then one that has applied the required position, then one
//!    that has received it; then the one with the least left to apply; then the address,
//!    for a stable choice.
//! 6. A chosen replica that does not hold the required position first catches up from a
//!    usable replica that holds it (a `must_not` one may serve).

use std::collections::BTreeMap;
use std::fmt;

use model::gtid::{ErrantGtid, MariadbBinlogState, MariadbGtidList};
use model::{InstanceAddr, PromotionRule};
use serde::{Deserialize, Serialize};

/// What failover knows of one replica of the dead primary.
#[derive(Clone, Debug)]
pub struct ReplicaFacts {
    pub addr: InstanceAddr,
    pub rule: PromotionRule,
    pub site: Option<String>,
    /// It answered now. When not, the positions below are from its last reachable
    /// observation, taken `seen_ago_ms` before.
    pub reachable: bool,
    /// How old the facts are, in ms (0 for a fresh read).
    pub seen_ago_ms: u64,
    /// It writes binary logs of what it applies (`log_bin` and `log_slave_updates`), so
    /// others can replicate from it.
    pub log_bin: bool,
    /// `@@gtid_binlog_state`: what it applied, when known.
    pub binlog_state: Option<MariadbBinlogState>,
    /// `Gtid_IO_Pos`: the last GTID per domain its IO thread received, when known.
    pub received: Option<MariadbGtidList>,
    /// Its errant GTIDs against the dead primary's last known state.
    pub errant: Vec<ErrantGtid>,
    /// It had semi-sync replication on, so it may have acknowledged transactions.
    pub semi_sync_replica: bool,
    /// Its SQL thread stopped on this error: it applies nothing more.
    pub sql_error: Option<String>,
    /// Its `MASTER_DELAY`, in seconds.
    pub delay_s: u64,
    /// Another reason the failover found not to use it (its relay log was not applied in
    /// time, it could not catch up).
    pub excluded: Option<String>,
    /// Its stream from the dead primary was cut before the primary died (the evidence):
    /// it may lack transactions the primary committed and another replica acknowledged
    /// after the cut.
    pub stream_cut: Option<String>,
}

/// Transactions only an unusable replica holds: acknowledged writes may be among them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PossibleLoss {
    /// The replica that holds them (or held them at its last observation).
    pub holder: InstanceAddr,
    pub domain: u32,
    /// The first and last seq in the domain that no usable replica holds.
    pub from_seq: u64,
    pub to_seq: u64,
    /// The holder's last GTID in the domain, `domain-server_id-seq`, when known.
    pub last_gtid: Option<String>,
    /// Why the holder cannot give them.
    pub why: String,
    /// The holder may hold more after `to_seq`: it was last observed before the other
    /// replicas' streams were cut, and may have acknowledged what the primary committed
    /// after. `to_seq` is then what is known (it may be `from_seq - 1`: nothing known).
    #[serde(default)]
    pub open_ended: bool,
}

impl PossibleLoss {
    /// The GTIDs as `domain-server_id-from..to` (server_id of the holder's last GTID), or
    /// per domain and seq when the server_id is not known.
    pub fn gtids(&self) -> String {
        let server = self
            .last_gtid
            .as_deref()
            .and_then(|g| g.split('-').nth(1))
            .map(str::to_string);
        if self.open_ended {
            return match server {
                Some(s) => format!("{}-{s}-{}..", self.domain, self.from_seq),
                None => format!("domain {} seq {}..", self.domain, self.from_seq),
            };
        }
        match (server, self.from_seq == self.to_seq) {
            (Some(s), true) => format!("{}-{s}-{}", self.domain, self.to_seq),
            (Some(s), false) => format!("{}-{s}-{}..{}", self.domain, self.from_seq, self.to_seq),
            (None, _) => format!(
                "domain {} seq {}..{}",
                self.domain, self.from_seq, self.to_seq
            ),
        }
    }

    /// How many transactions are known to be in the range (the holder was last seen with
    /// them); an open-ended range may hold more.
    pub fn known(&self) -> u64 {
        (self.to_seq + 1).saturating_sub(self.from_seq)
    }
}

impl fmt::Display for PossibleLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.open_ended {
            write!(
                f,
                "{} ({} transaction(s) last seen there, maybe more) on {} ({})",
                self.gtids(),
                self.known(),
                self.holder,
                self.why
            )
        } else {
            write!(
                f,
                "{} ({} transaction(s)) on {} ({})",
                self.gtids(),
                self.known(),
                self.holder,
                self.why
            )
        }
    }
}

/// The chosen candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// The replica to promote.
    pub candidate: InstanceAddr,
    /// The usable replica it must catch up from first, when it does not hold the required
    /// position.
    pub catch_up_from: Option<InstanceAddr>,
    /// Another replica that may be promoted that already holds the required position, to
    /// promote instead if the candidate cannot get there.
    pub fallback: Option<InstanceAddr>,
    /// Why each other replica was passed over.
    pub passed_over: Vec<(InstanceAddr, String)>,
    /// The required position, per domain (`domain-seq`).
    #[serde(default)]
    pub required: Vec<String>,
    /// Transactions no usable replica holds. Empty when nothing known is lost.
    #[serde(default)]
    pub possible_loss: Vec<PossibleLoss>,
    /// Semi-sync replicas that could not be read now: they may have acknowledged
    /// transactions after their last observation, so the semi-sync guarantee cannot be
    /// claimed.
    #[serde(default)]
    pub unread_semi_sync: Vec<(InstanceAddr, String)>,
}

/// No replica can be promoted safely; the reasons, per replica and overall.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoCandidate {
    pub reason: String,
    pub per_replica: Vec<(InstanceAddr, String)>,
}

/// Per domain, the highest seq held.
type State = BTreeMap<u32, u64>;

/// What `r` applied, errant entries left out.
fn applied(r: &ReplicaFacts) -> State {
    let mut s = State::new();
    if let Some(b) = &r.binlog_state {
        for g in b.iter() {
            let errant = r
                .errant
                .iter()
                .any(|e| e.domain == g.domain && e.server_id == g.server_id);
            if !errant {
                let e = s.entry(g.domain).or_insert(0);
                *e = (*e).max(g.seq);
            }
        }
    }
    s
}

/// What `r` applied or received.
fn held(r: &ReplicaFacts) -> State {
    let mut s = applied(r);
    if let Some(l) = &r.received {
        for g in l.iter() {
            let e = s.entry(g.domain).or_insert(0);
            *e = (*e).max(g.seq);
        }
    }
    s
}

/// The last GTID `r` reported in `domain`, received or applied, whichever is further.
fn last_gtid(r: &ReplicaFacts, domain: u32) -> Option<String> {
    let received = r.received.as_ref().and_then(|l| l.get(domain)).copied();
    let applied = r.binlog_state.as_ref().and_then(|b| {
        b.iter()
            .filter(|g| g.domain == domain)
            .filter(|g| {
                !r.errant
                    .iter()
                    .any(|e| e.domain == g.domain && e.server_id == g.server_id)
            })
            .max_by_key(|g| g.seq)
    });
    match (received, applied) {
        (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
        (a, b) => a.or(b),
    }
    .map(|g| g.to_string())
}

fn covers(have: &State, required: &State) -> bool {
    required
        .iter()
        .all(|(k, seq)| have.get(k).is_some_and(|h| h >= seq))
}

fn missing(have: &State, required: &State) -> String {
    required
        .iter()
        .filter(|(k, seq)| have.get(*k).is_none_or(|h| h < *seq))
        .map(|(d, seq)| {
            format!(
                "domain {d} seq {seq} (has {})",
                have.get(d).map_or("none".into(), |h| h.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why `r` cannot be used (as candidate or source), if it cannot.
fn unusable(r: &ReplicaFacts) -> Option<String> {
    if !r.reachable {
        Some(format!(
            "unreachable, last seen {} ms before",
            r.seen_ago_ms
        ))
    } else if let Some(e) = &r.sql_error {
        Some(format!("SQL thread stopped: {e}"))
    } else if !r.errant.is_empty() {
        Some(format!(
            "errant GTIDs: {}",
            r.errant
                .iter()
                .map(|e| format!("{}-{}-{}", e.domain, e.server_id, e.replica_seq))
                .collect::<Vec<_>>()
                .join(",")
        ))
    } else if !r.log_bin {
        Some("no binary log (log_bin and log_slave_updates needed)".to_string())
    } else {
        r.excluded.clone()
    }
}

/// How far `r` is from `required`: 0 applied it, 1 received it, 2 lacks part of it.
fn class(r: &ReplicaFacts, required: &State) -> u8 {
    if covers(&applied(r), required) {
        0
    } else if covers(&held(r), required) {
        1
    } else {
        2
    }
}

/// How many transactions `r` still has to apply to reach `required`, summed over domains.
fn backlog(r: &ReplicaFacts, required: &State) -> u64 {
    let have = applied(r);
    required
        .iter()
        .map(|(d, seq)| seq.saturating_sub(have.get(d).copied().unwrap_or(0)))
        .sum()
}

/// Choose the replica to promote; see the module docs for the rules.
pub fn choose(replicas: &[ReplicaFacts], old_site: Option<&str>) -> Result<Choice, NoCandidate> {
    let usable: Vec<&ReplicaFacts> = replicas.iter().filter(|r| unusable(r).is_none()).collect();
    let mut required = State::new();
    for r in &usable {
        for (k, seq) in held(r) {
            let e = required.entry(k).or_insert(0);
            *e = (*e).max(seq);
        }
    }
    let mut possible_loss = Vec::new();
    for r in replicas {
        let Some(why) = unusable(r) else { continue };
        for (d, seq) in held(r) {
            let have = required.get(&d).copied().unwrap_or(0);
            if seq > have {
                possible_loss.push(PossibleLoss {
                    holder: r.addr.clone(),
                    domain: d,
                    from_seq: have + 1,
                    to_seq: seq,
                    last_gtid: last_gtid(r, d),
                    why: why.clone(),
                    open_ended: false,
                });
            }
        }
    }
    // No usable replica streamed until the primary died: an unreachable semi-sync replica
    // may have acknowledged what came after, whatever it was last seen holding.
    let cut: Vec<&str> = usable
        .iter()
        .filter_map(|r| r.stream_cut.as_deref())
        .collect();
    if !usable.is_empty() && cut.len() == usable.len() {
        for r in replicas
            .iter()
            .filter(|r| !r.reachable && r.semi_sync_replica)
        {
            let mut domains: BTreeMap<u32, u64> = required.clone();
            for (d, seq) in held(r) {
                let e = domains.entry(d).or_insert(0);
                *e = (*e).max(seq);
            }
            for (d, seq) in domains {
                let from = required.get(&d).copied().unwrap_or(0) + 1;
                let why = format!(
                    "unreachable semi-sync replica, last seen {} ms before, and the stream of every usable replica was cut before the primary died: {}",
                    r.seen_ago_ms,
                    cut.join("; ")
                );
                match possible_loss
                    .iter_mut()
                    .find(|l| l.holder == r.addr && l.domain == d)
                {
                    Some(l) => {
                        l.open_ended = true;
                        l.why = why;
                    }
                    None => possible_loss.push(PossibleLoss {
                        holder: r.addr.clone(),
                        domain: d,
                        from_seq: from,
                        to_seq: seq.max(from - 1),
                        // Its own last GTID, else the survivors' (the same primary's).
                        last_gtid: last_gtid(r, d)
                            .or_else(|| usable.iter().find_map(|u| last_gtid(u, d))),
                        why,
                        open_ended: true,
                    }),
                }
            }
        }
    }
    let unread_semi_sync = replicas
        .iter()
        .filter(|r| !r.reachable && r.semi_sync_replica)
        .map(|r| {
            (
                r.addr.clone(),
                format!("unreachable, last observed {} ms before", r.seen_ago_ms),
            )
        })
        .collect();

    let mut excluded: Vec<(InstanceAddr, String)> = Vec::new();
    let mut eligible: Vec<&ReplicaFacts> = Vec::new();
    for r in replicas {
        match unusable(r) {
            Some(w) => excluded.push((r.addr.clone(), w)),
            None if r.rule == PromotionRule::MustNot => {
                excluded.push((r.addr.clone(), "promotion rule must_not".into()))
            }
            None => eligible.push(r),
        }
    }
    let rank = |r: &&ReplicaFacts| {
        (
            r.rule != PromotionRule::Prefer,
            old_site.is_none() || r.site.as_deref() != old_site,
            r.delay_s > 0,
            class(r, &required),
            backlog(r, &required),
            r.addr.to_string(),
        )
    };
    eligible.sort_by_key(rank);
    let Some(best) = eligible.first().copied() else {
        return Err(NoCandidate {
            reason: "no replica is safe to promote".into(),
            per_replica: excluded,
        });
    };
    let source = usable
        .iter()
        .filter(|r| covers(&held(r), &required))
        .min_by_key(|r| {
            (
                class(r, &required),
                r.delay_s > 0,
                r.rule == PromotionRule::MustNot,
                r.addr.to_string(),
            )
        })
        .map(|r| r.addr.clone());
    let Some(source) = source else {
        return Err(NoCandidate {
            reason: format!(
                "no usable replica holds every transaction the usable replicas hold (required: {})",
                required
                    .iter()
                    .map(|(d, q)| format!("domain {d} seq {q}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            per_replica: excluded,
        });
    };
    let catch_up_from = (!covers(&held(best), &required)).then(|| source.clone());
    let fallback = eligible[1..]
        .iter()
        .find(|r| covers(&held(r), &required))
        .map(|r| r.addr.clone());
    for r in &eligible[1..] {
        let have = held(r);
        let why = if covers(&have, &required) {
            "ranked lower (promotion rule, site, delay, position or address)".to_string()
        } else {
            format!("lacks {}", missing(&have, &required))
        };
        excluded.push((r.addr.clone(), why));
    }
    Ok(Choice {
        candidate: best.addr.clone(),
        catch_up_from,
        fallback,
        passed_over: excluded,
        required: required.iter().map(|(d, q)| format!("{d}-{q}")).collect(),
        possible_loss,
        unread_semi_sync,
    })
}

/// Whether `r` received transactions it has not applied yet.
pub(crate) fn has_unapplied(r: &ReplicaFacts) -> bool {
    !covers(&applied(r), &held(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::gtid::ErrantReason;

    fn r(port: u16, state: &str) -> ReplicaFacts {
        ReplicaFacts {
            addr: InstanceAddr::new("127.0.0.1", port),
            rule: PromotionRule::Neutral,
            site: None,
            reachable: true,
            seen_ago_ms: 0,
            log_bin: true,
            binlog_state: Some(state.parse().unwrap()),
            received: None,
            errant: Vec::new(),
            semi_sync_replica: true,
            sql_error: None,
            delay_s: 0,
            excluded: None,
            stream_cut: None,
        }
    }

    fn received(mut r: ReplicaFacts, pos: &str) -> ReplicaFacts {
        r.received = Some(pos.parse().unwrap());
        r
    }

    fn errant(r: &mut ReplicaFacts, server_id: u32, seq: u64) {
        r.errant.push(ErrantGtid {
            domain: 0,
            server_id,
            replica_seq: seq,
            primary_seq: None,
            reason: ErrantReason::UnknownServerId,
        });
    }

    #[test]
    fn the_most_advanced_wins_among_equals() {
        let c = choose(&[r(2, "0-1-10"), r(3, "0-1-12")], None).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert_eq!(c.catch_up_from, None);
        assert!(c.possible_loss.is_empty());
    }

    #[test]
    fn a_preferred_replica_behind_catches_up_first() {
        let mut a = r(2, "0-1-10");
        a.rule = PromotionRule::Prefer;
        let c = choose(&[a, r(3, "0-1-12")], None).unwrap();
        assert_eq!(c.candidate.port, 2);
        assert_eq!(c.catch_up_from.map(|a| a.port), Some(3));
        assert_eq!(c.fallback.map(|a| a.port), Some(3));
    }

    #[test]
    fn the_same_site_is_preferred() {
        let mut a = r(2, "0-1-12");
        a.site = Some("east".into());
        let mut b = r(3, "0-1-12");
        b.site = Some("west".into());
        let c = choose(&[a, b], Some("west")).unwrap();
        assert_eq!(c.candidate.port, 3);
    }

    #[test]
    fn an_errant_replica_is_never_promoted() {
        let mut a = r(2, "0-1-12,0-2-13");
        errant(&mut a, 2, 13);
        let c = choose(&[a, r(3, "0-1-12")], None).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert!(c.passed_over[0].1.contains("errant"), "{:?}", c.passed_over);
        assert!(c.possible_loss.is_empty(), "{:?}", c.possible_loss);
    }

    #[test]
    fn an_errant_replica_ahead_is_a_possible_loss() {
        // The errant replica also holds primary transactions the clean one lacks.
        let mut a = r(2, "0-1-14,0-2-15");
        errant(&mut a, 2, 15);
        let c = choose(&[a, r(3, "0-1-12")], None).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert_eq!(c.possible_loss.len(), 1, "{c:?}");
        assert_eq!(c.possible_loss[0].gtids(), "0-1-13..14");
        assert_eq!(c.possible_loss[0].holder.port, 2);
    }

    #[test]
    fn must_not_is_never_chosen_but_may_be_the_source() {
        let mut a = r(2, "0-1-14");
        a.rule = PromotionRule::MustNot;
        let c = choose(&[a, r(3, "0-1-12")], None).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert_eq!(c.catch_up_from.map(|a| a.port), Some(2));
        assert_eq!(c.fallback, None);
    }

    #[test]
    fn a_received_position_counts_as_held() {
        // m2 applied less but received everything: it covers m3, no catch-up, and it ranks
        // by address after m3 only if m3 also covers.
        let a = received(r(2, "0-1-10"), "0-1-14");
        let c = choose(&[a, r(3, "0-1-12")], None).unwrap();
        assert_eq!(c.candidate.port, 2, "{c:?}");
        assert_eq!(c.catch_up_from, None);
        assert!(has_unapplied(&received(r(2, "0-1-10"), "0-1-14")));
        assert!(!has_unapplied(&received(r(2, "0-1-14"), "0-1-14")));
    }

    #[test]
    fn among_replicas_that_received_everything_the_least_behind_is_chosen() {
        let a = received(r(2, "0-1-100"), "0-1-140");
        let b = received(r(3, "0-1-138"), "0-1-140");
        let c = choose(&[a, b], None).unwrap();
        assert_eq!(c.candidate.port, 3, "2 transactions to apply, not 40");
    }

    #[test]
    fn a_delayed_replica_is_read_not_waited_for() {
        // The delayed replica applied far less but received as much as the current one:
        // the current one is chosen and needs nothing from it.
        let mut d = received(r(2, "0-1-3"), "0-1-12");
        d.delay_s = 30;
        let cur = received(r(3, "0-1-12"), "0-1-12");
        let c = choose(&[d, cur], None).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert_eq!(c.catch_up_from, None);
        assert!(c.possible_loss.is_empty());
    }

    #[test]
    fn a_delayed_replica_that_received_more_is_the_source() {
        let mut d = received(r(2, "0-1-3"), "0-1-13");
        d.delay_s = 30;
        let cur = received(r(3, "0-1-12"), "0-1-12");
        let c = choose(&[d, cur], None).unwrap();
        assert_eq!(c.candidate.port, 3, "no delay ranks first: {c:?}");
        assert_eq!(c.catch_up_from.map(|a| a.port), Some(2));
        assert_eq!(c.fallback.map(|a| a.port), Some(2));
    }

    #[test]
    fn a_broken_replica_is_evidence_not_a_candidate() {
        let mut b = received(r(2, "0-1-10,0-2-11"), "0-1-12");
        errant(&mut b, 2, 11);
        b.sql_error = Some("error 1950".into());
        // The other replica holds everything: nothing lost, the broken one passed over.
        let c = choose(&[b.clone(), r(3, "0-1-12")], None).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert!(c.possible_loss.is_empty(), "{c:?}");
        // It received one the other lacks: named as a possible loss.
        let c = choose(&[b, r(3, "0-1-11")], None).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert_eq!(c.possible_loss.len(), 1);
        assert_eq!(c.possible_loss[0].gtids(), "0-1-12");
        assert!(c.possible_loss[0].why.contains("SQL thread"));
    }

    #[test]
    fn an_unreachable_replica_last_seen_ahead_is_a_possible_loss() {
        let mut dead = received(r(2, "0-1-310"), "0-1-320");
        dead.reachable = false;
        dead.seen_ago_ms = 600;
        let c = choose(&[dead.clone(), r(3, "0-1-266")], None).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert_eq!(c.possible_loss.len(), 1);
        assert_eq!(c.possible_loss[0].gtids(), "0-1-267..320");
        assert_eq!(c.unread_semi_sync.len(), 1);
        // Last seen behind or level: nothing known lost, but the guarantee is in doubt.
        let mut behind = r(2, "0-1-200");
        behind.reachable = false;
        let c = choose(&[behind, r(3, "0-1-266")], None).unwrap();
        assert!(c.possible_loss.is_empty());
        assert_eq!(c.unread_semi_sync.len(), 1);
    }

    #[test]
    fn an_unreachable_semi_sync_replica_is_a_possible_loss_when_every_stream_was_cut() {
        // Last seen level with the survivor, before the survivor's stream was cut: what
        // it acknowledged after is unknown, so everything after is possibly lost.
        let mut dead = r(2, "0-1-266");
        dead.reachable = false;
        dead.seen_ago_ms = 1300;
        let mut cut = r(3, "0-1-266");
        cut.stream_cut = Some("IO thread Yes, silent".into());
        let c = choose(&[dead.clone(), cut.clone()], None).unwrap();
        assert_eq!(c.possible_loss.len(), 1, "{c:?}");
        let l = &c.possible_loss[0];
        assert!(l.open_ended);
        assert_eq!(l.holder.port, 2);
        assert_eq!(l.gtids(), "0-1-267..");
        assert_eq!(l.known(), 0);
        // Last seen ahead: the known part is named, and more may follow.
        let mut ahead = received(r(2, "0-1-266"), "0-1-300");
        ahead.reachable = false;
        let c = choose(&[ahead, cut.clone()], None).unwrap();
        assert_eq!(c.possible_loss.len(), 1, "{c:?}");
        assert!(c.possible_loss[0].open_ended);
        assert_eq!(c.possible_loss[0].known(), 34);
        // A usable replica whose stream was not cut holds what the primary sent until it
        // died: nothing known lost.
        let c = choose(&[dead.clone(), cut, r(4, "0-1-266")], None).unwrap();
        assert!(c.possible_loss.is_empty(), "{c:?}");
        // Not a semi-sync replica: it acknowledged nothing.
        let mut async_dead = dead;
        async_dead.semi_sync_replica = false;
        let mut cut = r(3, "0-1-266");
        cut.stream_cut = Some("cut".into());
        assert!(choose(&[async_dead, cut], None)
            .unwrap()
            .possible_loss
            .is_empty());
    }

    #[test]
    fn a_replica_with_a_reset_binlog_is_judged_by_its_domain_position() {
        // m1 had its binlog reset and holds only server 2's recent seqs; m3 is behind.
        let c = choose(&[r(1, "0-2-3230"), r(3, "0-1-2247,0-2-3229")], None).unwrap();
        assert_eq!(c.candidate.port, 1);
        assert_eq!(c.catch_up_from, None);
    }

    #[test]
    fn nobody_safe_refuses() {
        let mut a = r(2, "0-1-14");
        a.rule = PromotionRule::MustNot;
        assert!(choose(&[a], None).is_err());
        assert!(choose(&[], None).is_err());
        let mut gone = r(2, "0-1-14");
        gone.reachable = false;
        assert!(choose(&[gone], None).is_err());
    }
}
