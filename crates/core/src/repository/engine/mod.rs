//! The storage engine: the only module that names `rustic_core` and `rustic_backend`.
//!
//! `rustic_core` implements the restic repository format v2 (encryption, zstd, content-defined
//! chunking). Its 0.x API breaks often, so everything above this module speaks the small
//! [`Engine`] trait in our own types. Two library behaviours are worked around here:
//! per-file read errors during a backup are only logged by the library, so the backup source
//! ([`source`]) records them itself; and the library's restore unwraps read errors inside
//! worker threads (a panic on a corrupted repository), so we restore through
//! [`Engine::read_blob`], which checks every blob against its SHA-256 id before any byte is
//! written.
//!
//! This file owns the trait and the plain types it speaks; it names no library type. The
//! implementation is [`rustic`], the backup source [`source`], tree walking [`tree`], errors
//! [`error`], and where a repository lives [`location`].

mod error;
mod location;
mod rustic;
mod source;
mod storage;
mod tree;

use std::path::{Path, PathBuf};

pub use error::{EngineError, EngineResult};
pub use location::{Location, S3Options, SftpOptions};
pub use rustic::{RusticEngine, init, open};
pub(crate) use storage::{operator, write_renamed};

use crate::progress::ProgressRef;

/// A repository file that cannot be read: `(id, why)`.
pub type DamagedFile = (String, String);

/// A snapshot as the layers above see it.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// Full hex id.
    pub id: String,
    /// When the snapshot was taken.
    pub time: jiff::Timestamp,
    /// Tags.
    pub tags: Vec<String>,
    /// Free text; akbackup keeps the set manifest here as JSON.
    pub description: Option<String>,
    /// The backed-up paths.
    pub paths: Vec<String>,
    /// Host name.
    pub hostname: String,
    /// The snapshot this one was rewritten from.
    pub original: Option<String>,
    /// Bytes added to the repository (after compression), when known.
    pub data_added_packed: Option<u64>,
    /// Bytes added before compression, when known.
    pub data_added: Option<u64>,
}

/// What an entry of a snapshot tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to the target.
    Symlink(PathBuf),
    /// Devices, fifos, sockets: listed, not restored.
    Other(String),
}

/// An opaque reference to a data blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobRef(String);

impl BlobRef {
    /// The hex id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One entry of a snapshot tree.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the listed root; empty for the root itself.
    pub path: PathBuf,
    /// Kind of entry.
    pub kind: EntryKind,
    /// Unix permission bits including setuid/setgid/sticky.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Modification time.
    pub mtime: Option<jiff::Timestamp>,
    /// Access time.
    pub atime: Option<jiff::Timestamp>,
    /// Size in bytes for files.
    pub size: u64,
    /// The file's content, in order.
    pub blobs: Vec<BlobRef>,
}

/// One part of a backup set: a directory read from `read_root`, stored under `repo_path`.
#[derive(Debug, Clone)]
pub struct SourcePart {
    /// Label for progress and error attribution (`files.control`).
    pub label: String,
    /// Where the bytes are read now (the live directory or a staging copy).
    pub read_root: PathBuf,
    /// Absolute path the data gets inside the snapshot.
    pub repo_path: PathBuf,
    /// Glob patterns to exclude.
    pub excludes: Vec<String>,
    /// Whose owner, mode and times the component's root directory gets in the snapshot (the
    /// live directory when `read_root` is a staging copy).
    pub meta_root: PathBuf,
    /// Expected bytes, for progress and ETA (from the plan).
    pub expected_bytes: Option<u64>,
    /// Record each file's ctime as its mtime. For staging copies made of hard links: linking
    /// changes a file's ctime on every run, which would make every unchanged table file look
    /// modified to the parent comparison and be read again.
    pub ctime_from_mtime: bool,
}

/// What a new snapshot says about itself besides its tree.
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    /// Tags.
    pub tags: &'a [String],
    /// Free text (the set manifest, or a placeholder while the set is partial).
    pub description: &'a str,
    /// The host it belongs to (scopes `latest`, retention and cleanup).
    pub host: &'a str,
    /// Its time; now when `None` (tests fix it).
    pub time: Option<jiff::Timestamp>,
}

