//! `ConfigError`: why a config could not be loaded, or why a secret it names could not be read.
//!
//! No variant ever holds a secret. Messages name fields, files, lines and environment
//! variables, never a password or a token, and never the source text of a line of a file.

use std::fmt;
use std::path::PathBuf;

/// A config that could not be loaded, or a secret that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read. The cause is the error's `source()`.
    #[error("cannot read {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A file is not valid TOML, or does not fit the schema: an unknown key, a value of the
    /// wrong type, a malformed duration. The message never quotes the line.
    #[error("{}{}: {message}", .path.display(), line_suffix(*.line))]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line the problem is on, when known.
        line: Option<usize>,
        /// What is wrong, on one line.
        message: String,
    },
    /// A value parses but is not allowed, e.g. a probe interval that is too short or a
    /// cluster that names undefined credentials.
    #[error("{}{field}: {message}", location_prefix(.at))]
    Invalid {
        /// The path of the field, e.g. `cluster[1].instance[0].addr` or `probe.interval`.
        field: String,
        /// What is wrong with it.
        message: String,
        /// Where in the file the field is (or the nearest table that holds it), when the
        /// error comes from validating a file's text.
        at: Option<Location>,
    },
    /// Several problems at once, so that `dbfleet config validate` can show all of them.
    /// Never empty, never nested.
    #[error("{}", DisplayList(.0))]
    Several(Vec<ConfigError>),
}

/// A place in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line.
    pub line: usize,
    /// The 1-based column, in characters.
    pub column: usize,
}

/// `PATH:LINE:COLUMN: ` when the location is known, for `Invalid`'s message.
fn location_prefix(at: &Option<Location>) -> String {
    at.as_ref()
        .map(|l| format!("{}:{}:{}: ", l.path.display(), l.line, l.column))
        .unwrap_or_default()
}

/// The longest message an `Invalid` error keeps; the rest is cut (a value echoed in it is
/// already cut shorter, see `validate::quote`).
const MAX_MESSAGE: usize = 512;

/// `message` cut to `MAX_MESSAGE` characters, saying how long it was.
pub(crate) fn cap(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE {
        return message;
    }
    let head: String = message.chars().take(MAX_MESSAGE).collect();
    format!("{head}… ({} bytes)", message.len())
}

impl ConfigError {
    /// An `Invalid` error, with no location yet; its message is capped.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: cap(field.into()),
            message: cap(message.into()),
            at: None,
        }
    }

    /// One error from a list: `None` for an empty list, the error itself for a list of one,
    /// `Several` otherwise. Nested lists are flattened.
    pub fn from_list(errors: Vec<ConfigError>) -> Option<Self> {
        let mut flat = Vec::with_capacity(errors.len());
        for e in errors {
            match e {
                Self::Several(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => None,
            1 => flat.pop(),
            _ => Some(Self::Several(flat)),
        }
    }

    /// Every single problem this error holds: itself, or the members of `Several`.
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            Self::Several(list) => list.iter().flat_map(|e| e.problems()).collect(),
            other => vec![other],
        }
    }
}

/// `:LINE` when the line is known, for `Parse`'s message.
fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

/// Shows a list of errors one per line, each with its cause (an `Io` error's source is not
/// otherwise shown by `Several`'s `Display`).
struct DisplayList<'a>(&'a [ConfigError]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problems:", self.0.len())?;
        for e in self.0 {
            write!(f, "\n  {e}")?;
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_flatten_and_display_every_problem() {
        let io = ConfigError::Io {
            path: PathBuf::from("/x/tokens.txt"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        let list = ConfigError::from_list(vec![
            ConfigError::invalid("probe.interval", "must be at least 50ms"),
            ConfigError::Several(vec![
                io,
                ConfigError::Parse {
                    path: PathBuf::from("dbfleet.toml"),
                    line: Some(3),
                    message: "unknown field `x`".into(),
                },
            ]),
        ])
        .unwrap();
        assert_eq!(list.problems().len(), 3);
        let shown = list.to_string();
        assert!(shown.starts_with("3 problems:"), "{shown}");
        assert!(shown.contains("probe.interval: must be at least 50ms"));
        assert!(shown.contains("cannot read /x/tokens.txt: gone"));
        assert!(shown.contains("dbfleet.toml:3: unknown field `x`"));
        assert!(ConfigError::from_list(vec![]).is_none());
        let one = ConfigError::from_list(vec![ConfigError::invalid("a", "b")]).unwrap();
        assert!(matches!(one, ConfigError::Invalid { .. }));
    }
}
