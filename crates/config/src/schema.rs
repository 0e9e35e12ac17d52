//! The validated config, section by section: what `Config::load` returns.
//!
//! Relative paths are already resolved against the config file's directory and every
//! cross-reference has been checked. No type here holds a secret: credentials say where a
//! password is (a file, an environment variable), never what it is, so `Debug` and
//! `Serialize` are safe to show.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use model::{InstanceAddr, PromotionRule};
use serde::{Deserialize, Serialize};

use crate::serde_util;

/// The shortest allowed `probe.interval`.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The whole of `dbfleet.toml`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// `[store]`: where dbfleet keeps its state.
    pub store: StoreConfig,
    /// `[api]`: the HTTP API the daemon serves.
    pub api: ApiConfig,
    /// `[probe]`: how often, how patiently and how widely managed servers are probed.
    pub probe: ProbeConfig,
    /// `[credentials.NAME]`: the accounts dbfleet logs in to managed servers with, by name.
    /// Only where each password is kept is recorded here, never the password.
    pub credentials: BTreeMap<String, CredentialsConfig>,
    /// `[[cluster]]`: the clusters dbfleet manages, in file order.
    #[serde(rename = "cluster")]
    pub clusters: Vec<ClusterConfig>,
}

/// `[store]`: dbfleet's own state on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The directory dbfleet keeps its state in. Required. A relative path is resolved
    /// against the config file's directory.
    #[serde(serialize_with = "serde_util::path")]
    pub data_dir: PathBuf,
}

/// `[api]`: the daemon's HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The IP address and port the API listens on. Default `127.0.0.1:7070`.
    #[serde(with = "serde_util::listen")]
    pub listen: SocketAddr,
    /// A file of API tokens, one per line; blank lines and lines starting with `#` are
    /// ignored. Mutating calls need one of these tokens; without the file they are refused.
    /// Read when the daemon starts (see `ApiConfig::load_tokens`). A relative path is resolved
    /// against the config file's directory. Default: none.
    #[serde(
        serialize_with = "serde_util::opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub tokens_file: Option<PathBuf>,
    /// Whether read-only calls need a token too. Needs `tokens_file`. Default `false`.
    pub require_token_for_reads: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7070)),
            tokens_file: None,
            require_token_for_reads: false,
        }
    }
}

/// `[probe]`: how managed servers are observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// How often every instance is probed. Default `1s`; at least `50ms`.
    #[serde(with = "serde_util::duration")]
    pub interval: Duration,
    /// The longest a connect plus handshake may take before the probe counts as failed.
    /// Default `500ms`.
    #[serde(with = "serde_util::duration")]
    pub connect_timeout: Duration,
    /// The longest one probe query may take. Default `500ms`.
    #[serde(with = "serde_util::duration")]
    pub query_timeout: Duration,
    /// How many probes may run at once, across all clusters. Default `256`; at least 1.
    pub concurrency: usize,
    /// How often the topology is crawled again from the declared instances, to find
    /// replicas that were added or moved. Default `10s`; at least `interval`.
    #[serde(with = "serde_util::duration")]
    pub discovery_interval: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            query_timeout: Duration::from_millis(500),
            concurrency: 256,
            discovery_interval: Duration::from_secs(10),
        }
    }
}

/// `[credentials.NAME]`: where one account's user name and password come from. The password
/// is read only when the credentials are resolved (`Config::resolve_credentials`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CredentialsConfig {
    /// `credentials_file = "…"`: a TOML file holding `user = "…"` and `password = "…"`, the
    /// format `dbfleet probe --credentials` reads and a sandbox writes as `admin.toml`.
    File {
        /// The file, resolved against the config file's directory.
        #[serde(serialize_with = "serde_util::path")]
        credentials_file: PathBuf,
    },
    /// `user = "…"` plus one of `password_file` or `password_env`.
    User {
        /// The account name.
        user: String,
        /// Where the password is.
        #[serde(flatten)]
        password: PasswordSource,
    },
}

/// Where a password is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordSource {
    /// `password_file = "…"`: a file holding only the password. Trailing line breaks are
    /// dropped. Resolved against the config file's directory.
    PasswordFile(#[serde(serialize_with = "serde_util::path")] PathBuf),
    /// `password_env = "…"`: the name of an environment variable holding the password.
    PasswordEnv(String),
}

/// `[[cluster]]`: one replication cluster dbfleet manages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// The cluster's name, unique in the file: 1 to 64 letters, digits, `-`, `_` or `.`.
    pub name: String,
    /// The name of the `[credentials.NAME]` entry dbfleet logs in to this cluster's
    /// instances with.
    pub credentials: String,
    /// How many replicas the primary should have. Default: the number of declared instances
    /// minus one. It may exceed that, since discovery can find undeclared replicas.
    pub expected_replicas: usize,
    /// Whether semi-sync replication should be on. Default `false`.
    pub semi_sync: bool,
    /// Replication lag above which a replica counts as lagging. Default `10s`.
    #[serde(with = "serde_util::duration")]
    pub max_lag: Duration,
    /// Whether the cluster may be used for DRT (reserved for a later feature). Default
    /// `false`.
    pub drt_allowed: bool,
    /// `[[cluster.instance]]`: the instances the operator declares; discovery starts from
    /// them. At least one.
    #[serde(rename = "instance")]
    pub instances: Vec<InstanceConfig>,
}

/// `[[cluster.instance]]`: one declared instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceConfig {
    /// Its `host:port`; unique across all clusters.
    pub addr: InstanceAddr,
    /// Whether failover may promote it: `prefer`, `neutral` or `must_not`. Default
    /// `neutral`.
    pub promotion: PromotionRule,
}

impl ClusterConfig {
    /// The cluster as a `model::ClusterSpec`.
    pub fn spec(&self) -> model::ClusterSpec {
        model::ClusterSpec {
            name: self.name.clone(),
            instances: self
                .instances
                .iter()
                .map(|i| model::InstanceSpec {
                    addr: i.addr.clone(),
                    promotion: i.promotion,
                })
                .collect(),
            expected_replicas: self.expected_replicas,
            semi_sync: self.semi_sync,
            max_lag: self.max_lag,
        }
    }
}
