//! The component trait: one implementation per kind of platform part.
//!
//! A component turns a piece of the platform into a directory the repository can store
//! (`prepare`), judges what was stored (`finish`), and puts it back (`restore`). The files
//! component stores its live directory as is; the SSDB component will hand over a consistent
//! staging copy and the MongoDB component a dump directory; both fit the same three calls.
//! Instances (the two MongoDB servers, the four SSDB stores) are config values, not types.

pub mod files;
pub mod kind;
pub mod mongodb;
pub mod ssdb;
pub mod staged;

pub use staged::{InPlace, LiveDirectory, ServedDirectory, StagedRestore};

use std::path::{Path, PathBuf};

use self::mongodb::MongoError;
use crate::{
    backup_set::{ComponentRecord, Status},
    config::{ComponentName, Config},
    progress::ProgressRef,
    repository::{PartStats, RepoError, Repository, SourcePart},
    service::ServiceError,
    tree::{MaterializeSummary, TreeError},
};

/// Errors of components.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The kind is configured but not implemented in this release.
    #[error(
        "{0}: not supported yet in akbackup {ver}; remove the [{0}] section (or back up with --only files.control)",
        ver = crate::VERSION
    )]
    NotSupported(ComponentName),
    /// The source is missing or unreadable.
    #[error("{name}: {path}: {message}")]
    Source {
        /// Component.
        name: ComponentName,
        /// Path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing the restore failed.
    #[error("{name}: {error}")]
    Tree {
        /// Component.
        name: ComponentName,
        /// Cause (printed in the message, so not also the `source()`).
        error: Box<TreeError>,
    },
    /// Repository errors.
    #[error("{name}: {error}")]
    Repo {
        /// Component.
        name: ComponentName,
        /// Cause (printed in the message, so not also the `source()`).
        error: Box<RepoError>,
    },
    /// A restore step on disk failed.
    #[error("{name}: {message}")]
    Restore {
        /// Component.
        name: ComponentName,
        /// What failed, and where the data is now.
        message: String,
    },
    /// A database component failed: its server refused or failed an operation, or its dump
    /// could not be written or read.
    #[error("{name}: {error}")]
    Database {
        /// Component.
        name: ComponentName,
        /// What failed, naming the server (password redacted), the namespace or file, and the
        /// fix (printed in the message, so not also the `source()`).
        error: Box<MongoError>,
    },
    /// A filesystem snapshot could not be taken, read or released.
    #[error("{name}: snapshot: {error}")]
    Snapshot {
        /// Component.
        name: ComponentName,
        /// Cause (printed in the message, so not also the `source()`).
        error: Box<crate::snapshot::SnapshotError>,
    },
    /// A service command failed.
    #[error("{name}: {error}")]
    Service {
        /// Component.
        name: ComponentName,
        /// Cause (printed in the message, so not also the `source()`).
        error: Box<ServiceError>,
    },
}

/// Why a component's service does not answer ([`Component::health_check`]). Each variant
/// prints its cause: the line goes into `restore --all`'s table and report, and into a
/// rollback's message, where no chain walker reads.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// A command failed: the configured health command, `systemctl is-active`, or the start
    /// before the check.
    #[error("{error}")]
    Service {
        /// Cause (printed in the message).
        error: ServiceError,
    },
    /// The SSDB server did not answer as it should.
    #[error("{error}")]
    Ssdb {
        /// Cause (printed in the message).
        error: ssdb::protocol::ProtocolError,
    },
    /// The MongoDB server cannot be reached or refused the client.
    #[error("{error}")]
    Mongodb {
        /// Cause (printed in the message).
        error: Box<MongoError>,
    },
    /// The check kept failing for the whole wait.
    #[error("{last} (still failing after {seconds}s)")]
    StillFailing {
        /// How long it was retried.
        seconds: u64,
        /// The last failure (printed in the message).
        last: Box<HealthError>,
    },
}

/// Kind-specific facts of a manifest record (`details`): typed in memory, stored as JSON, so
/// records of earlier releases read unchanged (every field has a default) and a record that
/// does not parse reads as empty rather than making the set unlistable.
pub trait Details: serde::Serialize + serde::de::DeserializeOwned + Default {
    /// Reads a record's `details`.
    #[must_use]
    fn of(details: &serde_json::Value) -> Self {
        serde_json::from_value(details.clone()).unwrap_or_default()
    }

    /// The manifest's JSON form.
    #[must_use]
    fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Size of a component's data now.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Estimate {
    /// Regular files.
    pub files: u64,
    /// Bytes.
    pub bytes: u64,
    /// Bytes in files new or changed compared with the stored index (all bytes without one).
    pub changed_bytes: u64,
}

