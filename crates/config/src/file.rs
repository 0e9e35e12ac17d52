//! The file as written: the shape serde reads before validation. Sections that need no
//! cross-checking (`[store]`, `[api]`, `[probe]`) use the public types directly; the others
//! keep raw strings and options here, so that validation can name the field path of every
//! problem (`cluster[1].instance[0].addr`) instead of only a line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use model::PromotionRule;
use serde::Deserialize;

use crate::schema::{
    ApiConfig, DetectionConfig, FailoverConfig, NodeConfig, ProbeConfig, StoreConfig,
};
use crate::serde_util;

/// All of `dbfleet.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// Refuse secret files open to others instead of warning. Default false.
    #[serde(default)]
    pub strict_permissions: bool,
    /// `[store]`. Required.
    pub store: StoreConfig,
    /// `[api]`. Optional; every key has a default.
    #[serde(default)]
    pub api: ApiConfig,
    /// `[probe]`. Optional; every key has a default.
    #[serde(default)]
    pub probe: ProbeConfig,
    /// `[credentials.NAME]` entries.
    #[serde(default)]
    pub credentials: BTreeMap<String, FileCredentials>,
    #[serde(default)]
    pub node: NodeConfig,
    /// `[[cluster]]` entries.
    #[serde(default)]
    pub cluster: Vec<FileCluster>,
    /// `[drt]`: scheduled disaster-recovery tests.
    #[serde(default)]
    pub drt: FileDrt,
    /// `[monitor]`. Optional; every key has a default.
    #[serde(default)]
    pub monitor: crate::schema::MonitorConfig,
    /// `[alert]`: alert rules and notifiers. Optional; the default rules apply.
    #[serde(default)]
    pub alert: alert::AlertConfig,
}

/// `[drt]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDrt {
    /// `[[drt.schedule]]` entries.
    #[serde(default)]
    pub schedule: Vec<FileDrtSchedule>,
}

/// `[[drt.schedule]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDrtSchedule {
    pub scenario: String,
    pub cluster: String,
    #[serde(with = "serde_util::duration")]
    pub every: Duration,
    #[serde(default, with = "serde_util::opt_duration")]
    pub first_after: Option<Duration>,
    pub sandbox: String,
    #[serde(default)]
    pub sandbox_dir: Option<PathBuf>,
    #[serde(default, with = "serde_util::opt_duration")]
    pub duration: Option<Duration>,
}

/// `[credentials.NAME]` as written: exactly one of `credentials_file`, or `user` with one of
/// `password_file` / `password_env`, which validation checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCredentials {
    /// The account name.
    pub user: Option<String>,
    /// A file holding only the password.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// A TOML file with `user` and `password`.
    pub credentials_file: Option<PathBuf>,
}

/// `[[cluster]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCluster {
    /// The cluster's name.
    pub name: String,
    /// The name of a `[credentials.NAME]` entry.
    pub credentials: String,
    /// How many replicas the primary should have; defaults to the instances minus one.
    pub expected_replicas: Option<usize>,
    /// Whether semi-sync replication should be on.
    #[serde(default)]
    pub semi_sync: bool,
    /// Lag above which a replica is lagging.
    #[serde(default = "default_max_lag", with = "serde_util::duration")]
    pub max_lag: Duration,
    /// Whether DRTs may run on this cluster.
    #[serde(default)]
    pub drt_allowed: bool,
    pub replication_credentials: Option<String>,
    /// TLS to the cluster's servers: `off` (default), `preferred`, `required`, `verify_ca`,
    /// `verify_identity`.
    #[serde(default)]
    pub tls: model::TlsMode,
    /// PEM file of the CA that signs the servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of a client certificate, with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's key.
    pub tls_key_file: Option<PathBuf>,
    #[serde(default)]
    pub failover: FailoverConfig,
    /// `[cluster.detection]`.
    #[serde(default)]
    pub detection: DetectionConfig,
    /// `[cluster.haproxy]`.
    #[serde(default)]
    pub haproxy: crate::HaproxyConfig,
    /// `[[cluster.instance]]` entries.
    #[serde(default)]
    pub instance: Vec<FileInstance>,
}

/// `[[cluster.instance]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileInstance {
    /// `host:port`, parsed during validation so that errors name the field.
    pub addr: String,
    /// Whether failover may promote it.
    #[serde(default)]
    pub promotion: PromotionRule,
    pub site: Option<String>,
}

/// The default `max_lag`.
pub(crate) fn default_max_lag() -> Duration {
    Duration::from_secs(10)
}
