//! MySQL GTID sets (`@@gtid_executed`, `@@gtid_purged`): parsing, canonical display and set algebra.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{parse_number, serde_as_string, GtidError, PositionOrdering, Uuid};

/// An inclusive range `(start, end)` of transaction numbers, `1 <= start <= end`.
pub type Interval = (u64, u64);

/// A MySQL GTID set: for each source UUID, the transaction numbers it contains.
///
/// Invariant: every UUID present maps to a non-empty list of intervals that is sorted,
/// non-overlapping and non-adjacent (`1-5:7-9`, never `1-5:6-9`), so structural equality is
/// set equality.
///
/// Parsing accepts what MySQL prints and accepts: case-insensitive UUIDs, `uuid:N` and
/// `uuid:N-M` intervals in any order (overlaps and repeated UUIDs merge), whitespace around
/// every token, and empty elements between commas (`a,,b`, as MySQL does). A UUID without
/// intervals, transaction number 0 and `start > end` are rejected. MySQL 8.4 tagged GTIDs
/// (`uuid:tag:1-5`) are rejected with [`GtidError::TaggedGtid`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MysqlGtidSet {
    sets: BTreeMap<Uuid, Vec<Interval>>,
}

impl MysqlGtidSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds no transaction at all.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The number of transactions in the set.
    pub fn count(&self) -> u128 {
        self.sets
            .values()
            .flatten()
            .map(|&(start, end)| u128::from(end - start) + 1)
            .fold(0, u128::saturating_add)
    }

    /// Adds the transactions `start..=end` of `uuid`; rejects `start == 0` and `start > end`.
    pub fn insert(&mut self, uuid: Uuid, start: u64, end: u64) -> Result<(), GtidError> {
        let text = || format!("{uuid}:{start}-{end}");
        if start == 0 {
            return Err(GtidError::ZeroTransaction { text: text() });
        }
        if start > end {
            return Err(GtidError::ReversedInterval { text: text() });
        }
        let intervals = self.sets.entry(uuid).or_default();
        intervals.push((start, end));
        normalize(intervals);
        Ok(())
    }

    /// Whether transaction `gno` of `uuid` is in the set.
    pub fn contains(&self, uuid: &Uuid, gno: u64) -> bool {
        let intervals = self.intervals(uuid);
        let idx = intervals.partition_point(|&(_, end)| end < gno);
        intervals.get(idx).is_some_and(|&(start, _)| start <= gno)
    }

    /// The sorted, merged intervals of `uuid` (empty when absent).
    pub fn intervals(&self, uuid: &Uuid) -> &[Interval] {
        self.sets.get(uuid).map_or(&[], Vec::as_slice)
    }

    /// The UUIDs in the set with their intervals, in UUID order.
    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &[Interval])> {
        self.sets.iter().map(|(uuid, iv)| (uuid, iv.as_slice()))
    }

    /// Every transaction in `self` or `other`.
    pub fn union(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for (uuid, intervals) in &other.sets {
            let mine = out.sets.entry(*uuid).or_default();
            mine.extend_from_slice(intervals);
            normalize(mine);
        }
        out
    }

    /// Every transaction in both `self` and `other`.
    pub fn intersection(&self, other: &Self) -> Self {
        self.zip_with(other, intersect_intervals)
    }

    /// Every transaction in `self` but not in `other` (MySQL's `GTID_SUBTRACT`).
    pub fn subtract(&self, other: &Self) -> Self {
        self.zip_with(other, subtract_intervals)
    }

    /// Whether every transaction of `self` is in `other` (MySQL's `GTID_SUBSET`).
    pub fn is_subset(&self, other: &Self) -> bool {
        self.subtract(other).is_empty()
    }

    /// Set comparison: `Behind` when `self` is a strict subset of `other`, `Ahead` for a strict
    /// superset, `Diverged` when each has transactions the other lacks.
    pub fn compare(&self, other: &Self) -> PositionOrdering {
        match (self.is_subset(other), other.is_subset(self)) {
            (true, true) => PositionOrdering::Equal,
            (true, false) => PositionOrdering::Behind,
            (false, true) => PositionOrdering::Ahead,
            (false, false) => PositionOrdering::Diverged,
        }
    }

    /// Applies `op` to the intervals of each UUID of `self` and the same UUID in `other`.
    fn zip_with(
        &self,
        other: &Self,
        op: impl Fn(&[Interval], &[Interval]) -> Vec<Interval>,
    ) -> Self {
        let sets = self
            .sets
            .iter()
            .map(|(uuid, mine)| (*uuid, op(mine, other.intervals(uuid))))
            .filter(|(_, intervals)| !intervals.is_empty())
            .collect();
        Self { sets }
    }
}

