//! TLS to managed servers against real servers (ports 27530..27533): a `--tls` sandbox
//! replicates over verified TLS and refuses plain connections; each mode of a cluster's
//! `tls` connects or refuses as its name says, with an error that says why.

use std::time::Duration;

use model::{InstanceAddr, TlsMode, TlsSettings};
use probe::{Credentials, ProbeError, ProbeOptions, Session};
use sandbox::testing::TestSandbox;
use sandbox::Tuning;

const T: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(3),
    query_timeout: Duration::from_secs(10),
};

fn tls(mode: TlsMode, ca: Option<std::path::PathBuf>) -> TlsSettings {
    TlsSettings {
        mode,
        ca_file: ca,
        cert_file: None,
        key_file: None,
    }
}

/// The session's TLS cipher, empty for a plain connection.
async fn cipher(s: &mut Session) -> String {
    let rows = s
        .query_rows("cipher", "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    rows.first()
        .and_then(|r| r.get("Value").cloned().flatten())
        .unwrap_or_default()
}

async fn connect(addr: &InstanceAddr, c: &Credentials) -> Result<Session, ProbeError> {
    Session::connect(addr, c, T).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_connect_or_refuse_as_named() {
    let tuning = Tuning {
        tls: true,
        ..Tuning::default()
    };
    let sb = TestSandbox::up_tuned("tls-modes", 1, 27530, false, tuning).await;
    let creds = sb.credentials().unwrap();
    let admin = creds.admin.credentials();
    let ca = sandbox::tls::ca_file(sb.dir());
    assert_eq!(admin.tls().map(|t| t.mode), Some(TlsMode::VerifyIdentity));
    let (m1, m2) = (sb.addr("m1"), sb.addr("m2"));

    // The sandbox's own accounts: verified TLS, and a full probe over it.
    let mut s = connect(&m1, &admin).await.unwrap();
    assert!(!cipher(&mut s).await.is_empty(), "not a TLS connection");
    let state = s.observe().await.unwrap();
    assert!(!state.read_only);
    s.close().await;
    // The replica replicates over verified TLS.
    let mut r = connect(&m2, &admin).await.unwrap();
    let rows = r
        .query_rows("slave status", "SHOW SLAVE STATUS")
        .await
        .unwrap();
    let col = |k: &str| {
        rows.first()
            .and_then(|row| row.get(k).cloned().flatten())
            .unwrap_or_default()
    };
    assert_eq!(col("Slave_IO_Running"), "Yes");
    assert_eq!(col("Master_SSL_Allowed"), "Yes");
    assert_eq!(col("Master_SSL_Verify_Server_Cert"), "Yes");
    r.close().await;

    let plain = Credentials::new(&creds.admin.user, &creds.admin.password);
    // require_secure_transport: a plain connection is refused.
    assert!(connect(&m1, &plain).await.is_err());
    // `required` and `preferred` use TLS without checking the certificate.
    for mode in [TlsMode::Required, TlsMode::Preferred] {
        let mut s = connect(&m1, &plain.clone().with_tls(tls(mode, None)))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(!cipher(&mut s).await.is_empty(), "{mode}");
        s.close().await;
    }
    // The certificate names 127.0.0.1 only: through `localhost`, verify_identity refuses
    // and says why; verify_ca checks the chain only, and connects.
    let by_name = InstanceAddr::new("localhost", m1.port);
    let e = connect(
        &by_name,
        &plain
            .clone()
            .with_tls(tls(TlsMode::VerifyIdentity, Some(ca.clone()))),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("TLS: invalid peer certificate") && e.contains("not valid for name"),
        "{e}"
    );
    let mut s = connect(
        &by_name,
        &plain
            .clone()
            .with_tls(tls(TlsMode::VerifyCa, Some(ca.clone()))),
    )
    .await
    .unwrap();
    assert!(!cipher(&mut s).await.is_empty());
    s.close().await;
    // A CA that did not sign it: refused in both verifying modes, whatever the name.
    let other_ca = "/etc/ssl/certs/ca-certificates.crt";
    if std::path::Path::new(other_ca).exists() {
        for (addr, mode) in [
            (&m1, TlsMode::VerifyIdentity),
            (&by_name, TlsMode::VerifyCa),
        ] {
            let e = connect(
                addr,
                &plain.clone().with_tls(tls(mode, Some(other_ca.into()))),
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(e.contains("UnknownIssuer"), "{mode}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_when_the_cluster_requires_it() {
    let sb = TestSandbox::up("tls-none", 1, 27532).await;
    let admin = sb.credentials().unwrap().admin.credentials();
    assert!(admin.tls().is_none());
    let m1 = sb.addr("m1");
    for mode in [
        TlsMode::Required,
        TlsMode::VerifyCa,
        TlsMode::VerifyIdentity,
    ] {
        let e = connect(&m1, &admin.clone().with_tls(tls(mode, None)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not offer TLS") && e.contains(mode.as_str()),
            "{mode}: {e}"
        );
    }
    // `preferred` falls back to a plain connection.
    let mut s = connect(&m1, &admin.clone().with_tls(tls(TlsMode::Preferred, None)))
        .await
        .unwrap();
    assert!(cipher(&mut s).await.is_empty());
    s.close().await;
}
