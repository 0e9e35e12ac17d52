//! `dbfleet doctor`: the programs a running dbfleet needs, found or named with their package.

mod common;

use common::{dbfleet, dbfleet_env};

fn checks(stdout: &[u8]) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(stdout).expect("doctor --json is JSON");
    v["checks"].as_array().expect("checks").clone()
}

#[test]
fn doctor_finds_what_the_install_step_installed() {
    // The suite runs after scripts/install-deps.sh, which checks the same list.
    let out = dbfleet(&["doctor", "--json"]);
    let list = checks(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed: {}\n{list:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["mariadbd", "mariadb-install-db", "iptables"] {
        let c = list
            .iter()
            .find(|c| c["what"] == name)
            .unwrap_or_else(|| panic!("{name} is checked"));
        let path = c["found"].as_str().expect("found");
        assert!(path.ends_with(name), "{name} found at {path}");
    }
    // Build-only needs are left out unless --all asks for them.
    assert!(!list.iter().any(|c| c["what"] == "protoc"));
    let all = checks(&dbfleet(&["doctor", "--all", "--json"]).stdout);
    assert!(all.iter().any(|c| c["what"] == "protoc"));
}

#[test]
fn doctor_names_the_package_of_each_missing_program_and_fails() {
    let empty = tempfile::tempdir().unwrap();
    let out = dbfleet_env(
        &["doctor"],
        &[(
            "DBFLEET_MARIADB_BINDIR",
            &empty.path().display().to_string(),
        )],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "missing programs fail the doctor"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.contains(" mariadbd "))
        .unwrap_or_else(|| panic!("a line for mariadbd:\n{stdout}"));
    assert!(
        line.starts_with("MISSING") && line.contains("install the Debian package mariadb-server"),
        "{line}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("iptables")),
        "{stdout}"
    );
    assert!(
        stderr.contains("apt-get install --no-install-recommends mariadb-server")
            && stderr.contains("mariadb-backup"),
        "{stderr}"
    );
}
