//! The storage engine: the only module that names `rustic_core` and `rustic_backend`.
//!
//! `rustic_core` implements the restic repository format v2 (encryption, zstd, content-defined
//! chunking). Its 0.x API breaks often, so everything above this module speaks the small
//! [`Engine`] trait in our own types. Two library behaviours are worked around here:
//! per-file read errors during a backup are only logged by the library, so [`SetSource`]
//! records them itself; and the library's restore unwraps read errors inside worker threads
//! (a panic on a corrupted repository), so we restore through [`Engine::read_blob`], which
//! checks every blob against its SHA-256 id before any byte is written.

use std::{
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use rustic_backend::BackendOptions;
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, DataId, ErrorKind, Excludes, Id,
    IndexedFullStatus, KeepOptions, KeyOptions, LocalSource, LocalSourceFilterOptions,
    LocalSourceSaveOptions, ParentOptions, PruneOptions, ReadSource, ReadSourceEntry,
    ReadSourceOpen, Repository, RepositoryOptions, RusticError, RusticResult, SnapshotOptions,
    StringList,
    repofile::{Node, SnapshotFile, SnapshotId},
};
use sha2::{Digest, Sha256};

use crate::progress::ProgressRef;

/// Errors of the engine, already sorted into what the operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The password does not open any key of the repository.
    #[error(
        "wrong password for repository {0} (or its key file is damaged): check password-file / AKBACKUP_PASSWORD"
    )]
    WrongPassword(String),
    /// No repository at the location.
    #[error(
        "no repository at {0}: run `akbackup init` first, or fix [repository] path / url (and check that the bucket exists)"
    )]
    NotFound(String),
    /// A repository already exists at the location.
    #[error("a repository already exists at {0}: refusing to overwrite it")]
    AlreadyExists(String),
    /// A blob's content does not match its id, or could not be decrypted.
    #[error("blob {id} is damaged: {reason}")]
    DamagedBlob {
        /// Hex id of the blob.
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// A tree of the set holds an entry no backup writes: a name that is empty, `.`, `..`, or
    /// holds `/` or NUL, or a name twice in one directory. Restic and akbackup never store
    /// one; a crafted repository does, to make a restore write outside its destination.
    #[error(
        "set {set} is damaged: its entry {entry} {reason}, which no backup writes (the repository was tampered with or written by another program); nothing of the set is written to disk"
    )]
    DamagedTree {
        /// The set (snapshot id, 8 digits).
        set: String,
        /// The entry: its directory in the snapshot and its name, quoted.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A snapshot or path that does not exist.
    #[error("{0}")]
    NotInSnapshot(String),
    /// The storage ran out of space (`ENOSPC`) during `what`.
    #[error("{what}: no space left on {}", holding(path))]
    NoSpace {
        /// The operation.
        what: &'static str,
        /// The repository (filled in by the layer that knows it; empty here).
        path: String,
    },
    /// Anything else the library reported; `what` says which operation.
    #[error("{what}: {message}")]
    Library {
        /// The operation.
        what: &'static str,
        /// The library's message, first line only.
        message: String,
    },
}

/// Where a full disk is, for [`EngineError::NoSpace`]: the path once a layer that knows it
/// filled it in (see `Repository::located`), else the repository in general.
fn holding(path: &str) -> String {
    if path.is_empty() {
        "the filesystem holding the repository".to_string()
    } else {
        format!("the filesystem holding {path}")
    }
}

impl EngineError {
    /// A library error during an operation on `location`: the storage cause when there is
    /// one, else the library's first line.
    fn storage(what: &'static str, location: &Location, err: &RusticError) -> Self {
        match storage_cause(err, location) {
            Some(message) => Self::Library { what, message },
            None => Self::library(what, err),
        }
    }

    fn library(what: &'static str, err: &RusticError) -> Self {
        if is_no_space(err) {
            return Self::NoSpace {
                what,
                path: String::new(),
            };
        }
        let mut message = first_line(err);
        if message.is_empty() {
            message = "unknown error".to_string();
        }
        if message.contains("related to a key") {
            message = format!(
                "a key file of the repository is damaged or unreadable ({message}); a key made with another password may still open it (`akbackup key list`)"
            );
        } else if message.contains("related to cryptographic operations") {
            message = format!(
                "a repository file failed authentication: it is damaged ({message}){}",
                if what == "loading index" {
                    "; the packs are intact if `verify` can still read them: rebuild the index with the standard client, `restic -r REPO repair index` (restic 0.14: `rebuild-index`)"
                } else {
                    ""
                }
            );
        }
        Self::Library { what, message }
    }
}

/// True when the error chain holds an `ENOSPC` (the library reports it with a generic first
/// line, which would hide the one fact the operator needs).
fn is_no_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(nix::libc::ENOSPC))
        {
            return true;
        }
        if e.to_string().contains("No space left on device") {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Whether a file vanished under us (listed, then gone when read).
fn is_not_found(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            || e.downcast_ref::<opendal::Error>()
                .is_some_and(|o| o.kind() == opendal::ErrorKind::NotFound)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// A repository file that cannot be read: `(id, why)`.
pub type DamagedFile = (String, String);

/// Result type of the engine.
pub type EngineResult<T> = Result<T, EngineError>;

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

/// A problem found by a repository check.
#[derive(Debug, Clone)]
pub struct EngineFinding {
    /// True for errors, false for warnings.
    pub error: bool,
    /// Description.
    pub message: String,
}

/// The repository operations akbackup needs, in its own types.
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
    /// Checks the repository structure, and with `read_data` every pack.
    ///
    /// # Errors
    /// When the check itself could not run.
    fn check(&self, read_data: bool, subset: Option<&str>) -> EngineResult<Vec<EngineFinding>>;
    /// Copies the snapshots `ids` into `dest` (another repository of this engine), sending
    /// only the data `dest` lacks; snapshots already copied there are skipped. Returns the
    /// ids (in this repository) that were copied.
    ///
    /// # Errors
    /// Storage errors; a `dest` of another engine kind.
    fn copy_to(&self, dest: &dyn Engine, ids: &[String]) -> EngineResult<Vec<String>>;
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
    /// For [`Engine::copy_to`]: the concrete engine behind the trait.
    fn as_any(&self) -> &dyn std::any::Any;
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

/// Parses a `--read-data-subset` value (`5%`, `n/m`, a size).
///
/// # Errors
/// [`EngineError::Library`] saying which forms are accepted.
pub fn parse_subset(sub: &str) -> EngineResult<rustic_core::ReadSubsetOption> {
    sub.parse()
        .map_err(|_: Box<RusticError>| EngineError::Library {
            what: "--read-data-subset",
            message: format!("\"{sub}\" is not a subset: use a share like 5%, a part like 1/7, or a size like 500MiB"),
        })
}

/// Where a repository lives, in the engine's terms.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Options),
}

impl Location {
    /// For messages: the path, or `s3://bucket/prefix`.
    #[must_use]
    pub fn display(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::S3(s) => format!("s3://{}/{}", s.bucket, s.root.trim_start_matches('/')),
        }
    }
}

