//! Loads and validates `dbfleet.toml`, the config file of the dbfleet daemon: where state
//! lives, the API, probe timing, named credentials, and the clusters to manage.
//!
//! `Config::load` reads, parses (unknown keys are errors), validates (collecting every
//! problem, each naming its field path) and resolves relative paths against the file's
//! directory. Secrets are never part of a `Config`: credentials entries say where a password
//! is, and `Config::resolve_credentials` reads it when it is needed. See
//! `docs/dbfleet.example.toml` for a commented example of every key.

mod error;
mod file;
mod haproxy;
mod sandbox;
mod schema;
mod secrets;
mod serde_util;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::{ConfigError, Location};
pub use haproxy::{
    haproxy_config, HaproxyConfigError, HaproxyOptions, CHECK_FALL, CHECK_FASTINTER, CHECK_INTER,
    CHECK_RISE,
};
pub use sandbox::sandbox_config;
pub use schema::{
    ApiConfig, ClusterConfig, Config, CredentialsConfig, DetectionConfig, DrtConfig, DrtSchedule,
    FailoverConfig, FailoverMode, FencePolicy, HaproxyConfig, InstanceConfig, MonitorConfig,
    NodeConfig, PasswordSource, PossibleLossPolicy, ProbeConfig, RejoinMode,
    SemiSyncShortfallPolicy, StoreBackend, StoreConfig, WriteStallPolicy, MIN_PROBE_INTERVAL,
};
pub use secrets::{ApiTokens, PermissionWarning, ResolvedCredentials};
pub use serde_util::duration as serde_duration;

/// The name parse errors give text that did not come from a file.
const UNNAMED: &str = "dbfleet.toml";

impl Config {
    /// Read, parse and validate the config file at `path`. Relative paths in it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = absolute.parent().unwrap_or(Path::new("."));
        validate::parse(&text, path, base)
    }

    /// Parse and validate config text, resolving relative paths against `base_dir`.
    /// Parse errors name the file `dbfleet.toml`.
    pub fn from_str_at(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, Path::new(UNNAMED), base_dir)
    }

    /// Every cluster as a `model::ClusterSpec`, in file order.
    pub fn cluster_specs(&self) -> Vec<model::ClusterSpec> {
        self.clusters.iter().map(ClusterConfig::spec).collect()
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Read the user and password of `[credentials.NAME]` now, from its password file,
    /// environment variable or credentials file. Errors never show the password.
    pub fn resolve_credentials(&self, name: &str) -> Result<ResolvedCredentials, ConfigError> {
        let entry = self.credentials.get(name).ok_or_else(|| {
            ConfigError::invalid(
                "credentials",
                format!("no credentials named {} are defined", validate::quote(name)),
            )
        })?;
        secrets::resolve(&format!("credentials.{}", validate::key(name)), entry)
    }

    /// Read every secret the config points at (each credentials entry and the tokens file),
    /// discarding the values, and report every one that cannot be read. For
    /// `dbfleet config validate`: `load` does not read secrets, since a daemon may get its
    /// environment only later.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        let mut errs: Vec<ConfigError> = self
            .credentials
            .keys()
            .filter_map(|name| self.resolve_credentials(name).err())
            .collect();
        if let Err(e) = self.api.load_tokens() {
            errs.push(e);
        }
        if self.strict_permissions {
            errs.extend(self.permission_warnings().into_iter().map(|w| {
                ConfigError::invalid(
                    w.field.clone(),
                    format!("{} (refused: strict_permissions = true)", w.problem()),
                )
            }));
        }
        // The notifiers' secret files (paths already resolved at load).
        if let Err(e) = self.alert.build_notifiers(std::path::Path::new("/")) {
            errs.push(ConfigError::invalid(e.field, e.message));
        }
        match ConfigError::from_list(errs) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every secret file the config points at, with the field that names it: password
    /// and credentials files, the tokens file, the notifiers' secret files.
    pub fn secret_files(&self) -> Vec<(String, &Path)> {
        let mut files = Vec::new();
        for (name, c) in &self.credentials {
            let at = format!("credentials.{}", validate::key(name));
            match c {
                CredentialsConfig::File { credentials_file } => {
                    files.push((format!("{at}.credentials_file"), credentials_file.as_path()))
                }
                CredentialsConfig::User {
                    password: PasswordSource::PasswordFile(p),
                    ..
                } => files.push((format!("{at}.password_file"), p.as_path())),
                CredentialsConfig::User { .. } => {}
            }
        }
        if let Some(p) = &self.api.tokens_file {
            files.push(("api.tokens_file".into(), p.as_path()));
        }
        if let Some(p) = &self.api.tls_key_file {
            files.push(("api.tls_key_file".into(), p.as_path()));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if let Some(p) = &c.tls.key_file {
                files.push((format!("cluster[{i}].tls_key_file"), p.as_path()));
            }
        }
        for (i, n) in self.alert.notifier.iter().enumerate() {
            match n {
                alert::NotifierSpec::Webhook(w) => {
                    if let Some(p) = &w.headers_file {
                        files.push((format!("alert.notifier[{i}].headers_file"), p.as_path()));
                    }
                }
                alert::NotifierSpec::Pagerduty(p) => files.push((
                    format!("alert.notifier[{i}].routing_key_file"),
                    p.routing_key_file.as_path(),
                )),
            }
        }
        files
    }

    /// The secret files that others may read or write, or their group may write (a file
    /// that cannot be read is left to `check_secrets`). With `strict_permissions = true`,
    /// `check_secrets` refuses them; otherwise `config validate` and `serve` warn.
    pub fn permission_warnings(&self) -> Vec<PermissionWarning> {
        self.secret_files()
            .into_iter()
            .filter_map(|(field, path)| secrets::permission_warning(field, path))
            .collect()
    }

    /// The whole config as JSON, for display: the same keys as the file, with defaults
    /// filled in and paths resolved. It holds no secret (only password file paths and
    /// environment variable names), since a `Config` holds none.
    pub fn redacted_summary(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a Config always serializes: string keys, lossy paths")
    }
}

impl ApiConfig {
    /// Read the API tokens from `tokens_file`; none when there is no tokens file.
    pub fn load_tokens(&self) -> Result<ApiTokens, ConfigError> {
        match &self.tokens_file {
            Some(path) => secrets::read_tokens(path),
            None => Ok(ApiTokens::default()),
        }
    }
}
