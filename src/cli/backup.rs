//! `akbackup backup`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{
    backup::BackupSummary,
    component,
    config::ComponentName,
    job::{self, JobOutcome},
    plan,
    repository::Repository,
    units::human_bytes,
};
use anyhow::Context;

use super::{Globals, exit, open_repo};
use crate::render::{self, Reporter};

/// Back up every enabled component into one backup set.
///
/// The set is one snapshot in the repository with each component under its original absolute
/// path (/opt/altcraft/...). Files unchanged since the last set are not read again. The set is
/// listed only when every component succeeded; otherwise nothing is recorded and the exit code
/// is 1. Free space where the repository lives is checked first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Back up only these components (repeatable), e.g. --only files.control
    #[arg(long, value_name = "COMPONENT")]
    only: Vec<ComponentName>,
    /// Tag the set (repeatable)
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Print the plan (components, sizes, estimated growth, free space) and write nothing
    #[arg(long)]
    dry_run: bool,
    /// Run even when the free-space check fails
    #[arg(long)]
    force: bool,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    if super::explicit_host_scope() == Some(&akbackup_core::repository::HostScope::All) {
        anyhow::bail!(
            "a backup records one host: drop --all-hosts (--host NAME records NAME instead of this host's name)"
        );
    }
    let config = g.load_config()?;
    let components = component::build(&config, &args.only)?;
    let repo = open_repo(&config)?;
    if args.dry_run {
        // A dry run writes nothing: no lock, no hooks, no monitoring.
        let plan = plan::backup_plan(&repo, &components, &args.tag)
            .context("cannot plan the backup")?
            .with_snapshot_readiness(&components);
        render::out(g, &plan, || plan_text(&plan))?;
        return Ok(ExitCode::SUCCESS);
    }
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let open_destination = |section: &akbackup_core::config::RepositoryConfig| {
        Repository::open_section(section).map(super::with_wait)
    };
    // Printed as soon as the set is recorded, before the follow-ups' lines; a failure to
    // print (a closed pipe) is returned once the run is over.
    let printed = std::cell::RefCell::new(Ok(()));
    let on_summary = |summary: &BackupSummary| {
        *printed.borrow_mut() = render::out(g, summary, || summary_text(summary));
    };
    let job = job::BackupJob {
        config: &config,
        repo: &repo,
        components: &components,
        tags: &args.tag,
        force: args.force,
        open_destination: &open_destination,
        on_summary: &on_summary,
    };
    let outcome = job::run_backup(&job, &progress)?;
    printed.into_inner()?;
    match outcome {
        JobOutcome::Ran { ok, .. } => Ok(exit(ok)),
        JobOutcome::Cancelled | JobOutcome::StoreFailed { .. } => Ok(ExitCode::from(1)),
    }
}

fn summary_text(summary: &BackupSummary) -> String {
    let mut s = String::new();
    for c in &summary.components {
        let _ = writeln!(
            s,
            "{:<16} {:>8} files {:>10}  read {:>10}  {:?}",
            c.name,
            c.files,
            human_bytes(c.bytes),
            human_bytes(c.read_bytes),
            c.status
        );
        for w in &c.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        for e in &c.errors {
            let _ = writeln!(s, "  error: {e}");
        }
    }
    match &summary.set {
        Some(id) => {
            let _ = writeln!(
                s,
                "set {} complete: {} in {:.1}s, repository grew by {}",
                &id[..8],
                human_bytes(summary.total_bytes),
                summary.duration_secs,
                human_bytes(summary.added_bytes)
            );
        }
        None => {
            let _ = writeln!(s, "backup FAILED: no set was recorded (see errors above)");
        }
    }
    s
}

fn plan_text(p: &plan::BackupPlan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "plan: back up into {}", p.repository);
    match &p.parent {
        Some(id) => {
            let _ = writeln!(
                s,
                "  parent set {} (unchanged files are not read again)",
                &id[..8]
            );
        }
        None => {
            let _ = writeln!(s, "  first set: every file is read");
        }
    }
    for c in &p.components {
        let _ = writeln!(
            s,
            "  {:<16} {}  {} files, {}, changed since parent {}",
            c.name,
            c.source,
            c.files,
            human_bytes(c.bytes),
            human_bytes(c.changed_bytes)
        );
        if let Some(snap) = &c.snapshot {
            let _ = writeln!(
                s,
                "  {:<16} {}{}",
                "",
                if snap.ok {
                    ""
                } else {
                    "SNAPSHOT CANNOT WORK: "
                },
                snap.detail
            );
        }
    }
    let _ = writeln!(
        s,
        "  estimated repository growth: at most {} (before compression and dedup); free: {}{}",
        human_bytes(p.estimated_growth),
        human_bytes(p.free_bytes),
        if p.enough_space {
            ""
        } else {
            "  NOT ENOUGH (use --force to override)"
        }
    );
    let _ = writeln!(s, "dry run: nothing was written");
    s
}