/// An S3 location and how to talk to it (the options OpenDAL's S3 service and
/// rustic_backend take; built from our typed config, never from user-given keys, because
/// OpenDAL silently ignores keys it does not know).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Bucket.
    pub bucket: String,
    /// Prefix inside the bucket, with a leading `/`.
    pub root: String,
    /// Endpoint URL; AWS when `None`.
    pub endpoint: Option<String>,
    /// Region.
    pub region: String,
    /// Virtual-host style instead of path style.
    pub virtual_host_style: bool,
    /// Explicit credentials; `None` leaves them to the environment (`AWS_*`, `~/.aws`).
    pub credentials: Option<(String, String, Option<String>)>,
    /// Parallel requests.
    pub connections: u32,
    /// Retries per request.
    pub retry: u32,
    /// Seconds one attempt of a request may take before it fails (and is retried).
    pub timeout_secs: u32,
    /// Seconds connecting to the endpoint may take.
    pub connect_timeout_secs: u32,
    /// Bandwidth limit ("10MiB").
    pub bandwidth: Option<String>,
}

impl S3Options {
    /// The options of OpenDAL's S3 service (and rustic_backend's own keys, which OpenDAL
    /// ignores), shared by the engine's backend and [`super::store::Store`].
    pub(crate) fn opendal_options(&self) -> std::collections::BTreeMap<String, String> {
        let mut o = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: String| {
            o.insert(k.to_string(), v);
        };
        put("bucket", self.bucket.clone());
        put("root", self.root.clone());
        if let Some(e) = &self.endpoint {
            put("endpoint", e.clone());
        }
        put("region", self.region.clone());
        put(
            "enable_virtual_host_style",
            self.virtual_host_style.to_string(),
        );
        // Outside EC2 the metadata endpoint hangs instead of failing; never ask it.
        put("disable_ec2_metadata", "true".to_string());
        if let Some((id, secret, token)) = &self.credentials {
            // The signing library logs its credential provider, secret included, at debug.
            crate::redact::register(secret);
            if let Some(t) = token {
                crate::redact::register(t);
            }
            put("access_key_id", id.clone());
            put("secret_access_key", secret.clone());
            if let Some(t) = token {
                put("session_token", t.clone());
            }
            // Explicit credentials win over anything in the environment.
            put("disable_config_load", "true".to_string());
        }
        put("retry", self.retry.to_string());
        // Read by our patch of rustic_backend (vendor/rustic_backend/PATCHED.md): without
        // them a server that never answers hangs the run.
        put("timeout", self.timeout_secs.max(1).to_string());
        put(
            "connect-timeout",
            self.connect_timeout_secs.max(1).to_string(),
        );
        put("connections", self.connections.to_string());
        if let Some(b) = &self.bandwidth {
            // The burst must hold the largest single upload (a pack, up to ~32 MiB and
            // more), or every pack write fails; the rate is what limits.
            put("throttle", format!("{b},64MiB"));
        }
        o
    }

    fn backend_options(&self) -> BackendOptions {
        BackendOptions::default()
            .repository("opendal:s3")
            .options(self.opendal_options())
    }
}

/// Creates a new repository.
///
/// # Errors
/// [`EngineError::AlreadyExists`] when one is there; storage errors.
pub fn init(location: &Location, password: &str) -> EngineResult<()> {
    if let Location::Local(path) = location
        && path.join("config").exists()
    {
        return Err(EngineError::AlreadyExists(path.display().to_string()));
    }
    let backends = backends(location)?;
    let repo = Repository::new(&repo_options(), &backends)
        .map_err(|e| EngineError::storage("creating repository", location, &e))?;
    if matches!(repo.config_id(), Ok(Some(_))) {
        return Err(EngineError::AlreadyExists(location.display()));
    }
    repo.init(
        &Credentials::password(password),
        &KeyOptions::default(),
        &ConfigOptions::default(),
    )
    .map_err(|e| EngineError::storage("creating repository", location, &e))?;
    Ok(())
}

/// Opens an existing repository.
///
/// # Errors
/// [`EngineError::NotFound`], [`EngineError::WrongPassword`], storage errors.
pub fn open(location: &Location, password: &str) -> EngineResult<RusticEngine> {
    if let Location::Local(path) = location
        && !path.join("config").is_file()
    {
        return Err(EngineError::NotFound(path.display().to_string()));
    }
    if let Location::Local(path) = location
        && std::fs::read_dir(path.join("keys")).is_ok_and(|mut d| d.next().is_none())
    {
        return Err(EngineError::Library {
            what: "opening repository",
            message: format!(
                "{} has no key file left (keys/ is empty): no password can open it; put keys/ back from a copy of the repository",
                path.display()
            ),
        });
    }
    // Opening takes no lock, and a prune of another run rewrites the index under its own:
    // an index file listed a moment ago may be gone when it is read. Then open again (the
    // command re-reads the index under its lock anyway); any other error is final.
    let mut tries = 0u32;
    loop {
        match open_once(location, password)?.to_indexed() {
            Ok(repo) => {
                return Ok(RusticEngine {
                    repo: Mutex::new(Some(Arc::new(repo))),
                });
            }
            Err(e) if tries < 10 && is_not_found(&e) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100 * u64::from(tries)));
            }
            Err(e) => return Err(EngineError::storage("loading index", location, &e)),
        }
    }
}

