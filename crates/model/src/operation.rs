//! `OperationKind`: what an operation of the engine does.
//!
//! The store keeps an operation's kind as text (`operations.kind` in SQLite, `kind` in the
//! etcd record's JSON): the strings below are that text, and must never change, or stored
//! operations stop being recognised.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an operation does. The engine lists what each kind does when it is interrupted
/// (`engine`'s registry of kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// Promote a replica in place of a dead (or stalled) primary.
    Failover,
    /// Move the primary role to a chosen replica while the primary is healthy.
    Switchover,
    /// Attach a fenced or stray instance as a replica of the cluster's writer.
    Rejoin,
}

impl OperationKind {
    /// Every kind, in a fixed order.
    pub const ALL: [OperationKind; 3] = [Self::Failover, Self::Switchover, Self::Rejoin];

    /// The stored name: `failover`, `switchover`, `rejoin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failover => "failover",
            Self::Switchover => "switchover",
            Self::Rejoin => "rejoin",
        }
    }

    /// The kind a stored name stands for, if it is one.
    pub fn of(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no operation kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation kind {0:?} (known: failover, switchover, rejoin)")]
pub struct UnknownOperationKind(pub String);

impl FromStr for OperationKind {
    type Err = UnknownOperationKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::of(s).ok_or_else(|| UnknownOperationKind(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the store has held since operations were first recorded: stored
    /// operations stay readable.
    #[test]
    fn kinds_keep_the_names_the_store_holds() {
        let stored = [
            ("failover", OperationKind::Failover),
            ("switchover", OperationKind::Switchover),
            ("rejoin", OperationKind::Rejoin),
        ];
        for (name, kind) in stored {
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.to_string(), name);
            assert_eq!(name.parse::<OperationKind>(), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), serde_json::json!(name));
            assert_eq!(
                serde_json::from_value::<OperationKind>(serde_json::json!(name)).unwrap(),
                kind
            );
        }
        assert_eq!(OperationKind::ALL.len(), stored.len());
    }

    #[test]
    fn an_unknown_name_is_an_error() {
        for name in ["", "Failover", "backup", "failover "] {
            let e = name.parse::<OperationKind>().unwrap_err();
            assert!(e.to_string().contains("unknown operation kind"), "{e}");
            assert!(serde_json::from_value::<OperationKind>(serde_json::json!(name)).is_err());
        }
    }
}
