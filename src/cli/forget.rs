//! `akbackup forget`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{backup::human_bytes, forget, repository::engine::Retention};

use super::{Globals, open_repo};
use crate::render::{self, Reporter};

/// Drop old backup sets by a retention policy; --prune reclaims their space.
///
/// Sets are kept or dropped whole, across all components. Example for a nightly job:
/// akbackup forget --keep-daily 7 --keep-weekly 4 --keep-monthly 6 --prune
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the N most recent sets
    #[arg(long, value_name = "N")]
    keep_last: Option<i32>,
    /// Keep the last set of each of the N most recent days
    #[arg(long, value_name = "N")]
    keep_daily: Option<i32>,
    /// Keep the last set of each of the N most recent weeks
    #[arg(long, value_name = "N")]
    keep_weekly: Option<i32>,
    /// Keep the last set of each of the N most recent months
    #[arg(long, value_name = "N")]
    keep_monthly: Option<i32>,
    /// Keep the last set of each of the N most recent years
    #[arg(long, value_name = "N")]
    keep_yearly: Option<i32>,
    /// Also remove data no remaining set needs
    #[arg(long)]
    prune: bool,
    /// Show what would go and why, change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let rules = Retention {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
    };
    if [
        rules.keep_last,
        rules.keep_daily,
        rules.keep_weekly,
        rules.keep_monthly,
        rules.keep_yearly,
    ]
    .iter()
    .all(Option::is_none)
    {
        anyhow::bail!("give at least one --keep-* rule, e.g. --keep-daily 7");
    }
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let summary = forget::run(&repo, &rules, args.prune, args.dry_run, &progress)?;
    render::out(g, &summary, || {
        let mut s = String::new();
        for d in &summary.sets {
            let _ = writeln!(
                s,
                "{} {}  {}",
                &d.id[..8],
                render::time(d.time),
                if d.keep {
                    format!("keep ({})", d.reasons.join(", "))
                } else {
                    "remove".to_string()
                }
            );
        }
        if let Some(p) = &summary.prune {
            let _ = writeln!(
                s,
                "prune: {} pack(s) removed, {} repacked, {} freed",
                p.packs_removed,
                p.packs_repacked,
                human_bytes(p.bytes_freed)
            );
        }
        let _ = writeln!(
            s,
            "repository {} -> {}{}",
            human_bytes(summary.size_before),
            human_bytes(summary.size_after),
            if summary.dry_run {
                " (dry run: nothing was changed)"
            } else {
                ""
            }
        );
        s
    })?;
    Ok(ExitCode::SUCCESS)
}
