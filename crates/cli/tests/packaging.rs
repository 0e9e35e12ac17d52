//! What the package installs and how the service runs: the systemd unit passes
//! `systemd-analyze verify` and keeps the hardening it promises, the package's metadata names
//! files that exist, the man pages and completions cover every command, and `--log-format
//! json` writes one JSON object per line with the fields at the top level (ports 27510..27511).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dbfleet;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn unit_text() -> String {
    std::fs::read_to_string(root().join("packaging/debian/dbfleet.service")).unwrap()
}

fn systemd_analyze() -> PathBuf {
    for d in ["/usr/bin", "/bin", "/usr/sbin"] {
        let p = Path::new(d).join("systemd-analyze");
        if p.exists() {
            return p;
        }
    }
    panic!("systemd-analyze is missing: scripts/install-deps.sh installs the systemd package")
}

#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    let unit = unit_text();
    for line in [
        "User=dbfleet",
        "StateDirectory=dbfleet",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/bin/dbfleet serve --config /etc/dbfleet/dbfleet.toml",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "the unit lacks {line:?}"
        );
    }
    // verify needs the ExecStart binary to exist: the one this test runs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dbfleet.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/dbfleet", env!("CARGO_BIN_EXE_dbfleet")),
    )
    .unwrap();
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // It exits 0 on a value it ignores: any word from it is a defect of the unit.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");

    // And it does fail on a unit that is wrong, so the check above can fail.
    std::fs::write(
        &path,
        unit.replace("/usr/bin/dbfleet", "/nonexistent/dbfleet"),
    )
    .unwrap();
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // The command line it runs parses.
    let help = dbfleet(&["serve", "--config", "/etc/dbfleet/dbfleet.toml", "--help"]);
    assert!(help.status.success());
}

#[test]
fn the_package_metadata_names_files_that_exist() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap()).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(deb["name"].as_str(), Some("dbfleet"));
    let scripts = crate_dir.join(deb["maintainer-scripts"].as_str().unwrap());
    assert!(scripts.join("dbfleet.service").exists());
    let postinst = scripts.join("postinst");
    let mode = std::os::unix::fs::PermissionsExt::mode(&postinst.metadata().unwrap().permissions());
    assert!(mode & 0o111 != 0, "postinst is not executable");
    assert!(std::fs::read_to_string(&postinst)
        .unwrap()
        .contains("adduser --system"));

    let assets = deb["assets"].as_array().unwrap();
    let dests: Vec<&str> = assets.iter().map(|a| a[1].as_str().unwrap()).collect();
    for want in [
        "usr/bin/",
        "etc/dbfleet/dbfleet.toml",
        "usr/share/doc/dbfleet/",
        "usr/share/man/man1/",
    ] {
        assert!(dests.contains(&want), "no asset installed to {want}");
    }
    for conf in deb["conf-files"].as_array().unwrap() {
        let conf = conf.as_str().unwrap().trim_start_matches('/');
        assert!(dests.contains(&conf), "conffile {conf} is not installed");
    }
    // Every source in the tree exists; those under target/ are built by scripts/package.sh.
    for a in assets {
        let src = a[0].as_str().unwrap();
        if src.starts_with("target/") {
            continue;
        }
        let path = crate_dir.join(src);
        match path.file_name().and_then(|n| n.to_str()) {
            Some(name) if name.starts_with('*') => {
                let ext = name.trim_start_matches('*');
                let dir = path.parent().unwrap();
                let n = std::fs::read_dir(dir)
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .ends_with(ext)
                    })
                    .count();
                assert!(n > 0, "no file matches {src}");
            }
            _ => assert!(path.exists(), "asset {src} is missing"),
        }
    }
}

#[test]
fn man_pages_and_completions_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dbfleet(&["man", "--out", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let top = dbfleet(&["--help"]);
    let help = String::from_utf8_lossy(&top.stdout).to_string();
    // Each command `dbfleet --help` lists has its page, and the page is roff.
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // A command's line; wrapped description lines are indented further.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() > 10, "{help}");
    for c in &commands {
        let page = dir.path().join(format!("dbfleet-{c}.1"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".TH"), "{} is not a man page", page.display());
    }
    assert!(dir.path().join("dbfleet-sandbox-up.1").exists());

    for shell in ["bash", "zsh", "fish"] {
        let out = dbfleet(&["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for c in ["serve", "failover", "switchover", "sandbox"] {
            assert!(text.contains(c), "{shell} completion lacks {c}");
        }
    }
    let bad = dbfleet(&["completions", "cmd.exe"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// A daemon, SIGTERMed then killed by PID on drop.
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_fields_at_the_top() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dbfleet.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\ndata_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:27510\"\n\
             [credentials.admin]\nuser = \"dbfleet\"\npassword_env = \"DBFLEET_TEST_JSONLOG_PASSWORD\"\n\
             [[cluster]]\nname = \"jsonlog\"\ncredentials = \"admin\"\n\
             [[cluster.instance]]\naddr = \"127.0.0.1:27511\"\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dbfleet"))
        .args(["--log-format", "json", "--log", "info", "serve", "--config"])
        .arg(&cfg)
        .env("DBFLEET_TEST_JSONLOG_PASSWORD", "not-a-real-secret")
        .env_remove("DBFLEET_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut serve = Serve(child);
    let stderr = serve.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Nothing listens on the instance: the daemon names the problem within a few rounds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    let problem = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no `problem opened` log line: {lines:#?}"));
        if line.starts_with("dbfleet serve:") {
            // The start-up banner is for a human on a terminal, not a log line.
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for key in ["timestamp", "level", "message", "target"] {
            assert!(v.get(key).is_some(), "no {key}: {line}");
        }
        lines.push(line);
        if v["message"] == "problem opened" {
            break v;
        }
    };
    assert_eq!(problem["cluster"], "jsonlog", "{problem}");
    assert!(problem["problem"].is_string(), "{problem}");
    drop(serve);
    assert!(
        !lines.iter().any(|l| l.contains("not-a-real-secret")),
        "the password reached the log"
    );
}
