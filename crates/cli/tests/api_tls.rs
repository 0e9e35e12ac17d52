//! HTTPS on the API (`[api] tls_cert_file`/`tls_key_file`) through the real daemon and CLI:
//! the CLI reaches it with `--ca-file` (or `$DBFLEET_CA_FILE`), refuses a certificate it
//! cannot verify, plain HTTP gets no answer; a plain API on a non-loopback address is
//! refused unless `allow_plaintext = true` (port 27550, no MariaDB needed).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{dbfleet, dbfleet_env};

/// A daemon, killed by PID on drop.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &std::path::Path, api: &str) -> String {
    format!(
        "[store]\ndata_dir = \"{}\"\n{api}\n\
         [credentials.admin]\nuser = \"dbfleet\"\npassword_env = \"DBFLEET_TEST_API_TLS_PASSWORD\"\n\
         [[cluster]]\nname = \"apitls\"\ncredentials = \"admin\"\n\
         [[cluster.instance]]\naddr = \"127.0.0.1:27551\"\n",
        dir.join("store").display()
    )
}

#[test]
fn the_api_serves_https_and_the_cli_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    sandbox::tls::make(dir.path(), "127.0.0.1".parse().unwrap()).unwrap();
    let ca = sandbox::tls::ca_file(dir.path());
    let (cert, key) = sandbox::tls::server_files(dir.path());
    let cfg = dir.path().join("dbfleet.toml");
    std::fs::write(
        &cfg,
        config(
            dir.path(),
            &format!(
                "[api]\nlisten = \"127.0.0.1:27550\"\ntls_cert_file = {:?}\ntls_key_file = {:?}",
                cert.display().to_string(),
                key.display().to_string()
            ),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dbfleet"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("DBFLEET_TEST_API_TLS_PASSWORD", "unused")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _serve = Serve(child);
    let ca_s = ca.display().to_string();
    let https = "https://127.0.0.1:27550";

    // Through HTTPS with the CA: the daemon answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = dbfleet(&["clusters", "--api", https, "--ca-file", &ca_s, "--json"]);
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no HTTPS answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(String::from_utf8_lossy(&out.stdout).contains("apitls"));
    // The CA from the environment works the same.
    let out = dbfleet_env(
        &["clusters", "--api", https, "--json"],
        &[("DBFLEET_CA_FILE", ca_s.as_str())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA the certificate is not trusted: refused, not ignored.
    let out = dbfleet(&["clusters", "--api", https]);
    assert!(!out.status.success());
    // Plain HTTP to the HTTPS port gets no API answer.
    let out = dbfleet(&["clusters", "--api", "http://127.0.0.1:27550"]);
    assert!(!out.status.success());
    // A CA file that holds no certificate is bad input.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let out = dbfleet(&[
        "clusters",
        "--api",
        https,
        "--ca-file",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no PEM certificate"));
}

#[test]
fn plain_http_beyond_loopback_needs_allow_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dbfleet.toml");
    let validate = |api: &str| {
        std::fs::write(&cfg, config(dir.path(), api)).unwrap();
        dbfleet_env(
            &["config", "validate", cfg.to_str().unwrap()],
            &[("DBFLEET_TEST_API_TLS_PASSWORD", "unused")],
        )
    };
    let out = validate("[api]\nlisten = \"0.0.0.0:27552\"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.listen")
            && err.contains("tls_cert_file")
            && err.contains("allow_plaintext"),
        "{err}"
    );
    let out = validate("[api]\nlisten = \"0.0.0.0:27552\"\nallow_plaintext = true");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Loopback needs neither.
    assert!(validate("[api]\nlisten = \"127.0.0.1:27552\"")
        .status
        .success());
    // A certificate without its key.
    let out = validate("[api]\ntls_cert_file = \"/etc/hostname\"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("go together"));
}
