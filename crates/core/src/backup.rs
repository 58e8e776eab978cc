//! `backup`: one run, one set, every selected component.
//!
//! Order of work: lock, clean up partial snapshots of crashed runs, prepare every component
//! (as many at once as there are cores; nothing is stored when one cannot be prepared), store
//! all parts in one snapshot tagged partial, let each component judge what was stored, and only
//! when all succeeded rewrite the snapshot as a complete set with its manifest. A failed run
//! leaves no set and exits 1.

use std::time::Instant;

use serde::Serialize;

use crate::{
    backup_set::{ComponentRecord, MANIFEST_FORMAT, Manifest, Status},
    component::{Component, ComponentError, ParentSet, Prepared},
    plan::BackupPlan,
    progress::ProgressRef,
    repository::{EngineError, RepoError, RepoLock, Repository},
    units::human_bytes,
};

/// Errors that stop a backup before any component ran (a component that fails is reported in
/// the summary instead).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Repository problems.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Not enough space.
    #[error(
        "not enough free space for the repository at {repo}: about {need} needed (estimated growth plus {margin} headroom), {free} free; free some space or pass --force"
    )]
    NoSpace {
        /// Repository path.
        repo: String,
        /// Needed, human readable.
        need: String,
        /// Free, human readable.
        free: String,
        /// The headroom.
        margin: String,
    },
    /// The repository's filesystem filled up while the set was being stored.
    #[error(
        "no space left on the filesystem holding {repo} while storing the set: this backup needed up to {need} (before compression and deduplication), {free} were free when it started; free some space there or move the repository; no set was recorded"
    )]
    DiskFull {
        /// Repository location.
        repo: String,
        /// The estimated growth, human readable.
        need: String,
        /// Free space before the run, human readable.
        free: String,
    },
    /// The staging directory could not be created.
    #[error("cannot create a staging directory in {path}: {error}")]
    Staging {
        /// Where.
        path: String,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
}

/// What a backup run did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// The new set's id, when it completed.
    pub set: Option<String>,
    /// Overall status.
    pub status: Status,
    /// The repository.
    pub repository: String,
    /// Per-component records, as in the manifest.
    pub components: Vec<ComponentRecord>,
    /// Bytes added to the repository (after compression and dedup).
    pub added_bytes: u64,
    /// Total bytes of the components.
    pub total_bytes: u64,
    /// Wall time.
    pub duration_secs: f64,
    /// Start.
    pub started: jiff::Timestamp,
    /// End.
    pub finished: jiff::Timestamp,
    /// Partial snapshots of earlier crashed runs that were removed.
    pub cleaned_partial: usize,
    /// A stale lock that was broken, described.
    pub stale_lock: Option<String>,
}

