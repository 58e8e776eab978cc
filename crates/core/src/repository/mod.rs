//! The repository: backup sets, their manifests, the password and the lock.
//!
//! Components never touch storage directly; they hand directories to [`Repository::store_set`]
//! and read back through [`Repository::walk`] and [`Repository::read_blob`]. The storage
//! format is the engine's business ([`engine`]); this module adds akbackup's meaning on top:
//! which snapshots are sets, which set is `latest`, and who may write.

pub mod engine;
pub mod lock;
pub mod password;

use std::path::{Path, PathBuf};

use crate::{
    backup_set::{BackupSet, Manifest, PARTIAL_TAG, SET_TAG},
    config::Config,
    progress::ProgressRef,
};
pub use engine::{BlobRef, Entry, EntryKind, PartStats, SourcePart};
use engine::{Engine, EngineError, SnapshotInfo};
pub use lock::{LockError, RepoLock};
pub use password::PasswordError;

/// Errors of repository operations.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// From the storage engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// From resolving the password.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// From the lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The config has no usable repository.
    #[error("{0}")]
    Config(String),
    /// A set that does not exist.
    #[error("no backup set matches \"{0}\": run `akbackup snapshots` to list them")]
    NoSuchSet(String),
    /// `latest` with no sets.
    #[error("the repository has no complete backup set yet: run `akbackup backup`")]
    NoSets,
    /// A set id prefix matching several sets.
    #[error("\"{0}\" matches several backup sets: give more digits")]
    Ambiguous(String),
}

impl RepoError {
    /// True when the error is about the environment (exit code 2) rather than data found bad.
    #[must_use]
    pub const fn is_environment(&self) -> bool {
        !matches!(self, Self::Engine(EngineError::DamagedBlob { .. }))
    }
}

/// An open repository.
pub struct Repository {
    path: PathBuf,
    engine: Box<dyn Engine>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The repository location from the config.
///
/// # Errors
/// [`RepoError::Config`] when `[repository] path` is missing.
pub fn location(config: &Config) -> Result<PathBuf, RepoError> {
    config
        .repository_path()
        .map(Path::to_path_buf)
        .map_err(|e| RepoError::Config(e.to_string()))
}

/// Creates a new repository as configured.
///
/// # Errors
/// Existing repository, password problems, storage errors.
pub fn init(config: &Config) -> Result<PathBuf, RepoError> {
    let path = location(config)?;
    let password = password::resolve(&config.repository)?;
    std::fs::create_dir_all(&path).map_err(|e| {
        RepoError::Config(format!(
            "cannot create repository directory {}: {e}",
            path.display()
        ))
    })?;
    engine::init_local(&path, &password)?;
    Ok(path)
}

impl Repository {
    /// Opens the configured repository.
    ///
    /// # Errors
    /// Missing repository, wrong password, storage errors.
    pub fn open(config: &Config) -> Result<Self, RepoError> {
        let path = location(config)?;
        if !path.join("config").is_file() {
            return Err(EngineError::NotFound(path.display().to_string()).into());
        }
        let password = password::resolve(&config.repository)?;
        let engine = engine::open_local(&path, &password)?;
        Ok(Self {
            path,
            engine: Box::new(engine),
        })
    }

    /// Where the repository lives.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the write lock for `command`.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the holder.
    pub fn lock(&self, command: &str) -> Result<RepoLock, RepoError> {
        Ok(RepoLock::acquire(&self.path, command)?)
    }

    /// All complete sets, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn sets(&self) -> Result<Vec<BackupSet>, RepoError> {
        Ok(self
            .engine
            .snapshots()?
            .into_iter()
            .filter(|s| s.tags.iter().any(|t| t == SET_TAG))
            .filter_map(|s| set_of(&s))
            .collect())
    }

