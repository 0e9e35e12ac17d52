//! `ScenarioError`: why a scenario could not be read, parsed or validated.

use std::fmt;
use std::path::PathBuf;

/// A scenario that could not be loaded. Every message names the file and line, or the
/// field path (e.g. `fault[1].at`).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A file could not be read. The cause is the error's `source()`.
    #[error("cannot read {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not fit the schema: an unknown key, a missing
    /// one, a value of the wrong type, a malformed duration.
    #[error("{origin}{}: {}{message}", line_suffix(*.line), field_prefix(.field))]
    Parse {
        /// The file, or `builtin:NAME`.
        origin: String,
        /// The 1-based line the problem is on, when known.
        line: Option<usize>,
        /// The field path the problem is at, e.g. `fault[1].at`, when it can be told.
        field: Option<String>,
        /// What is wrong, on one line.
        message: String,
    },
    /// A value parses but is not allowed.
    #[error("{field}: {message}")]
    Invalid {
        /// The field path, e.g. `fault[1].at` or `expect.max_rto`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Several problems at once. Never empty, never nested.
    #[error("{}", DisplayList(.0))]
    Several(Vec<ScenarioError>),
    /// No built-in scenario has this name.
    #[error("no built-in scenario is named {name:?}; the built-ins are {}", .known.join(", "))]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
        /// The built-ins' names.
        known: Vec<&'static str>,
    },
}

impl ScenarioError {
    /// One error from a list: `None` for an empty list, the error itself for a list of one,
    /// `Several` otherwise. Nested lists are flattened.
    pub fn from_list(errors: Vec<ScenarioError>) -> Option<Self> {
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
    pub fn problems(&self) -> Vec<&ScenarioError> {
        match self {
            Self::Several(list) => list.iter().flat_map(|e| e.problems()).collect(),
            other => vec![other],
        }
    }

    /// The field path of each problem that names one.
    pub fn fields(&self) -> Vec<&str> {
        self.problems()
            .into_iter()
            .filter_map(|p| match p {
                Self::Invalid { field, .. } => Some(field.as_str()),
                Self::Parse {
                    field: Some(field), ..
                } => Some(field.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn field_prefix(field: &Option<String>) -> String {
    field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

/// A list of errors, one per line.
struct DisplayList<'a>(&'a [ScenarioError]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problems:", self.0.len())?;
        for e in self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}
