//! `dbfleet completions` and `dbfleet man`: shell completions and man pages, made from the
//! same clap definition as `--help`, so they cannot drift from it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

use crate::CliError;

/// Arguments of `dbfleet completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Arguments of `dbfleet man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write every page into this directory (made if missing) and list them; without it,
    /// print dbfleet(1) on stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Print the completion script of `args.shell`.
pub fn completions<C: CommandFactory>(args: CompletionsArgs) -> Result<(), CliError> {
    let mut cmd = C::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "dbfleet", &mut out);
    out.flush().context("write the completion script")?;
    Ok(())
}

/// Write the man pages.
pub fn man<C: CommandFactory>(args: ManArgs) -> Result<(), CliError> {
    let cmd = C::command();
    match args.out {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("write the man page")?;
            out.flush().context("write the man page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("make {}", dir.display()))?;
            let mut written = Vec::new();
            write_pages(&cmd, "dbfleet", &dir, &mut written)?;
            for p in written {
                println!("{}", p.display());
            }
        }
    }
    Ok(())
}

/// Write `cmd`'s page as `NAME.1`, then each visible subcommand's as `NAME-SUB.1`.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &std::path::Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let cmd = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .with_context(|| format!("render {name}(1)"))?;
    std::fs::write(&path, buf).with_context(|| format!("write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