/// What happened to one part while it was read.
#[derive(Debug, Clone, Default)]
pub struct PartStats {
    /// Regular files seen.
    pub files: u64,
    /// Directories seen.
    pub dirs: u64,
    /// Symlinks and other entries seen.
    pub others: u64,
    /// Total size of regular files.
    pub bytes: u64,
    /// Bytes actually read (unchanged files are not read again).
    pub read_bytes: u64,
    /// Files or directories that could not be read.
    pub errors: Vec<String>,
    /// Files that changed while they were read.
    pub changed: Vec<String>,
}

/// Retention rule counts, applied per set.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Keep the last N.
    pub keep_last: Option<i32>,
    /// Keep N daily.
    pub keep_daily: Option<i32>,
    /// Keep N weekly.
    pub keep_weekly: Option<i32>,
    /// Keep N monthly.
    pub keep_monthly: Option<i32>,
    /// Keep N yearly.
    pub keep_yearly: Option<i32>,
    /// Keep everything younger than this.
    pub keep_within: Option<std::time::Duration>,
    /// The clock the rules are applied at (now when `None`; tests fix it).
    pub now: Option<jiff::Timestamp>,
}

/// A retention decision for one snapshot.
#[derive(Debug, Clone)]
pub struct RetentionDecision {
    /// Snapshot id.
    pub id: String,
    /// Keep it?
    pub keep: bool,
    /// Why (e.g. "daily", "last").
    pub reasons: Vec<String>,
}

/// What a prune did or would do.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneSummary {
    /// Pack files that became unused and were marked for deletion by this run.
    pub packs_marked: u64,
    /// Pack files marked by an earlier run long enough ago, deleted by this one.
    pub packs_deleted: u64,
    /// Pack files rewritten (their used part into new packs).
    pub packs_repacked: u64,
    /// Pack files still marked, deleted by a later prune once they are old enough.
    pub packs_kept_marked: u64,
    /// Pack files that left the storage, counted by listing it before and after.
    pub packs_removed: u64,
    /// Bytes of those pack files.
    pub bytes_freed: u64,
    /// How long a marked pack survives before a prune deletes it.
    pub delete_after_seconds: u64,
}

/// Which share of the packs a check reads (`--read-data-subset`): a share of their size
/// like `5%`, a part like `1/7` (`1/7` .. `7/7` on the days of a week read everything once),
/// or a size like `500MiB`.
///
/// Kept as the text it was parsed from, which is how it is shown; the engine turns it into
/// its library's form when the check runs, which is also when a named part (`daily/week`)
/// resolves against the date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSubset(String);

impl ReadSubset {
    /// The subset as given (`5%`, `1/7`, `500MiB`).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ReadSubset {
    type Err = EngineError;

    /// Parses a `--read-data-subset` value; the error says which forms are accepted.
    fn from_str(s: &str) -> EngineResult<Self> {
        let subset = Self(s.to_string());
        subset.option()?;
        Ok(subset)
    }
}

impl std::fmt::Display for ReadSubset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A problem found by a repository check.
#[derive(Debug, Clone)]
pub struct EngineFinding {
    /// True for errors, false for warnings.
    pub error: bool,
    /// Description.
    pub message: String,
}

