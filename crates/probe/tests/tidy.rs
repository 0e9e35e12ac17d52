//! Tidy checks: the two *Boundary* lines of `docs/ARCHITECTURE.md` that can be checked
//! mechanically, read from the workspace's own files.
//!
//! - No crate depends on `cli`: it parses arguments and renders, nothing builds on it.
//! - No SQL statement as a string literal in any crate's `src/` but `probe`'s: every
//!   statement sent to a managed server lives in `probe::commands`. The simulator
//!   (`crates/sim`) plays the server side and parses SQL; test modules (`#[cfg(test)]` to
//!   the end of a file) set up their own servers. The few other places that write SQL
//!   and are not the control plane talking to a managed server are in [`ALLOWED`], each
//!   with its reason; an entry that no longer holds any is an error, so the list stays
//!   exact.

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
        let mut sections: Vec<&toml::Table> = Vec::new();
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(t) = manifest.get(section).and_then(|d| d.as_table()) {
                sections.push(t);
            }
        }
        // Target-specific dependencies too (`[target.'cfg(unix)'.dependencies]`).
        if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
            for t in targets.values().filter_map(|t| t.as_table()) {
                for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
                    if let Some(t) = t.get(section).and_then(|d| d.as_table()) {
                        sections.push(t);
                    }
                }
            }
        }
        if sections.iter().any(|t| t.contains_key("cli")) {
            offenders.push(dir.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "crates that depend on cli: {offenders:?}"
    );
}

/// The crates whose `src/` is not scanned: `probe` holds the statements, the simulator
/// parses them.
const NOT_SCANNED: &[&str] = &["probe", "sim"];

/// Paths (a crate's directory or one file, from the workspace root) that may write SQL,
/// and why.
const ALLOWED: &[(&str, &str)] = &[
    (
        "crates/store",
        "the store's own SQLite database, not a managed server",
    ),
    (
        "crates/sandbox",
        "bootstraps the servers it starts (users, schema, replication) before any control plane runs",
    ),
    (
        "crates/drt",
        "the DRT's load generator, verifier and fault injection act as the application and the chaos tool",
    ),
    (
        "crates/bench/src/failover.rs",
        "sets lossless semi-sync on the bench's own sandbox before the bench starts",
    ),
];

const KEYWORDS: &[&str] = &[
    "SELECT", "SET", "STOP", "START", "CHANGE", "SHOW", "KILL", "FLUSH", "INSERT", "UPDATE",
    "DELETE", "CREATE", "DROP", "ALTER", "GRANT", "INSTALL", "RESET", "PURGE", "REPLACE", "DO",
    "BEGIN", "COMMIT", "UNLOCK", "LOCK",
];

/// Whether a string literal's text reads as a SQL statement: an uppercase keyword and a
/// space, then not prose. Prose ("COMMIT statements (Com_commit)") goes on with a
/// lowercase word and has no other uppercase keyword, `@@`, `=` or `{}` placeholder
/// ("SELECT id FROM t" has).
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

/// The part of a source that is not a test module: up to its first `#[cfg(test)]` line.
fn non_test(src: &str) -> &str {
    let mut at = 0;
    for line in src.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" {
            return &src[..at];
        }
        at += line.len();
    }
    src
}

/// The SQL-looking string literals in one Rust source (the text after each `"`).
fn sql_literals(src: &str) -> Vec<String> {
    // Escaped quotes inside a literal, and the quote character, do not open or end one.
    src.replace("\\\"", "")
        .replace("'\"'", "")
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|lit| is_sql(lit))
        .map(|lit| lit.lines().next().unwrap_or_default().to_string())
        .collect()
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
    let mut errors = Vec::new();
    let mut used: BTreeMap<&str, usize> = BTreeMap::new();
    for dir in crates() {
        let name = dir.file_name().expect("crate dir").to_string_lossy();
        if NOT_SCANNED.contains(&name.as_ref()) {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        files.sort();
        for f in files {
            let src = std::fs::read_to_string(&f).expect("source");
            let found = sql_literals(non_test(&src));
            if found.is_empty() {
                continue;
            }
            let rel = f
                .strip_prefix(&root)
                .expect("under root")
                .display()
                .to_string();
            match ALLOWED
                .iter()
                .find(|(p, _)| rel == *p || rel.starts_with(&format!("{p}/")))
            {
                Some((p, _)) => *used.entry(p).or_default() += found.len(),
                None => errors.push(format!(
                    "{rel}: SQL belongs in probe::commands: {}",
                    found.join(" | ")
                )),
            }
        }
    }
    for (p, why) in ALLOWED {
        if !used.contains_key(p) {
            errors.push(format!(
                "{p} ({why}) holds no SQL literal any more: remove it from ALLOWED"
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
        sql_literals(
            r#"let a = "STOP SLAVE"; let q = '"'; let b = "hello"; let c = "SHOW SLAVE STATUS";"#
        ),
        vec!["STOP SLAVE".to_string(), "SHOW SLAVE STATUS".to_string()]
    );
    let src = "const A: &str = \"STOP SLAVE\";\n#[cfg(test)]\nmod tests { const B: &str = \"START SLAVE\"; }\n";
    assert_eq!(sql_literals(non_test(src)), vec!["STOP SLAVE".to_string()]);
}
