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
    /// TLS to the server: off, preferred, required, verify_ca or verify_identity (as a
    /// cluster's `tls` in the config). A `sandbox up --tls` member needs verify_identity
    /// with `--tls-ca-file DIR/tls/ca.pem`.
    #[arg(long, value_name = "MODE", default_value = "off")]
    pub tls: model::TlsMode,
    /// PEM file of the CA that signs the server's certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
}

impl CredentialArgs {
    /// Load the credentials the arguments name.
    pub fn load(&self) -> anyhow::Result<Credentials> {
        if self.tls_ca_file.is_some() && self.tls == model::TlsMode::Off {
            anyhow::bail!("--tls-ca-file needs --tls (e.g. --tls verify_identity)");
        }
        let tls = model::TlsSettings {
            mode: self.tls,
            ca_file: self.tls_ca_file.clone(),
            cert_file: None,
            key_file: None,
        };
        Ok(self.load_plain()?.with_tls(tls))
    }

    fn load_plain(&self) -> anyhow::Result<Credentials> {
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
