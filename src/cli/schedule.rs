//! `akbackup schedule`.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use akbackup_core::schedule;
use anyhow::Context;

use super::Globals;
use crate::render;

/// Run the backup every night under systemd: install, show or remove the timer.
///
/// `install` writes akbackup.service (a oneshot `akbackup --config FILE backup`, Nice=10,
/// IOSchedulingClass=idle) and akbackup.timer (daily at --daily, Persistent=true so a night
/// missed while the server was off runs at boot, RandomizedDelaySec=15min) into
/// /etc/systemd/system, then runs `systemctl daemon-reload` and
/// `systemctl enable --now akbackup.timer`. --dry-run prints the units and changes nothing.
///
/// Examples:
///   akbackup schedule install --daily 02:30 --dry-run
///   akbackup schedule install --daily 02:30
///   akbackup schedule status
///   akbackup schedule remove
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Write and enable the service and timer
    Install {
        /// Time of day, HH:MM (local time of the server)
        #[arg(long, default_value = "02:30", value_name = "HH:MM")]
        daily: String,
        /// Print the units, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Write the units here instead of /etc/systemd/system, without calling systemctl
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
    },
    /// Show the timer's next and last run and the last run's result
    Status,
    /// Disable the timer and delete both units
    Remove {
        /// Remove from this directory instead of /etc/systemd/system, without systemctl
        #[arg(long, value_name = "DIR")]
        unit_dir: Option<PathBuf>,
    },
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    match &args.action {
        Action::Install {
            daily,
            dry_run,
            unit_dir,
        } => {
            let daily = schedule::parse_daily(daily)?;
            let config = g.config_path();
            let config = std::fs::canonicalize(&config).with_context(|| {
                format!(
                    "the scheduled run needs the config {}: create it first",
                    config.display()
                )
            })?;
            let binary = std::env::current_exe().context("cannot tell where akbackup is")?;
            let units = schedule::units(&binary, &config, &daily)?;
            if *dry_run {
                render::out(g, &units, || {
                    format!(
                        "# {}\n{}\n# {}\n{}dry run: nothing was written",
                        schedule::SERVICE,
                        units.service,
                        schedule::TIMER,
                        units.timer
                    )
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            let dir = unit_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(schedule::UNIT_DIR));
            let written = schedule::install(&units, &dir, unit_dir.is_none())?;
            render::out(g, &written, || {
                let mut s = String::new();
                for p in &written {
                    let _ = writeln!(s, "wrote {}", p.display());
                }
                let _ = writeln!(s, "backup runs daily at {daily} (plus up to 15 min)");
                s
            })?;
        }
        Action::Status => {
            let props = schedule::status()?;
            let map: std::collections::BTreeMap<_, _> = props.iter().cloned().collect();
            let installed = map
                .get("timer.UnitFileState")
                .is_some_and(|s| !s.is_empty() && s != "not-found");
            if !installed {
                anyhow::bail!(
                    "akbackup.timer is not installed (or systemd does not answer): run `akbackup schedule install`"
                );
            }
            render::out(g, &map, || {
                let mut s = String::new();
                for (k, v) in &props {
                    let _ = writeln!(s, "{k:<32} {v}");
                }
                s
            })?;
            let failed = map.get("service.Result").is_some_and(|r| r != "success");
            return Ok(super::exit(!failed));
        }
        Action::Remove { unit_dir } => {
            let dir = unit_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(schedule::UNIT_DIR));
            let removed = schedule::remove(&dir, unit_dir.is_none())?;
            render::out(g, &removed, || {
                let mut s = String::new();
                for p in &removed {
                    let _ = writeln!(s, "removed {}", p.display());
                }
                if removed.is_empty() {
                    s.push_str("no akbackup units were installed\n");
                }
                s
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
