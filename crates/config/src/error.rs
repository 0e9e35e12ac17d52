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
    #[error("{field}: {message}")]
    Invalid {
        /// The path of the field, e.g. `cluster[1].instance[0].addr` or `probe.interval`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Several problems at once, so that `dbfleet config validate` can show all of them.
    /// Never empty, never nested.
    #[error("{}", DisplayList(.0))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// An `Invalid` error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
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
