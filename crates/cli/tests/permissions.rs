//! Secret files that others may read: `config validate` and `serve` warn, naming the field,
//! the file and its mode; with `strict_permissions = true` both refuse the config.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dbfleet;

/// A config in `dir` with a 0644 password file and tokens file, its instance on a port
/// nothing listens on (the daemon runs, probing it in vain).
fn config(dir: &Path, strict: bool) -> PathBuf {
    for (name, text) in [("admin.password", "pw\n"), ("tokens.txt", "tok\n")] {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let path = dir.join("dbfleet.toml");
    std::fs::write(
        &path,
        format!(
            r#"strict_permissions = {strict}
[store]
data_dir = "state"
[api]
listen = "127.0.0.1:24729"
tokens_file = "tokens.txt"
[credentials.admin]
user = "dbfleet"
password_file = "admin.password"
[[cluster]]
name = "perm"
credentials = "admin"
[[cluster.instance]]
addr = "127.0.0.1:24728"
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn secret_files_readable_by_all_warn_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("admin.password").display().to_string();
    let tokens = dir.path().join("tokens.txt").display().to_string();

    // config validate: valid, with one warning per file.
    let cfg = config(dir.path(), false).display().to_string();
    let out = dbfleet(&["config", "validate", &cfg]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for (field, path) in [
        ("credentials.admin.password_file", &pw),
        ("api.tokens_file", &tokens),
    ] {
        let line = format!("warning: {field}: {path} is readable by others (mode 0644)");
        assert!(err.contains(&line), "{line} missing from: {err}");
    }

    // serve: the same warnings in the daemon's log, and it runs.
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbfleet"))
        .args(["serve", "--config", &cfg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("api.tokens_file") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let running = child.try_wait().unwrap().is_none();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(running, "the daemon runs despite the warnings: {text}");
    for (field, path) in [
        ("credentials.admin.password_file", &pw),
        ("api.tokens_file", &tokens),
    ] {
        assert!(
            text.contains("WARN")
                && text.contains(field)
                && text.contains(&format!("{path} is readable by others (mode 0644)")),
            "no warning for {field} in the daemon's log: {text}"
        );
    }

    // strict_permissions = true: both refuse, exit code 2, naming the file and its mode.
    let cfg = config(dir.path(), true).display().to_string();
    for args in [
        vec!["config", "validate", &cfg],
        vec!["serve", "--config", &cfg],
    ] {
        let out = dbfleet(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "credentials.admin.password_file: {pw} is readable by others (mode 0644)"
            )) && err.contains(&format!("api.tokens_file: {tokens} is readable"))
                && err.contains("strict_permissions = true"),
            "{args:?}: {err}"
        );
    }

    // Owner-only files pass strict_permissions without a word.
    for name in ["admin.password", "tokens.txt"] {
        std::fs::set_permissions(
            dir.path().join(name),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let out = dbfleet(&["config", "validate", &cfg]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}
