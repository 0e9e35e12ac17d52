//! MariaDB GTIDs: single GTIDs, GTID positions (`@@gtid_current_pos` and friends), binlog
//! states (`@@gtid_binlog_state`), position comparison and errant-transaction detection.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{parse_number, serde_as_string, GtidError, PositionOrdering};

/// One MariaDB GTID, `domain-server_id-seq` (e.g. `0-1-100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MariadbGtid {
    /// Replication domain (`gtid_domain_id`).
    pub domain: u32,
    /// `server_id` of the server that originally wrote the transaction.
    pub server_id: u32,
    /// Sequence number within the domain.
    pub seq: u64,
}

impl FromStr for MariadbGtid {
    type Err = GtidError;

    /// Parses `domain-server_id-seq`; surrounding whitespace is ignored.
    fn from_str(text: &str) -> Result<Self, GtidError> {
        let text = text.trim();
        let mut parts = text.split('-');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(domain), Some(server_id), Some(seq), None) => Ok(Self {
                domain: parse_number(domain)?,
                server_id: parse_number(server_id)?,
                seq: parse_number(seq)?,
            }),
            _ => Err(GtidError::MalformedMariadbGtid {
                text: text.to_owned(),
            }),
        }
    }
}

impl fmt::Display for MariadbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.seq)
    }
}

/// Parses a comma-separated GTID list; blank text is an empty list, empty elements are errors.
fn parse_gtids(text: &str) -> impl Iterator<Item = Result<MariadbGtid, GtidError>> + '_ {
    let text = text.trim();
    text.split(',')
        .filter(move |_| !text.is_empty())
        .map(str::parse)
}

/// Writes GTIDs comma-separated.
fn write_gtids(
    f: &mut fmt::Formatter<'_>,
    gtids: impl Iterator<Item = MariadbGtid>,
) -> fmt::Result {
    for (i, gtid) in gtids.enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{gtid}")?;
    }
    Ok(())
}

/// A MariaDB GTID position, as in `@@gtid_current_pos`, `@@gtid_slave_pos` or
/// `@@gtid_binlog_pos`: at most one GTID per domain. Displayed sorted by domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MariadbGtidList {
    by_domain: BTreeMap<u32, MariadbGtid>,
}

/// How one domain compares between two positions (see [`MariadbGtidList::per_domain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainCmp {
    /// The replication domain.
    pub domain: u32,
    /// `self`'s sequence number in the domain, if it has the domain.
    pub self_seq: Option<u64>,
    /// `other`'s sequence number in the domain, if it has the domain.
    pub other_seq: Option<u64>,
    /// `self_seq` compared to `other_seq`; a missing domain is behind any present one.
    pub ordering: Ordering,
}

impl MariadbGtidList {
    /// The empty position.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the GTID of `gtid.domain`, returning the one it replaces.
    pub fn insert(&mut self, gtid: MariadbGtid) -> Option<MariadbGtid> {
        self.by_domain.insert(gtid.domain, gtid)
    }

    /// The GTID of `domain`, if any.
    pub fn get(&self, domain: u32) -> Option<&MariadbGtid> {
        self.by_domain.get(&domain)
    }

    /// The domains present, ascending.
    pub fn domains(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_domain.keys().copied()
    }

    /// The GTIDs, by ascending domain.
    pub fn iter(&self) -> impl Iterator<Item = &MariadbGtid> {
        self.by_domain.values()
    }

    /// Whether the position has no domain at all.
    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The position a binlog state corresponds to (what `@@gtid_binlog_pos` shows): per domain,
    /// the entry with the highest seq. Ties between server_ids go to the lowest server_id.
    pub fn from_binlog_state(state: &MariadbBinlogState) -> Self {
        let mut list = Self::new();
        for gtid in state.iter() {
            match list.by_domain.get(&gtid.domain) {
                Some(best) if best.seq >= gtid.seq => {}
                _ => {
                    list.insert(gtid);
                }
            }
        }
        list
    }

