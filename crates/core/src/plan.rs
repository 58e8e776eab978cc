//! Plans: what a backup or restore will do, built before anything changes.
//!
//! `--dry-run` prints a plan; executing consumes it. A backup plan also carries the free-space
//! check, because the documented procedure leaves that to the administrator and a backup that
//! fills the disk of a running platform is worse than no backup.

use std::path::PathBuf;

use serde::Serialize;

use crate::{
    backup_set::BackupSet,
    component::{Component, ComponentError, RestoreStep, RestoreTarget, StoredIndex},
    fsutil,
    repository::{EntryKind, Repository},
};

/// Headroom kept free on the repository's filesystem beyond the estimate.
pub const FREE_SPACE_MARGIN: u64 = 64 * 1024 * 1024;

/// One component in a backup plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedComponent {
    /// `kind.name`.
    pub name: String,
    /// Where the data comes from.
    pub source: String,
    /// Path inside the set.
    pub repo_path: PathBuf,
    /// Files now.
    pub files: u64,
    /// Bytes now.
    pub bytes: u64,
    /// Bytes in files that are new or changed since the parent set (an upper bound of what
    /// will be read and stored before compression and deduplication).
    pub changed_bytes: u64,
    /// Snapshot mode: whether a snapshot can be taken now, and of what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotReadiness>,
}

/// Whether snapshot mode can work for a component on this server now.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReadiness {
    /// It can.
    pub ok: bool,
    /// The volume, filesystem and room; or why not, and what to do.
    pub detail: String,
}

impl SnapshotReadiness {
    /// From [`Component::snapshot_probe`].
    #[must_use]
    pub fn of(c: &dyn Component) -> Option<Self> {
        c.snapshot_probe().map(|r| match r {
            Ok(detail) => Self { ok: true, detail },
            Err(detail) => Self { ok: false, detail },
        })
    }
}

/// What `akbackup backup` will do.
#[derive(Debug, Clone, Serialize)]
pub struct BackupPlan {
    /// The repository.
    pub repository: String,
    /// The set whose unchanged files are not read again.
    pub parent: Option<String>,
    /// Components in order.
    pub components: Vec<PlannedComponent>,
    /// Estimated repository growth (upper bound).
    pub estimated_growth: u64,
    /// Free bytes where the repository lives.
    pub free_bytes: u64,
    /// Whether the free space suffices.
    pub enough_space: bool,
    /// Tags for the set.
    pub tags: Vec<String>,
    /// The set's time when it is not now (imports of dated archives).
    pub time: Option<jiff::Timestamp>,
}

/// Builds a backup plan.
///
/// # Errors
/// Sources that cannot be read.
pub fn backup_plan(
    repo: &Repository,
    components: &[Box<dyn Component>],
    tags: &[String],
) -> Result<BackupPlan, ComponentError> {
    // This host's newest set: another host's holds other data (and may be pruned by its
    // own retention at any time).
    let host = repo.backup_host();
    let parent = repo
        .sets()
        .ok()
        .and_then(|s| s.into_iter().rfind(|s| s.manifest.host == host));
    let mut planned = Vec::new();
    for c in components {
        let stored = parent
            .as_ref()
            .and_then(|p| stored_index(repo, p, c.as_ref()));
        let est = c.estimate(stored.as_ref())?;
        planned.push(PlannedComponent {
            name: c.name().to_string(),
            source: c.source(),
            repo_path: c.repo_path().to_path_buf(),
            files: est.files,
            bytes: est.bytes,
            changed_bytes: est.changed_bytes,
            snapshot: None,
        });
    }
    let growth: u64 = planned.iter().map(|p| p.changed_bytes).sum();
    let free = fsutil::free_space(repo.path()).unwrap_or(u64::MAX);
    Ok(BackupPlan {
        repository: repo.location().to_string(),
        parent: parent.map(|p| p.id),
        components: planned,
        estimated_growth: growth,
        free_bytes: free,
        enough_space: free >= growth.saturating_add(FREE_SPACE_MARGIN),
        tags: tags.to_vec(),
        time: None,
    })
}

impl BackupPlan {
    /// Adds whether snapshot mode can work for each component that uses it: what
    /// `--dry-run` shows. Not part of every plan: a backup finds out when it takes the
    /// snapshot, and asking twice would run the backend's queries twice.
    #[must_use]
    pub fn with_snapshot_readiness(mut self, components: &[Box<dyn Component>]) -> Self {
        for (p, c) in self.components.iter_mut().zip(components) {
            p.snapshot = SnapshotReadiness::of(c.as_ref());
        }
        self
    }
}

/// Size and mtime of every file of a component in a stored set, by path relative to the
/// component root: what the engine compares to skip unchanged files.
fn stored_index(repo: &Repository, parent: &BackupSet, c: &dyn Component) -> Option<StoredIndex> {
    Some(
        repo.walk(&parent.id, c.repo_path())
            .ok()?
            .into_iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| (e.path, (e.size, e.mtime.map_or(0, |t| t.as_second()))))
            .collect(),
    )
}

/// What `akbackup restore` will do.
#[derive(Debug, Clone, Serialize)]
pub struct RestorePlan {
    /// The set.
    pub set: String,
    /// When it was taken.
    pub set_time: jiff::Timestamp,
    /// Steps in order.
    pub steps: Vec<RestoreStep>,
    /// Where to, for printing.
    pub in_place: bool,
}

/// Builds a restore plan for the components present in `set`.
///
/// # Errors
/// A selected component that the set does not contain.
pub fn restore_plan(
    set: &BackupSet,
    components: &[Box<dyn Component>],
    target: &RestoreTarget,
) -> Result<RestorePlan, ComponentError> {
    let mut steps = Vec::new();
    for c in components {
        let Some(record) = set.manifest.component(&c.name().to_string()) else {
            return Err(ComponentError::Restore {
                name: c.name().clone(),
                message: format!(
                    "set {} does not contain this component (it has: {})",
                    set.short_id(),
                    set.manifest
                        .components
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        steps.push(c.plan_restore(target, record));
    }
    Ok(RestorePlan {
        set: set.id.clone(),
        set_time: set.manifest.started,
        steps,
        in_place: matches!(target, RestoreTarget::InPlace { .. }),
    })
}
