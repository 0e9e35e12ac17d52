//! Tidy checks: the two *Boundary* lines of `docs/ARCHITECTURE.md` that can be checked
//! mechanically, read from the workspace's own files.
//!
//! - No crate depends on `cli`: it parses arguments and renders, nothing builds on it.
//! - No SQL string literal outside `probe` in the control plane's crates: every statement
//!   sent to a managed server lives in `probe`. The statements not moved yet are listed in
//!   [`NOT_MOVED_YET`] with their count per file; the count may only go down, and a file
//!   not listed may hold none. (The store's own SQLite, the DRT's load and fault injection,
//!   which act as the application and the chaos tool, the sandbox that sets up the servers
//!   it starts, and the simulator, which plays the server side, are not the control plane
//!   talking to a managed server.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn crates() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn no_crate_depends_on_cli() {
    let mut offenders = Vec::new();
    for dir in crates() {
        if dir.file_name().is_some_and(|n| n == "cli") {
            continue;
        }
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let manifest: toml::Table = text.parse().expect("Cargo.toml parses");
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if manifest
                .get(section)
                .and_then(|d| d.as_table())
                .is_some_and(|d| d.contains_key("cli"))
            {
                offenders.push(format!("{} [{section}]", dir.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "crates that depend on cli: {offenders:?}"
    );
}

/// The control plane's crates whose `src/` may send SQL only through `probe`.
const CONTROL_PLANE: &[&str] = &[
    "alert", "api", "bench", "cli", "config", "daemon", "engine", "metrics", "model", "monitor",
    "server",
];

/// SQL statements still written outside `probe`, per file: to be moved into
/// `probe::commands` (issue 14). A count may only go down, and the list is kept exact.
const NOT_MOVED_YET: &[(&str, usize)] = &[
    ("crates/bench/src/failover.rs", 1),
    ("crates/engine/src/failover.rs", 12),
    ("crates/engine/src/fence_guard.rs", 9),
    ("crates/engine/src/salvage.rs", 10),
    ("crates/engine/src/switchover.rs", 3),
    ("crates/monitor/src/heartbeat.rs", 5),
    ("crates/monitor/src/sentinel.rs", 3),
];

const KEYWORDS: &[&str] = &[
    "SELECT", "SET", "STOP", "START", "CHANGE", "SHOW", "KILL", "FLUSH", "INSERT", "UPDATE",
    "DELETE", "CREATE", "DROP", "ALTER", "GRANT", "INSTALL", "RESET", "PURGE", "REPLACE", "DO",
    "BEGIN", "COMMIT", "UNLOCK", "LOCK",
];

/// Whether a string literal's text reads as a SQL statement: a keyword and a space, then
/// not prose. Prose ("COMMIT statements (Com_commit)") goes on with a lowercase word and
/// has no other uppercase keyword, `@@`, `=` or `{}` placeholder ("SELECT id FROM t" has).
fn is_sql(text: &str) -> bool {
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return false;
    };
    if !KEYWORDS.contains(&first) || !text[first.len()..].starts_with(' ') {
        return false;
    }
    let rest: Vec<&str> = words.collect();
    let lowercase_next = rest
        .first()
        .is_some_and(|w| w.chars().all(|c| c.is_ascii_lowercase()));
    let sql_marks = rest.iter().any(|w| {
        (w.len() >= 2 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            || w.contains("@@")
            || w.contains('=')
            || w.contains("{}")
    });
    !lowercase_next || sql_marks
}

/// The SQL-looking string literals in one Rust source (the text after each `"`).
fn sql_literals(src: &str) -> usize {
    // Escaped quotes inside a literal do not end it.
    src.replace("\\\"", "")
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|lit| is_sql(lit))
        .count()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_sql_literal_outside_probe() {
    let root = root();
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for name in CONTROL_PLANE {
        let mut files = Vec::new();
        rust_files(&root.join("crates").join(name).join("src"), &mut files);
        for f in files {
            let n = sql_literals(&std::fs::read_to_string(&f).expect("source"));
            if n > 0 {
                let rel = f.strip_prefix(&root).expect("under root");
                found.insert(rel.display().to_string(), n);
            }
        }
    }
    let allowed: BTreeMap<&str, usize> = NOT_MOVED_YET.iter().copied().collect();
    let mut errors = Vec::new();
    for (file, n) in &found {
        match allowed.get(file.as_str()) {
            None => errors.push(format!(
                "{file}: {n} SQL literal(s); statements to managed servers belong in probe"
            )),
            Some(&max) if *n > max => errors.push(format!(
                "{file}: {n} SQL literal(s), more than the {max} not moved yet"
            )),
            Some(&max) if *n < max => errors.push(format!(
                "{file}: {n} SQL literal(s), fewer than the {max} listed: lower NOT_MOVED_YET"
            )),
            Some(_) => {}
        }
    }
    for (file, max) in &allowed {
        if !found.contains_key(*file) {
            errors.push(format!(
                "{file}: no SQL literal left, {max} listed: remove it from NOT_MOVED_YET"
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_sql_heuristic_tells_statements_from_prose() {
    assert!(is_sql("SET GLOBAL read_only=ON"));
    assert!(is_sql("SELECT id FROM t"));
    assert!(is_sql("KILL {}"));
    assert!(is_sql("STOP SLAVE"));
    assert!(!is_sql("COMMIT statements (Com_commit)"));
    assert!(!is_sql("SETTINGS"));
    assert!(!is_sql("select lowercase prose"));
    assert_eq!(
        sql_literals(r#"let a = "STOP SLAVE"; let b = "hello"; let c = "SHOW SLAVE STATUS";"#),
        2
    );
}