    /// Ids of snapshots left by runs that did not complete.
    ///
    /// # Errors
    /// Storage errors.
    pub fn partial_snapshots(&self) -> Result<Vec<String>, RepoError> {
        Ok(self
            .engine
            .snapshots()?
            .into_iter()
            .filter(|s| s.tags.iter().any(|t| t == PARTIAL_TAG))
            .map(|s| s.id)
            .collect())
    }

    /// Finds a set by `latest`, a full id or a unique prefix.
    ///
    /// # Errors
    /// [`RepoError::NoSuchSet`], [`RepoError::Ambiguous`], [`RepoError::NoSets`].
    pub fn find_set(&self, spec: &str) -> Result<BackupSet, RepoError> {
        let mut sets = self.sets()?;
        if spec == "latest" {
            return sets.pop().ok_or(RepoError::NoSets);
        }
        let mut matching: Vec<_> = sets
            .into_iter()
            .filter(|s| s.id.starts_with(spec))
            .collect();
        match matching.len() {
            0 => Err(RepoError::NoSuchSet(spec.to_string())),
            1 => Ok(matching.remove(0)),
            _ => Err(RepoError::Ambiguous(spec.to_string())),
        }
    }

    /// Stores `parts` as a partial snapshot; the caller completes it with
    /// [`Repository::complete_set`] or discards it with [`Repository::discard`].
    ///
    /// # Errors
    /// Storage errors (per-file read errors come back in the stats).
    pub fn store_set(
        &self,
        parts: &[SourcePart],
        tags: &[String],
        parent: Option<&str>,
        time: Option<jiff::Timestamp>,
        progress: &ProgressRef,
    ) -> Result<(String, Vec<PartStats>, Option<u64>), RepoError> {
        let mut all_tags = vec![PARTIAL_TAG.to_string()];
        all_tags.extend(tags.iter().cloned());
        let (info, stats) = self.engine.backup(
            parts,
            &all_tags,
            "akbackup set in progress",
            parent,
            time,
            progress,
        )?;
        Ok((info.id, stats, info.data_added_packed))
    }

    /// Turns a partial snapshot into a complete set with its final manifest.
    ///
    /// # Errors
    /// Storage errors; the partial snapshot then stays and is cleaned up later.
    pub fn complete_set(
        &self,
        partial_id: &str,
        manifest: &Manifest,
    ) -> Result<BackupSet, RepoError> {
        let mut tags = vec![SET_TAG.to_string()];
        tags.extend(manifest.tags.iter().cloned());
        let info = self
            .engine
            .rewrite_snapshot(partial_id, &tags, &manifest.to_description())?;
        set_of(&info)
            .ok_or_else(|| RepoError::Config("the completed set has no manifest".to_string()))
    }

    /// Deletes snapshots (partial ones, or sets dropped by retention).
    ///
    /// # Errors
    /// Storage errors.
    pub fn discard(&self, ids: &[String]) -> Result<(), RepoError> {
        if ids.is_empty() {
            return Ok(());
        }
        Ok(self.engine.delete_snapshots(ids)?)
    }

    /// Lists the subtree `path` of set `set_id`.
    ///
    /// # Errors
    /// Missing path, storage errors.
    pub fn walk(&self, set_id: &str, path: &Path) -> Result<Vec<Entry>, RepoError> {
        Ok(self.engine.walk(set_id, path)?)
    }

    /// Reads and authenticates a data blob.
    ///
    /// # Errors
    /// [`EngineError::DamagedBlob`].
    pub fn read_blob(&self, blob: &BlobRef) -> Result<Vec<u8>, RepoError> {
        Ok(self.engine.read_blob(blob)?)
    }

    /// The storage engine, for verify/forget.
    #[must_use]
    pub fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }
}

fn set_of(info: &SnapshotInfo) -> Option<BackupSet> {
    let manifest = Manifest::from_description(info.description.as_deref()?)?;
    Some(BackupSet {
        id: info.id.clone(),
        manifest,
        added_bytes: info.data_added_packed,
    })
}
