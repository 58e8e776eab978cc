//! A backup run's lifecycle, in one place: the lock, the plan, the before hooks, the backup,
//! then the follow-ups the config asks for (copies to `copy-to` repositories, retention with
//! `after-backup`), the after or failure hooks, the metrics file and the webhook.
//!
//! Every way a run can end goes through [`run_backup`], so a failure hook, a metrics update or
//! a webhook cannot be forgotten on one path, and the library runs a backup exactly as the CLI
//! does. What it deliberately leaves to the caller: building the components, rendering the
//! summary, and the `--dry-run` plan (which takes no lock and runs no hook).

use serde::Serialize;

use crate::{
    backup::{self, BackupError, BackupSummary},
    backup_set::Status,
    component::{Component, ComponentError},
    config::{Config, RepositoryConfig},
    error::chain,
    hooks,
    monitoring::{self, RunFacts},
    progress::ProgressRef,
    repository::{RepoError, Repository},
};

/// What a backup run needs besides its components.
pub struct BackupJob<'a> {
    /// The config: hooks, monitoring, copy-to, retention.
    pub config: &'a Config,
    /// Where the set goes.
    pub repo: &'a Repository,
    /// The components to back up (already built from the config).
    pub components: &'a [Box<dyn Component>],
    /// Tags of the set.
    pub tags: &'a [String],
    /// Run even when the free-space check fails.
    pub force: bool,
    /// Opens a `copy-to` destination the way the caller opens repositories (its lock wait and
    /// host scope).
    pub open_destination: &'a dyn Fn(&RepositoryConfig) -> Result<Repository, RepoError>,
    /// Called with the summary as soon as the backup has one, before copies, retention and
    /// the after hooks run: the operator reads the set's result first, then the follow-ups.
    pub on_summary: &'a dyn Fn(&BackupSummary),
}

