//! `forget`: retention over whole sets, then optionally `prune` to reclaim space.
//!
//! A set is one snapshot, so keeping or dropping it keeps or drops every component together.
//! Snapshots of runs that never completed are always dropped.

use serde::Serialize;

use crate::{
    progress::ProgressRef,
    repository::{
        RepoError, Repository,
        engine::{PruneSummary, Retention},
    },
};

/// One set and what happens to it.
#[derive(Debug, Clone, Serialize)]
pub struct SetDecision {
    /// Set id.
    pub id: String,
    /// When it was taken.
    pub time: jiff::Timestamp,
    /// Kept?
    pub keep: bool,
    /// Rules that keep it.
    pub reasons: Vec<String>,
}

/// What forget did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetSummary {
    /// Whether anything was changed.
    pub dry_run: bool,
    /// Every set with its decision.
    pub sets: Vec<SetDecision>,
    /// Partial snapshots removed.
    pub partial_removed: usize,
    /// Prune result, when asked for.
    pub prune: Option<PruneSummary>,
    /// Repository size before (local repositories).
    pub size_before: u64,
    /// Repository size after.
    pub size_after: u64,
}

/// Applies retention and optionally prunes.
///
/// # Errors
/// Lock, storage errors, or no rule given.
pub fn run(
    repo: &Repository,
    rules: &Retention,
    prune: bool,
    dry_run: bool,
    progress: &ProgressRef,
) -> Result<ForgetSummary, RepoError> {
    let lock = repo.lock("forget")?;
    let size_before = crate::fsutil::tree_size(repo.path());
    let sets = repo.sets()?;
    let ids: Vec<String> = sets.iter().map(|s| s.id.clone()).collect();
    let decisions = if ids.is_empty() {
        Vec::new()
    } else {
        repo.engine().retention(&ids, rules)?
    };
    let mut out = Vec::new();
    for set in &sets {
        let d = decisions.iter().find(|d| d.id == set.id);
        out.push(SetDecision {
            id: set.id.clone(),
            time: set.manifest.started,
            keep: d.is_none_or(|d| d.keep),
            reasons: d.map(|d| d.reasons.clone()).unwrap_or_default(),
        });
    }
    let partial = repo.partial_snapshots()?;
    let mut remove: Vec<String> = out
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.id.clone())
        .collect();
    remove.extend(partial.iter().cloned());
    if !dry_run {
        progress.note(&format!("removing {} set(s)", remove.len()));
        repo.discard(&remove)?;
    }
    let prune = if prune {
        progress.note("pruning unreferenced data");
        Some(repo.engine().prune(dry_run)?)
    } else {
        None
    };
    drop(lock);
    Ok(ForgetSummary {
        dry_run,
        sets: out,
        partial_removed: partial.len(),
        prune,
        size_before,
        size_after: crate::fsutil::tree_size(repo.path()),
    })
}
