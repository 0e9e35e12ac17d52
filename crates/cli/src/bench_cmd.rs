//! `dbfleet bench …`: benchmarks that print figures. Speed claims in docs/BENCHMARKS.md
//! come from here, never from timed assertions in tests.

use std::time::{Duration, Instant};

use clap::Subcommand;
use sandbox::{Sandbox, UpOptions};
use serde::Serialize;

use crate::{print_json, CliError};

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time `sandbox up` (make, start, replicate) and `sandbox down` of a fresh sandbox.
    Sandbox {
        /// How many up/down cycles to time.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Number of replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// The primary's port.
        #[arg(long, default_value_t = 23406)]
        base_port: u16,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Figures {
    runs: usize,
    members: usize,
    up_p50_s: f64,
    up_max_s: f64,
    down_p50_s: f64,
    down_max_s: f64,
}

fn p50_max(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let p50 = v.get(v.len() / 2).copied().unwrap_or_default();
    let max = v.last().copied().unwrap_or_default();
    (p50.as_secs_f64(), max.as_secs_f64())
}

/// Run a benchmark.
pub async fn run(cmd: BenchCommand) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Sandbox {
            runs,
            replicas,
            base_port,
            json,
        } => {
            if runs == 0 || runs > 100 {
                return Err(CliError::usage(anyhow::anyhow!("--runs must be 1 to 100")));
            }
            let root = std::env::temp_dir().join(format!("dbfleet-bench-{}", std::process::id()));
            let (mut ups, mut downs) = (Vec::new(), Vec::new());
            for i in 0..runs {
                let name = format!("bench{i}");
                let opts = UpOptions {
                    name: name.clone(),
                    replicas,
                    semi_sync: false,
                    base_port,
                    root: root.clone(),
                };
                let t = Instant::now();
                let result = Sandbox::up(&opts).await;
                ups.push(t.elapsed());
                let t = Instant::now();
                Sandbox::down(&root, &name)?;
                downs.push(t.elapsed());
                result?;
                if !json {
                    eprintln!(
                        "run {}/{runs}: up {:.2}s down {:.2}s",
                        i + 1,
                        ups[i].as_secs_f64(),
                        downs[i].as_secs_f64()
                    );
                }
            }
            let _ = std::fs::remove_dir_all(&root);
            let (up_p50_s, up_max_s) = p50_max(ups);
            let (down_p50_s, down_max_s) = p50_max(downs);
            let f = Figures {
                runs,
                members: replicas + 1,
                up_p50_s,
                up_max_s,
                down_p50_s,
                down_max_s,
            };
            if json {
                print_json(&f)?;
            } else {
                println!(
                    "sandbox of {} members, {} runs: up p50 {:.2}s max {:.2}s; down p50 {:.2}s max {:.2}s",
                    f.members, f.runs, f.up_p50_s, f.up_max_s, f.down_p50_s, f.down_max_s
                );
            }
            Ok(())
        }
    }
}