impl Estimate {
    /// Counts one file (`rel` to the component root); it is changed unless `stored` has the
    /// same size and mtime (the test the engine uses to skip unchanged files).
    pub fn count(&mut self, rel: &Path, meta: &std::fs::Metadata, stored: Option<&StoredIndex>) {
        self.files += 1;
        self.bytes += meta.len();
        let mtime = filetime::FileTime::from_last_modification_time(meta).unix_seconds();
        if stored.and_then(|s| s.get(rel)) != Some(&(meta.len(), mtime)) {
            self.changed_bytes += meta.len();
        }
    }
}

/// The set a backup builds on (the plan's parent), with the repository to list its files.
#[derive(Debug, Clone, Copy)]
pub struct ParentSet<'a> {
    /// Where the set is.
    pub repo: &'a Repository,
    /// The set, with its manifest.
    pub set: &'a crate::backup_set::BackupSet,
}

/// Size and mtime (seconds) of each stored file, by path relative to the component root.
pub type StoredIndex = std::collections::HashMap<PathBuf, (u64, i64)>;

/// A source ready to be stored. Dropping it releases whatever `prepare` took (staging
/// directories, stopped services), on every path.
pub struct Prepared {
    /// What to store.
    pub part: SourcePart,
    /// Kind-specific facts for the manifest, known after preparing.
    pub details: serde_json::Value,
    /// Released on drop; a component may take it back in [`Component::finish`] to release
    /// it there and report how that went (a filesystem snapshot).
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("part", &self.part)
            .finish_non_exhaustive()
    }
}

/// One restore of one component: the set it reads and where it goes.
#[derive(Clone, Copy)]
pub struct RestoreRequest<'a> {
    /// The repository holding the set.
    pub repo: &'a Repository,
    /// The set.
    pub set_id: &'a str,
    /// Where the data goes.
    pub target: &'a RestoreTarget,
    /// Progress and notes.
    pub progress: &'a ProgressRef,
}

/// Where a restore goes.
#[derive(Debug, Clone)]
pub enum RestoreTarget {
    /// Under `DIR/<kind>/<name>/`, touching no service.
    Directory(PathBuf),
    /// Back in place, then restart unless `no_restart`.
    InPlace {
        /// Skip the restart command.
        no_restart: bool,
        /// The caller (`restore --all`) has stopped the component's service and starts and
        /// health-checks it afterwards: the component neither stops nor starts anything.
        services_managed: bool,
        /// What database components load, and where.
        db: DbRestoreOptions,
    },
}

impl RestoreTarget {
    /// In place with the defaults: restart, everything, the configured servers.
    #[must_use]
    pub fn in_place() -> Self {
        Self::InPlace {
            no_restart: false,
            services_managed: false,
            db: DbRestoreOptions::default(),
        }
    }
}

/// Options of an in-place restore that only database components read (the MongoDB
/// namespaces to load, renames, another server).
#[derive(Debug, Clone, Default)]
pub struct DbRestoreOptions {
    /// Load into this server instead of the configured one.
    pub to_uri: Option<String>,
    /// Namespace globs to load (all when empty).
    pub ns_include: Vec<String>,
    /// Namespace globs to leave out.
    pub ns_exclude: Vec<String>,
    /// Rename pattern source (`control.*`).
    pub ns_from: Option<String>,
    /// Rename pattern target (`control_copy.*`).
    pub ns_to: Option<String>,
    /// Keep existing collections and add to them instead of dropping them first.
    pub no_drop: bool,
}

/// What one component's restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentRestore {
    /// `kind.name`.
    pub name: String,
    /// Where the data now is.
    pub destination: PathBuf,
    /// Where the previous contents were kept (in-place only).
    pub previous: Option<PathBuf>,
    /// The restart command that ran, if any.
    pub restarted: Option<String>,
    /// What was written.
    pub written: MaterializeSummary,
    /// Ok, or what went wrong after the data was in place.
    pub status: Status,
    /// Problems that did not stop the restore.
    pub warnings: Vec<String>,
    /// Kind-specific facts (per-collection counts of a database load).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// What a restore of one component will do (for `--dry-run` and confirmation).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreStep {
    /// `kind.name`.
    pub name: String,
    /// Path inside the set.
    pub repo_path: PathBuf,
    /// Where it will be written.
    pub destination: PathBuf,
    /// Whether existing data there is replaced (and kept aside).
    pub replaces_existing: bool,
    /// Whether what it replaces is kept aside (a swapped directory) rather than dropped (a
    /// database load).
    pub keeps_previous: bool,
    /// Services stopped before, in order.
    pub stop: Vec<String>,
    /// Commands run after, in order.
    pub start: Vec<String>,
    /// Files and bytes in the set.
    pub files: u64,
    /// Bytes in the set.
    pub bytes: u64,
}