/// Errors that end a run before anything was stored: the lock, the plan, a precondition of
/// the backup (free space, staging). The failure hooks, metrics and webhook already ran.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The repository lock could not be taken.
    #[error("backup failed")]
    Lock(#[source] RepoError),
    /// The plan could not be built (a component's source is unreadable).
    #[error("cannot plan the backup")]
    Plan(#[source] ComponentError),
    /// The backup refused to start or stopped before any component stored data.
    #[error("backup failed")]
    Backup(#[source] BackupError),
}

/// How a run ended, when it got as far as trying.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum JobOutcome {
    /// The backup ran: its summary, and whether everything after it (copies, retention,
    /// hooks) succeeded as well. A set stays recorded even when a follow-up failed.
    Ran {
        /// What the backup did.
        summary: BackupSummary,
        /// True when the set completed and every follow-up succeeded.
        ok: bool,
    },
    /// A before hook failed: nothing was backed up.
    Cancelled,
    /// The repository failed (or filled up) while data was being stored: no set was
    /// recorded.
    StoreFailed {
        /// The error line.
        message: String,
    },
}

/// Runs one backup with its whole lifecycle and reports problems on `progress`.
///
/// # Errors
/// [`JobError`] when the run ended before anything was stored; the caller's exit code for it
/// is 2 (environment), where a [`JobOutcome`] that is not ok is 1.
pub fn run_backup(job: &BackupJob<'_>, progress: &ProgressRef) -> Result<JobOutcome, JobError> {
    let life = Lifecycle::new(job);
    // The lock comes first: the plan then reads the index as it is under the lock, and
    // before hooks (which may stop services) never run while this run waits for another.
    let lock = job
        .repo
        .lock_recovering("backup", progress)
        .map_err(|e| life.failed_early(JobError::Lock(e), progress))?;
    let plan = crate::plan::backup_plan(job.repo, job.components, job.tags)
        .map_err(|e| life.failed_early(JobError::Plan(e), progress))?;
    if !life.hooks(
        hooks::When::Before,
        &hooks::Context::default(),
        &|_| None,
        progress,
    ) {
        let message = "backup cancelled by a before hook: nothing was backed up";
        progress.error(message);
        life.failed(message, 1, progress);
        return Ok(JobOutcome::Cancelled);
    }
    let summary = match backup::run(
        job.repo,
        job.components,
        &plan,
        job.force,
        progress,
        Some(lock),
    ) {
        Ok(s) => s,
        // The repository failed (or filled up) while data was stored: the run happened and
        // failed; no set was recorded.
        Err(e @ (BackupError::DiskFull { .. } | BackupError::Repo(RepoError::Engine(_)))) => {
            let message = format!("backup failed: {}; no set was recorded", chain(&e));
            progress.error(&message);
            life.failed(&message, 1, progress);
            return Ok(JobOutcome::StoreFailed { message });
        }
        Err(e) => {
            let e = JobError::Backup(e);
            life.failed(&chain(&e), 2, progress);
            return Err(e);
        }
    };
    (job.on_summary)(&summary);
    let mut ok = summary.status != Status::Failed;
    if ok {
        ok = after_backup(job, summary.set.as_deref(), progress);
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
    ok &= life.hooks(when, &ctx, &component_status, progress);
    if let Some(path) = &job.config.monitoring.textfile {
        let run = RunFacts {
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
        write_metrics(path, job.repo, &run, progress);
    }
    let body = serde_json::to_value(&summary).unwrap_or_default();
    monitoring::notify(job.config, "backup", body, if ok { 0 } else { 1 }, progress);
    Ok(JobOutcome::Ran { summary, ok })
}

/// The steps every ending of a run shares.
struct Lifecycle<'j, 'a> {
    job: &'j BackupJob<'a>,
    names: Vec<String>,
    started: jiff::Timestamp,
}

impl<'j, 'a> Lifecycle<'j, 'a> {
    fn new(job: &'j BackupJob<'a>) -> Self {
        Self {
            job,
            names: job
                .components
                .iter()
                .map(|c| c.name().to_string())
                .collect(),
            started: jiff::Timestamp::now(),
        }
    }

    /// Runs the hooks of `when`; false (each failure reported) when one failed.
    fn hooks(
        &self,
        when: hooks::When,
        ctx: &hooks::Context,
        status: &dyn Fn(&str) -> Option<String>,
        progress: &ProgressRef,
    ) -> bool {
        hooks::run_all(&self.job.config.hooks, when, &self.names, ctx, status)
            .map_err(|failures| {
                for f in &failures {
                    progress.error(&f.to_string());
                }
            })
            .is_ok()
    }

    /// A run that failed before it stored anything still tells monitoring (exit 2).
    fn failed_early(&self, e: JobError, progress: &ProgressRef) -> JobError {
        self.report_failure(&chain(&e), 2, progress);
        e
    }

    /// A run that failed once it had started: the failure hooks, then monitoring with the
    /// exit code the caller will return.
    fn failed(&self, message: &str, exit_code: u8, progress: &ProgressRef) {
        let ctx = hooks::Context {
            status: Some("failed".to_string()),
            ..hooks::Context::default()
        };
        self.hooks(hooks::When::Failure, &ctx, &|_| None, progress);
        self.report_failure(message, exit_code, progress);
    }

    /// Metrics and webhook of a run that ended without a summary.
    fn report_failure(&self, message: &str, exit_code: u8, progress: &ProgressRef) {
        let repo = self.job.repo;
        if let Some(path) = &self.job.config.monitoring.textfile {
            let finished = jiff::Timestamp::now();
            let run = RunFacts {
                finished,
                success: false,
                duration_secs: (finished - self.started)
                    .total(jiff::Unit::Second)
                    .unwrap_or(0.0),
                added_bytes: 0,
                components: Vec::new(),
            };
            write_metrics(path, repo, &run, progress);
        }
        let body = serde_json::json!({
            "set": null,
            "status": "failed",
            "repository": repo.location(),
            "started": self.started,
            "finished": jiff::Timestamp::now(),
            "error": message,
        });
        monitoring::notify(self.job.config, "backup", body, exit_code, progress);
    }
}

/// Writes the `[monitoring] textfile`; a failure is a warning (the backup itself is what the
/// exit code reports, and the stale file's age shows the problem).
fn write_metrics(
    path: &std::path::Path,
    repo: &Repository,
    run: &RunFacts,
    progress: &ProgressRef,
) {
    // This host's sets: the metrics are this server's.
    let sets = repo.scoped_sets().unwrap_or_default();
    // The verify families in the file stay until the next verify replaces them.
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    let text = monitoring::merge(&existing, &monitoring::metrics(&sets, run));
    if let Err(e) = monitoring::write_atomically(path, &text) {
        progress.warn(&format!("cannot write metrics to {}: {e}", path.display()));
    }
}

/// The follow-ups of a successful backup the config asks for: copies to `copy-to`
/// repositories, then `[retention]` with `after-backup = true`. Each failure is one error
/// line and makes the run not ok; the set itself stays recorded.
fn after_backup(job: &BackupJob<'_>, set: Option<&str>, progress: &ProgressRef) -> bool {
    let config = job.config;
    let mut ok = true;
    if let Some(id) = set {
        for name in &config.copy_to {
            let result = config
                .repository_named(name)
                .map_err(|e| chain(&e))
                .and_then(|section| (job.open_destination)(section).map_err(|e| chain(&e)))
                .and_then(|dst| {
                    let set = job.repo.find_set(id).map_err(|e| chain(&e))?;
                    crate::copy::run(job.repo, &dst, &[set], progress).map_err(|e| chain(&e))
                });
            match result {
                Ok(c) => progress.note(&format!(
                    "copied set {} to {name} ({})",
                    &id[..8.min(id.len())],
                    c.to
                )),
                Err(e) => {
                    progress.error(&format!(
                        "copy to {name} failed: {e}; the set is kept here, rerun `akbackup copy --to {name}`"
                    ));
                    ok = false;
                }
            }
        }
    }
    if config.retention.after_backup {
        match retention_after_backup(job, progress) {
            Ok(removed) => progress.note(&format!(
                "retention: {removed} set(s) removed{}",
                if config.retention.prune {
                    ", space pruned"
                } else {
                    ""
                }
            )),
            Err(e) => {
                progress.error(&format!("retention after the backup failed: {e}"));
                ok = false;
            }
        }
    }
    ok
}

/// `[retention]` applied after a backup; the number of sets removed.
fn retention_after_backup(job: &BackupJob<'_>, progress: &ProgressRef) -> Result<usize, String> {
    let retention = &job.config.retention;
    let rules = crate::forget::rules_from_config(retention).map_err(|e| chain(&e))?;
    if !crate::forget::has_rules(&rules) {
        return Err("[retention] after-backup = true but no keep-* rule is set".to_string());
    }
    let prune = if retention.prune {
        Some(crate::forget::delete_after_from_config(retention).map_err(|e| chain(&e))?)
    } else {
        None
    };
    let summary =
        crate::forget::run(job.repo, &rules, prune, false, progress).map_err(|e| chain(&e))?;
    Ok(summary.sets.iter().filter(|d| !d.keep).count())
}
