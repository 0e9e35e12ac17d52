//! Property tests of the GTID module: set algebra against a naive model, round-trips,
//! position comparison, errant detection, and parsing arbitrary text without panicking.

use std::collections::BTreeSet;

use model::gtid::{
    errant_gtids, ErrantReason, MariadbBinlogState, MariadbGtid, MariadbGtidList, MysqlGtidSet,
    PositionOrdering, Uuid,
};
use proptest::prelude::*;

/// A small UUID pool so that random sets share sources.
const POOL: [&str; 3] = [
    "3e11fa47-71ca-11e1-9e33-c80aa9429562",
    "8A94F357-AAB4-11DF-86AB-C80AA9429562",
    "00000000-0000-0000-0000-000000000001",
];
const MAX_GNO: u64 = 40;

fn pool() -> Vec<Uuid> {
    POOL.iter().map(|u| u.parse().unwrap()).collect()
}

fn mysql_set() -> impl Strategy<Value = MysqlGtidSet> {
    prop::collection::vec((0..POOL.len(), 1..=MAX_GNO - 5, 0..5u64), 0..8).prop_map(|ivs| {
        let pool = pool();
        let mut set = MysqlGtidSet::new();
        for (u, start, len) in ivs {
            set.insert(pool[u], start, start + len).unwrap();
        }
        set
    })
}

type Naive = BTreeSet<(Uuid, u64)>;

fn naive(set: &MysqlGtidSet) -> Naive {
    set.iter()
        .flat_map(|(u, ivs)| {
            ivs.iter()
                .flat_map(move |&(s, e)| (s..=e).map(move |g| (*u, g)))
        })
        .collect()
}

/// Checks `set` holds exactly `expected`, probing every gno of the pool around the range.
fn agrees(set: &MysqlGtidSet, expected: &Naive) -> Result<(), TestCaseError> {
    for u in pool() {
        for gno in 0..=MAX_GNO + 1 {
            prop_assert_eq!(
                set.contains(&u, gno),
                expected.contains(&(u, gno)),
                "{} {}",
                u,
                gno
            );
        }
    }
    prop_assert_eq!(set.count(), expected.len() as u128);
    Ok(())
}

fn mariadb_list() -> impl Strategy<Value = MariadbGtidList> {
    prop::collection::btree_map(0..4u32, (1..4u32, 0..6u64), 0..4).prop_map(|m| {
        let mut list = MariadbGtidList::new();
        for (domain, (server_id, seq)) in m {
            list.insert(MariadbGtid {
                domain,
                server_id,
                seq,
            });
        }
        list
    })
}

fn binlog_state() -> impl Strategy<Value = MariadbBinlogState> {
    prop::collection::btree_map((0..3u32, 1..4u32), 0..20u64, 0..6).prop_map(|m| {
        let mut state = MariadbBinlogState::new();
        for ((domain, server_id), seq) in m {
            state.insert(MariadbGtid {
                domain,
                server_id,
                seq,
            });
        }
        state
    })
}

/// Parses `text` as every GTID type; any success must round-trip through its display.
fn parse_all(text: &str) -> Result<(), TestCaseError> {
    fn check<T>(text: &str) -> Result<(), TestCaseError>
    where
        T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
        T::Err: std::fmt::Debug,
    {
        if let Ok(value) = text.parse::<T>() {
            prop_assert_eq!(value.to_string().parse::<T>().unwrap(), value);
        }
        Ok(())
    }
    check::<Uuid>(text)?;
    check::<MysqlGtidSet>(text)?;
    check::<MariadbGtid>(text)?;
    check::<MariadbGtidList>(text)?;
    check::<MariadbBinlogState>(text)
}