/// How `restore --all` stops and starts a component's service around the restore.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceControl {
    /// Run before any component is restored; `None` when the service must stay up (a
    /// MongoDB instance is loaded through its own server).
    pub stop: Option<Vec<String>>,
    /// Run after every component is restored, in the reverse order of the stops; then the
    /// component's [`Component::health_check`] runs.
    pub start: Vec<String>,
}

/// The operations every kind of component provides.
pub trait Component: Send + Sync {
    /// `kind.name`.
    fn name(&self) -> &ComponentName;
    /// Where the data comes from (a path, or a URI with credentials redacted).
    fn source(&self) -> String;
    /// Absolute path of the component's data inside a set.
    fn repo_path(&self) -> &Path;
    /// Problems with this component on this machine (`config check`); empty when fine.
    fn check(&self) -> Vec<String>;
    /// The data's size now, and how much of it differs from `stored` (the parent set), for
    /// plans and free-space checks.
    ///
    /// # Errors
    /// When the source cannot be read.
    fn estimate(&self, stored: Option<&StoredIndex>) -> Result<Estimate, ComponentError>;
    /// Makes the data readable for the backup. Nothing may be stopped or staged after this
    /// returns an error. May use `staging` (a private directory on the repository's
    /// filesystem) for copies.
    ///
    /// # Errors
    /// When the source cannot be prepared; the set then fails.
    fn prepare(&self, staging: &Path, progress: &ProgressRef) -> Result<Prepared, ComponentError>;
    /// [`Component::prepare`] knowing the set this backup builds on, for components whose
    /// manifest facts are costly to compute and can be carried over when nothing changed
    /// (the SSDB key digest). The default ignores the parent.
    ///
    /// # Errors
    /// As [`Component::prepare`].
    fn prepare_after(
        &self,
        staging: &Path,
        progress: &ProgressRef,
        parent: Option<&ParentSet<'_>>,
    ) -> Result<Prepared, ComponentError> {
        let _ = parent;
        self.prepare(staging, progress)
    }
    /// Judges what was stored and builds the manifest record. Called after the data was
    /// stored and before the set is completed; a `Failed` record fails the whole set.
    fn finish(&self, prepared: Prepared, stats: PartStats) -> ComponentRecord;
    /// Describes the restore without doing anything.
    fn plan_restore(&self, target: &RestoreTarget, record: &ComponentRecord) -> RestoreStep;
    /// Restores from set `set_id`. In place it must leave either the old data or the new
    /// data at the live path, never a mix, and say where the other one is.
    ///
    /// # Errors
    /// When nothing was changed, or when the old data was put back; the message says which.
    fn restore(&self, req: &RestoreRequest<'_>) -> Result<ComponentRestore, ComponentError>;
    /// The systemd unit serving this component's data, which `doctor` expects installed;
    /// `None` when no unit does (a directory tree).
    fn unit(&self) -> Option<String> {
        None
    }
    /// The service around this component's data, for `restore --all`; `None` when nothing
    /// runs on it.
    fn service_control(&self) -> Option<ServiceControl> {
        None
    }
    /// Whether the component's service answers now: `Ok` with what was seen, or `Err` with
    /// what failed. Called after `restore --all` starts it, and before anything is stopped
    /// for services that stay up. Waits a bounded time for a service that is starting.
    ///
    /// # Errors
    /// [`HealthError`]: what did not answer, and how it failed.
    fn health_check(&self) -> Result<String, HealthError> {
        Ok("no health check for this kind".to_string())
    }
    /// In snapshot mode, whether a snapshot can be taken of the data's volume now: `Ok` with
    /// the volume, filesystem and room, or `Err` with why not and what to do. `None` in
    /// other modes.
    fn snapshot_probe(&self) -> Option<Result<String, String>> {
        None
    }
}

/// The manifest record of a component stored from a private staged copy (SSDB checkpoint,
/// MongoDB dump): any read error fails it; a file that changed while read (which a staged
/// copy should never do) is a warning.
#[must_use]
pub fn staged_record(
    name: &ComponentName,
    source: String,
    prepared: Prepared,
    stats: &PartStats,
) -> ComponentRecord {
    ComponentRecord {
        name: name.to_string(),
        kind: name.kind.to_string(),
        source,
        repo_path: prepared.part.repo_path.display().to_string(),
        files: stats.files,
        dirs: stats.dirs,
        bytes: stats.bytes,
        read_bytes: stats.read_bytes,
        status: if stats.errors.is_empty() {
            Status::Complete
        } else {
            Status::Failed
        },
        warnings: stats
            .changed
            .iter()
            .map(|c| format!("changed while being read: {c}"))
            .collect(),
        errors: stats.errors.clone(),
        details: prepared.details,
        prepare_seconds: 0.0,
    }
}

/// Builds the components named (all configured ones when `only` is empty).
///
/// # Errors
/// An `--only` name that is not configured; kinds that are not implemented yet.
pub fn build(
    config: &Config,
    only: &[ComponentName],
) -> Result<Vec<Box<dyn Component>>, ComponentError> {
    let names = config.component_names();
    for wanted in only {
        if !names.contains(wanted) {
            return Err(ComponentError::Source {
                name: wanted.clone(),
                path: config.source.clone().unwrap_or_default(),
                message: format!(
                    "no such component in the config; configured: {}",
                    names
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let mut out: Vec<Box<dyn Component>> = Vec::new();
    for name in names {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let kind = name.kind;
        out.push(
            kind.build(name.clone(), config)
                .ok_or(ComponentError::NotSupported(name))?,
        );
    }
    Ok(out)
}

/// Restores a component's subtree to `DIR/<kind>/<name>/`, touching nothing else.
///
/// # Errors
/// [`ComponentError::Tree`] when the data cannot be written or authenticated.
pub fn restore_to_directory(
    name: &ComponentName,
    repo_path: &Path,
    dir: &Path,
    repo: &Repository,
    set_id: &str,
    progress: &ProgressRef,
) -> Result<ComponentRestore, ComponentError> {
    let dest = dir.join(name.kind.as_str()).join(&name.name);
    // Below `--target DIR` akbackup makes every directory: a link there was planted.
    for inside in [dir.join(name.kind.as_str()), dest.clone()] {
        if std::fs::symlink_metadata(&inside).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(ComponentError::Tree {
                name: name.clone(),
                error: Box::new(crate::tree::TreeError::Symlink(inside)),
            });
        }
    }
    // `--target DIR` itself is the operator's choice, but not one another user can redirect: a
    // directory on the way that they can change lets them swap in a symlink mid-restore.
    if let Some((at, why)) = crate::fsutil::writable_by_others(&dest) {
        return Err(ComponentError::Tree {
            name: name.clone(),
            error: Box::new(crate::tree::TreeError::Exposed {
                path: dest,
                dir: at,
                why,
            }),
        });
    }
    let written = crate::tree::materialize(
        repo,
        set_id,
        repo_path,
        &dest,
        &name.to_string(),
        progress,
        crate::tree::Durability::Cached,
    )
    .map_err(|source| ComponentError::Tree {
        name: name.clone(),
        error: Box::new(source),
    })?;
    Ok(ComponentRestore {
        name: name.to_string(),
        destination: dest,
        previous: None,
        restarted: None,
        written,
        status: Status::Complete,
        warnings: Vec::new(),
        details: serde_json::Value::Null,
    })
}

/// Restores a stored component into a fresh temporary directory, for checks that need the
/// files themselves (`verify --deep`); the directory goes when the guard is dropped.
///
/// # Errors
/// [`CheckRestoreError`]: no temporary directory, or the data could not be restored.
pub fn restore_for_check(
    repo: &Repository,
    set_id: &str,
    record: &ComponentRecord,
    progress: &ProgressRef,
) -> Result<(crate::stage::Stage, PathBuf), CheckRestoreError> {
    let tmp_dir = std::env::temp_dir();
    let _ = crate::stage::sweep(&tmp_dir, crate::stage::VERIFY);
    let tmp = crate::stage::Stage::create(&tmp_dir, crate::stage::VERIFY)
        .map_err(|error| CheckRestoreError::Temporary { error })?;
    let dest = tmp.path().join("data");
    crate::tree::materialize(
        repo,
        set_id,
        Path::new(&record.repo_path),
        &dest,
        &format!("deep {}", record.name),
        progress,
        crate::tree::Durability::Cached,
    )
    .map_err(|error| CheckRestoreError::Restore { error })?;
    Ok((tmp, dest))
}

/// Why [`restore_for_check`] could not give a deep check its files; a finding of the verify
/// report.
#[derive(Debug, thiserror::Error)]
pub enum CheckRestoreError {
    /// No private temporary directory.
    #[error("cannot create a temporary directory: {error}")]
    Temporary {
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// The stored data could not be restored (damaged, or the disk is full).
    #[error("cannot restore it for a deep check: {error}")]
    Restore {
        /// Cause (printed in the message).
        error: TreeError,
    },
}

/// A timestamp usable in file names: `20261124T235959Z`.
#[must_use]
pub fn stamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A health check that kept failing is one line: the last failure, then how long it was
    /// retried; nothing is left for a chain walker to repeat.
    #[test]
    fn still_failing_prints_the_last_failure_once() {
        let e = HealthError::StillFailing {
            seconds: 60,
            last: Box::new(HealthError::Ssdb {
                error: ssdb::protocol::ProtocolError::NoAddress {
                    addr: "ssdb-hb:8888".to_string(),
                },
            }),
        };
        assert_eq!(
            crate::error::chain(&e),
            "cannot resolve ssdb-hb:8888 (still failing after 60s)"
        );
        assert!(std::error::Error::source(&e).is_none());
    }
}
