//! `akbackup backup`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{
    backup,
    backup_set::Status,
    component,
    config::{ComponentName, Config, WebhookOn},
    hooks, monitoring, plan,
    repository::{RepoError, Repository},
    units::human_bytes,
};
use anyhow::Context;

use super::{Globals, exit, open_repo};
use crate::render::{self, Level, Reporter};

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
    let started = jiff::Timestamp::now();
    // A run that fails before it stores anything still tells monitoring it failed.
    let failed_early = |e: anyhow::Error| {
        if !args.dry_run {
            if let Some(path) = &config.monitoring.textfile {
                write_failure_metrics(path, &repo, started);
            }
            notify(
                &config,
                "backup",
                failure_body(&repo, started, &format!("{e:#}")),
                2,
            );
        }
        e
    };
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    // The lock comes first (a dry run writes nothing and takes none): the plan then reads
    // the index as it is under the lock, and before hooks (which may stop services) never
    // run while this run still waits for another one.
    let lock = if args.dry_run {
        None
    } else {
        Some(
            repo.lock_recovering("backup", &progress)
                .context("backup failed")
                .map_err(failed_early)?,
        )
    };
    let plan = plan::backup_plan(&repo, &components, &args.tag)
        .context("cannot plan the backup")
        .map_err(failed_early)?;
    if args.dry_run {
        render::out(g, &plan, || plan_text(&plan))?;
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<String> = components.iter().map(|c| c.name().to_string()).collect();
    let hook =
        |when: hooks::When, ctx: &hooks::Context, status: &dyn Fn(&str) -> Option<String>| {
            hooks::run_all(&config.hooks, when, &names, ctx, status)
                .map_err(|failures| {
                    for f in &failures {
                        render::log(Level::Error, None, &f.to_string());
                    }
                })
                .is_ok()
        };
    if !hook(hooks::When::Before, &hooks::Context::default(), &|_| None) {
        let message = "backup cancelled by a before hook: nothing was backed up";
        render::log(Level::Error, None, message);
        let ctx = hooks::Context {
            status: Some("failed".to_string()),
            ..hooks::Context::default()
        };
        hook(hooks::When::Failure, &ctx, &|_| None);
        if let Some(path) = &config.monitoring.textfile {
            write_failure_metrics(path, &repo, started);
        }
        notify(&config, "backup", failure_body(&repo, started, message), 1);
        return Ok(ExitCode::from(1));
    }
    let failed_ctx = hooks::Context {
        status: Some("failed".to_string()),
        ..hooks::Context::default()
    };
    let summary = match backup::run(&repo, &components, &plan, args.force, &progress, lock) {
        Ok(s) => s,
        // The repository failed (or filled up) while data was being stored: the run happened
        // and failed (exit 1); no set was recorded. Space, lock and config problems stay
        // exit 2.
        Err(e)
            if matches!(
                e,
                backup::BackupError::DiskFull { .. }
                    | backup::BackupError::Repo(RepoError::Engine(_))
            ) =>
        {
            let message = format!("backup failed: {e}; no set was recorded");
            render::log(Level::Error, None, &message);
            hook(hooks::When::Failure, &failed_ctx, &|_| None);
            if let Some(path) = &config.monitoring.textfile {
                write_failure_metrics(path, &repo, started);
            }
            notify(&config, "backup", failure_body(&repo, started, &message), 1);
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            hook(hooks::When::Failure, &failed_ctx, &|_| None);
            return Err(failed_early(anyhow::Error::new(e).context("backup failed")));
        }
    };
    render::out(g, &summary, || {
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
    })?;
    let mut ok = summary.status != Status::Failed;
    if ok {
        ok = after_backup(g, &config, &repo, summary.set.as_deref());
    }
    let ctx = hooks::Context {
        set: summary.set.clone(),
        status: Some(if ok { "complete" } else { "failed" }.to_string()),
        component: None,
    };
    let component_status = |name: &str| {
        summary
            .components
            .iter()
            .find(|c| c.name == name)
            .map(|c| format!("{:?}", c.status).to_lowercase())
    };
    let when = if ok {
        hooks::When::After
    } else {
        hooks::When::Failure
    };
    ok &= hook(when, &ctx, &component_status);
    if let Some(path) = &config.monitoring.textfile {
        write_metrics(path, &repo, &summary);
    }
    let body = serde_json::to_value(&summary).unwrap_or_default();
    notify(&config, "backup", body, if ok { 0 } else { 1 });
    Ok(exit(ok))
}

/// Calls `[monitoring] webhook` with `body` (plus `command` and `exit_code`) when the config
/// asks for it after a run of `command` with this exit code. A failed call is a warning: the
/// run itself is what the exit code reports, and the receiver can alert on a run it did not
/// hear about.
pub(super) fn notify(config: &Config, command: &str, mut body: serde_json::Value, exit_code: u8) {
    let m = &config.monitoring;
    let Some(url) = &m.webhook else {
        return;
    };
    if exit_code == 0 && m.webhook_on == WebhookOn::Failure {
        return;
    }
    if let Some(fields) = body.as_object_mut() {
        fields.insert("command".to_string(), command.into());
        fields.insert("exit_code".to_string(), exit_code.into());
    }
    if let Err(e) = monitoring::post_webhook(url, &body, m.webhook_timeout()) {
        render::log(
            Level::Warn,
            None,
            &format!("{e} (the backup result is not affected)"),
        );
    }
}

