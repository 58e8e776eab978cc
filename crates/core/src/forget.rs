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
    pub size_before: Option<u64>,
    /// Repository size after.
    pub size_after: Option<u64>,
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
    let size_before = repo.local_size();
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
        Some(repo.engine().prune(dry_run).map_err(|e| repo.located(e))?)
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
        size_after: repo.local_size(),
    })
}

/// Whether any keep rule is set.
#[must_use]
pub const fn has_rules(rules: &Retention) -> bool {
    rules.keep_last.is_some()
        || rules.keep_daily.is_some()
        || rules.keep_weekly.is_some()
        || rules.keep_monthly.is_some()
        || rules.keep_yearly.is_some()
        || rules.keep_within.is_some()
}

/// The rules of a `[retention]` section.
///
/// # Errors
/// A `keep-within` that is not an age.
pub fn rules_from_config(
    config: &crate::config::RetentionConfig,
) -> Result<Retention, crate::repository::RepoError> {
    let n = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    Ok(Retention {
        keep_last: n(config.keep_last),
        keep_daily: n(config.keep_daily),
        keep_weekly: n(config.keep_weekly),
        keep_monthly: n(config.keep_monthly),
        keep_yearly: n(config.keep_yearly),
        keep_within: config
            .keep_within
            .as_deref()
            .map(crate::config::parse_duration)
            .transpose()
            .map_err(|e| {
                crate::repository::RepoError::Config(format!("[retention] keep-within: {e}"))
            })?,
        now: None,
    })
}
