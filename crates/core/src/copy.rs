//! `copy`: backup sets from one repository into another (a local repository to an off-site
//! bucket, or back), sending only the data the destination lacks.
//!
//! A copy records the original snapshot id, so a second run copies nothing again. A run
//! killed half-way leaves uploaded packs without an index and a stale lock; the next run
//! that takes the lock re-indexes those packs ([`Repository::lock_recovering`]) and sends
//! only what is still missing.

use serde::Serialize;

use crate::{
    backup_set::BackupSet,
    progress::ProgressRef,
    repository::{LockMode, RepoError, Repository},
};

/// What a copy did.
#[derive(Debug, Clone, Serialize)]
pub struct CopySummary {
    /// Source repository.
    pub from: String,
    /// Destination repository.
    pub to: String,
    /// Sets copied now (ids in the source).
    pub copied: Vec<String>,
    /// Sets the destination already had.
    pub already_there: usize,
}

/// Copies `sets` of `src` into `dst`.
///
/// # Errors
/// Lock and storage errors of either repository.
pub fn run(
    src: &Repository,
    dst: &Repository,
    sets: &[BackupSet],
    progress: &ProgressRef,
) -> Result<CopySummary, RepoError> {
    // The source is only read, but a prune there must not remove data being copied. The two
    // locks are taken in one order (by location) whichever way the copy goes: `copy A B` and
    // `copy B A` under `--wait` would otherwise each hold one and wait for the other forever.
    let (_src_lock, _dst_lock) = if src.location() <= dst.location() {
        let s = src.lock("copy (source)", LockMode::Shared)?;
        (s, dst.lock_recovering("copy", progress)?)
    } else {
        let d = dst.lock_recovering("copy", progress)?;
        (src.lock("copy (source)", LockMode::Shared)?, d)
    };
    progress.note(&format!(
        "copying {} set(s) from {} to {}",
        sets.len(),
        src.location(),
        dst.location()
    ));
    let ids: Vec<String> = sets.iter().map(|s| s.id.clone()).collect();
    let copied = src.copy_to(dst, &ids)?;
    Ok(CopySummary {
        from: src.location().to_string(),
        to: dst.location().to_string(),
        already_there: ids.len() - copied.len(),
        copied,
    })
}
