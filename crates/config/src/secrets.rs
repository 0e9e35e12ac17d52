//! Reading secrets the config points at: passwords (from a password file, an environment
//! variable or a credentials file) and API tokens.
//!
//! Secrets are read when asked for, never while loading the config, and never appear in an
//! error, `Debug` or `Display`: errors name the file or variable, and messages about a
//! malformed credentials file do not quote it (not even a key name, in case a password file
//! was named by mistake).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::schema::{CredentialsConfig, PasswordSource};
use crate::validate::line_of;
use crate::ConfigError;

/// A user name and password, read from where a `[credentials.NAME]` entry points.
/// `Debug` never shows the password, and there is no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedCredentials {
    /// The account name.
    pub user: String,
    /// The password; see `password()`.
    password: String,
}

impl ResolvedCredentials {
    /// Credentials from a user and a password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The password, for the one place that must send it.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The user and the password, e.g. to build a `probe::Credentials`.
    pub fn into_parts(self) -> (String, String) {
        (self.user, self.password)
    }
}

impl fmt::Debug for ResolvedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The API tokens read from `api.tokens_file`. `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiTokens {
    /// The tokens, none blank.
    tokens: Vec<String>,
}

impl ApiTokens {
    /// Tokens from a list (blank entries are dropped).
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Self {
        Self {
            tokens: tokens.into_iter().filter(|t| !t.is_empty()).collect(),
        }
    }

    /// Whether there are no tokens: then every call that needs one is refused.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// One of the tokens, for the daemon's calls to its own API (a scheduled DRT's
    /// switchover). Never log it.
    pub fn own(&self) -> Option<String> {
        self.tokens.first().cloned()
    }

    /// Whether `presented` is one of the tokens. Compares every token in full, so the time
    /// taken does not tell how much of a token matched.
    pub fn accepts(&self, presented: &str) -> bool {
        let mut found = false;
        for t in &self.tokens {
            found |= constant_time_eq(t.as_bytes(), presented.as_bytes());
        }
        found
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokens")
            .field("count", &self.tokens.len())
            .finish()
    }
}

/// Whether `a == b`, taking the same time wherever they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Read a tokens file: one token per line, surrounding whitespace trimmed, blank lines and
/// lines starting with `#` ignored.
pub(crate) fn read_tokens(path: &Path) -> Result<ApiTokens, ConfigError> {
    let text = read(path)?;
    Ok(ApiTokens::new(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string),
    ))
}

/// Read the credentials an entry points at. `field` is the entry's path,
/// `credentials.NAME`.
pub(crate) fn resolve(
    field: &str,
    c: &CredentialsConfig,
) -> Result<ResolvedCredentials, ConfigError> {
    match c {
        CredentialsConfig::File { credentials_file } => read_credentials_file(credentials_file),
        CredentialsConfig::User { user, password } => {
            let password = match password {
                PasswordSource::PasswordFile(path) => {
                    let text = read(path)?;
                    let pw = text.trim_end_matches(['\n', '\r']);
                    if pw.is_empty() {
                        return Err(ConfigError::invalid(
                            format!("{field}.password_file"),
                            format!("{} is empty", path.display()),
                        ));
                    }
                    pw.to_string()
                }
                PasswordSource::PasswordEnv(var) => {
                    let field = format!("{field}.password_env");
                    // Not `VarError`'s message: for a value that is not unicode it shows the
                    // value.
                    match std::env::var_os(var) {
                        None => {
                            return Err(ConfigError::invalid(
                                field,
                                format!("environment variable {var} is not set"),
                            ))
                        }
                        Some(v) => match v.into_string() {
                            Ok(v) if v.is_empty() => {
                                return Err(ConfigError::invalid(
                                    field,
                                    format!("environment variable {var} is empty"),
                                ))
                            }
                            Ok(v) => v,
                            Err(_) => {
                                return Err(ConfigError::invalid(
                                    field,
                                    format!("environment variable {var} is not valid UTF-8"),
                                ))
                            }
                        },
                    }
                }
            };
            Ok(ResolvedCredentials::new(user.clone(), password))
        }
    }
}

/// Read a credentials file: TOML with exactly `user = "…"` and `password = "…"`.
fn read_credentials_file(path: &Path) -> Result<ResolvedCredentials, ConfigError> {
    let text = read(path)?;
    let malformed = |line: Option<usize>, message: &str| ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        message: message.to_string(),
    };
    // toml's own messages are not used: some quote a value, and this file holds a password.
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        malformed(
            e.span().map(|s| line_of(&text, s.start)),
            "not valid TOML: a credentials file holds user = \"…\" and password = \"…\"",
        )
    })?;
    if table.keys().any(|k| k != "user" && k != "password") {
        return Err(malformed(
            None,
            "a credentials file holds only the keys user and password",
        ));
    }
    let get = |key: &str| match table.get(key) {
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(toml::Value::String(_)) => Err(malformed(None, &format!("{key} is empty"))),
        Some(_) => Err(malformed(None, &format!("{key} must be a string"))),
        None => Err(malformed(None, &format!("{key} is missing"))),
    };
    Ok(ResolvedCredentials::new(get("user")?, get("password")?))
}

/// A secret file whose permission bits let others than its owner (and its group, for
/// reading) at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionWarning {
    /// The field that names the file, e.g. `credentials.admin.password_file`.
    pub field: String,
    /// The file.
    pub path: PathBuf,
    /// Its permission bits, e.g. `0o644`.
    pub mode: u32,
}

impl PermissionWarning {
    /// What is wrong, without the field: `/etc/dbfleet/pw is readable by others (mode
    /// 0644): chmod 600 it`.
    pub fn problem(&self) -> String {
        let who = match self.mode & 0o007 {
            0 => "writable by its group",
            m if m & 0o006 == 0o006 => "readable and writable by others",
            m if m & 0o004 != 0 => "readable by others",
            m if m & 0o002 != 0 => "writable by others",
            _ => "open to others",
        };
        format!(
            "{} is {who} (mode {:04o}): chmod 600 it (or 640 for a group of readers)",
            self.path.display(),
            self.mode
        )
    }
}

impl fmt::Display for PermissionWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem())
    }
}

/// The bits a secret file must not have: any for others, and write for its group.
const TOO_OPEN: u32 = 0o027;

/// A warning when the file at `path` (named by `field`) is open to others; none when it is
/// not, or cannot be looked at. Others' execute bit alone is flagged too: it still means
/// the mode was not chosen for a secret.
pub(crate) fn permission_warning(field: String, path: &Path) -> Option<PermissionWarning> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & TOO_OPEN != 0).then(|| PermissionWarning {
        field,
        path: path.to_path_buf(),
        mode,
    })
}

/// Read a file as text.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}
