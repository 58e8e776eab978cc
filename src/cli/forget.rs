//! `akbackup forget`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{forget, repository::Retention, units::human_bytes};

use super::{Globals, open_repo};
use crate::render::{self, Reporter};

/// Drop old backup sets by a retention policy; --prune reclaims their space.
///
/// Sets are kept or dropped whole, across all components. Example for a nightly job:
/// akbackup forget --keep-daily 7 --keep-weekly 4 --keep-monthly 6 --prune
///
/// Without --keep-* options the [retention] section of the config applies (keep-last,
/// keep-daily, keep-weekly, keep-monthly, keep-yearly, keep-within = "30d").
///
/// Several servers may share one repository: forget acts on this host's sets (--host NAME
/// for another's, --all-hosts for everyone's, each host's sets kept by the rules on their
/// own). It takes the repository's exclusive lock: it waits for (--wait) or refuses while a
/// backup, restore or copy of any host, or a restic client, holds a lock.
///
/// Prune deletes in two phases: data that became unused is marked, and deleted by a later
/// prune once it has been marked for --delete-after (23h by default, [retention]
/// delete-after), so a backup that started elsewhere before the prune keeps its data.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
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
    /// Keep every set less than this age (12h, 7d, 2w, 6m, 1y) older than the newest set
    /// (as restic counts it)
    #[arg(long, value_name = "AGE")]
    keep_within: Option<String>,
    /// Apply the rules as if it were this moment (RFC 3339), for checking a policy
    #[arg(long, value_name = "TIME", hide = true)]
    now: Option<jiff::Timestamp>,
    /// Also remove data no remaining set needs
    #[arg(long)]
    prune: bool,
    /// With --prune: how long data found unused stays before a prune deletes it (12h, 1d;
    /// 0h deletes at once, safe only when every writer takes the repository's locks)
    #[arg(long, value_name = "AGE", requires = "prune")]
    delete_after: Option<String>,
    /// Show what would go and why, change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let keep_within = args
        .keep_within
        .as_deref()
        .map(akbackup_core::config::parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--keep-within: {e}"))?;
    let mut rules = Retention {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within,
        now: args.now,
    };
    if !forget::has_rules(&rules) {
        rules = forget::rules_from_config(&config.retention)?;
        rules.now = args.now;
    }
    if !forget::has_rules(&rules) {
        anyhow::bail!(
            "give at least one --keep-* rule, e.g. --keep-daily 7, or set them in [retention]"
        );
    }
    let prune = if args.prune {
        Some(match &args.delete_after {
            Some(age) => akbackup_core::config::parse_duration(age)
                .map_err(|e| anyhow::anyhow!("--delete-after: {e}"))?,
            None => forget::delete_after_from_config(&config.retention)?,
        })
    } else {
        None
    };
    let repo = open_repo(&config)?;
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let summary = forget::run(&repo, &rules, prune, args.dry_run, &progress)?;
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
            if summary.dry_run {
                let _ = writeln!(
                    s,
                    "prune would mark {} pack(s) unused, delete {} marked earlier, repack {}",
                    p.packs_marked, p.packs_deleted, p.packs_repacked
                );
            } else if p.delete_after_seconds == 0 {
                let _ = writeln!(
                    s,
                    "prune: {} pack(s) removed from the storage ({} freed), {} repacked; \
                     no delay: unused data was deleted at once",
                    p.packs_removed,
                    human_bytes(p.bytes_freed),
                    p.packs_repacked
                );
            } else {
                let _ = writeln!(
                    s,
                    "prune: {} pack(s) removed from the storage ({} freed), {} repacked; \
                     {} newly unused and {} waiting pack(s) are deleted by a prune {} after \
                     they were marked",
                    p.packs_removed,
                    human_bytes(p.bytes_freed),
                    p.packs_repacked,
                    p.packs_marked,
                    p.packs_kept_marked,
                    render::age(p.delete_after_seconds)
                );
            }
        }
        let _ = writeln!(
            s,
            "repository {} -> {}{}",
            summary
                .size_before
                .map_or_else(|| "?".to_string(), human_bytes),
            summary
                .size_after
                .map_or_else(|| "?".to_string(), human_bytes),
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