fn open_once(
    location: &Location,
    password: &str,
) -> EngineResult<Repository<rustic_core::OpenStatus>> {
    let backends = backends(location)?;
    let repo = Repository::new(&repo_options(), &backends)
        .map_err(|e| EngineError::storage("opening repository", location, &e))?;
    match repo.config_id() {
        Ok(Some(_)) => {}
        Ok(None) => return Err(EngineError::NotFound(location.display())),
        Err(e) => return Err(EngineError::storage("opening repository", location, &e)),
    }
    repo.open(&Credentials::password(password)).map_err(|e| {
        if e.is_incorrect_password() {
            EngineError::WrongPassword(location.display())
        } else {
            EngineError::storage("opening repository", location, &e)
        }
    })
}

/// No cache: for a local repository it would only copy its index and trees into `~/.cache`
/// of whoever runs akbackup; for a remote one it would be a second copy to keep right.
fn repo_options() -> RepositoryOptions {
    RepositoryOptions::default().no_cache(true)
}

fn backends(location: &Location) -> EngineResult<rustic_core::RepositoryBackends> {
    let options = match location {
        Location::Local(path) => BackendOptions::default().repository(path.display().to_string()),
        Location::S3(s3) => s3.backend_options(),
    };
    options
        .to_backends()
        .map_err(|e| EngineError::storage("opening repository backend", location, &e))
}

/// What a storage error means, from the OpenDAL error in the chain (the engine's own first
/// line is the same generic text for every storage failure).
fn storage_cause(err: &RusticError, location: &Location) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut found = None;
    let mut root = String::new();
    while let Some(e) = cur {
        if found.is_none()
            && let Some(o) = e.downcast_ref::<opendal::Error>()
        {
            found = Some((o.kind(), o.message().to_string()));
        }
        root = e.to_string();
        cur = e.source();
    }
    let (kind, message) = found?;
    let root = root.lines().next().unwrap_or("").trim().to_string();
    let at = location.display();
    Some(match kind {
        opendal::ErrorKind::PermissionDenied => format!(
            "access denied by the storage at {at}: check access-key-id / secret-access-key \
             (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the bucket policy"
        ),
        opendal::ErrorKind::NotFound => {
            format!("not found at {at}: does the bucket exist? ({root})")
        }
        opendal::ErrorKind::ConfigInvalid if root.contains("NoSuchBucket") => {
            format!("the bucket of {at} does not exist: create it first")
        }
        opendal::ErrorKind::ConfigInvalid => {
            format!("invalid storage settings for {at}: {message}")
        }
        _ if message.contains("signing") => format!(
            "no S3 credentials for {at}: set access-key-id / secret-access-key, a \
             credentials-file, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ({root})"
        ),
        _ if message.contains("timeout reached") => match location {
            Location::S3(s3) => format!(
                "no answer from the storage endpoint {} of {at} within the timeout of {} s \
                 ({} attempts): check the endpoint and the server, or raise timeout in the \
                 repository's section for a slow link",
                s3.endpoint.as_deref().unwrap_or("(AWS)"),
                s3.timeout_secs,
                u64::from(s3.retry) + 1,
            ),
            Location::Local(_) => format!("no answer from {at} within the timeout"),
        },
        _ if message.contains("send http request") => {
            format!("cannot reach the storage endpoint of {at}: {root}; check endpoint and network")
        }
        _ => format!("storage error at {at}: {message} ({root})"),
    })
}

/// [`Engine`] over `rustic_core`.
///
/// The repository is kept in the library's fully indexed state (every operation we use works
/// there); after a backup the in-memory index is rebuilt so the new data can be read back.
pub struct RusticEngine {
    repo: Mutex<Option<Arc<Repository<IndexedFullStatus>>>>,
}

impl std::fmt::Debug for RusticEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RusticEngine").finish_non_exhaustive()
    }
}

fn poisoned() -> EngineError {
    EngineError::Library {
        what: "repository state",
        message: "an earlier operation panicked".to_string(),
    }
}

impl RusticEngine {
    fn repo(&self) -> EngineResult<Arc<Repository<IndexedFullStatus>>> {
        self.repo
            .lock()
            .map_err(|_| poisoned())?
            .clone()
            .ok_or_else(poisoned)
    }

    /// Re-reads the index after this process wrote to the repository.
    fn refresh(&self) -> EngineResult<()> {
        let mut guard = self.repo.lock().map_err(|_| poisoned())?;
        let Some(arc) = guard.take() else {
            return Err(poisoned());
        };
        // Only this process's own calls share it, and none is under way when a command takes
        // its lock; should one be, keeping the old index would defeat the re-read: say so.
        let repo = match Arc::try_unwrap(arc) {
            Ok(repo) => repo,
            Err(arc) => {
                *guard = Some(arc);
                return Err(EngineError::Library {
                    what: "reloading index",
                    message: "the index is still in use by another operation of this run"
                        .to_string(),
                });
            }
        };
        let fresh = repo
            .drop_index()
            .to_indexed()
            .map_err(|e| EngineError::library("reloading index", &e))?;
        *guard = Some(Arc::new(fresh));
        Ok(())
    }

    /// Every snapshot file, one by one: the library's "all snapshots" fails as a whole when
    /// one file is damaged, which made every set unlistable and unrestorable.
    fn read_snapshots(&self) -> EngineResult<(Vec<SnapshotFile>, Vec<DamagedFile>)> {
        let repo = self.repo()?;
        let ids: Vec<SnapshotId> = repo
            .list::<SnapshotId>()
            .map_err(|e| EngineError::library("listing snapshots", &e))?
            .collect();
        let mut good = Vec::new();
        let mut damaged = Vec::new();
        for id in ids {
            let read = repo
                .stream_files_list::<SnapshotFile>(vec![id])
                .map(|mut it| it.next());
            match read {
                Ok(Some(Ok((id, mut snap)))) => {
                    snap.id = id;
                    good.push(snap);
                }
                // Listed, then deleted before it was read: another host's backup replaced
                // its partial snapshot, or a forget ran. Gone is not damaged.
                Ok(Some(Err(e))) | Err(e) if is_not_found(&*e) => {}
                Ok(Some(Err(e))) | Err(e) => {
                    damaged.push((id.to_hex().to_string(), first_line(&e)));
                }
                Ok(None) => damaged.push((id.to_hex().to_string(), "not readable".to_string())),
            }
        }
        Ok((good, damaged))
    }