    /// Per-domain comparison of sequence numbers over the domains of both positions, ascending.
    /// `server_id` is not compared: like `MASTER_GTID_WAIT`, only seq orders a domain. Same seq
    /// under different server_ids is a divergence only [`errant_gtids`] can see.
    pub fn per_domain(&self, other: &MariadbGtidList) -> Vec<DomainCmp> {
        let mut domains: Vec<u32> = self.domains().chain(other.domains()).collect();
        domains.sort_unstable();
        domains.dedup();
        domains
            .into_iter()
            .map(|domain| {
                let self_seq = self.get(domain).map(|g| g.seq);
                let other_seq = other.get(domain).map(|g| g.seq);
                DomainCmp {
                    domain,
                    self_seq,
                    other_seq,
                    ordering: self_seq.cmp(&other_seq),
                }
            })
            .collect()
    }

    /// Overall comparison: `Behind` when `self` is at or behind `other` in every domain and
    /// strictly behind in one (a missing domain is behind), `Ahead` symmetrically, `Diverged`
    /// when some domain is ahead and another behind.
    pub fn compare(&self, other: &MariadbGtidList) -> PositionOrdering {
        let cmps = self.per_domain(other);
        let behind = cmps.iter().any(|c| c.ordering == Ordering::Less);
        let ahead = cmps.iter().any(|c| c.ordering == Ordering::Greater);
        match (behind, ahead) {
            (false, false) => PositionOrdering::Equal,
            (true, false) => PositionOrdering::Behind,
            (false, true) => PositionOrdering::Ahead,
            (true, true) => PositionOrdering::Diverged,
        }
    }

    /// Whether `self` is at or past `other` in every domain of `other`.
    pub fn includes(&self, other: &MariadbGtidList) -> bool {
        other.iter().all(|theirs| {
            self.get(theirs.domain)
                .is_some_and(|mine| mine.seq >= theirs.seq)
        })
    }
}

impl FromStr for MariadbGtidList {
    type Err = GtidError;

    /// Parses `0-1-100,1-2-50`; whitespace around elements is allowed, a domain given twice is
    /// an error.
    fn from_str(text: &str) -> Result<Self, GtidError> {
        let mut list = Self::new();
        for gtid in parse_gtids(text) {
            let gtid = gtid?;
            if list.insert(gtid).is_some() {
                return Err(GtidError::DuplicateDomain {
                    domain: gtid.domain,
                    text: gtid.to_string(),
                });
            }
        }
        Ok(list)
    }
}

impl fmt::Display for MariadbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_gtids(f, self.iter().copied())
    }
}

/// A MariaDB binlog state, as in `@@gtid_binlog_state`: the last seq written to the binlog for
/// each (domain, server_id). Displayed sorted by domain then server_id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MariadbBinlogState {
    last_seq: BTreeMap<(u32, u32), u64>,
}

impl MariadbBinlogState {
    /// The empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the last seq of (`gtid.domain`, `gtid.server_id`), returning the one it replaces.
    pub fn insert(&mut self, gtid: MariadbGtid) -> Option<u64> {
        self.last_seq
            .insert((gtid.domain, gtid.server_id), gtid.seq)
    }

    /// The last seq of `server_id` in `domain`, if any.
    pub fn get(&self, domain: u32, server_id: u32) -> Option<u64> {
        self.last_seq.get(&(domain, server_id)).copied()
    }

    /// The entries, by ascending (domain, server_id).
    pub fn iter(&self) -> impl Iterator<Item = MariadbGtid> + '_ {
        self.last_seq
            .iter()
            .map(|(&(domain, server_id), &seq)| MariadbGtid {
                domain,
                server_id,
                seq,
            })
    }

    /// Whether the state has no entry.
    pub fn is_empty(&self) -> bool {
        self.last_seq.is_empty()
    }
}

impl FromStr for MariadbBinlogState {
    type Err = GtidError;

