//! `dbfleet doctor`: checks that the programs a running dbfleet needs are installed, from the
//! same list (`scripts/deps.list`) that `scripts/install-deps.sh` installs and checks.

use std::path::PathBuf;

use serde::Serialize;

use crate::term::out;
use crate::{print_json, CliError};

/// The one list of what the build, demo, tests and a running dbfleet need.
const DEPS_LIST: &str = include_str!("../../../scripts/deps.list");

/// Arguments of `dbfleet doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Check everything the list names (the build's, demo's, tests' and benches' needs too),
    /// not only what a running dbfleet uses.
    #[arg(long)]
    pub all: bool,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One line of the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dep {
    /// A program name, or an absolute file path.
    pub what: String,
    /// The Debian package that provides it; `None` when apt cannot install it.
    pub package: Option<String>,
    /// Who needs it: build, demo, test, bench, run.
    pub needed_for: Vec<String>,
    pub purpose: String,
}

/// A line of the list that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("deps.list line {line}: {reason}")]
pub struct ListError {
    line: usize,
    reason: &'static str,
}

/// Parse the list: `what package for purpose...`, `#` comments and blank lines skipped.
pub fn parse_list(text: &str) -> Result<Vec<Dep>, ListError> {
    let mut deps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| ListError {
            line: i + 1,
            reason,
        };
        let mut words = line.split_whitespace();
        let what = words.next().ok_or(err("no program or file"))?;
        let package = words.next().ok_or(err("no package column"))?;
        let needed = words.next().ok_or(err("no `for` column"))?;
        let purpose = words.collect::<Vec<_>>().join(" ");
        if purpose.is_empty() {
            return Err(err("no purpose"));
        }
        let needed_for: Vec<String> = needed.split(',').map(str::to_string).collect();
        if needed_for
            .iter()
            .any(|n| !["build", "demo", "test", "bench", "run"].contains(&n.as_str()))
        {
            return Err(err("`for` takes build, demo, test, bench, run"));
        }
        deps.push(Dep {
            what: what.to_string(),
            package: (package != "-").then(|| package.to_string()),
            needed_for,
            purpose,
        });
    }
    Ok(deps)
}

/// Where `what` is: an absolute path if it exists; a MariaDB program where the sandbox would
/// run it from (`$DBFLEET_MARIADB_BINDIR` is honoured); any other program in `PATH` and sbin.
fn find(what: &str) -> Option<PathBuf> {
    if what.starts_with('/') {
        let p = PathBuf::from(what);
        return p.exists().then_some(p);
    }
    if what.starts_with("mariadb") {
        sandbox::locate(what)
    } else {
        sandbox::locate_in_path(what)
    }
}

#[derive(Serialize)]
struct Check {
    #[serde(flatten)]
    dep: Dep,
    /// Where it was found; `null` when missing.
    found: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    ok: bool,
    checks: Vec<Check>,
    /// The packages that would install what is missing.
    install: Vec<String>,
}

/// Run `dbfleet doctor`. Exit code 1 when anything checked is missing.
pub async fn run(args: DoctorArgs) -> Result<(), CliError> {
    let deps = parse_list(DEPS_LIST)?;
    let checks: Vec<Check> = deps
        .into_iter()
        .filter(|d| args.all || d.needed_for.iter().any(|n| n == "run"))
        .map(|dep| Check {
            found: find(&dep.what),
            dep,
        })
        .collect();
    let mut install: Vec<String> = Vec::new();
    for c in checks.iter().filter(|c| c.found.is_none()) {
        if let Some(p) = &c.dep.package {
            if !install.contains(p) {
                install.push(p.clone());
            }
        }
    }
    let missing = checks.iter().filter(|c| c.found.is_none()).count();
    let report = Report {
        ok: missing == 0,
        checks,
        install,
    };
    if args.json {
        print_json(&report)?;
    } else {
        out!("{}", render(&report));
    }
    if missing == 0 {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{missing} missing{}",
            if report.install.is_empty() {
                String::new()
            } else {
                format!(
                    ": apt-get install --no-install-recommends {}",
                    report.install.join(" ")
                )
            }
        )
        .into())
    }
}

fn render(r: &Report) -> String {
    let width = r.checks.iter().map(|c| c.dep.what.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in &r.checks {
        let (state, place) = match (&c.found, &c.dep.package) {
            (Some(p), _) => ("ok     ", p.display().to_string()),
            (None, Some(pkg)) => ("MISSING", format!("install the Debian package {pkg}")),
            (None, None) => ("MISSING", "apt cannot install it".to_string()),
        };
        out.push_str(&format!(
            "{state}  {:width$}  {place}  ({}: {})\n",
            c.dep.what,
            c.dep.needed_for.join(","),
            c.dep.purpose
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_deps_spells_out_the_packages_of_the_list() {
        let script = include_str!("../../../scripts/install-deps.sh");
        let line = script
            .lines()
            .find_map(|l| l.strip_prefix("# packages: "))
            .expect("install-deps.sh has a `# packages:` line");
        let spelled: std::collections::BTreeSet<&str> = line.split_whitespace().collect();
        let deps = parse_list(DEPS_LIST).expect("scripts/deps.list parses");
        let listed: std::collections::BTreeSet<&str> =
            deps.iter().filter_map(|d| d.package.as_deref()).collect();
        assert_eq!(
            spelled, listed,
            "the `# packages:` line of scripts/install-deps.sh must name exactly the packages of scripts/deps.list"
        );
    }

    #[test]
    fn the_embedded_list_parses_and_names_a_package_for_what_dbfleet_runs() {
        let deps = parse_list(DEPS_LIST).expect("scripts/deps.list parses");
        let run: Vec<&Dep> = deps
            .iter()
            .filter(|d| d.needed_for.iter().any(|n| n == "run"))
            .collect();
        for name in [
            "mariadbd",
            "mariadb-install-db",
            "iptables",
            "mariadb-backup",
        ] {
            let d = run
                .iter()
                .find(|d| d.what == name)
                .unwrap_or_else(|| panic!("{name} is not marked `run` in deps.list"));
            assert!(d.package.is_some(), "{name} has no package");
        }
        assert!(
            deps.iter()
                .any(|d| d.what.ends_with("google/protobuf/descriptor.proto")
                    && d.package.as_deref() == Some("libprotobuf-dev")),
            "protoc's include files are checked"
        );
    }

    #[test]
    fn a_bad_line_is_an_error_that_names_it() {
        let e = parse_list("# c\n\nmariadbd mariadb-server\n").unwrap_err();
        assert_eq!(e.to_string(), "deps.list line 3: no `for` column");
        let e = parse_list("x - sometimes purpose\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let ok = parse_list("x - build,run the purpose here\n").unwrap();
        assert_eq!(ok[0].package, None);
        assert_eq!(ok[0].needed_for, vec!["build", "run"]);
        assert_eq!(ok[0].purpose, "the purpose here");
    }
}
