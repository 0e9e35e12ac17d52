//! Choosing the replica to promote: a pure function over what the replicas reported after
//! they applied their relay logs.
//!
//! The rules, in order (ARCHITECTURE.md invariant 3):
//!
//! 1. **Every transaction any replica legitimately holds must survive.** The *required*
//!    position is, per domain, the highest seq any reachable, relay-applied replica holds in
//!    its `gtid_binlog_state`, errant entries left out. With `gtid_strict_mode`, seqs grow
//!    in each domain's order, so a replica at a seq holds every transaction before it; this
//!    also judges rightly a replica whose binlog was reset (`RESET MASTER`) and that holds
//!    only recent server_ids in its binlog state. With semi-sync on,
//!    every semi-sync replica must be reachable and relay-applied: an acknowledged
//!    transaction is on at least one of them, and one we cannot read may be the only copy.
//! 2. **Never promote** a replica with errant GTIDs, one that has not applied its relay log,
//!    one without binary logs (`log_bin` and `log_slave_updates`), or one marked `must_not`.
//! 3. Among the safe ones: `prefer` before `neutral`; then the dead primary's site; then
//!    one that already holds the required state; then the address, for a stable choice.
//! 4. A chosen replica that lacks part of the required state first catches up from an
//!    errant-free replica that holds all of it (a `must_not` replica may serve). If no
//!    errant-free replica holds it all, nothing is chosen: the operation stops and pages.

use std::collections::BTreeMap;

use model::gtid::{ErrantGtid, MariadbBinlogState};
use model::{InstanceAddr, PromotionRule};
use serde::{Deserialize, Serialize};

/// What failover knows of one replica of the dead primary.
#[derive(Clone, Debug)]
pub struct ReplicaFacts {
    pub addr: InstanceAddr,
    pub rule: PromotionRule,
    pub site: Option<String>,
    /// It answered the last probe.
    pub reachable: bool,
    /// Its SQL thread applied everything its IO thread had received.
    pub relay_applied: bool,
    /// It writes binary logs of what it applies (`log_bin` and `log_slave_updates`), so
    /// others can replicate from it.
    pub log_bin: bool,
    /// `@@gtid_binlog_state`, when known.
    pub binlog_state: Option<MariadbBinlogState>,
    /// Its errant GTIDs against the dead primary's last known state.
    pub errant: Vec<ErrantGtid>,
    /// It had semi-sync replication on, so it may have acknowledged transactions.
    pub semi_sync_replica: bool,
}

/// The chosen candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// The replica to promote.
    pub candidate: InstanceAddr,
    /// The errant-free replica it must catch up from first, when it lacks transactions.
    pub catch_up_from: Option<InstanceAddr>,
    /// A safe replica that already holds every transaction, to promote instead if the
    /// catch-up fails.
    pub fallback: Option<InstanceAddr>,
    /// Why each other replica was passed over.
    pub passed_over: Vec<(InstanceAddr, String)>,
}

/// No replica can be promoted safely; the reasons, per replica and overall.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoCandidate {
    pub reason: String,
    pub per_replica: Vec<(InstanceAddr, String)>,
}

/// Per domain, the highest seq held.
type State = BTreeMap<u32, u64>;

