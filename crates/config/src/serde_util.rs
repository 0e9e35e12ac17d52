//! Serde helpers for config values: humantime durations, the API listen address, and paths
//! shown without failing on non-UTF-8 names.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// A `Duration` written as a humantime string: `"500ms"`, `"1s"`, `"1m 30s"`. Public (as
/// `config::serde_duration`) so other files dbfleet reads, such as DRT scenarios, spell
/// durations and their errors the same way.
pub mod duration {
    use super::*;

    /// Write `d` as humantime text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Read humantime text; a bare number is an error that suggests a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    /// Accepts strings, and explains what to write instead of a number.
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with a unit, like \"500ms\" or \"1s\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v.trim()).map_err(|e| {
                E::custom(format!(
                    "invalid duration {v:?} ({e}): write it with a unit, like \"500ms\", \
                     \"1s\" or \"1m 30s\""
                ))
            })
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit: write \"{v}s\" or \"{v}ms\", in quotes"
            )))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "a duration needs a unit: write \"{v}s\" or \"{v}ms\", in quotes"
            )))
        }
    }
}

/// An optional `Duration` as humantime text (`#[serde(default, with = ...)]`).
pub mod opt_duration {
    use super::*;

    /// Write `d` as humantime text, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Read humantime text, as [`super::duration`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// A socket address written as `"IP:port"`.
pub(crate) mod listen {
    use super::*;

    /// Write `a` as `IP:port`.
    pub(crate) fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    /// Read `IP:port`, with an error that shows the expected form.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        text.trim().parse().map_err(|_| {
            de::Error::custom(format!(
                "invalid listen address {text:?}: write it as IP:port, like \"127.0.0.1:7070\" \
                 or \"[::1]:7070\""
            ))
        })
    }
}

/// Serialize a path as a string, replacing bytes that are not UTF-8.
pub(crate) fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&p.to_string_lossy())
}

/// Serialize an optional path as a string or nothing.
pub(crate) fn opt_path<S: Serializer>(
    p: &Option<std::path::PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}