proptest! {
    #[test]
    fn mysql_display_parse_round_trip(a in mysql_set()) {
        let text = a.to_string();
        prop_assert_eq!(text.parse::<MysqlGtidSet>().unwrap(), a.clone());
        prop_assert_eq!(text.replace(',', ",\n").to_uppercase().parse::<MysqlGtidSet>().unwrap(), a);
    }

    #[test]
    fn mysql_union_laws(a in mysql_set(), b in mysql_set(), c in mysql_set()) {
        prop_assert_eq!(a.union(&b), b.union(&a));
        prop_assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
        prop_assert!(a.is_subset(&a.union(&b)));
        prop_assert!(a.subtract(&b).intersection(&b).is_empty());
        prop_assert_eq!(a.subtract(&b).union(&a.intersection(&b)), a.clone());
        prop_assert_eq!(a.intersection(&b), b.intersection(&a));
    }

    #[test]
    fn mysql_ops_agree_with_naive_model(a in mysql_set(), b in mysql_set()) {
        let (na, nb) = (naive(&a), naive(&b));
        agrees(&a, &na)?;
        agrees(&a.union(&b), &na.union(&nb).copied().collect())?;
        agrees(&a.subtract(&b), &na.difference(&nb).copied().collect())?;
        agrees(&a.intersection(&b), &na.intersection(&nb).copied().collect())?;
        prop_assert_eq!(a.is_subset(&b), na.is_subset(&nb));
        let expected = match (na.is_subset(&nb), nb.is_subset(&na)) {
            (true, true) => PositionOrdering::Equal,
            (true, false) => PositionOrdering::Behind,
            (false, true) => PositionOrdering::Ahead,
            (false, false) => PositionOrdering::Diverged,
        };
        prop_assert_eq!(a.compare(&b), expected);
    }

    #[test]
    fn mariadb_list_round_trip(a in mariadb_list()) {
        prop_assert_eq!(a.to_string().parse::<MariadbGtidList>().unwrap(), a.clone());
        prop_assert_eq!(a.to_string().replace(',', " ,\n ").parse::<MariadbGtidList>().unwrap(), a);
    }

    #[test]
    fn mariadb_compare_is_antisymmetric(a in mariadb_list(), b in mariadb_list()) {
        let (ab, ba) = (a.compare(&b), b.compare(&a));
        prop_assert_eq!(ab == PositionOrdering::Behind, ba == PositionOrdering::Ahead);
        prop_assert_eq!(ab == PositionOrdering::Ahead, ba == PositionOrdering::Behind);
        prop_assert_eq!(ab == PositionOrdering::Diverged, ba == PositionOrdering::Diverged);
        // Equal exactly when the domain -> seq maps agree (server_id is not compared).
        let seqs = |l: &MariadbGtidList| l.iter().map(|g| (g.domain, g.seq)).collect::<Vec<_>>();
        prop_assert_eq!(ab == PositionOrdering::Equal, seqs(&a) == seqs(&b));
        let not_behind = a.per_domain(&b).iter().all(|c| c.other_seq.is_none() || c.ordering.is_ge());
        prop_assert_eq!(a.includes(&b), not_behind);
        if matches!(ab, PositionOrdering::Equal | PositionOrdering::Ahead) {
            prop_assert!(a.includes(&b));
        }
        prop_assert_eq!(a.compare(&a), PositionOrdering::Equal);
    }

    #[test]
    fn mariadb_state_round_trip(s in binlog_state()) {
        prop_assert_eq!(s.to_string().parse::<MariadbBinlogState>().unwrap(), s.clone());
        let pos = MariadbGtidList::from_binlog_state(&s);
        for g in s.iter() {
            prop_assert!(pos.get(g.domain).is_some_and(|p| p.seq >= g.seq));
        }
    }

    #[test]
    fn replica_at_or_behind_primary_has_no_errant(
        primary in binlog_state(),
        keep in prop::collection::vec((any::<bool>(), 0..5u64), 6),
        new_server in 10..20u32,
    ) {
        let mut replica = MariadbBinlogState::new();
        for (g, (kept, lag)) in primary.iter().zip(keep) {
            if kept {
                replica.insert(MariadbGtid { seq: g.seq.saturating_sub(lag), ..g });
            }
        }
        prop_assert!(errant_gtids(&replica, &primary).is_empty());

        let rogue = MariadbGtid { domain: 0, server_id: new_server, seq: 1 };
        replica.insert(rogue);
        let errant = errant_gtids(&replica, &primary);
        prop_assert_eq!(errant.len(), 1);
        prop_assert_eq!((errant[0].server_id, errant[0].reason), (new_server, ErrantReason::UnknownServerId));

        if let Some(g) = primary.iter().next() {
            replica.insert(MariadbGtid { seq: g.seq + 1, ..g });
            let ahead = errant_gtids(&replica, &primary);
            prop_assert!(ahead.iter().any(|e| e.reason == ErrantReason::AheadOfPrimary
                && e.primary_seq == Some(g.seq) && e.replica_seq == g.seq + 1));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".*") {
        parse_all(&text)?;
    }

    #[test]
    fn gtid_like_text_never_panics(text in "[0-9a-fA-F:,\\- \n]{0,60}") {
        parse_all(&text)?;
    }

    #[test]
    fn mutated_valid_text_never_panics(a in mysql_set(), at in any::<prop::sample::Index>(), junk in "[0-9a-z:,\\- ]{0,4}") {
        let mut text = a.to_string();
        let cut = at.index(text.len() + 1);
        text.insert_str(cut, &junk);
        parse_all(&text)?;
    }
}