    /// Parses `0-1-100,0-2-5,1-1-7`; a (domain, server_id) given twice is an error.
    fn from_str(text: &str) -> Result<Self, GtidError> {
        let mut state = Self::new();
        for gtid in parse_gtids(text) {
            let gtid = gtid?;
            if state.insert(gtid).is_some() {
                return Err(GtidError::DuplicateServerId {
                    domain: gtid.domain,
                    server_id: gtid.server_id,
                    text: gtid.to_string(),
                });
            }
        }
        Ok(state)
    }
}

impl fmt::Display for MariadbBinlogState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_gtids(f, self.iter())
    }
}

serde_as_string!(MariadbGtid);
serde_as_string!(MariadbGtidList);
serde_as_string!(MariadbBinlogState);

/// Why a replica's binlog state entry is errant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrantReason {
    /// The primary never had this server_id in this domain.
    UnknownServerId,
    /// The replica has a higher seq than the primary for this (domain, server_id).
    AheadOfPrimary,
}

/// A (domain, server_id) where a replica has transactions its primary lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrantGtid {
    /// The replication domain.
    pub domain: u32,
    /// The originating server_id.
    pub server_id: u32,
    /// The replica's last seq for (domain, server_id).
    pub replica_seq: u64,
    /// The primary's last seq for (domain, server_id), if it has one.
    pub primary_seq: Option<u64>,
    /// Why this entry is errant.
    pub reason: ErrantReason,
}

/// Errant transactions of a replica, found by comparing `@@gtid_binlog_state` of the replica
/// and of its primary (MariaDB has no `GTID_SUBSET()`).
///
/// An entry of the replica is errant when the primary never had that server_id in that domain,
/// or when the replica's seq for that (domain, server_id) is higher than the primary's. Entries
/// the replica got by replicating with `log_slave_updates` carry the primary's server_id and are
/// normal. A replica that is merely behind has no errant entry, and a primary cannot be unaware
/// of transactions it wrote itself, so anything flagged here was written on (or replicated to)
/// the replica from elsewhere. The check is only as good as the primary's state: after a
/// `RESET MASTER` on the primary, or a failover to a primary that ran without
/// `log_slave_updates`, legitimate entries may be reported.
pub fn errant_gtids(replica: &MariadbBinlogState, primary: &MariadbBinlogState) -> Vec<ErrantGtid> {
    replica
        .iter()
        .filter_map(|gtid| {
            let primary_seq = primary.get(gtid.domain, gtid.server_id);
            let reason = match primary_seq {
                None => ErrantReason::UnknownServerId,
                Some(seq) if gtid.seq > seq => ErrantReason::AheadOfPrimary,
                Some(_) => return None,
            };
            Some(ErrantGtid {
                domain: gtid.domain,
                server_id: gtid.server_id,
                replica_seq: gtid.seq,
                primary_seq,
                reason,
            })
        })
        .collect()
}

