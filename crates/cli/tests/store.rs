//! `dbfleet serve` refuses a damaged or unexpectedly empty store (exit code 3) unless
//! `--init-store`; `dbfleet store check` and `dbfleet store backup`. No MariaDB needed: the
//! config's one instance is a port nothing listens on.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{dbfleet, dbfleet_env, ok};
use store::{EventLevel, NewEvent, SqliteStore, Store, DB_FILE_NAME};

const API_PORT: u16 = 31945;
const PASSWORD_ENV: (&str, &str) = ("DBFLEET_TEST_STORE_PW", "unused");

/// A config with its store in `dir/data`, and its path.
fn write_config(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let text = format!(
        r#"
[store]
data_dir = "{}"

[api]
listen = "127.0.0.1:{API_PORT}"

[credentials.admin]
user = "dbfleet"
password_env = "{}"

[[cluster]]
name = "main"
credentials = "admin"
[[cluster.instance]]
addr = "127.0.0.1:31946"
"#,
        data.display(),
        PASSWORD_ENV.0
    );
    let path = dir.join("dbfleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(config: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["serve", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    dbfleet_env(&args, &[PASSWORD_ENV])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A store made by the code, with enough events to span many pages, then two pages in the
/// middle of the file overwritten with pseudo-random bytes.
async fn damaged_store(data: &Path) {
    let s = SqliteStore::open(data).unwrap();
    for i in 0..1500u64 {
        s.append_event(&NewEvent {
            at_ms: i,
            cluster: Some("main".into()),
            instance: None,
            kind: "operator_note".into(),
            level: EventLevel::Info,
            message: format!("note {i}: {}", "y".repeat(200)),
            data: serde_json::json!({}),
        })
        .await
        .unwrap();
    }
    s.flush().await.unwrap();
    drop(s);
    use std::io::{Seek, SeekFrom, Write};
    let path = data.join(DB_FILE_NAME);
    let len = std::fs::metadata(&path).unwrap().len();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let junk: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start((len / 4096 / 2) * 4096)).unwrap();
    f.write_all(&junk).unwrap();
}

#[test]
fn serve_refuses_a_zero_byte_store_and_starts_with_init_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join(DB_FILE_NAME), b"").unwrap();

    let out = serve(&config, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("empty file (0 bytes)"), "{err}");
    assert!(err.contains("--init-store"), "{err}");
    assert_eq!(std::fs::metadata(data.join(DB_FILE_NAME)).unwrap().len(), 0);

    let check = dbfleet(&[
        "store",
        "check",
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(check.status.code(), Some(3), "{}", stderr(&check));
    let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(v["state"], "empty");
    assert_eq!(v["ok"], false);

    // --init-store: it starts, serves, and stops cleanly; the store is then sound.
    let log = dir.path().join("serve.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dbfleet"))
        .args(["serve", "--init-store", "--config"])
        .arg(&config)
        .env(PASSWORD_ENV.0, PASSWORD_ENV.1)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let up = loop {
        if std::net::TcpStream::connect(("127.0.0.1", API_PORT)).is_ok() {
            break true;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(up, "serve --init-store did not come up:\n{text}");
    assert_eq!(status.code(), Some(0), "{text}");
    let out = ok(dbfleet(&[
        "store",
        "check",
        "--config",
        config.to_str().unwrap(),
    ]));
    assert!(out.contains(": ok ("), "{out}");
}

#[tokio::test]
async fn a_corrupted_store_is_refused_by_serve_and_by_store_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    damaged_store(&data).await;

    for extra in [&[][..], &["--init-store"][..]] {
        let out = serve(&config, extra);
        assert_eq!(out.status.code(), Some(3), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("is damaged"), "{err}");
        assert!(err.contains("restore a backup"), "{err}");
    }

    let out = dbfleet(&["store", "check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(": damaged ("), "{text}");
    let out = dbfleet(&[
        "store",
        "check",
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "damaged");
    assert!(!v["findings"].as_array().unwrap().is_empty(), "{v}");

    let dest = dir.path().join("b.sqlite3");
    let out = dbfleet(&[
        "store",
        "backup",
        dest.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!dest.exists());
}

#[tokio::test]
async fn store_backup_copies_a_sound_store_that_check_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data = dir.path().join("data");
    let s = SqliteStore::open(&data).unwrap();
    s.kv_put("recoveries/disabled", &serde_json::json!(true))
        .await
        .unwrap();

    let dest = dir.path().join("backup.sqlite3");
    let out = ok(dbfleet(&[
        "store",
        "backup",
        dest.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]));
    assert!(out.contains("backup written"), "{out}");
    // A second backup to the same file is refused as bad input.
    let again = dbfleet(&[
        "store",
        "backup",
        dest.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));

    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(&dest, restored.join(DB_FILE_NAME)).unwrap();
    let out = ok(dbfleet(&[
        "store",
        "check",
        "--data-dir",
        restored.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "ok");
    let r = SqliteStore::open(&restored).unwrap();
    assert_eq!(
        r.kv_get("recoveries/disabled").await.unwrap(),
        Some(serde_json::json!(true))
    );
}