/// Sorts and merges overlapping or adjacent intervals in place.
fn normalize(intervals: &mut Vec<Interval>) {
    intervals.sort_unstable();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for &(start, end) in intervals.iter() {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    *intervals = merged;
}

/// Intersection of two normalized interval lists.
fn intersect_intervals(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while let (Some(&(a_start, a_end)), Some(&(b_start, b_end))) = (a.get(i), b.get(j)) {
        let (start, end) = (a_start.max(b_start), a_end.min(b_end));
        if start <= end {
            out.push((start, end));
        }
        if a_end < b_end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// `a` minus `b`, both normalized.
fn subtract_intervals(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(start, end) in a {
        while b.get(j).is_some_and(|&(_, b_end)| b_end < start) {
            j += 1;
        }
        // Start of the part of `start..=end` not yet covered by `b`, if any.
        let mut rest = Some(start);
        let overlapping = b.get(j..).unwrap_or_default().iter();
        for &(b_start, b_end) in overlapping.take_while(|&&(b_start, _)| b_start <= end) {
            let Some(s) = rest else { break };
            if b_start > s {
                out.push((s, b_start - 1));
            }
            rest = (b_end < end).then(|| b_end + 1);
        }
        if let Some(s) = rest {
            out.push((s, end));
        }
    }
    out
}

/// Parses one `N` or `N-M` interval.
fn parse_interval(text: &str) -> Result<Interval, GtidError> {
    if text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return Err(GtidError::TaggedGtid {
            text: text.to_owned(),
        });
    }
    let (start, end) = match text.split_once('-') {
        Some((start, end)) => (start.trim(), end.trim()),
        None => (text, text),
    };
    if start.is_empty() || end.is_empty() || end.contains('-') {
        return Err(GtidError::InvalidInterval {
            text: text.to_owned(),
        });
    }
    let (start, end) = (parse_number::<u64>(start)?, parse_number::<u64>(end)?);
    if start == 0 {
        return Err(GtidError::ZeroTransaction {
            text: text.to_owned(),
        });
    }
    if start > end {
        return Err(GtidError::ReversedInterval {
            text: text.to_owned(),
        });
    }
    Ok((start, end))
}

impl FromStr for MysqlGtidSet {
    type Err = GtidError;

    fn from_str(text: &str) -> Result<Self, GtidError> {
        let mut set = Self::new();
        for element in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (uuid, intervals) = element.split_once(':').unwrap_or((element, ""));
            let uuid: Uuid = uuid.trim().parse()?;
            if intervals.trim().is_empty() {
                return Err(GtidError::MissingIntervals {
                    text: element.to_owned(),
                });
            }
            let intervals = intervals
                .split(':')
                .map(|part| parse_interval(part.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            let mine = set.sets.entry(uuid).or_default();
            mine.extend(intervals);
            normalize(mine);
        }
        Ok(set)
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (uuid, intervals)) in self.sets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{uuid}")?;
            for &(start, end) in intervals {
                if start == end {
                    write!(f, ":{start}")?;
                } else {
                    write!(f, ":{start}-{end}")?;
                }
            }
        }
        Ok(())
    }
}

serde_as_string!(MysqlGtidSet);

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "8a94f357-aab4-11df-86ab-c80aa9429562";

    fn set(text: &str) -> MysqlGtidSet {
        text.parse().unwrap()
    }

    fn uuid(text: &str) -> Uuid {
        text.parse().unwrap()
    }

    #[test]
    fn parses_mysql_doc_example() {
        let s = set("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5");
        assert_eq!(s.to_string(), format!("{A}:1-5"));
        assert_eq!(s.count(), 5);
        assert!(s.contains(&uuid(A), 1) && s.contains(&uuid(A), 5));
        assert!(!s.contains(&uuid(A), 0) && !s.contains(&uuid(A), 6));
        assert!(!s.contains(&uuid(B), 1));
    }

    #[test]
    fn parses_gtid_executed_with_newlines() {
        let text = format!("{B}:1-100:200,\n{A}:1-5:7-9:11,\n");
        let s = set(&text);
        assert_eq!(s.to_string(), format!("{A}:1-5:7-9:11,{B}:1-100:200"));
        assert_eq!(s.count(), 5 + 3 + 1 + 100 + 1);
        assert_eq!(s.intervals(&uuid(A)), &[(1, 5), (7, 9), (11, 11)]);
        assert_eq!(set(&s.to_string()), s);
    }

    #[test]
    fn merges_repeats_overlaps_and_adjacent_intervals() {
        let s = set(&format!("{A}:7-9:1-3, {A} : 4 - 5 : 2 ,,{A}:11:10"));
        assert_eq!(s.to_string(), format!("{A}:1-5:7-11"));
    }

    #[test]
    fn empty_and_blank_are_empty_set() {
        for text in ["", " ", ",\n", ",,"] {
            let s = set(text);
            assert!(s.is_empty());
            assert_eq!(s.count(), 0);
            assert_eq!(s.to_string(), "");
        }
    }

    #[test]
    fn handles_u64_max() {
        let s = set(&format!("{A}:1-18446744073709551615"));
        assert_eq!(s.count(), u128::from(u64::MAX));
        let t = set(&format!("{A}:18446744073709551615"));
        assert_eq!(s.union(&t), s);
        assert_eq!(
            s.subtract(&t).to_string(),
            format!("{A}:1-18446744073709551614")
        );
        assert!(t.is_subset(&s));
    }

    /// Whether an error is of the expected kind.
    type Check = fn(&GtidError) -> bool;

    #[test]
    fn rejects_malformed() {
        use GtidError::*;
        let cases: &[(&str, Check)] = &[
            ("abc", |e| matches!(e, InvalidUuid { .. })),
            ("3e11fa47-71ca-11e1-9e33:1", |e| {
                matches!(e, InvalidUuid { .. })
            }),
            (":1-5", |e| matches!(e, InvalidUuid { .. })),
            (A, |e| matches!(e, MissingIntervals { .. })),
            (&format!("{A}:"), |e| matches!(e, MissingIntervals { .. })),
            (&format!("{A}: "), |e| matches!(e, MissingIntervals { .. })),
            (&format!("{A}:0"), |e| matches!(e, ZeroTransaction { .. })),
            (&format!("{A}:0-5"), |e| matches!(e, ZeroTransaction { .. })),
            (&format!("{A}:5-3"), |e| {
                matches!(e, ReversedInterval { .. })
            }),
            (&format!("{A}:1-5:"), |e| {
                matches!(e, InvalidInterval { .. })
            }),
            (&format!("{A}::1-5"), |e| {
                matches!(e, InvalidInterval { .. })
            }),
            (&format!("{A}:1-"), |e| matches!(e, InvalidInterval { .. })),
            (&format!("{A}:-5"), |e| matches!(e, InvalidInterval { .. })),
            (&format!("{A}:1-2-3"), |e| {
                matches!(e, InvalidInterval { .. })
            }),
            (&format!("{A}:+1"), |e| matches!(e, InvalidNumber { .. })),
            (&format!("{A}:1x"), |e| matches!(e, InvalidNumber { .. })),
            (&format!("{A}:99999999999999999999999"), |e| {
                matches!(e, InvalidNumber { .. })
            }),
            (&format!("{A}:1-99999999999999999999999"), |e| {
                matches!(e, InvalidNumber { .. })
            }),
            (&format!("{A}:tag:1-5"), |e| matches!(e, TaggedGtid { .. })),
            (&format!("{A}:1-5 junk"), |e| {
                matches!(e, InvalidNumber { .. })
            }),
            (&format!("{A}:1-5;{B}:1"), |e| {
                matches!(e, InvalidInterval { .. })
            }),
        ];
        for (text, expected) in cases {
            match text.parse::<MysqlGtidSet>() {
                Err(e) => assert!(expected(&e), "{text:?} gave {e:?}"),
                Ok(s) => panic!("{text:?} parsed as {s}"),
            }
        }
    }

    #[test]
    fn errors_name_the_offending_text() {
        let err = format!("{A}:1-5:9-7").parse::<MysqlGtidSet>().unwrap_err();
        assert_eq!(err, GtidError::ReversedInterval { text: "9-7".into() });
        assert!(err.to_string().contains("9-7"));
    }

    #[test]
    fn set_operations() {
        let a = set(&format!("{A}:1-10,{B}:1-5"));
        let b = set(&format!("{A}:3-4:8-12"));
        assert_eq!(a.union(&b).to_string(), format!("{A}:1-12,{B}:1-5"));
        assert_eq!(a.intersection(&b).to_string(), format!("{A}:3-4:8-10"));
        assert_eq!(a.subtract(&b).to_string(), format!("{A}:1-2:5-7,{B}:1-5"));
        assert_eq!(b.subtract(&a).to_string(), format!("{A}:11-12"));
        assert!(!b.is_subset(&a));
        assert!(a.intersection(&b).is_subset(&a));
        assert_eq!(a.compare(&b), PositionOrdering::Diverged);
        assert_eq!(a.compare(&a.union(&b)), PositionOrdering::Behind);
        assert_eq!(a.union(&b).compare(&a), PositionOrdering::Ahead);
        assert_eq!(a.compare(&a.clone()), PositionOrdering::Equal);
    }

    #[test]
    fn insert_validates() {
        let mut s = MysqlGtidSet::new();
        s.insert(uuid(A), 4, 6).unwrap();
        s.insert(uuid(A), 1, 3).unwrap();
        assert_eq!(s.to_string(), format!("{A}:1-6"));
        assert!(matches!(
            s.insert(uuid(A), 0, 3),
            Err(GtidError::ZeroTransaction { .. })
        ));
        assert!(matches!(
            s.insert(uuid(A), 3, 2),
            Err(GtidError::ReversedInterval { .. })
        ));
    }

    #[test]
    fn serde_as_canonical_string() {
        let s = set(&format!("{B}:2,{A}:1-5"));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, format!("\"{A}:1-5,{B}:2\""));
        assert_eq!(serde_json::from_str::<MysqlGtidSet>(&json).unwrap(), s);
        assert!(serde_json::from_str::<MysqlGtidSet>("\"bogus\"").is_err());
    }
}
