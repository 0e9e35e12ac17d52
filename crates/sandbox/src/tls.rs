//! The certificates of a TLS sandbox (`sandbox up --tls`): a CA of its own, made with
//! `rcgen`, and one server certificate for every member, naming the members' IP address
//! only (a connection to `localhost` then fails `verify_identity`, which tests use).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Where a sandbox keeps its certificates: `DIR/tls`.
pub fn tls_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("tls")
}

/// The CA certificate clients verify the members with.
pub fn ca_file(sandbox_dir: &Path) -> PathBuf {
    tls_dir(sandbox_dir).join("ca.pem")
}

/// The members' certificate and key.
pub fn server_files(sandbox_dir: &Path) -> (PathBuf, PathBuf) {
    let d = tls_dir(sandbox_dir);
    (d.join("server.pem"), d.join("server-key.pem"))
}

/// Make the CA and the server certificate for `ip` into `DIR/tls`. The CA's key is not
/// kept: nothing signs with it later.
pub fn make(sandbox_dir: &Path, ip: std::net::IpAddr) -> anyhow::Result<()> {
    let dir = tls_dir(sandbox_dir);
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "dbfleet sandbox CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(Vec::<String>::new())?;
    server.subject_alt_names = vec![SanType::IpAddress(ip)];
    server
        .distinguished_name
        .push(DnType::CommonName, "dbfleet sandbox server");
    server.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = server.signed_by(&key, &ca_cert, &ca_key)?;
    let (cert_file, key_file) = server_files(sandbox_dir);
    crate::sandbox::write_private(&ca_file(sandbox_dir), &ca_cert.pem())?;
    crate::sandbox::write_private(&cert_file, &cert.pem())?;
    crate::sandbox::write_private(&key_file, &key.serialize_pem())?;
    Ok(())
}
