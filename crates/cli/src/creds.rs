//! Credentials for managed servers, from a file or an environment variable. They are never
//! printed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use probe::Credentials;
use serde::Deserialize;

/// A credentials file: TOML with `user` and `password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    /// The account name.
    user: String,
    /// The password.
    password: String,
}

/// Where credentials come from.
#[derive(clap::Args, Debug, Clone)]
pub struct CredentialArgs {
    /// A TOML file with `user = "…"` and `password = "…"` (a sandbox writes one as
    /// `admin.toml` in its directory).
    #[arg(long, value_name = "FILE", conflicts_with = "user")]
    pub credentials: Option<PathBuf>,
    /// The user name; the password is read from the environment variable named by
    /// `--password-env`.
    #[arg(long)]
    pub user: Option<String>,
    /// The environment variable that holds the password for `--user`.
    #[arg(long, value_name = "VAR", default_value = "DBFLEET_PASSWORD")]
    pub password_env: String,
}

impl CredentialArgs {
    /// Load the credentials the arguments name.
    pub fn load(&self) -> anyhow::Result<Credentials> {
        match (&self.credentials, &self.user) {
            (Some(path), _) => load_file(path),
            (None, Some(user)) => {
                let password = std::env::var(&self.password_env).with_context(|| {
                    format!("--user {user} needs the password in ${}", self.password_env)
                })?;
                Ok(Credentials::new(user, password))
            }
            (None, None) => anyhow::bail!(
                "no credentials: give --credentials FILE, or --user NAME with the password in \
                 ${}",
                self.password_env
            ),
        }
    }
}

/// Read a credentials file.
pub fn load_file(path: &Path) -> anyhow::Result<Credentials> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let f: CredentialsFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("credentials file {}: {}", path.display(), e.message()))?;
    Ok(Credentials::new(f.user, f.password))
}