/// Transactions `server_id` wrote that `elsewhere` holds and `mine` (that server's own
/// `@@gtid_binlog_state`) lacks: the newest such GTID per domain.
///
/// A primary killed after its binlog reached a replica but before its own commit loses the
/// transaction in crash recovery (MariaDB truncates the binlog of a server started as a
/// semi-sync replica), while the replica, promoted since, keeps it. Replicating back from
/// that replica, the old primary would *skip* it: a replica ignores events carrying its own
/// `server_id` (`replicate_same_server_id` is off, and cannot be on with
/// `log_slave_updates`). So the data would silently diverge.
pub fn own_transactions_held_elsewhere(
    server_id: u32,
    mine: &MariadbBinlogState,
    elsewhere: &MariadbBinlogState,
) -> Vec<MariadbGtid> {
    elsewhere
        .iter()
        .filter(|g| g.server_id == server_id)
        .filter(|g| mine.get(g.domain, server_id).is_none_or(|seq| g.seq > seq))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_transactions_lost_in_recovery_but_held_by_the_new_primary_are_named() {
        let mine = state("0-1-3");
        let writer = state("0-1-4,0-2-7");
        assert_eq!(
            own_transactions_held_elsewhere(1, &mine, &writer),
            vec!["0-1-4".parse::<MariadbGtid>().unwrap()]
        );
        assert!(own_transactions_held_elsewhere(1, &state("0-1-4"), &writer).is_empty());
        assert!(own_transactions_held_elsewhere(3, &state(""), &writer).is_empty());
        assert_eq!(
            own_transactions_held_elsewhere(2, &state(""), &writer).len(),
            1
        );
    }

    fn list(text: &str) -> MariadbGtidList {
        text.parse().unwrap()
    }

    fn state(text: &str) -> MariadbBinlogState {
        text.parse().unwrap()
    }

    #[test]
    fn parses_single_gtid() {
        let gtid: MariadbGtid = "0-1-100".parse().unwrap();
        assert_eq!((gtid.domain, gtid.server_id, gtid.seq), (0, 1, 100));
        assert_eq!(gtid.to_string(), "0-1-100");
        let big: MariadbGtid = "4294967295-4294967295-18446744073709551615"
            .parse()
            .unwrap();
        assert_eq!(
            big.to_string(),
            "4294967295-4294967295-18446744073709551615"
        );
    }

    #[test]
    fn parses_list_and_displays_sorted() {
        let l = list(" 1-2-50 ,\n0-1-100 ");
        assert_eq!(l.to_string(), "0-1-100,1-2-50");
        assert_eq!(l.domains().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(l.get(1).map(|g| g.seq), Some(50));
        assert_eq!(l.get(2), None);
        assert_eq!(l.iter().count(), 2);
        assert!(list("").is_empty() && list(" \n").is_empty());
    }

    #[test]
    fn parses_binlog_state() {
        let s = state("1-1-7,0-2-5,0-1-100");
        assert_eq!(s.to_string(), "0-1-100,0-2-5,1-1-7");
        assert_eq!(s.get(0, 2), Some(5));
        assert_eq!(s.get(1, 2), None);
        let pos = MariadbGtidList::from_binlog_state(&s);
        assert_eq!(pos.to_string(), "0-1-100,1-1-7");
        let tie = MariadbGtidList::from_binlog_state(&state("0-2-9,0-1-9"));
        assert_eq!(tie.to_string(), "0-1-9");
    }

    /// Whether an error is of the expected kind.
    type Check = fn(&GtidError) -> bool;

    #[test]
    fn rejects_malformed() {
        use GtidError::*;
        let gtid_cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, MalformedMariadbGtid { .. })),
            (" ", |e| matches!(e, MalformedMariadbGtid { .. })),
            ("abc", |e| matches!(e, MalformedMariadbGtid { .. })),
            ("0-1", |e| matches!(e, MalformedMariadbGtid { .. })),
            ("0-1-2-3", |e| matches!(e, MalformedMariadbGtid { .. })),
            ("-1-1-1", |e| matches!(e, MalformedMariadbGtid { .. })),
            ("0-1-x", |e| matches!(e, InvalidNumber { .. })),
            ("0--1", |e| matches!(e, InvalidNumber { .. })),
            ("0-+1-1", |e| matches!(e, InvalidNumber { .. })),
            ("0 -1-1", |e| matches!(e, InvalidNumber { .. })),
            ("4294967296-1-1", |e| matches!(e, InvalidNumber { .. })),
            ("0-1-99999999999999999999999", |e| {
                matches!(e, InvalidNumber { .. })
            }),
        ];
        for (text, expected) in gtid_cases {
            let err = text.parse::<MariadbGtid>().unwrap_err();
            assert!(expected(&err), "{text:?} gave {err:?}");
            // The same junk inside a list or state is rejected too (blank lists excepted).
            if !text.trim().is_empty() {
                assert!(format!("0-1-1,{text}").parse::<MariadbGtidList>().is_err());
                assert!(format!("{text},5-5-5")
                    .parse::<MariadbBinlogState>()
                    .is_err());
            }
        }
        for bad in [
            "0-1-1,",
            ",0-1-1",
            "0-1-1,,1-1-1",
            "0-1-1;1-1-1",
            "0-1-1 1-1-1",
        ] {
            assert!(bad.parse::<MariadbGtidList>().is_err(), "{bad:?}");
            assert!(bad.parse::<MariadbBinlogState>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_duplicates() {
        assert_eq!(
            "0-1-1,0-2-2".parse::<MariadbGtidList>(),
            Err(GtidError::DuplicateDomain {
                domain: 0,
                text: "0-2-2".into()
            })
        );
        assert!(state("0-1-1,0-2-2").get(0, 2).is_some());
        assert_eq!(
            "0-1-1,1-1-1,0-1-2".parse::<MariadbBinlogState>(),
            Err(GtidError::DuplicateServerId {
                domain: 0,
                server_id: 1,
                text: "0-1-2".into()
            })
        );
    }

    #[test]
    fn compares_positions() {
        use PositionOrdering::*;
        let primary = list("0-1-100,1-2-50");
        assert_eq!(primary.compare(&primary.clone()), Equal);
        assert_eq!(list("0-1-90,1-2-50").compare(&primary), Behind);
        assert_eq!(list("0-1-100").compare(&primary), Behind);
        assert_eq!(primary.compare(&list("0-1-100")), Ahead);
        assert_eq!(list("0-1-101,1-2-49").compare(&primary), Diverged);
        assert_eq!(list("0-1-100,1-2-50,2-3-1").compare(&primary), Ahead);
        assert_eq!(list("0-7-100,1-2-50").compare(&primary), Equal);

        let detail = list("0-1-101,2-3-1").per_domain(&primary);
        let cmp = |domain, self_seq, other_seq, ordering| DomainCmp {
            domain,
            self_seq,
            other_seq,
            ordering,
        };
        assert_eq!(
            detail,
            [
                cmp(0, Some(101), Some(100), Ordering::Greater),
                cmp(1, None, Some(50), Ordering::Less),
                cmp(2, Some(1), None, Ordering::Greater),
            ]
        );

        assert!(primary.includes(&list("0-1-100")));
        assert!(primary.includes(&list("0-3-99,1-2-50")));
        assert!(primary.includes(&MariadbGtidList::new()));
        assert!(!primary.includes(&list("0-1-101")));
        assert!(!primary.includes(&list("2-1-1")));
    }

    #[test]
    fn finds_errant_gtids() {
        let primary = state("0-1-100,0-2-5,1-1-7");
        // Behind, with the primary's transactions in its own binlog: not errant.
        assert!(errant_gtids(&state("0-1-90,0-2-5"), &primary).is_empty());
        assert!(errant_gtids(&MariadbBinlogState::new(), &primary).is_empty());

        let replica = state("0-1-101,0-2-5,0-3-1,1-1-7");
        assert_eq!(
            errant_gtids(&replica, &primary),
            [
                ErrantGtid {
                    domain: 0,
                    server_id: 1,
                    replica_seq: 101,
                    primary_seq: Some(100),
                    reason: ErrantReason::AheadOfPrimary,
                },
                ErrantGtid {
                    domain: 0,
                    server_id: 3,
                    replica_seq: 1,
                    primary_seq: None,
                    reason: ErrantReason::UnknownServerId,
                },
            ]
        );
    }

    #[test]
    fn serde_as_strings() {
        let l = list("1-2-50,0-1-100");
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"0-1-100,1-2-50\"");
        let s = state("0-1-100,0-2-5");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            serde_json::from_str::<MariadbBinlogState>(&json).unwrap(),
            s
        );
        let g: MariadbGtid = serde_json::from_str("\"0-1-100\"").unwrap();
        assert_eq!(g.seq, 100);
        assert!(serde_json::from_str::<MariadbGtidList>("\"0-1-1,0-2-2\"").is_err());
    }
}
