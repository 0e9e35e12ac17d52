//! `dbfleet serve` (the daemon, crate `daemon`) and `dbfleet config validate`.

use std::path::PathBuf;

use crate::term::{errln, outln};
use crate::{print_json, CliError};

/// Arguments of `dbfleet serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The config file. The package installs one to edit as /etc/dbfleet/dbfleet.toml, and
    /// the commented example as /usr/share/doc/dbfleet/examples/dbfleet.toml (in the source:
    /// docs/dbfleet.example.toml); `dbfleet sandbox up` writes one for its sandbox.
    #[arg(long, short, env = "DBFLEET_CONFIG")]
    pub config: PathBuf,
    /// Give the schema to a SQLite store file that exists but is empty (0 bytes) or has no
    /// schema. Without it such a file is refused (exit code 3): its operations, fenced marks
    /// and recoveries switch are gone. A missing file is always created (a first start); a
    /// damaged one is always refused.
    #[arg(long)]
    pub init_store: bool,
}

/// Arguments of `dbfleet config validate`.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a config file: syntax, every field, and that every secret can be read. Exit
    /// code 2 when it is not valid.
    Validate {
        /// The config file.
        file: PathBuf,
        /// Print the effective config (secrets left out) as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn load(path: &std::path::Path) -> Result<config::Config, CliError> {
    daemon::load_config(path).map_err(daemon_error)
}

fn daemon_error(e: daemon::DaemonError) -> CliError {
    match e {
        daemon::DaemonError::Config(e) => CliError::usage(e),
        daemon::DaemonError::Store(e) => crate::store_cmd::refused(e),
        daemon::DaemonError::Run(e) => e.into(),
    }
}

/// Run `dbfleet config …`.
pub async fn config(cmd: ConfigCommand) -> Result<(), CliError> {
    match cmd {
        ConfigCommand::Validate { file, json } => {
            let cfg = load(&file)?;
            for w in cfg.permission_warnings() {
                errln!("warning: {w}");
            }
            if json {
                print_json(&cfg.redacted_summary())?;
            } else {
                let instances: usize = cfg.clusters.iter().map(|c| c.instances.len()).sum();
                outln!(
                    "{}: valid ({} clusters, {} instances, API on {})",
                    file.display(),
                    cfg.clusters.len(),
                    instances,
                    cfg.api.listen
                );
            }
            Ok(())
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT (or a SIGHUP with a valid config, which restarts
/// it in place), then shut down in order: stop the API, cancel the probe tasks, flush the
/// store, exit 0.
pub async fn serve(args: ServeArgs) -> Result<(), CliError> {
    warn_permissions(&args.config);
    let options = daemon::RunOptions {
        init_store: args.init_store,
    };
    match daemon::run(&args.config, options)
        .await
        .map_err(daemon_error)?
    {
        daemon::Outcome::Reload => Err(reexec().into()),
        daemon::Outcome::Stopped => {
            outln!("dbfleet serve: stopped");
            Ok(())
        }
    }
}

/// Log a warning for each secret file of the config at `path` that others may read or
/// write. With `strict_permissions = true` the daemon refuses them instead, and a config
/// that does not load is reported by the daemon: neither is logged here.
fn warn_permissions(path: &std::path::Path) {
    let Ok(cfg) = config::Config::load(path) else {
        return;
    };
    if cfg.strict_permissions {
        return;
    }
    for w in cfg.permission_warnings() {
        tracing::warn!(
            field = %w.field,
            path = %w.path.display(),
            mode = %format_args!("{:04o}", w.mode),
            "a secret file is open to others: {}",
            w.problem()
        );
    }
}

/// Replace this process with a fresh `dbfleet serve`, same binary, arguments and
/// environment, so the same PID runs the changed config. Returns only on failure.
fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    outln!("dbfleet serve: restarting to apply the changed config");
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return anyhow::anyhow!("reload: cannot find this program: {e}"),
    };
    let err = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::anyhow!("reload: cannot run {} again: {err}", exe.display())
}
