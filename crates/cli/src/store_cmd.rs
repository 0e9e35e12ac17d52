//! `dbfleet store check` and `dbfleet store backup`: the SQLite metadata store, looked at or
//! copied beside a running daemon (WAL mode lets them read while it writes). Exit code 3
//! when the store is refused: damaged, unexpectedly empty, or of a newer dbfleet.

use std::path::{Path, PathBuf};

use store::{CheckReport, SqliteStore, StoreError};

use crate::{print_json, CliError};

/// The exit code of a refused store, for `serve` and `store check` alike.
pub const EXIT_STORE_REFUSED: u8 = 3;

/// A [`CliError`] with exit code 3: the store is damaged, unexpectedly empty or too new.
pub fn refused(e: impl Into<anyhow::Error>) -> CliError {
    CliError {
        code: EXIT_STORE_REFUSED,
        error: e.into(),
    }
}

/// Which store: the one a config names, or a data directory.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct StoreAt {
    /// The config file whose `[store] data_dir` holds the store.
    #[arg(long, short, env = "DBFLEET_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory that holds `dbfleet.sqlite3`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// `dbfleet store …`.
#[derive(clap::Subcommand, Debug)]
pub enum StoreCommand {
    /// Run SQLite's `PRAGMA quick_check` on the store and say whether it is sound, missing,
    /// empty, without schema, damaged or of a newer dbfleet. Changes no data, and is safe
    /// while the daemon runs (beside a store no daemon has open, SQLite may leave empty
    /// `-wal` and `-shm` files). Exit code 3 when it is not sound.
    Check {
        #[command(flatten)]
        at: StoreAt,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy the store to FILE (mode 0600) as one consistent snapshot while the daemon may
    /// run (`VACUUM INTO`), check the copy with quick_check, and only then give it its name.
    /// FILE must not exist. To restore: stop the daemon, move `dbfleet.sqlite3` and its
    /// `-wal` and `-shm` aside, copy FILE to `DATA_DIR/dbfleet.sqlite3`, start it.
    Backup {
        /// The new file.
        file: PathBuf,
        #[command(flatten)]
        at: StoreAt,
        /// Print the copy's check as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run `dbfleet store …`.
pub async fn run(cmd: StoreCommand) -> Result<(), CliError> {
    match cmd {
        StoreCommand::Check { at, json } => {
            let path = store_file(&at)?;
            let report = tokio::task::spawn_blocking(move || SqliteStore::check_file(&path))
                .await
                .map_err(anyhow::Error::new)??;
            if json {
                print_json(&report_json(&report))?;
            } else {
                print_report(&report);
            }
            match report.refusal() {
                None => Ok(()),
                Some(e) => Err(refused(e)),
            }
        }
        StoreCommand::Backup { file, at, json } => {
            let path = store_file(&at)?;
            let dest = file.clone();
            let report =
                tokio::task::spawn_blocking(move || SqliteStore::backup_file(&path, &dest))
                    .await
                    .map_err(anyhow::Error::new)?
                    .map_err(|e| match e {
                        e if e.is_refused_store() => refused(e),
                        e @ StoreError::InvalidArgument(_) => CliError::usage(e),
                        e => e.into(),
                    })?;
            if json {
                print_json(&report_json(&report))?;
            } else {
                println!(
                    "backup written: {} ({} bytes, schema version {}, quick_check ok)",
                    file.display(),
                    report.size_bytes,
                    report.schema_version.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// The store file `at` names.
fn store_file(at: &StoreAt) -> Result<PathBuf, CliError> {
    let dir = match (&at.config, &at.data_dir) {
        (_, Some(dir)) => dir.clone(),
        (Some(config), None) => {
            let cfg = config::Config::load(config).map_err(CliError::usage)?;
            if cfg.store.backend != config::StoreBackend::Sqlite {
                return Err(CliError::usage(anyhow::anyhow!(
                    "{} keeps its store in etcd; `dbfleet store` works on the SQLite store \
                     (for etcd, use `etcdctl snapshot save` and `etcdctl check`)",
                    config.display()
                )));
            }
            cfg.store.data_dir
        }
        (None, None) => {
            return Err(CliError::usage(anyhow::anyhow!(
                "give --config or --data-dir"
            )))
        }
    };
    Ok(dir.join(store::DB_FILE_NAME))
}

fn report_json(r: &CheckReport) -> serde_json::Value {
    serde_json::json!({
        "path": r.path.display().to_string(),
        "state": r.state.as_str(),
        "ok": r.is_sound(),
        "size_bytes": r.size_bytes,
        "schema_version": r.schema_version,
        "findings": r.findings,
    })
}

fn print_report(r: &CheckReport) {
    let path: &Path = &r.path;
    match r.schema_version {
        Some(v) => println!(
            "{}: {} ({} bytes, schema version {v})",
            path.display(),
            r.state.as_str(),
            r.size_bytes
        ),
        None => println!(
            "{}: {} ({} bytes)",
            path.display(),
            r.state.as_str(),
            r.size_bytes
        ),
    }
    for f in &r.findings {
        println!("  {}", f.escape_debug());
    }
}