    /// The master key as restic's AEAD: AES-256 key, then Poly1305 k and r.
    fn cipher(&self) -> EngineResult<Aes256CtrPoly1305Aes> {
        let master = self.repo()?.key();
        let (k, r) = (&master.mac.k, &master.mac.r);
        if master.encrypt.len() != 32 || k.len() != 16 || r.len() != 16 {
            return Err(EngineError::Library {
                what: "reading the master key",
                message: "unexpected key length".to_string(),
            });
        }
        let mut key = aes256ctr_poly1305aes::Key::default();
        key[..32].copy_from_slice(&master.encrypt);
        key[32..48].copy_from_slice(k);
        key[48..].copy_from_slice(r);
        Ok(Aes256CtrPoly1305Aes::new(&key))
    }

    fn snapshot(&self, id: &str) -> EngineResult<SnapshotFile> {
        let mut snaps = self.repo()?.get_snapshots(&[id]).map_err(|e| {
            EngineError::NotInSnapshot(format!("snapshot {id}: {}", first_line(&e)))
        })?;
        snaps
            .pop()
            .ok_or_else(|| EngineError::NotInSnapshot(format!("no snapshot {id}")))
    }
}

/// The library's error on one line: its guidance with the context filled in, its kind, and
/// its cause. Its `Display` form spreads over a page and opens with the kind alone ("an error
/// related to `the backend`"), which is all an operator saw when only its first line was
/// kept; the cause (a timeout, a refused request, a missing file) is what names the fix.
fn first_line(err: &RusticError) -> String {
    let log = err.display_log();
    let log = log.strip_prefix("Error: ").unwrap_or(&log);
    log.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn info_of(s: &SnapshotFile) -> SnapshotInfo {
    SnapshotInfo {
        id: s.id.to_hex().to_string(),
        time: s.time.timestamp(),
        tags: s.tags.iter().cloned().collect(),
        description: s.description.clone(),
        paths: s.paths.iter().cloned().collect(),
        hostname: s.hostname.clone(),
        original: s.original.map(|o| o.to_hex().to_string()),
        data_added_packed: s.summary.as_ref().map(|x| x.data_added_packed),
        data_added: s.summary.as_ref().map(|x| x.data_added),
    }
}

// Go's os.FileMode bits used by restic for the special permission bits.
const GO_MODE_SETUID: u32 = 1 << 23;
const GO_MODE_SETGID: u32 = 1 << 22;
const GO_MODE_STICKY: u32 = 1 << 20;

/// A directory's Unix mode in restic's Go form, special bits included.
fn go_dir_mode(mode: u32) -> u32 {
    let mut go = (mode & 0o777) | (1 << 31);
    if mode & 0o4000 != 0 {
        go |= GO_MODE_SETUID;
    }
    if mode & 0o2000 != 0 {
        go |= GO_MODE_SETGID;
    }
    if mode & 0o1000 != 0 {
        go |= GO_MODE_STICKY;
    }
    go
}

fn unix_mode_from_go(go: u32) -> u32 {
    let mut mode = go & 0o777;
    if go & GO_MODE_SETUID != 0 {
        mode |= 0o4000;
    }
    if go & GO_MODE_SETGID != 0 {
        mode |= 0o2000;
    }
    if go & GO_MODE_STICKY != 0 {
        mode |= 0o1000;
    }
    mode
}

/// One directory of [`Engine::walk`] in progress: its path, its entries still to visit and
/// the names seen so far.
struct Frame {
    dir: PathBuf,
    nodes: std::vec::IntoIter<Node>,
    seen: std::collections::HashSet<std::ffi::OsString>,
}

/// Why `name` (unescaped) cannot be the name of a directory entry, if it cannot: joined onto
/// a path it would name another place than an entry of that directory.
fn name_problem(name: &std::ffi::OsStr) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        Some("has an empty name")
    } else if bytes == b"." || bytes == b".." {
        Some("is named like a directory link")
    } else if bytes.contains(&b'/') {
        Some("has a name containing '/'")
    } else if bytes.contains(&0) {
        Some("has a name containing a NUL byte")
    } else {
        None
    }
}