/// The webhook body of a run that failed before it had a summary: the summary's keys that
/// are known, `status` failed and the error line.
fn failure_body(repo: &Repository, started: jiff::Timestamp, error: &str) -> serde_json::Value {
    serde_json::json!({
        "set": null,
        "status": "failed",
        "repository": repo.location(),
        "started": started,
        "finished": jiff::Timestamp::now(),
        "error": error,
    })
}

/// The metrics of a run that failed before it had a summary.
fn write_failure_metrics(path: &std::path::Path, repo: &Repository, started: jiff::Timestamp) {
    let finished = jiff::Timestamp::now();
    let run = monitoring::RunFacts {
        finished,
        success: false,
        duration_secs: (finished - started)
            .total(jiff::Unit::Second)
            .unwrap_or(0.0),
        added_bytes: 0,
        components: Vec::new(),
    };
    write_run_metrics(path, repo, &run);
}

/// The metrics of a run that produced a summary (complete or failed).
fn write_metrics(
    path: &std::path::Path,
    repo: &Repository,
    summary: &akbackup_core::backup::BackupSummary,
) {
    let run = monitoring::RunFacts {
        finished: summary.finished,
        success: summary.set.is_some() && summary.status != Status::Failed,
        duration_secs: summary.duration_secs,
        added_bytes: summary.added_bytes,
        components: summary
            .components
            .iter()
            .map(|c| (c.name.clone(), c.bytes, c.read_bytes, c.prepare_seconds))
            .collect(),
    };
    write_run_metrics(path, repo, &run);
}

/// Writes the `[monitoring] textfile`; a failure is a warning on stderr (the backup itself
/// is what the exit code reports, and the stale file's age shows the problem).
fn write_run_metrics(path: &std::path::Path, repo: &Repository, run: &monitoring::RunFacts) {
    // This host's sets: the metrics are this server's.
    let sets = repo.scoped_sets().unwrap_or_default();
    // The verify families in the file stay until the next verify replaces them.
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let text = monitoring::merge(&existing, &monitoring::metrics(&sets, run));
    if let Err(e) = monitoring::write_atomically(path, &text) {
        render::log(
            Level::Warn,
            None,
            &format!("cannot write metrics to {}: {e}", path.display()),
        );
    }
}

/// The follow-ups of a successful backup the config asks for: copies to `copy-to`
/// repositories, then `[retention]` with `after-backup = true`. Each failure is one line on
/// stderr and makes the exit 1; the set itself stays recorded.
fn after_backup(g: &Globals, config: &Config, repo: &Repository, set: Option<&str>) -> bool {
    let mut ok = true;
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    if let Some(id) = set {
        for name in &config.copy_to {
            let result = config
                .repository_named(name)
                .map_err(anyhow::Error::from)
                .and_then(|section| {
                    let dst = Repository::open_section(section).map(super::with_wait)?;
                    let set = repo.find_set(id)?;
                    Ok(akbackup_core::copy::run(repo, &dst, &[set], &progress)?)
                });
            match result {
                Ok(c) => progress.note(&format!(
                    "copied set {} to {name} ({})",
                    &id[..8.min(id.len())],
                    c.to
                )),
                Err(e) => {
                    render::log(
                        Level::Error,
                        None,
                        &format!(
                            "copy to {name} failed: {e:#}; the set is kept here, rerun `akbackup copy --to {name}`"
                        ),
                    );
                    ok = false;
                }
            }
        }
    }
    if config.retention.after_backup {
        let result = akbackup_core::forget::rules_from_config(&config.retention)
            .map_err(anyhow::Error::from)
            .and_then(|rules| {
                if !akbackup_core::forget::has_rules(&rules) {
                    anyhow::bail!("[retention] after-backup = true but no keep-* rule is set");
                }
                let prune = if config.retention.prune {
                    Some(akbackup_core::forget::delete_after_from_config(
                        &config.retention,
                    )?)
                } else {
                    None
                };
                Ok(akbackup_core::forget::run(
                    repo, &rules, prune, false, &progress,
                )?)
            });
        match result {
            Ok(f) => progress.note(&format!(
                "retention: {} set(s) removed{}",
                f.sets.iter().filter(|d| !d.keep).count(),
                if config.retention.prune {
                    ", space pruned"
                } else {
                    ""
                }
            )),
            Err(e) => {
                render::log(
                    Level::Error,
                    None,
                    &format!("retention after the backup failed: {e:#}"),
                );
                ok = false;
            }
        }
    }
    ok
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
