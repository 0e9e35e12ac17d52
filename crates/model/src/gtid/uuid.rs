//! The server UUID that names the source of MySQL GTIDs (`@@server_uuid`).

use std::fmt;
use std::str::FromStr;

use super::{serde_as_string, GtidError};

/// A 128-bit server UUID. Parsed case-insensitively from the hyphenated 36-character form,
/// displayed lowercase. Ordering is bytewise, which matches the order of the displayed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// Builds a UUID from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes of this UUID.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// Byte offsets of the hyphens in the 36-character form.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

impl FromStr for Uuid {
    type Err = GtidError;

    fn from_str(text: &str) -> Result<Self, GtidError> {
        let invalid = || GtidError::InvalidUuid {
            text: text.to_owned(),
        };
        if text.len() != 36 {
            return Err(invalid());
        }
        let mut bytes = [0u8; 16];
        let mut nibbles = 0usize;
        for (pos, b) in text.bytes().enumerate() {
            if HYPHENS.contains(&pos) {
                if b != b'-' {
                    return Err(invalid());
                }
                continue;
            }
            let digit = char::from(b).to_digit(16).ok_or_else(invalid)?;
            let slot = bytes.get_mut(nibbles / 2).ok_or_else(invalid)?;
            // `digit` < 16, so the cast cannot truncate.
            *slot = (*slot << 4) | digit as u8;
            nibbles += 1;
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

serde_as_string!(Uuid);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_displays_lowercase() {
        let uuid: Uuid = "3E11FA47-71CA-11E1-9E33-C80AA9429562".parse().unwrap();
        assert_eq!(uuid.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
        assert_eq!(uuid.as_bytes()[0], 0x3e);
        assert_eq!(uuid.as_bytes()[15], 0x62);
        assert_eq!(uuid.to_string().parse::<Uuid>(), Ok(uuid));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "3e11fa47-71ca-11e1-9e33-c80aa942956",
            "3e11fa47-71ca-11e1-9e33-c80aa94295622",
            "3e11fa4771ca11e19e33c80aa9429562",
            "3e11fa47-71ca-11e1-9e33_c80aa9429562",
            "3e11fa47-71ca-11e1-9e33-c80aa942956g",
            "3e11fa47-71ca-11e1-9e33-c80aa94295é",
            "-3e11fa4-71ca-11e1-9e33-c80aa9429562",
        ] {
            assert!(
                matches!(bad.parse::<Uuid>(), Err(GtidError::InvalidUuid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ordering_matches_text_ordering() {
        let a: Uuid = "00000000-0000-0000-0000-0000000000ff".parse().unwrap();
        let b: Uuid = "00000000-0000-0000-0000-000000000100".parse().unwrap();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }
}