fn legit(r: &ReplicaFacts) -> State {
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

/// Choose the replica to promote; see the module docs for the rules.
pub fn choose(
    replicas: &[ReplicaFacts],
    old_site: Option<&str>,
    semi_sync: bool,
) -> Result<Choice, NoCandidate> {
    let mut excluded: Vec<(InstanceAddr, String)> = Vec::new();
    let readable: Vec<&ReplicaFacts> = replicas
        .iter()
        .filter(|r| r.reachable && r.relay_applied)
        .collect();
    if semi_sync {
        let blind: Vec<&ReplicaFacts> = replicas
            .iter()
            .filter(|r| r.semi_sync_replica && !(r.reachable && r.relay_applied))
            .collect();
        if !blind.is_empty() {
            return Err(NoCandidate {
                reason: format!(
                    "semi-sync is on and {} may hold acknowledged transactions no other replica has, \
                     but cannot be read: promoting another could lose them",
                    blind.iter().map(|r| r.addr.to_string()).collect::<Vec<_>>().join(", ")
                ),
                per_replica: blind
                    .iter()
                    .map(|r| {
                        let why = if r.reachable { "relay log not applied" } else { "unreachable" };
                        (r.addr.clone(), why.to_string())
                    })
                    .collect(),
            });
        }
    }
    let mut required = State::new();
    for r in &readable {
        for (k, seq) in legit(r) {
            let e = required.entry(k).or_insert(0);
            *e = (*e).max(seq);
        }
    }
    let clean =
        |r: &ReplicaFacts| r.reachable && r.relay_applied && r.errant.is_empty() && r.log_bin;
    let source = readable
        .iter()
        .filter(|r| clean(r) && covers(&legit(r), &required))
        .min_by_key(|r| (r.rule == PromotionRule::MustNot, r.addr.to_string()))
        .map(|r| r.addr.clone());

    let mut safe: Vec<&ReplicaFacts> = Vec::new();
    for r in replicas {
        let why = if !r.reachable {
            Some("unreachable".to_string())
        } else if !r.relay_applied {
            Some("relay log not applied in time".to_string())
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
        } else if r.rule == PromotionRule::MustNot {
            Some("promotion rule must_not".to_string())
        } else {
            None
        };
        match why {
            Some(w) => excluded.push((r.addr.clone(), w)),
            None => safe.push(r),
        }
    }
    let Some(source) = source else {
        return Err(NoCandidate {
            reason: format!(
                "no errant-free replica holds every transaction the replicas hold (required: {})",
                required
                    .iter()
                    .map(|(d, q)| format!("domain {d} seq {q}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            per_replica: excluded,
        });
    };
    safe.sort_by_key(|r| {
        (
            r.rule != PromotionRule::Prefer,
            old_site.is_none() || r.site.as_deref() != old_site,
            !covers(&legit(r), &required),
            r.addr.to_string(),
        )
    });
    let Some(best) = safe.first() else {
        return Err(NoCandidate {
            reason: "no replica is safe to promote".into(),
            per_replica: excluded,
        });
    };
    let fallback = safe
        .iter()
        .find(|r| covers(&legit(r), &required))
        .map(|r| r.addr.clone());
    let catch_up_from = (!covers(&legit(best), &required)).then(|| source.clone());
    for r in &safe[1..] {
        let have = legit(r);
        let why = if covers(&have, &required) {
            "ranked lower (promotion rule, site or address)".to_string()
        } else {
            format!("lacks {}", missing(&have, &required))
        };
        excluded.push((r.addr.clone(), why));
    }
    Ok(Choice {
        candidate: best.addr.clone(),
        catch_up_from,
        fallback: fallback.filter(|f| *f != best.addr),
        passed_over: excluded,
    })
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
            relay_applied: true,
            log_bin: true,
            binlog_state: Some(state.parse().unwrap()),
            errant: Vec::new(),
            semi_sync_replica: true,
        }
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
        let c = choose(&[r(2, "0-1-10"), r(3, "0-1-12")], None, true).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert_eq!(c.catch_up_from, None);
    }

    #[test]
    fn a_preferred_replica_behind_catches_up_first() {
        let mut a = r(2, "0-1-10");
        a.rule = PromotionRule::Prefer;
        let c = choose(&[a, r(3, "0-1-12")], None, true).unwrap();
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
        let c = choose(&[a, b], Some("west"), true).unwrap();
        assert_eq!(c.candidate.port, 3);
    }

    #[test]
    fn an_errant_replica_is_never_promoted() {
        let mut a = r(2, "0-1-12,0-2-13");
        errant(&mut a, 2, 13);
        let c = choose(&[a, r(3, "0-1-12")], None, true).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert!(c.passed_over[0].1.contains("errant"), "{:?}", c.passed_over);
    }

    #[test]
    fn errant_and_ahead_with_no_clean_source_refuses() {
        // The errant replica also holds primary transactions the clean one lacks.
        let mut a = r(2, "0-1-14,0-2-15");
        errant(&mut a, 2, 15);
        let err = choose(&[a, r(3, "0-1-12")], None, true).unwrap_err();
        assert!(err.reason.contains("no errant-free replica"), "{err:?}");
    }

    #[test]
    fn must_not_is_never_chosen_but_may_be_the_source() {
        let mut a = r(2, "0-1-14");
        a.rule = PromotionRule::MustNot;
        let c = choose(&[a, r(3, "0-1-12")], None, true).unwrap();
        assert_eq!(c.candidate.port, 3);
        assert_eq!(c.catch_up_from.map(|a| a.port), Some(2));
        assert_eq!(c.fallback, None);
    }

    #[test]
    fn semi_sync_refuses_when_a_semi_sync_replica_is_unreadable() {
        let mut a = r(2, "0-1-14");
        a.reachable = false;
        let err = choose(&[a.clone(), r(3, "0-1-12")], None, true).unwrap_err();
        assert!(err.reason.contains("acknowledged"), "{err:?}");
        // Without semi-sync the reachable one is promoted.
        let c = choose(&[a, r(3, "0-1-12")], None, false).unwrap();
        assert_eq!(c.candidate.port, 3);
    }

    #[test]
    fn a_replica_with_a_reset_binlog_is_judged_by_its_domain_position() {
        // m1 had its binlog reset and holds only server 2's recent seqs; m3 is behind.
        let c = choose(&[r(1, "0-2-3230"), r(3, "0-1-2247,0-2-3229")], None, true).unwrap();
        assert_eq!(c.candidate.port, 1);
        assert_eq!(c.catch_up_from, None);
    }

    #[test]
    fn nobody_safe_refuses() {
        let mut a = r(2, "0-1-14");
        a.rule = PromotionRule::MustNot;
        assert!(choose(&[a], None, true).is_err());
        assert!(choose(&[], None, false).is_err());
    }
}
