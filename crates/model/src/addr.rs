//! `InstanceAddr`: the `host:port` a managed server answers on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The network address of one managed server, as `host:port`.
///
/// Hosts are kept as given (an IPv4 address or a name); an IPv6 address is written in
/// brackets, `[::1]:3306`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceAddr {
    /// Host name or IP address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Why a `host:port` string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// The text has no `:port` part.
    #[error("address {0:?} has no port: write it as host:port")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("address {0:?} has a bad port: it must be a number from 1 to 65535")]
    BadPort(String),
    /// The host part is empty or holds characters no host name has.
    #[error("address {0:?} has a bad host")]
    BadHost(String),
}

impl InstanceAddr {
    /// An address from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl FromStr for InstanceAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| AddrError::MissingPort(s.to_string()))?;
            (h, p)
        } else {
            t.rsplit_once(':')
                .ok_or_else(|| AddrError::MissingPort(s.to_string()))?
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !valid_host || (host.contains(':') && !t.starts_with('[')) {
            return Err(AddrError::BadHost(s.to_string()));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| AddrError::BadPort(s.to_string()))?;
        Ok(Self::new(host, port))
    }
}

impl fmt::Display for InstanceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for InstanceAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InstanceAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let a: InstanceAddr = "127.0.0.1:3306".parse().unwrap();
        assert_eq!(a, InstanceAddr::new("127.0.0.1", 3306));
        assert_eq!(a.to_string(), "127.0.0.1:3306");
        let b: InstanceAddr = "[::1]:3307".parse().unwrap();
        assert_eq!(b.host, "::1");
        assert_eq!(b.to_string(), "[::1]:3307");
        let c: InstanceAddr = " db-1.example:3306 ".parse().unwrap();
        assert_eq!(c.host, "db-1.example");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "host",
            "host:",
            ":3306",
            "host:0",
            "host:65536",
            "host:x",
            "a b:1",
            "::1:3306",
        ] {
            assert!(
                bad.parse::<InstanceAddr>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }
}