fn entry_of(path: PathBuf, node: &Node) -> Entry {
    use rustic_core::repofile::NodeType;
    let kind = match &node.node_type {
        NodeType::File => EntryKind::File,
        NodeType::Dir => EntryKind::Dir,
        NodeType::Symlink { .. } => EntryKind::Symlink(node.node_type.to_link().to_path_buf()),
        other => EntryKind::Other(other.to_string()),
    };
    Entry {
        path,
        kind,
        mode: node.meta.mode.map(unix_mode_from_go),
        uid: node.meta.uid,
        gid: node.meta.gid,
        mtime: node.meta.mtime,
        atime: node.meta.atime,
        size: node.meta.size,
        blobs: node
            .content
            .as_ref()
            .map(|c| {
                c.iter()
                    .map(|id| BlobRef(id.to_hex().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl Engine for RusticEngine {
    fn backup(
        &self,
        parts: &[SourcePart],
        meta: &NewSnapshot<'_>,
        parent: Option<&str>,
        progress: &ProgressRef,
    ) -> EngineResult<(SnapshotInfo, Vec<PartStats>)> {
        let source = SetSource::new(parts, progress.clone())?;
        let mut snap_opts = SnapshotOptions::default()
            .description(meta.description.to_string())
            .host(meta.host.to_string());
        if let Some(t) = meta.time {
            snap_opts = snap_opts.time(t.to_zoned(jiff::tz::TimeZone::UTC));
        }
        for tag in meta.tags {
            snap_opts = snap_opts
                .add_tags(tag)
                .map_err(|e| EngineError::library("tagging snapshot", &e))?;
        }
        let snap = snap_opts
            .to_snapshot()
            .map_err(|e| EngineError::library("creating snapshot", &e))?;
        let mut parent_opts = ParentOptions::default();
        match parent {
            Some(id) => parent_opts.parents = vec![id.to_string()],
            None => parent_opts.force = true,
        }
        let opts = BackupOptions::default().parent_opts(parent_opts);
        let paths: Vec<PathBuf> = parts.iter().map(|p| p.repo_path.clone()).collect();
        let saved = self
            .repo()?
            .archive(&opts, &source, snap, &paths)
            .map_err(|e| EngineError::library("writing backup", &e))?;
        self.refresh()?;
        Ok((info_of(&saved), source.finish(parts)))
    }

    fn snapshots(&self) -> EngineResult<Vec<SnapshotInfo>> {
        let (mut snaps, _) = self.read_snapshots()?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(snaps.iter().map(info_of).collect())
    }

    fn damaged_snapshots(&self) -> EngineResult<Vec<DamagedFile>> {
        Ok(self.read_snapshots()?.1)
    }

    fn rewrite_snapshot(
        &self,
        id: &str,
        tags: &[String],
        description: &str,
    ) -> EngineResult<SnapshotInfo> {
        let old = self.snapshot(id)?;
        let old_id = old.id;
        let mut new = old;
        new.tags = StringList::default();
        for tag in tags {
            new.tags.add(tag.clone());
        }
        new.description = Some(description.to_string());
        new.original = Some(old_id);
        let repo = self.repo()?;
        repo.save_snapshots(vec![new])
            .map_err(|e| EngineError::library("saving snapshot", &e))?;
        // Read one file at a time: the library's "all snapshots" fails as a whole when a
        // file listed a moment ago is deleted before it is read, which is what another
        // host's concurrent backup does to its own partial snapshot.
        let saved = self
            .read_snapshots()?
            .0
            .into_iter()
            .find(|s| s.original == Some(old_id) && s.id != old_id)
            .ok_or_else(|| EngineError::Library {
                what: "saving snapshot",
                message: "the rewritten snapshot is not in the repository".to_string(),
            })?;
        repo.delete_snapshots(&[old_id])
            .map_err(|e| EngineError::library("deleting snapshot", &e))?;
        Ok(info_of(&saved))
    }

    fn delete_snapshots(&self, ids: &[String]) -> EngineResult<()> {
        let ids = ids
            .iter()
            .map(|id| {
                id.parse::<Id>()
                    .map(SnapshotId::from)
                    .map_err(|e| EngineError::library("parsing snapshot id", &e))
            })
            .collect::<EngineResult<Vec<_>>>()?;
        self.repo()?
            .delete_snapshots(&ids)
            .map_err(|e| EngineError::library("deleting snapshots", &e))
    }

    fn walk(&self, id: &str, path: &Path) -> EngineResult<Vec<Entry>> {
        let repo = self.repo()?;
        let snap = self.snapshot(id)?;
        let root = repo
            .node_from_snapshot_and_path(&snap, &path.display().to_string())
            .map_err(|e| {
                // "Not there" and "cannot be read" are different answers: a damaged tree blob
                // once showed as "not in snapshot".
                let full = e.to_string();
                if full.contains("not found in tree") || full.contains("is not a directory") {
                    EngineError::NotInSnapshot(format!(
                        "{} is not in snapshot {}",
                        path.display(),
                        &id[..8.min(id.len())]
                    ))
                } else {
                    EngineError::library("reading the set's directory tree", &e)
                }
            })?;
        let mut out = vec![entry_of(PathBuf::new(), &root)];
        // Our own depth-first walk instead of the library's `ls`, which joins every name onto
        // the path unchecked: a name `../../x`, `/abs` or `a\x2fb` (unescaped to `a/b`) would
        // become a path outside the destination of whoever writes the entries. Each name is
        // checked here, before it is joined, so every consumer (restore, export, verify
        // --deep, the SSDB and MongoDB paths) gets only paths made of plain names.
        let load = |tree| {
            repo.get_tree(&tree)
                .map(|t| t.nodes.into_iter())
                .map_err(|e| EngineError::library("reading tree", &e))
        };
        let mut stack = Vec::new();
        if root.is_dir()
            && let Some(tree) = root.subtree
        {
            stack.push(Frame {
                dir: PathBuf::new(),
                nodes: load(tree)?,
                seen: std::collections::HashSet::new(),
            });
        }
        while let Some(frame) = stack.last_mut() {
            let Some(node) = frame.nodes.next() else {
                stack.pop();
                continue;
            };
            let name = node.name().into_owned();
            let refused = name_problem(&name)
                .or_else(|| (!frame.seen.insert(name.clone())).then_some("appears twice"));
            if let Some(reason) = refused {
                return Err(EngineError::DamagedTree {
                    set: id[..8.min(id.len())].to_string(),
                    entry: format!(
                        "{name:?} in {}",
                        path.join(&frame.dir).components().as_path().display()
                    ),
                    reason,
                });
            }
            let p = frame.dir.join(&name);
            let sub = node.subtree.filter(|_| node.is_dir());
            out.push(entry_of(p.clone(), &node));
            if let Some(tree) = sub {
                stack.push(Frame {
                    dir: p,
                    nodes: load(tree)?,
                    seen: std::collections::HashSet::new(),
                });
            }
        }
        Ok(out)
    }

    fn read_blob(&self, blob: &BlobRef) -> EngineResult<bytes::Bytes> {
        let damaged = |reason: String| EngineError::DamagedBlob {
            id: blob.0.clone(),
            reason,
        };
        let repo = self.repo()?;
        let id = blob.0.parse::<Id>().map_err(|e| damaged(first_line(&e)))?;
        let data_id = DataId::from(id);
        let bytes = repo
            .get_blob_cached(&data_id.into(), rustic_core::repofile::BlobType::Data)
            .map_err(|e| damaged(first_line(&e)))?;
        let digest = Sha256::digest(&bytes);
        if hex::encode(digest) != blob.0 {
            return Err(damaged("content does not match its SHA-256 id".to_string()));
        }
        // Shared, not copied: a restore writes it once and drops it.
        Ok(bytes)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn seal(&self, data: &[u8]) -> EngineResult<Vec<u8>> {
        use aes256ctr_poly1305aes::aead::AeadInPlace;
        let cipher = self.cipher()?;
        let mut nonce = aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::default();
        rand::Rng::fill(&mut rand::rng(), nonce.as_mut_slice());
        let mut out = Vec::with_capacity(data.len() + 32);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(data);
        let tag = cipher
            .encrypt_in_place_detached(&nonce, &[], &mut out[16..])
            .map_err(|_| EngineError::Library {
                what: "encrypting",
                message: "encryption failed".to_string(),
            })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    fn unseal(&self, data: &[u8]) -> EngineResult<Vec<u8>> {
        use aes256ctr_poly1305aes::aead::Aead;
        let bad = |message: &str| EngineError::Library {
            what: "decrypting",
            message: message.to_string(),
        };
        if data.len() < 32 {
            return Err(bad("too short to be an encrypted file"));
        }
        let nonce =
            aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(&data[..16]);
        self.cipher()?
            .decrypt(nonce, &data[16..])
            .map_err(|_| bad("the MAC does not match: damaged, or not of this repository"))
    }

    fn adopt_unindexed_packs(&self) -> EngineResult<()> {
        self.repo()?
            .repair_index(&rustic_core::RepairIndexOptions::default(), false)
            .map_err(|e| EngineError::library("re-indexing packs of a crashed run", &e))?;
        self.refresh()
    }

    fn reload_index(&self) -> EngineResult<()> {
        self.refresh()
    }

    fn keys(&self) -> EngineResult<(Vec<String>, Option<String>)> {
        let repo = self.repo()?;
        let ids: Vec<String> = repo
            .list::<rustic_core::repofile::KeyId>()
            .map_err(|e| EngineError::library("listing keys", &e))?
            .map(|k| k.to_hex().to_string())
            .collect();
        let current = repo.key_id().as_ref().map(|k| k.to_hex().to_string());
        Ok((ids, current))
    }

    fn add_key(&self, password: &str) -> EngineResult<String> {
        let id = self
            .repo()?
            .add_key(password, &KeyOptions::default())
            .map_err(|e| EngineError::library("adding a key", &e))?;
        Ok(id.to_hex().to_string())
    }

    fn remove_key(&self, id: &str) -> EngineResult<()> {
        let parsed: Id = id
            .parse()
            .map_err(|e: Box<RusticError>| EngineError::library("key id", &e))?;
        self.repo()?
            .delete_key(&rustic_core::repofile::KeyId::from(parsed))
            .map_err(|e| EngineError::library("removing a key", &e))
    }

    fn copy_to(&self, dest: &dyn Engine, ids: &[String]) -> EngineResult<Vec<String>> {
        let Some(dest) = dest.as_any().downcast_ref::<Self>() else {
            return Err(EngineError::Library {
                what: "copying",
                message: "the destination is not a repository of the same kind".to_string(),
            });
        };
        let src = self.repo()?;
        let snaps = src
            .get_snapshots(ids)
            .map_err(|e| EngineError::library("reading snapshots", &e))?;
        let copied = {
            let dst = dest.repo()?;
            let relevant: Vec<SnapshotFile> = dst
                .relevant_copy_snapshots(|_| true, &snaps)
                .map_err(|e| EngineError::library("comparing snapshots", &e))?
                .into_iter()
                .filter(|c| c.relevant)
                .map(|c| c.sn)
                .collect();
            if !relevant.is_empty() {
                src.copy(dst.as_ref(), relevant.iter())
                    .map_err(|e| EngineError::library("copying", &e))?;
            }
            relevant
                .iter()
                .map(|s| s.id.to_hex().to_string())
                .collect::<Vec<_>>()
        };
        dest.refresh()?;
        // Copies keep their original id in `original`; report ours.
        Ok(snaps
            .iter()
            .filter(|s| copied.iter().any(|c| *c == s.id.to_hex().to_string()))
            .map(|s| s.id.to_hex().to_string())
            .collect())
    }

    fn check(&self, read_data: bool, subset: Option<&str>) -> EngineResult<Vec<EngineFinding>> {
        let mut opts = CheckOptions::default().read_data(read_data || subset.is_some());
        if let Some(sub) = subset {
            let parsed: rustic_core::ReadSubsetOption =
                sub.parse()
                    .map_err(|e: Box<RusticError>| EngineError::Library {
                        what: "read-data-subset",
                        message: format!(
                            "\"{sub}\" is not a subset like 5%, 1/7 or 500MiB ({})",
                            first_line(&e)
                        ),
                    })?;
            opts = opts.read_data_subset(parsed);
        }
        let results = self
            .repo()?
            .check(opts)
            .map_err(|e| EngineError::library("checking repository", &e))?;
        Ok(results
            .0
            .iter()
            .map(|(level, err)| EngineFinding {
                // The level enum is not exported by the library; its Debug name is stable.
                error: format!("{level:?}") == "Error",
                message: err.to_string().lines().next().unwrap_or("").to_string(),
            })
            .collect())
    }

    fn retention(&self, ids: &[String], rules: &Retention) -> EngineResult<Vec<RetentionDecision>> {
        let snaps = self
            .repo()?
            .get_snapshots(ids)
            .map_err(|e| EngineError::library("reading snapshots", &e))?;
        let keep = KeepOptions::default()
            .keep_last(rules.keep_last)
            .keep_daily(rules.keep_daily)
            .keep_weekly(rules.keep_weekly)
            .keep_monthly(rules.keep_monthly)
            .keep_yearly(rules.keep_yearly)
            .keep_within(rules.keep_within.and_then(|d| jiff::Span::try_from(d).ok()));
        let now = rules
            .now
            .map_or_else(jiff::Zoned::now, |t| t.to_zoned(jiff::tz::TimeZone::UTC));
        let decided = keep
            .apply(snaps, &now)
            .map_err(|e| EngineError::library("applying retention", &e))?;
        Ok(decided
            .into_iter()
            .map(|f| RetentionDecision {
                id: f.snapshot.id.to_hex().to_string(),
                keep: f.keep,
                reasons: f.reasons,
            })
            .collect())
    }

    fn prune(
        &self,
        dry_run: bool,
        delete_after: std::time::Duration,
    ) -> EngineResult<PruneSummary> {
        let keep_delete = jiff::Span::try_from(delete_after).map_err(|e| EngineError::Library {
            what: "prune",
            message: format!("delete-after is out of range: {e}"),
        })?;
        // Never instant: a pack no index lists yet may belong to a backup still running
        // somewhere (its lock stale after a suspend, say); marked, it survives until that
        // backup's index brings it back.
        let opts = PruneOptions::default().keep_delete(keep_delete);
        let repo = self.repo()?;
        let plan = repo
            .prune_plan(&opts)
            .map_err(|e| EngineError::library("planning prune", &e))?;
        let stats = &plan.stats;
        let summary = PruneSummary {
            packs_marked: stats.packs.unused + stats.packs_unref,
            packs_deleted: stats.packs_to_delete.remove,
            packs_repacked: stats.packs.repack,
            packs_kept_marked: stats.packs_to_delete.keep,
            ..PruneSummary::default()
        };
        if !dry_run {
            repo.prune(&opts, plan)
                .map_err(|e| EngineError::library("pruning", &e))?;
        }
        Ok(summary)
    }
}

/// The [`ReadSource`] of a backup set: every part in snapshot-path order, each read from its
/// own root and renamed to its `repo_path`, with our own counting and error capture.
struct SetSource {
    parts: Vec<(SourcePart, LocalSource)>,
    shared: Arc<Shared>,
}

struct Shared {
    stats: Vec<Mutex<PartStats>>,
    labels: Vec<String>,
    progress: ProgressRef,
}

impl Shared {
    fn with<F: FnOnce(&mut PartStats)>(&self, part: usize, f: F) {
        if let Some(m) = self.stats.get(part)
            && let Ok(mut s) = m.lock()
        {
            f(&mut s);
        }
    }
}

impl SetSource {
    fn new(parts: &[SourcePart], progress: ProgressRef) -> EngineResult<Self> {
        let mut sorted = parts.to_vec();
        sorted.sort_by(|a, b| a.repo_path.cmp(&b.repo_path));
        let mut built = Vec::new();
        for part in sorted {
            let globs = part
                .excludes
                .iter()
                .map(|g| format!("!{g}"))
                .collect::<Vec<_>>();
            let excludes = Excludes::default().globs(globs);
            let local = LocalSource::new(
                LocalSourceSaveOptions::default(),
                &excludes,
                &LocalSourceFilterOptions::default(),
                &[&part.read_root],
            )
            .map_err(|e| EngineError::library("reading source", &e))?;
            built.push((part, local));
        }
        let shared = Arc::new(Shared {
            stats: built
                .iter()
                .map(|_| Mutex::new(PartStats::default()))
                .collect(),
            labels: built.iter().map(|(p, _)| p.label.clone()).collect(),
            progress,
        });
        Ok(Self {
            parts: built,
            shared,
        })
    }

    /// The stats of each part, in the order of `parts` as the caller gave them.
    fn finish(&self, parts: &[SourcePart]) -> Vec<PartStats> {
        parts
            .iter()
            .map(|p| {
                self.shared
                    .labels
                    .iter()
                    .position(|l| *l == p.label)
                    .and_then(|i| self.shared.stats.get(i))
                    .and_then(|m| m.lock().ok().map(|s| s.clone()))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Opens a file for the archiver, counting bytes and noticing changes during the read.
struct TrackedOpen {
    path: PathBuf,
    shown: String,
    part: usize,
    size: u64,
    mtime: Option<SystemTime>,
    shared: Arc<Shared>,
}

impl ReadSourceOpen for TrackedOpen {
    type Reader = TrackedReader;
    fn open(self) -> RusticResult<Self::Reader> {
        match File::open(&self.path) {
            Ok(file) => Ok(TrackedReader {
                file,
                open: self,
                done: false,
            }),
            Err(err) => {
                let message = format!("{}: {err}", self.shown);
                let size = self.size;
                // The archiver leaves the file out: so must the counts.
                self.shared.with(self.part, |s| {
                    s.errors.push(message.clone());
                    s.files = s.files.saturating_sub(1);
                    s.bytes = s.bytes.saturating_sub(size);
                });
                Err(
                    RusticError::with_source(ErrorKind::InputOutput, "cannot open {path}", err)
                        .attach_context("path", self.shown),
                )
            }
        }
    }
}

struct TrackedReader {
    file: File,
    open: TrackedOpen,
    done: bool,
}

impl Read for TrackedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.file.read(buf) {
            Ok(0) => {
                if !self.done {
                    self.done = true;
                    let changed = match std::fs::symlink_metadata(&self.open.path) {
                        Ok(m) => m.len() != self.open.size || m.modified().ok() != self.open.mtime,
                        Err(_) => true,
                    };
                    if changed {
                        let shown = self.open.shown.clone();
                        self.open
                            .shared
                            .with(self.open.part, |s| s.changed.push(shown));
                    }
                }
                Ok(0)
            }
            Ok(n) => {
                self.open
                    .shared
                    .with(self.open.part, |s| s.read_bytes += n as u64);
                Ok(n)
            }
            Err(err) => {
                let message = format!("{}: {err}", self.open.shown);
                self.open
                    .shared
                    .with(self.open.part, |s| s.errors.push(message));
                Err(err)
            }
        }
    }
}

impl ReadSource for SetSource {
    type Open = TrackedOpen;
    type Iter = Box<dyn Iterator<Item = RusticResult<ReadSourceEntry<TrackedOpen>>> + Send>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let mut all: Box<dyn Iterator<Item = RusticResult<ReadSourceEntry<TrackedOpen>>> + Send> =
            Box::new(std::iter::empty());
        for (index, (part, local)) in self.parts.iter().enumerate() {
            let shared = self.shared.clone();
            let part = part.clone();
            let label = part.label.clone();
            let expected = part.expected_bytes;
            let begin_shared = self.shared.clone();
            let end_shared = self.shared.clone();
            let end_label = label.clone();
            let root_entry = root_entry(&part, index, &self.shared);
            let walker = local.entries().filter_map(move |item| match item {
                Ok(entry) => Some(Ok(map_entry(entry, &part, index, &shared))),
                Err(err) => {
                    let message = first_line(&err);
                    shared.with(index, |s| {
                        s.errors
                            .push(format!("{}: {message}", part.read_root.display()))
                    });
                    None
                }
            });
            let begin = std::iter::once(()).filter_map(move |()| {
                begin_shared.progress.begin(&label, expected);
                None
            });
            let end = std::iter::once(()).filter_map(move |()| {
                end_shared.progress.end(&end_label);
                None
            });
            all = Box::new(all.chain(begin).chain(root_entry).chain(walker).chain(end));
        }
        all
    }
}

/// The component's root directory itself, with its own metadata (the library's walker skips
/// it, which would lose the root's mode and owner).
fn root_entry(
    part: &SourcePart,
    index: usize,
    shared: &Arc<Shared>,
) -> Option<RusticResult<ReadSourceEntry<TrackedOpen>>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(&part.meta_root) {
        Ok(m) => {
            let name = part.repo_path.file_name()?;
            let mut meta = rustic_core::repofile::Metadata {
                mode: Some(go_dir_mode(m.mode())),
                uid: Some(m.uid()),
                gid: Some(m.gid()),
                size: 0,
                ..Default::default()
            };
            meta.mtime =
                jiff::Timestamp::new(m.mtime(), i32::try_from(m.mtime_nsec()).unwrap_or(0)).ok();
            meta.user = nix::unistd::User::from_uid(m.uid().into())
                .ok()
                .flatten()
                .map(|u| u.name);
            meta.group = nix::unistd::Group::from_gid(m.gid().into())
                .ok()
                .flatten()
                .map(|g| g.name);
            shared.with(index, |s| s.dirs += 1);
            let node = Node::new_node(name, rustic_core::repofile::NodeType::Dir, meta);
            Some(Ok(ReadSourceEntry {
                path: part.repo_path.clone(),
                node,
                open: None,
            }))
        }
        Err(err) => {
            shared.with(index, |s| {
                s.errors
                    .push(format!("{}: {err}", part.read_root.display()))
            });
            None
        }
    }
}

fn map_entry<O>(
    entry: ReadSourceEntry<O>,
    part: &SourcePart,
    index: usize,
    shared: &Arc<Shared>,
) -> ReadSourceEntry<TrackedOpen> {
    let ReadSourceEntry {
        path,
        mut node,
        open,
    } = entry;
    if part.ctime_from_mtime {
        node.meta.ctime = node.meta.mtime;
    }
    let rel = path
        .strip_prefix(&part.read_root)
        .unwrap_or(&path)
        .to_path_buf();
    let repo_path = part.repo_path.join(&rel);
    if node.is_dir() {
        shared.with(index, |s| s.dirs += 1);
    } else if node.is_file() {
        let size = node.meta.size;
        shared.with(index, |s| {
            s.files += 1;
            s.bytes += size;
        });
        shared.progress.advance(&part.label, size);
    } else {
        shared.with(index, |s| s.others += 1);
    }
    let open = open.map(|_| TrackedOpen {
        shown: repo_path.display().to_string(),
        path: path.clone(),
        part: index,
        size: node.meta.size,
        mtime: node.meta.mtime.as_ref().map(|t| SystemTime::from(*t)),
        shared: shared.clone(),
    });
    ReadSourceEntry {
        path: repo_path,
        node,
        open,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            stats: vec![Mutex::new(PartStats::default())],
            labels: vec!["files.test".to_string()],
            progress: crate::progress::none(),
        })
    }

    fn tracked(path: &Path, shared: &Arc<Shared>) -> TrackedOpen {
        let m = std::fs::metadata(path).unwrap();
        TrackedOpen {
            path: path.to_path_buf(),
            shown: path.display().to_string(),
            part: 0,
            size: m.len(),
            mtime: m.modified().ok(),
            shared: shared.clone(),
        }
    }

    #[test]
    /// A file that grows between the start and the end of its read is reported as changed;
    /// one left alone is not.
    fn file_changed_while_read_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grows.dat");
        std::fs::write(&path, vec![7u8; 64 * 1024]).unwrap();
        let s = shared();
        let mut reader = tracked(&path, &s).open().unwrap();
        let mut buf = vec![0u8; 1024];
        assert_eq!(reader.read(&mut buf).unwrap(), 1024);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more")
            .unwrap();
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        let stats = s.stats[0].lock().unwrap().clone();
        assert_eq!(stats.changed, vec![path.display().to_string()]);

        let still = dir.path().join("still.dat");
        std::fs::write(&still, b"quiet").unwrap();
        let s = shared();
        std::io::copy(
            &mut tracked(&still, &s).open().unwrap(),
            &mut std::io::sink(),
        )
        .unwrap();
        let stats = s.stats[0].lock().unwrap().clone();
        assert!(stats.changed.is_empty());
        assert_eq!(stats.read_bytes, 5);
    }

    #[test]
    /// A file that cannot be opened is recorded as an error and taken out of the counts.
    fn unopenable_file_is_an_error_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.dat");
        std::fs::write(&path, b"12345").unwrap();
        let s = shared();
        {
            let mut st = s.stats[0].lock().unwrap();
            st.files = 1;
            st.bytes = 5;
        }
        let open = tracked(&path, &s);
        std::fs::remove_file(&path).unwrap();
        assert!(open.open().is_err());
        let stats = s.stats[0].lock().unwrap().clone();
        assert_eq!((stats.files, stats.bytes), (0, 0));
        assert_eq!(stats.errors.len(), 1);
        assert!(stats.errors[0].contains("gone.dat"));
    }

    #[test]
    /// restic's Go file-mode bits map back to Unix permission and special bits.
    fn go_mode_conversion() {
        assert_eq!(unix_mode_from_go(0o644), 0o644);
        assert_eq!(unix_mode_from_go((1 << 31) | (1 << 22) | 0o775), 0o2775);
        assert_eq!(unix_mode_from_go((1 << 31) | (1 << 20) | 0o777), 0o1777);
        assert_eq!(unix_mode_from_go((1 << 23) | 0o755), 0o4755);
        assert_eq!(unix_mode_from_go(go_dir_mode(0o2775)), 0o2775);
        assert_eq!(unix_mode_from_go(go_dir_mode(0o1777)), 0o1777);
    }

    /// Names that would step out of their directory once joined are refused, also when the
    /// tree spells them with restic's escapes (`\x2f` is `/`, `\x00` is NUL), which the
    /// library unescapes.
    #[test]
    fn crafted_names_are_refused_after_unescaping() {
        let named = |name: &str| -> Node {
            serde_json::from_value(serde_json::json!({"name": name, "type": "file"}))
                .expect("node json")
        };
        for bad in [
            "", ".", "..", "../../x", "/abs", "a/b", "a\\x2fb", "a\\x00b", "a\u{0}b",
        ] {
            let node = named(bad);
            assert!(
                name_problem(&node.name()).is_some(),
                "{bad:?} (unescaped {:?}) was accepted",
                node.name()
            );
        }
        for good in ["a", "...", "a b", "a\\nb", "x\\x2", ".hidden", "é"] {
            let node = named(good);
            assert_eq!(name_problem(&node.name()), None, "{good:?} was refused");
        }
    }
}