/// The repository operations akbackup needs, in its own types.
///
/// The seam between akbackup and the storage library. [`RusticEngine`] is its one
/// implementation, and `Repository` holds it as that type, so [`Engine::copy_to`] gets a
/// destination of its own kind without a downcast; the lock files use it as `dyn Engine`.
pub trait Engine: Send + Sync {
    /// Stores a new snapshot of `parts` (in one tree, each under its `repo_path`); the stats
    /// come back in the order of `parts`. Labels must be unique.
    ///
    /// `parent` is the snapshot whose unchanged files need not be read again.
    ///
    /// # Errors
    /// Storage errors; per-file read errors are returned in the stats, not here.
    fn backup(
        &self,
        parts: &[SourcePart],
        meta: &NewSnapshot<'_>,
        parent: Option<&str>,
        progress: &ProgressRef,
    ) -> EngineResult<(SnapshotInfo, Vec<PartStats>)>;
    /// All snapshots, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    fn snapshots(&self) -> EngineResult<Vec<SnapshotInfo>>;
    /// Snapshot files that cannot be read (damaged, truncated, not decryptable), with why.
    /// [`Engine::snapshots`] leaves them out, so one damaged file does not hide every set.
    ///
    /// # Errors
    /// Storage errors listing the snapshot files.
    fn damaged_snapshots(&self) -> EngineResult<Vec<DamagedFile>>;
    /// Writes a copy of snapshot `id` with new tags and description, deletes the old one,
    /// and returns the copy. The copy is written before the old one is deleted.
    ///
    /// # Errors
    /// Storage errors.
    fn rewrite_snapshot(
        &self,
        id: &str,
        tags: &[String],
        description: &str,
    ) -> EngineResult<SnapshotInfo>;
    /// Deletes snapshots (not their data; see [`Engine::prune`]).
    ///
    /// # Errors
    /// Storage errors.
    fn delete_snapshots(&self, ids: &[String]) -> EngineResult<()>;
    /// Lists the subtree at absolute `path` of snapshot `id`, root first, parents before children.
    /// Every entry's path is made of plain names, so joined onto a destination it stays inside.
    ///
    /// # Errors
    /// [`EngineError::NotInSnapshot`] when the path is missing; [`EngineError::DamagedTree`]
    /// when an entry's name is empty, `.`, `..`, holds `/` or NUL, or appears twice in its
    /// directory; storage errors.
    fn walk(&self, id: &str, path: &Path) -> EngineResult<Vec<Entry>>;
    /// Reads one data blob and checks it against its SHA-256 id.
    ///
    /// # Errors
    /// [`EngineError::DamagedBlob`] when it cannot be read, decrypted or does not match.
    fn read_blob(&self, blob: &BlobRef) -> EngineResult<bytes::Bytes>;
    /// Checks the repository structure, and with `read_data` every pack (with `subset`, only
    /// that share of them).
    ///
    /// # Errors
    /// When the check itself could not run.
    fn check(
        &self,
        read_data: bool,
        subset: Option<&ReadSubset>,
    ) -> EngineResult<Vec<EngineFinding>>;
    /// Copies the snapshots `ids` into `dest` (another repository of this engine, which the
    /// type ensures), sending only the data `dest` lacks; snapshots already copied there are
    /// skipped. Returns the ids (in this repository) that were copied.
    ///
    /// # Errors
    /// Storage errors.
    fn copy_to(&self, dest: &Self, ids: &[String]) -> EngineResult<Vec<String>>
    where
        Self: Sized;
    /// Adds to the index the packs a crashed run uploaded but never indexed (and drops
    /// index entries of packs that are gone), so the next run reuses that data instead of
    /// sending it again.
    ///
    /// # Errors
    /// Storage errors.
    fn adopt_unindexed_packs(&self) -> EngineResult<()>;

    /// Re-reads the index from storage (another process may have changed it since open).
    ///
    /// # Errors
    /// Storage errors.
    fn reload_index(&self) -> EngineResult<()>;
    /// The repository's keys (hex ids), and the one this process opened it with.
    ///
    /// # Errors
    /// Storage errors.
    fn keys(&self) -> EngineResult<(Vec<String>, Option<String>)>;
    /// Adds a key for `password`; returns its id.
    ///
    /// # Errors
    /// Storage errors.
    fn add_key(&self, password: &str) -> EngineResult<String>;
    /// Removes the key with this full hex id (never the one in use).
    ///
    /// # Errors
    /// The key in use; storage errors.
    fn remove_key(&self, id: &str) -> EngineResult<()>;
    /// Applies retention to the snapshots with the given ids.
    ///
    /// # Errors
    /// When no rule is given.
    fn retention(&self, ids: &[String], rules: &Retention) -> EngineResult<Vec<RetentionDecision>>;
    /// Removes data no snapshot references, in two phases: data that became unused is
    /// marked, and deleted by a later prune once it has been marked for `delete_after`
    /// (a backup that still used it meanwhile brings it back). The counts in the result are
    /// the plan's; the caller measures what really left the storage.
    ///
    /// # Errors
    /// Storage errors.
    fn prune(&self, dry_run: bool, delete_after: std::time::Duration)
    -> EngineResult<PruneSummary>;
    /// Encrypts and authenticates `data` with the repository's master key, in restic's
    /// format for unpacked files (IV, ciphertext, MAC).
    ///
    /// # Errors
    /// When the key is unavailable or encryption fails.
    fn seal(&self, data: &[u8]) -> EngineResult<Vec<u8>>;
    /// Decrypts and authenticates a file sealed with the master key (by us or by restic).
    ///
    /// # Errors
    /// [`EngineError::Library`] when the MAC does not match or the data is too short.
    fn unseal(&self, data: &[u8]) -> EngineResult<Vec<u8>>;
}
