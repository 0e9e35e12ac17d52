//! TLS to managed servers: a cluster's mode and files (`[[cluster]] tls = …`).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How dbfleet's connections to a cluster's servers use TLS. The names are the MySQL
/// clients' `--ssl-mode` values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain connections (the default).
    #[default]
    Off,
    /// TLS when the server offers it, else plain; the certificate is not checked. Protects
    /// against a passive listener only.
    Preferred,
    /// TLS or no connection; the certificate is not checked.
    Required,
    /// TLS, and the server's certificate must be signed by the CA (`tls_ca_file`, else the
    /// system's roots); its name is not checked.
    VerifyCa,
    /// As `verify_ca`, and the certificate must name the address dbfleet connects to (the
    /// host of `host:port`, a DNS name or an IP address).
    VerifyIdentity,
}

impl TlsMode {
    /// The config's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::VerifyCa => "verify_ca",
            TlsMode::VerifyIdentity => "verify_identity",
        }
    }

    /// Whether the server's certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyIdentity)
    }
}

impl std::str::FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            TlsMode::Off,
            TlsMode::Preferred,
            TlsMode::Required,
            TlsMode::VerifyCa,
            TlsMode::VerifyIdentity,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| {
            format!(
                "{s:?} is not a TLS mode: off, preferred, required, verify_ca or verify_identity"
            )
        })
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster's TLS: the mode, the CA that signs its servers' certificates, and an optional
/// client certificate and key (for servers that require `REQUIRE X509`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// The mode. (Serde names are the config's keys, so a cluster's config flattens it.)
    #[serde(rename = "tls", default)]
    pub mode: TlsMode,
    /// PEM file of the CA certificate(s); `None`: the built-in roots (Mozilla's).
    #[serde(
        rename = "tls_ca_file",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain).
    #[serde(
        rename = "tls_cert_file",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(
        rename = "tls_key_file",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether connections use TLS at all.
    pub fn enabled(&self) -> bool {
        self.mode != TlsMode::Off
    }
}
