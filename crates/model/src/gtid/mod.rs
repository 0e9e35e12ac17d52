//! GTID sets (MySQL) and GTID lists (MariaDB): parsing, canonical display, set algebra and
//! position comparison. Everything here is pure; malformed text is a [`GtidError`], never a panic.

pub mod mariadb;
pub mod mysql;
mod uuid;

use serde::{Deserialize, Serialize};

pub use mariadb::{
    errant_gtids, own_transactions_held_elsewhere, DomainCmp, ErrantGtid, ErrantReason,
    MariadbBinlogState, MariadbGtid, MariadbGtidList,
};
pub use mysql::MysqlGtidSet;
pub use uuid::Uuid;

/// Why a GTID string could not be parsed. `text` is always the offending piece of input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtidError {
    /// Not a hyphenated 36-character hexadecimal UUID.
    #[error("invalid UUID {text:?}: expected 8-4-4-4-12 hex digits")]
    InvalidUuid { text: String },
    /// Not a plain decimal number, or too large for its type.
    #[error("invalid number {text:?}: expected decimal digits within range")]
    InvalidNumber { text: String },
    /// MySQL transaction numbers start at 1.
    #[error("transaction number 0 is not allowed in {text:?}")]
    ZeroTransaction { text: String },
    /// An interval whose start is greater than its end, like `5-3`.
    #[error("interval {text:?} has its start after its end")]
    ReversedInterval { text: String },
    /// A malformed interval, like `1-2-3`, `-5` or an empty one between colons.
    #[error("malformed interval {text:?}: expected N or N-M")]
    InvalidInterval { text: String },
    /// A MySQL UUID with no intervals after it, like `uuid` or `uuid:`.
    #[error("missing transaction intervals in {text:?}")]
    MissingIntervals { text: String },
    /// MySQL 8.4 tagged GTIDs (`uuid:tag:1-5`) are not supported.
    #[error("tagged GTIDs are not supported: {text:?}")]
    TaggedGtid { text: String },
    /// Not of the form `domain-server_id-seq`.
    #[error("malformed MariaDB GTID {text:?}: expected domain-server_id-seq")]
    MalformedMariadbGtid { text: String },
    /// A MariaDB GTID position names the same domain twice.
    #[error("domain {domain} appears more than once in {text:?}")]
    DuplicateDomain { domain: u32, text: String },
    /// A MariaDB binlog state names the same (domain, server_id) twice.
    #[error("domain {domain} server_id {server_id} appears more than once in {text:?}")]
    DuplicateServerId {
        domain: u32,
        server_id: u32,
        text: String,
    },
}

/// How one GTID position relates to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionOrdering {
    /// Both positions are the same.
    Equal,
    /// `self` is strictly behind `other`: `other` has everything `self` has, and more.
    Behind,
    /// `self` is strictly ahead of `other`.
    Ahead,
    /// Each side has something the other lacks.
    Diverged,
}

/// A GTID position of either flavor.
///
/// Serialized as `{"flavor":"mysql","gtid":"<set>"}` or `{"flavor":"mariadb","gtid":"<list>"}`,
/// the `gtid` value being the canonical string. Displayed as the bare canonical string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flavor", content = "gtid", rename_all = "lowercase")]
pub enum GtidPosition {
    /// A MySQL `@@gtid_executed`-style GTID set.
    Mysql(MysqlGtidSet),
    /// A MariaDB `@@gtid_current_pos`-style GTID list.
    Mariadb(MariadbGtidList),
}

impl GtidPosition {
    /// Compares two positions of the same flavor; `None` when the flavors differ.
    pub fn compare(&self, other: &GtidPosition) -> Option<PositionOrdering> {
        match (self, other) {
            (Self::Mysql(a), Self::Mysql(b)) => Some(a.compare(b)),
            (Self::Mariadb(a), Self::Mariadb(b)) => Some(a.compare(b)),
            _ => None,
        }
    }
}

impl std::fmt::Display for GtidPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mysql(set) => set.fmt(f),
            Self::Mariadb(list) => list.fmt(f),
        }
    }
}

/// Parses a plain decimal number (no sign, no whitespace) into `T`.
fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, GtidError> {
    let invalid = || GtidError::InvalidNumber {
        text: text.to_owned(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    text.parse().map_err(|_| invalid())
}

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr`.
macro_rules! serde_as_string {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
use serde_as_string;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_serde_is_tagged_with_flavor() {
        let pos = GtidPosition::Mariadb("0-1-100,1-2-50".parse().unwrap());
        let json = serde_json::to_string(&pos).unwrap();
        assert_eq!(json, r#"{"flavor":"mariadb","gtid":"0-1-100,1-2-50"}"#);
        assert_eq!(serde_json::from_str::<GtidPosition>(&json).unwrap(), pos);

        let text = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5";
        let pos = GtidPosition::Mysql(text.parse().unwrap());
        let json = serde_json::to_string(&pos).unwrap();
        assert_eq!(json, format!(r#"{{"flavor":"mysql","gtid":"{text}"}}"#));
        assert_eq!(serde_json::from_str::<GtidPosition>(&json).unwrap(), pos);
        assert_eq!(pos.to_string(), text);
    }

    #[test]
    fn position_serde_rejects_malformed_gtid() {
        let json = r#"{"flavor":"mysql","gtid":"nope:1"}"#;
        assert!(serde_json::from_str::<GtidPosition>(json).is_err());
    }

    #[test]
    fn compare_across_flavors_is_none() {
        let a = GtidPosition::Mysql(MysqlGtidSet::default());
        let b = GtidPosition::Mariadb(MariadbGtidList::default());
        assert_eq!(a.compare(&b), None);
        assert_eq!(a.compare(&a), Some(PositionOrdering::Equal));
    }

    #[test]
    fn numbers_are_plain_decimal() {
        assert_eq!(parse_number::<u64>("007"), Ok(7));
        for bad in ["", "+1", "-1", " 1", "1x", "99999999999999999999999"] {
            assert!(parse_number::<u64>(bad).is_err(), "{bad:?}");
        }
        assert!(parse_number::<u32>("4294967296").is_err());
    }
}
