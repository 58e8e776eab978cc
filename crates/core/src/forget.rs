//! `forget`: retention over whole sets, then optionally `prune` to reclaim space.
//!
//! A set is one snapshot, so keeping or dropping it keeps or drops every component together.
//! Snapshots of runs that never completed are always dropped, but only this host's: another
//! host's may belong to a run still under way there. Retention acts on the sets of the hosts
//! in scope ([`crate::repository::HostScope`]: this host by default), each host's sets on their
//! own, so one server's schedule never thins out another's.
//!
//! Forget takes the repository's exclusive lock, so no backup, restore or copy of any host
//! (nor a restic client) runs meanwhile. Prune deletes in two phases: data that became unused
//! is marked, and deleted by a later prune once it has been marked for `delete-after`
//! (23 hours by default), so a backup that used it meanwhile gets it back.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::{
    progress::ProgressRef,
    repository::{LockMode, PruneSummary, RepoError, Repository, Retention},
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
    /// Every set in scope with its decision.
    pub sets: Vec<SetDecision>,
    /// The hosts whose sets were considered (all of them with `--all-hosts`).
    pub hosts: Vec<String>,
    /// Partial snapshots removed.
    pub partial_removed: usize,
    /// Prune result, when asked for.
    pub prune: Option<PruneSummary>,
    /// Repository size before (local repositories).
    pub size_before: Option<u64>,
    /// Repository size after.
    pub size_after: Option<u64>,
}

/// Prune's default delay between marking data unused and deleting it.
pub const DEFAULT_DELETE_AFTER: std::time::Duration = std::time::Duration::from_secs(23 * 3600);

/// Applies retention and, with `prune` (how long marked data survives), prunes.
///
/// # Errors
/// Lock, storage errors, or no rule given.
pub fn run(
    repo: &Repository,
    rules: &Retention,
    prune: Option<std::time::Duration>,
    dry_run: bool,
    progress: &ProgressRef,
) -> Result<ForgetSummary, RepoError> {
    let lock = repo.lock("forget", LockMode::Exclusive)?;
    let size_before = repo.local_size();
    let sets = repo.scoped_sets()?;
    let hosts: BTreeSet<String> = sets.iter().map(|s| s.manifest.host.clone()).collect();
    let mut decisions = Vec::new();
    for host in &hosts {
        let ids: Vec<String> = sets
            .iter()
            .filter(|s| &s.manifest.host == host)
            .map(|s| s.id.clone())
            .collect();
        decisions.extend(repo.retention(&ids, rules)?);
    }
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
    let prune = match prune {
        Some(delete_after) => {
            progress.note("pruning unreferenced data");
            Some(repo.prune(dry_run, delete_after)?)
        }
        None => None,
    };
    drop(lock);
    Ok(ForgetSummary {
        dry_run,
        sets: out,
        hosts: hosts.into_iter().collect(),
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

/// How long prune keeps unused data before deleting it: `[retention] delete-after`, else
/// [`DEFAULT_DELETE_AFTER`].
///
/// # Errors
/// A `delete-after` that is not an age.
pub fn delete_after_from_config(
    config: &crate::config::RetentionConfig,
) -> Result<std::time::Duration, RepoError> {
    config
        .delete_after
        .as_deref()
        .map_or(Ok(DEFAULT_DELETE_AFTER), |d| {
            crate::config::parse_duration(d)
                .map_err(|e| RepoError::Config(format!("[retention] delete-after: {e}")))
        })
}