/// Runs a backup according to `plan`, under `held` (the repository lock the caller took
/// first, e.g. before running hooks that should not wait on another run) or a lock it takes.
///
/// # Errors
/// [`BackupError`] for problems before any component was judged; component failures are in
/// the summary with status `Failed`.
pub fn run(
    repo: &Repository,
    components: &[Box<dyn Component>],
    plan: &BackupPlan,
    force: bool,
    progress: &ProgressRef,
    held: Option<RepoLock>,
) -> Result<BackupSummary, BackupError> {
    let started = plan.time.unwrap_or_else(jiff::Timestamp::now);
    let clock = Instant::now();
    if !plan.enough_space && !force {
        return Err(BackupError::NoSpace {
            repo: plan.repository.clone(),
            need: human_bytes(plan.estimated_growth + crate::plan::FREE_SPACE_MARGIN),
            free: human_bytes(plan.free_bytes),
            margin: human_bytes(crate::plan::FREE_SPACE_MARGIN),
        });
    }
    let lock = match held {
        Some(lock) => lock,
        None => repo.lock_recovering("backup", progress)?,
    };
    let stale_lock = lock.broke_stale.as_ref().map(|h| {
        format!(
            "removed a stale lock of pid {} ({} since {})",
            h.pid, h.command, h.time
        )
    });
    let partial = repo.partial_snapshots()?;
    repo.discard(&partial)?;

    // Private staging next to the repository (same filesystem as the data it feeds), owned
    // by this run; what killed runs left there goes first.
    for note in crate::stage::sweep(repo.path(), crate::stage::BACKUP) {
        progress.note(&note);
    }
    let staging =
        crate::stage::Stage::create(repo.path(), crate::stage::BACKUP).map_err(|source| {
            BackupError::Staging {
                path: repo.path().display().to_string(),
                error: source,
            }
        })?;

    // The parent's manifest lets a component reuse what it recorded for unchanged data.
    let parent_set = plan.parent.as_deref().and_then(|id| repo.find_set(id).ok());
    let parent = parent_set.as_ref().map(|set| ParentSet { repo, set });
    let mut prepared = Vec::new();
    let mut prepare_seconds = Vec::new();
    for (c, outcome) in components.iter().zip(prepare_all(
        components,
        staging.path(),
        progress,
        parent.as_ref(),
    )) {
        match outcome {
            Some(Ok((p, seconds))) => {
                prepared.push(p);
                prepare_seconds.push(seconds);
            }
            failed => {
                // Never `None` before the first failure: components start in order and none
                // starts after one failed.
                let e = failed.map_or_else(
                    || "not prepared: another component failed first".to_string(),
                    |r| r.err().map(|e| e.to_string()).unwrap_or_default(),
                );
                // Nothing is stored: release what was staged, report the component failed.
                drop(prepared);
                drop(staging);
                drop(lock);
                let finished = jiff::Timestamp::now();
                let records = components
                    .iter()
                    .map(|other| {
                        not_stored(
                            other.as_ref(),
                            if other.name() == c.name() {
                                e.clone()
                            } else {
                                format!("not stored: {} failed", c.name())
                            },
                        )
                    })
                    .collect();
                return Ok(BackupSummary {
                    set: None,
                    status: Status::Failed,
                    repository: repo.location().to_string(),
                    components: records,
                    added_bytes: 0,
                    total_bytes: 0,
                    duration_secs: clock.elapsed().as_secs_f64(),
                    started,
                    finished,
                    cleaned_partial: partial.len(),
                    stale_lock,
                });
            }
        }
    }
    let parts: Vec<_> = prepared
        .iter()
        .map(|p| {
            let mut part = p.part.clone();
            part.expected_bytes = plan
                .components
                .iter()
                .find(|c| c.name == part.label)
                .map(|c| c.bytes);
            part
        })
        .collect();
    let (partial_id, stats, added) = repo
        .store_set(
            &parts,
            &plan.tags,
            plan.parent.as_deref(),
            plan.time,
            progress,
        )
        .map_err(|e| match e {
            RepoError::Engine(EngineError::NoSpace { path, .. }) => BackupError::DiskFull {
                repo: path,
                need: human_bytes(plan.estimated_growth),
                free: human_bytes(plan.free_bytes),
            },
            other => BackupError::Repo(other),
        })?;

    let mut records = Vec::new();
    for (((c, prep), stat), seconds) in components
        .iter()
        .zip(prepared)
        .zip(stats)
        .zip(prepare_seconds)
    {
        let mut record = c.finish(prep, stat);
        record.prepare_seconds = seconds;
        records.push(record);
    }
    drop(staging);

    let finished = plan
        .time
        .map_or_else(jiff::Timestamp::now, |t| t + clock.elapsed());
    let status = if records.iter().any(|r| r.status == Status::Failed) {
        Status::Failed
    } else if records.iter().any(|r| r.status == Status::Warning) {
        Status::Warning
    } else {
        Status::Complete
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        akbackup_version: crate::VERSION.to_string(),
        host: repo.backup_host(),
        started,
        finished,
        status,
        tags: plan.tags.clone(),
        components: records.clone(),
    };
    let set = if status == Status::Failed {
        repo.discard(&[partial_id])?;
        None
    } else {
        Some(repo.complete_set(&partial_id, &manifest)?.id)
    };
    drop(lock);
    Ok(BackupSummary {
        set,
        status,
        repository: repo.location().to_string(),
        total_bytes: manifest.total_bytes(),
        components: records,
        added_bytes: added.unwrap_or(0),
        duration_secs: clock.elapsed().as_secs_f64(),
        started,
        finished,
        cleaned_partial: partial.len(),
        stale_lock,
    })
}

/// What preparing one component gave, with the seconds it took.
type PrepareOutcome = Result<(Prepared, f64), ComponentError>;

/// Prepares every component, as many at once as the machine has cores, and returns the
/// outcomes in the order of `components` (`None`: not started). Why in parallel: preparing is
/// mostly reading (an SSDB store's every key for its digest, a MongoDB dump), one core each,
/// and one component after the other left the second core idle for most of a backup. Once one
/// component has failed, those not yet started are not started: nothing will be stored.
fn prepare_all(
    components: &[Box<dyn Component>],
    staging: &std::path::Path,
    progress: &ProgressRef,
    parent: Option<&ParentSet<'_>>,
) -> Vec<Option<PrepareOutcome>> {
    use std::sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(components.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let outcomes: Vec<Mutex<Option<PrepareOutcome>>> =
        components.iter().map(|_| Mutex::new(None)).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(c) = components.get(i) else { break };
            if failed.load(Ordering::SeqCst) {
                continue;
            }
            progress.note(&format!("{}: preparing {}", c.name(), c.source()));
            let clock = Instant::now();
            let outcome = c
                .prepare_after(staging, progress, parent)
                .map(|p| (p, clock.elapsed().as_secs_f64()));
            if outcome.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            if let Ok(mut slot) = outcomes[i].lock() {
                *slot = Some(outcome);
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
    outcomes
        .into_iter()
        .map(|slot| slot.into_inner().ok().flatten())
        .collect()
}

/// The record of a component that was not stored, with why.
fn not_stored(c: &dyn Component, error: String) -> ComponentRecord {
    ComponentRecord {
        name: c.name().to_string(),
        kind: c.name().kind.to_string(),
        source: c.source(),
        repo_path: c.repo_path().display().to_string(),
        files: 0,
        dirs: 0,
        bytes: 0,
        read_bytes: 0,
        status: Status::Failed,
        warnings: Vec::new(),
        errors: vec![error],
        details: serde_json::Value::Null,
        prepare_seconds: 0.0,
    }
}
