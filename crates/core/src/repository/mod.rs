//! The repository: backup sets, their manifests, the password and the lock.
//!
//! Components never touch storage directly; they hand directories to [`Repository::store_set`]
//! and read back through [`Repository::walk`] and [`Repository::read_blob`]. The storage
//! format is the engine's business (the private `engine` module, the only one naming
//! `rustic_core`; the plain types it speaks are re-exported here); this module adds akbackup's
//! meaning on top: which snapshots are sets, which set is `latest`, and who may write. Nothing
//! outside it reaches the engine: verify, forget and copy call [`Repository::check`],
//! [`Repository::retention`] and [`Repository::copy_to`].

mod engine;
pub mod lock;
pub mod locks;
pub mod password;
pub mod store;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    backup_set::{BackupSet, Manifest, PARTIAL_TAG, SET_TAG},
    config::{Config, RepositoryConfig},
    progress::ProgressRef,
};
pub use engine::{
    BlobRef, DamagedFile, EngineError, EngineFinding, Entry, EntryKind, Location, PartStats,
    PruneSummary, ReadSubset, Retention, RetentionDecision, S3Options, SourcePart,
};
use engine::{Engine, RusticEngine, SnapshotInfo};
pub use lock::{LockError, LockHolder, LockWait, RepoLock};
pub use locks::LockMode;
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
    /// `latest` with no set of this host, while other hosts have some.
    #[error(
        "the repository has no complete backup set of host {host} (it has sets of {others}): pass --host NAME for another host's sets, or --all-hosts"
    )]
    NoSetsOfHost {
        /// The host in scope.
        host: String,
        /// The hosts that have sets.
        others: String,
    },
    /// A set id prefix matching several sets.
    #[error("\"{0}\" matches several backup sets: give more digits")]
    Ambiguous(String),
    /// A file could not be written to (or removed from) the repository's storage.
    #[error("{at}: cannot write: {error}")]
    NotWritable {
        /// The storage, for messages.
        at: String,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
}

impl RepoError {
    /// True when the error is about the environment (exit code 2) rather than data found bad.
    #[must_use]
    pub const fn is_environment(&self) -> bool {
        !self.is_damaged_data()
    }

    /// True when the repository's data was found damaged (a blob that does not authenticate,
    /// a tree with a crafted entry): the operation ran and found problems (exit code 1).
    #[must_use]
    pub const fn is_damaged_data(&self) -> bool {
        matches!(
            self,
            Self::Engine(EngineError::DamagedBlob { .. } | EngineError::DamagedTree { .. })
        )
    }
}

/// An open repository.
pub struct Repository {
    /// Local directory for staging and the lock (the repository itself when local).
    path: PathBuf,
    /// Where the repository is, for messages.
    shown: String,
    /// Whether `path` is the repository itself.
    local: bool,
    /// The storage engine, as its one implementation (see [`Engine`]).
    engine: Arc<RusticEngine>,
    /// The repository's files outside the engine's reach (lock files, the pack listing).
    store: store::Store,
    /// Whose sets `latest`, retention and cleanup act on.
    scope: HostScope,
    /// Whether [`Repository::lock`] waits for another run's lock (`--wait`).
    lock_wait: LockWait,
    /// Told once when a wait for the lock begins (the front end says why nothing happens).
    on_wait: Option<WaitNotice>,
}

/// Whose sets `latest`, retention and the cleanup of unfinished runs act on. Several servers
/// may share one repository; like restic, each acts on its own sets unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostScope {
    /// The sets of one host (this one by default; `--host NAME` for another, e.g. to restore
    /// a dead server's sets on its replacement). A backup records this host name.
    Host(String),
    /// The sets of every host (`--all-hosts`): retention applies per host.
    All,
}

impl Default for HostScope {
    fn default() -> Self {
        Self::Host(this_host())
    }
}

impl HostScope {
    /// Whether a set or snapshot of `host` is in scope.
    #[must_use]
    pub fn includes(&self, host: &str) -> bool {
        match self {
            Self::Host(h) => h == host,
            Self::All => true,
        }
    }
}

pub use crate::process::this_host;

/// Called with the repository (as shown) and the holder when a wait for its lock begins.
pub type WaitNotice = Box<dyn Fn(&str, &LockHolder) + Send + Sync>;

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Default parent of the work directories of remote repositories.
pub const DEFAULT_WORK_DIR: &str = "/var/tmp/akbackup";

/// The engine location and the local work directory of a repository config.
///
/// # Errors
/// [`RepoError::Config`] when the section has no location or cannot be used.
pub fn location(config: &RepositoryConfig) -> Result<(engine::Location, PathBuf), RepoError> {
    if let Some(path) = &config.path {
        return Ok((engine::Location::Local(path.clone()), path.clone()));
    }
    let Some(url) = &config.url else {
        return Err(RepoError::Config(
            "[repository] has no location: add path = \"/backup/akbackup\" or url = \"s3://bucket/prefix\""
                .to_string(),
        ));
    };
    if url.starts_with("sftp://") {
        return sftp_location(config, url);
    }
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        RepoError::Config(format!(
            "repository url \"{url}\" is not supported: use s3://bucket/prefix or sftp://user@host:port/path"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(RepoError::Config(format!(
            "repository url \"{url}\" names no bucket: use s3://bucket/prefix"
        )));
    }
    let prefix = prefix.trim_matches('/');
    let credentials = s3_credentials(config)?;
    let s3 = engine::S3Options {
        bucket: bucket.to_string(),
        root: format!("/{prefix}"),
        endpoint: config.endpoint.clone(),
        region: config
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_string()),
        virtual_host_style: config.path_style == Some(false),
        credentials,
        connections: config.connections.unwrap_or(8).max(1),
        retry: config.retry.unwrap_or(3),
        timeout_secs: config.timeout_secs(),
        connect_timeout_secs: config.connect_timeout_secs(),
        bandwidth: config.bandwidth.clone(),
    };
    let work = work_dir(config, &format!("{bucket}-{prefix}"));
    Ok((engine::Location::S3(s3), work))
}

/// The configured work directory of a remote repository, or one under [`DEFAULT_WORK_DIR`]
/// named after where it is (`name`, made safe for a file name).
fn work_dir(config: &RepositoryConfig, name: &str) -> PathBuf {
    config.work_dir.clone().unwrap_or_else(|| {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from(DEFAULT_WORK_DIR).join(safe)
    })
}

/// `sftp://user@host[:port]/absolute/path`, with the identity file checked like a password
/// file (it must not be readable by others: ssh would refuse it too, less clearly).
fn sftp_location(
    config: &RepositoryConfig,
    url: &str,
) -> Result<(engine::Location, PathBuf), RepoError> {
    let (user, host, port, path) = parse_sftp_url(url).map_err(RepoError::Config)?;
    if let Some(key) = &config.identity_file {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(key)
            .map_err(|e| RepoError::Config(format!("identity-file {}: {e}", key.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(RepoError::Config(format!(
                "identity-file {} is mode {mode:04o}: others can read the key; chmod 600 {}",
                key.display(),
                key.display()
            )));
        }
    }
    let work = work_dir(config, &format!("sftp-{user}-{host}-{port}-{path}"));
    let sftp = engine::SftpOptions {
        user,
        host,
        port,
        root: path,
        identity_file: config.identity_file.clone(),
        known_hosts: config.known_hosts.clone(),
        connections: config.connections.unwrap_or(4).max(1),
        retry: config.retry.unwrap_or(3),
        timeout_secs: config.timeout_secs(),
        connect_timeout_secs: config.connect_timeout_secs(),
        bandwidth: config.bandwidth.clone(),
        work_dir: work.clone(),
    };
    Ok((engine::Location::Sftp(sftp), work))
}

/// `(user, host, port, /absolute/path)` of an `sftp://` URL. A password in it is refused (it
/// would be shown in every line naming the repository; use a key), as are a host ssh would
/// read as an option (`-...`) and a path that is only `/`.
fn parse_sftp_url(url: &str) -> Result<(String, String, u16, String), String> {
    let bad = |why: &str| {
        format!("repository url \"{url}\" {why}: use sftp://user@host:port/absolute/path")
    };
    let parsed = url::Url::parse(url).map_err(|e| bad(&format!("does not parse ({e})")))?;
    if parsed.password().is_some() {
        return Err(
            "the sftp repository url holds a password: remove it and log in with identity-file (or the SSH agent)"
                .to_string(),
        );
    }
    let user = percent_decode(parsed.username());
    let host = match parsed.host() {
        Some(url::Host::Ipv6(a)) => a.to_string(),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    let path = percent_decode(parsed.path().trim_end_matches('/'));
    if user.is_empty() {
        return Err(bad("names no user"));
    }
    if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
        return Err(bad("names no usable host"));
    }
    if path.is_empty() || !path.starts_with('/') {
        return Err(bad("names no path"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("has a ? or # part"));
    }
    Ok((user, host, parsed.port().unwrap_or(22), path))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Explicit S3 credentials: the config's keys, else the configured credentials file; `None`
/// leaves them to the environment (`AWS_ACCESS_KEY_ID`, ..., `~/.aws/credentials`).
fn s3_credentials(
    config: &RepositoryConfig,
) -> Result<Option<(String, String, Option<String>)>, RepoError> {
    match (&config.access_key_id, &config.secret_access_key) {
        (Some(id), Some(secret)) => return Ok(Some((id.clone(), secret.clone(), None))),
        (Some(_), None) | (None, Some(_)) => {
            return Err(RepoError::Config(
                "[repository] needs both access-key-id and secret-access-key (or neither)"
                    .to_string(),
            ));
        }
        (None, None) => {}
    }
    let Some(file) = &config.credentials_file else {
        return Ok(None);
    };
    let text = password::read_secret_file(file).and_then(|_| {
        std::fs::read_to_string(file).map_err(|source| PasswordError::Read {
            path: file.clone(),
            error: source,
        })
    })?;
    let profile = config.profile.as_deref().unwrap_or("default");
    aws_profile(&text, profile).map(Some).ok_or_else(|| {
        RepoError::Config(format!(
            "{}: no [{profile}] section with aws_access_key_id and aws_secret_access_key",
            file.display()
        ))
    })
}

/// Reads one profile of an AWS shared credentials file (INI).
fn aws_profile(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let mut in_section = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_section = name == profile || name == format!("profile {profile}");
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some((id?, secret?, token))
}

/// Creates the local work directory of a remote repository (mode 0700: it holds staged
/// copies of the platform's data).
fn ensure_work_dir(path: &Path) -> Result<(), RepoError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| {
            RepoError::Config(format!(
                "cannot create the work directory {}: {e} (set work-dir in [repository])",
                path.display()
            ))
        })
}

/// Creates a new repository as configured.
///
/// # Errors
/// Existing repository, password problems, storage errors.
pub fn init(config: &Config) -> Result<String, RepoError> {
    let (loc, work) = location(&config.repository)?;
    let password = password::resolve(&config.repository)?;
    if let engine::Location::Local(path) = &loc {
        std::fs::create_dir_all(path).map_err(|e| {
            RepoError::Config(format!(
                "cannot create repository directory {}: {e}",
                path.display()
            ))
        })?;
    } else {
        ensure_work_dir(&work)?;
    }
    engine::init(&loc, &password)?;
    Ok(loc.display())
}

impl Repository {
    /// Opens the configured repository.
    ///
    /// # Errors
    /// Missing repository, wrong password, storage errors.
    pub fn open(config: &Config) -> Result<Self, RepoError> {
        Self::open_section(&config.repository)
    }

    /// Opens the repository of one config section (`[repository]` or `[repositories.X]`).
    ///
    /// # Errors
    /// Missing repository, wrong password, storage errors.
    pub fn open_section(section: &RepositoryConfig) -> Result<Self, RepoError> {
        let (loc, work) = location(section)?;
        if let engine::Location::Local(path) = &loc
            && !path.join("config").is_file()
        {
            return Err(EngineError::NotFound(path.display().to_string()).into());
        }
        let password = password::resolve(section)?;
        let engine = engine::open(&loc, &password)?;
        let local = matches!(loc, engine::Location::Local(_));
        if !local {
            ensure_work_dir(&work)?;
        }
        let store = store::Store::open(&loc).map_err(|e| {
            RepoError::Config(format!(
                "cannot reach the storage of {}: {e}",
                loc.display()
            ))
        })?;
        Ok(Self {
            path: work,
            shown: loc.display(),
            local,
            engine: Arc::new(engine),
            store,
            scope: HostScope::default(),
            lock_wait: LockWait::No,
            on_wait: None,
        })
    }

    /// Writes a small file at the repository's top and removes it: whether a backup could
    /// store anything (a read-only mount, a full disk, a user without write permission on the
    /// server). `Ok` with where.
    ///
    /// # Errors
    /// [`RepoError::NotWritable`]: the write or the removal failed, naming the storage.
    pub fn check_writable(&self) -> Result<String, RepoError> {
        let probe = format!("akbackup-write-test-{}", std::process::id());
        let shown = self.store.shown();
        self.store
            .write(&probe, b"akbackup doctor: this file is removed at once\n")
            .and_then(|()| self.store.remove(&probe))
            .map(|()| format!("{shown}: a file was written and removed"))
            .map_err(|error| RepoError::NotWritable { at: shown, error })
    }

    /// The repository's keys: `(id, in use by this process)`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn keys(&self) -> Result<Vec<(String, bool)>, RepoError> {
        let (ids, current) = self.engine.keys()?;
        Ok(ids
            .into_iter()
            .map(|id| {
                let used = current.as_deref() == Some(id.as_str());
                (id, used)
            })
            .collect())
    }

    /// Adds a key for `password`; returns its id.
    ///
    /// # Errors
    /// Storage errors.
    pub fn add_key(&self, password: &str) -> Result<String, RepoError> {
        Ok(self.engine.add_key(password)?)
    }

    /// Removes the key whose id starts with `prefix`; refuses the key in use (it is the
    /// one proving the password works) and ambiguous prefixes.
    ///
    /// # Errors
    /// [`RepoError::Config`] naming the problem; storage errors.
    pub fn remove_key(&self, prefix: &str) -> Result<String, RepoError> {
        let keys = self.keys()?;
        let matching: Vec<&(String, bool)> = keys
            .iter()
            .filter(|(id, _)| id.starts_with(prefix))
            .collect();
        match matching.as_slice() {
            [] => Err(RepoError::Config(format!(
                "no key {prefix}: `akbackup key list` shows them"
            ))),
            [(id, true)] => Err(RepoError::Config(format!(
                "key {} is the one this password opens: remove it with another password \
                 (AKBACKUP_PASSWORD=... akbackup key remove {prefix}), or use `key passwd`",
                &id[..8.min(id.len())]
            ))),
            [(id, false)] => {
                self.engine.remove_key(id)?;
                Ok(id.clone())
            }
            _ => Err(RepoError::Ambiguous(prefix.to_string())),
        }
    }

    /// Replaces the key the current password opens with one for `new_password`: the new
    /// key is added and proven (the repository opens with it) before the old one is removed.
    ///
    /// # Errors
    /// Storage errors; the old key stays when anything fails.
    pub fn change_password(
        &self,
        section: &RepositoryConfig,
        new_password: &str,
    ) -> Result<(String, String), RepoError> {
        let (_, old) = self.engine.keys()?;
        let old = old.ok_or_else(|| RepoError::Config("no key in use".to_string()))?;
        let new = self.engine.add_key(new_password)?;
        let (loc, _) = location(section)?;
        let reopened = engine::open(&loc, new_password)?;
        reopened.remove_key(&old)?;
        Ok((old, new))
    }

    /// A local directory for staging, scratch copies and the lock: the repository itself
    /// when it is local (same filesystem as the data it receives), else the work directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the repository takes on disk, when it is a local directory (`None` for object
    /// storage, where listing every object to add up sizes would cost requests).
    #[must_use]
    pub fn local_size(&self) -> Option<u64> {
        self.local.then(|| crate::fsutil::tree_size(&self.path))
    }

    /// Where the repository is, for messages (`/backup/akbackup`, `s3://bucket/prefix`).
    #[must_use]
    pub fn location(&self) -> &str {
        &self.shown
    }

    /// Takes the write lock for `command`, after a crash also recovering what the crashed
    /// run left: packs it uploaded without indexing them are adopted, so a rerun after a
    /// kill sends only what is missing.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the holder; storage errors of the recovery.
    pub fn lock_recovering(
        &self,
        command: &str,
        progress: &ProgressRef,
    ) -> Result<RepoLock, RepoError> {
        let lock = self.lock(command, LockMode::Shared)?;
        if let Some(h) = &lock.broke_stale {
            progress.note(&format!(
                "removed a stale lock of pid {} ({} since {}); re-indexing what it uploaded",
                h.pid, h.command, h.time
            ));
            self.engine.adopt_unindexed_packs()?;
        }
        Ok(lock)
    }

    /// Makes [`Repository::lock`] wait for another run's lock instead of failing at once.
    pub fn set_lock_wait(&mut self, wait: LockWait, on_wait: WaitNotice) {
        self.lock_wait = wait;
        self.on_wait = Some(on_wait);
    }

    /// Takes the lock for `command` (waiting as [`Repository::set_lock_wait`] says): the
    /// local one, which orders the runs of this host, then a `mode` lock in the repository
    /// itself, which akbackup on other hosts and the restic client honour (shared for
    /// backup, restore and copy; exclusive for forget, prune and key changes). Then it
    /// re-reads the index: it was loaded when the repository was opened, before the lock,
    /// and a `forget --prune` that held the lock meanwhile may have removed packs it lists.
    /// Deduplicating against such a stale index would make the new set reference data that
    /// is gone.
    ///
    /// # Errors
    /// [`LockError::Held`] / [`LockError::RepoHeld`] / [`LockError::StillHeld`] naming the
    /// holder; storage errors of the lock or the index reload.
    pub fn lock(&self, command: &str, mode: LockMode) -> Result<RepoLock, RepoError> {
        let mut lock =
            RepoLock::acquire_waiting(&self.path, command, self.lock_wait, &|h| self.tell(h))?;
        lock.attach(self.remote_lock(command, mode)?);
        self.engine.reload_index()?;
        Ok(lock)
    }

    /// Tells the front end, once, that a wait for `holder`'s lock begins.
    fn tell(&self, holder: &LockHolder) {
        if let Some(tell) = &self.on_wait {
            tell(&self.shown, holder);
        }
    }

    /// The `mode` lock in the repository itself, waiting as [`Repository::set_lock_wait`]
    /// says.
    fn remote_lock(&self, command: &str, mode: LockMode) -> Result<locks::RemoteLock, LockError> {
        locks::RemoteLock::acquire(
            &self.store,
            Arc::<RusticEngine>::clone(&self.engine),
            mode,
            command,
            self.lock_wait,
            &|h| self.tell(h),
        )
    }

    /// Takes only the repository's shared lock, for commands that read sets and write
    /// nothing (verify, export): no prune of any host deletes data under them, and they do
    /// not wait for this host's other runs. A lock that cannot be written (a read-only or
    /// full repository) does not stop a read: it goes on without one, saying so.
    ///
    /// # Errors
    /// [`LockError::RepoHeld`] / [`LockError::StillHeld`] when a prune or another exclusive
    /// command holds the repository.
    pub fn read_lock(
        &self,
        command: &str,
        progress: &ProgressRef,
    ) -> Result<Option<locks::RemoteLock>, RepoError> {
        match self.remote_lock(command, LockMode::Shared) {
            Ok(lock) => {
                self.engine.reload_index()?;
                Ok(Some(lock))
            }
            Err(LockError::Io { error: source, .. }) => {
                progress.note(&format!(
                    "cannot write a lock into {} ({source}): reading without one",
                    self.shown
                ));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Acts on the sets of `scope` from now on (`--host`, `--all-hosts`).
    pub fn set_host_scope(&mut self, scope: HostScope) {
        self.scope = scope;
    }

    /// Whose sets this repository handle acts on.
    #[must_use]
    pub const fn host_scope(&self) -> &HostScope {
        &self.scope
    }

    /// The complete sets in scope ([`Repository::set_host_scope`]), oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn scoped_sets(&self) -> Result<Vec<BackupSet>, RepoError> {
        Ok(self
            .sets()?
            .into_iter()
            .filter(|s| self.scope.includes(&s.manifest.host))
            .collect())
    }

    /// Removes what a prune marked long enough ago and marks what became unused, under the
    /// caller's exclusive lock; the packs removed and bytes freed are measured by listing
    /// the storage before and after, not taken from the plan.
    ///
    /// # Errors
    /// Storage errors.
    pub fn prune(
        &self,
        dry_run: bool,
        delete_after: std::time::Duration,
    ) -> Result<engine::PruneSummary, RepoError> {
        let listing = |what: &str| {
            self.store.list("data").map_err(|e| {
                RepoError::Config(format!(
                    "cannot list the packs of {} {what}: {e}",
                    self.shown
                ))
            })
        };
        let before = listing("before pruning")?;
        let mut summary = self
            .engine
            .prune(dry_run, delete_after)
            .map_err(|e| self.located(e))?;
        if delete_after.is_zero() && !dry_run {
            // No delay asked for: the second pass deletes what the first one marked.
            let second = self
                .engine
                .prune(false, delete_after)
                .map_err(|e| self.located(e))?;
            summary.packs_deleted += second.packs_deleted;
            summary.packs_kept_marked = second.packs_kept_marked;
        }
        summary.delete_after_seconds = delete_after.as_secs();
        if !dry_run {
            let after: std::collections::HashSet<String> = listing("after pruning")?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            let gone: Vec<&(String, u64)> =
                before.iter().filter(|(p, _)| !after.contains(p)).collect();
            summary.packs_removed = gone.len() as u64;
            summary.bytes_freed = gone.iter().map(|(_, size)| size).sum();
        }
        Ok(summary)
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

    /// Ids of snapshots left by runs of the hosts in scope that did not complete. Another
    /// host's partial snapshot may belong to a run still under way there: never ours to drop.
    ///
    /// # Errors
    /// Storage errors.
    pub fn partial_snapshots(&self) -> Result<Vec<String>, RepoError> {
        Ok(self
            .engine
            .snapshots()?
            .into_iter()
            .filter(|s| s.tags.iter().any(|t| t == PARTIAL_TAG))
            .filter(|s| self.scope.includes(&s.hostname))
            .map(|s| s.id)
            .collect())
    }

    /// Finds a set by `latest` (the newest of the hosts in scope), a full id or a unique
    /// prefix (of any host: an id is explicit).
    ///
    /// # Errors
    /// [`RepoError::NoSuchSet`], [`RepoError::Ambiguous`], [`RepoError::NoSets`],
    /// [`RepoError::NoSetsOfHost`].
    pub fn find_set(&self, spec: &str) -> Result<BackupSet, RepoError> {
        let mut sets = self.sets()?;
        if spec == "latest" {
            let all_hosts: std::collections::BTreeSet<String> =
                sets.iter().map(|s| s.manifest.host.clone()).collect();
            sets.retain(|s| self.scope.includes(&s.manifest.host));
            return match (sets.pop(), &self.scope) {
                (Some(set), _) => Ok(set),
                (None, HostScope::Host(host)) if !all_hosts.is_empty() => {
                    Err(RepoError::NoSetsOfHost {
                        host: host.clone(),
                        others: all_hosts.into_iter().collect::<Vec<_>>().join(", "),
                    })
                }
                (None, _) => Err(RepoError::NoSets),
            };
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
        let (info, stats) = self
            .engine
            .backup(
                parts,
                &engine::NewSnapshot {
                    tags: &all_tags,
                    description: "akbackup set in progress",
                    host: &self.backup_host(),
                    time,
                },
                parent,
                progress,
            )
            .map_err(|e| self.located(e))?;
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
            .rewrite_snapshot(partial_id, &tags, &manifest.to_description())
            .map_err(|e| self.located(e))?;
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
        Ok(self
            .engine
            .delete_snapshots(ids)
            .map_err(|e| self.located(e))?)
    }

    /// Lists the subtree `path` of set `set_id`; entry paths are plain names only.
    ///
    /// # Errors
    /// Missing path, a crafted entry name ([`EngineError::DamagedTree`]), storage errors.
    pub fn walk(&self, set_id: &str, path: &Path) -> Result<Vec<Entry>, RepoError> {
        Ok(self.engine.walk(set_id, path)?)
    }

    /// Reads and authenticates a data blob.
    ///
    /// # Errors
    /// [`EngineError::DamagedBlob`].
    pub fn read_blob(&self, blob: &BlobRef) -> Result<bytes::Bytes, RepoError> {
        Ok(self.engine.read_blob(blob)?)
    }

    /// `e` with this repository's location filled in where the engine could not know it
    /// (a full disk: the operator needs to know which one).
    #[must_use]
    pub fn located(&self, e: EngineError) -> EngineError {
        match e {
            EngineError::NoSpace { what, path } if path.is_empty() => EngineError::NoSpace {
                what,
                path: self.shown.clone(),
            },
            other => other,
        }
    }

    /// Copies the snapshots `ids` into `dst`, sending only the data `dst` lacks; snapshots
    /// already copied there are skipped. Returns the ids (in this repository) that were
    /// copied. The caller holds the locks of both repositories.
    ///
    /// # Errors
    /// Storage errors of either repository (a full disk named as `dst`'s).
    pub fn copy_to(&self, dst: &Self, ids: &[String]) -> Result<Vec<String>, RepoError> {
        Ok(self
            .engine
            .copy_to(&dst.engine, ids)
            .map_err(|e| dst.located(e))?)
    }

    /// Snapshot files that cannot be read (damaged, truncated, not decryptable), as
    /// `(id, why)`. [`Repository::sets`] leaves them out, so one damaged file does not hide
    /// every set; verify reports them.
    ///
    /// # Errors
    /// Storage errors listing the snapshot files.
    pub fn damaged_snapshots(&self) -> Result<Vec<engine::DamagedFile>, RepoError> {
        Ok(self.engine.damaged_snapshots()?)
    }

    /// Checks the repository's structure (index, packs, trees), and with `read_data` reads
    /// and authenticates every pack, or with `subset` a share of them. What is wrong comes
    /// back as findings, not as an error.
    ///
    /// # Errors
    /// When the check itself could not run.
    pub fn check(
        &self,
        read_data: bool,
        subset: Option<&ReadSubset>,
    ) -> Result<Vec<engine::EngineFinding>, RepoError> {
        Ok(self.engine.check(read_data, subset)?)
    }

    /// Applies the retention `rules` to the snapshots `ids` (one host's sets: the caller
    /// groups them), deciding for each whether it is kept and why. Nothing is deleted here.
    ///
    /// # Errors
    /// When no rule is given; storage errors reading the snapshots.
    pub fn retention(
        &self,
        ids: &[String],
        rules: &engine::Retention,
    ) -> Result<Vec<engine::RetentionDecision>, RepoError> {
        Ok(self.engine.retention(ids, rules)?)
    }

    /// The host a backup records: the one in scope, else this machine's.
    #[must_use]
    pub fn backup_host(&self) -> String {
        match &self.scope {
            HostScope::Host(h) => h.clone(),
            HostScope::All => this_host(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of an sftp:// URL; a password, no user, no path or a host ssh would take for
    /// an option are refused.
    #[test]
    fn sftp_urls() {
        let ok = |u: &str| parse_sftp_url(u).unwrap();
        assert_eq!(
            ok("sftp://backup@srv.example:2222/srv/akbackup/"),
            (
                "backup".into(),
                "srv.example".into(),
                2222,
                "/srv/akbackup".into()
            )
        );
        assert_eq!(ok("sftp://b@10.0.0.5/x").2, 22);
        assert_eq!(ok("sftp://b@[::1]:2200/x").1, "::1");
        assert_eq!(ok("sftp://b@h/with%20space").3, "/with space");
        for bad in [
            "sftp://b:secret@h/x",
            "sftp://h/x",
            "sftp://b@h",
            "sftp://b@h/",
            "sftp://b@-oProxyCommand=x/y",
            "sftp://b@h:99999/x",
            "sftp://b@h/x?y",
        ] {
            let e = parse_sftp_url(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
            assert!(e.contains("sftp"), "{bad}: {e}");
        }
    }

    #[test]
    fn aws_credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n\
                    [profile backup]\naws_access_key_id=C\naws_secret_access_key=D\naws_session_token=T\n";
        assert_eq!(
            aws_profile(text, "default"),
            Some(("A".into(), "B".into(), None))
        );
        assert_eq!(
            aws_profile(text, "backup"),
            Some(("C".into(), "D".into(), Some("T".into())))
        );
        assert_eq!(aws_profile(text, "other"), None);
    }

    #[test]
    fn s3_urls_map_to_bucket_and_root() {
        let cfg = RepositoryConfig {
            url: Some("s3://bkt/a/b/".into()),
            work_dir: None,
            ..RepositoryConfig::default()
        };
        let (loc, work) = location(&cfg).unwrap();
        let engine::Location::S3(s3) = &loc else {
            panic!("not s3")
        };
        assert_eq!((s3.bucket.as_str(), s3.root.as_str()), ("bkt", "/a/b"));
        assert_eq!(s3.region, "us-east-1");
        assert!(!s3.virtual_host_style);
        assert_eq!(loc.display(), "s3://bkt/a/b");
        assert_eq!(work, Path::new(DEFAULT_WORK_DIR).join("bkt-a_b"));
        let bad = RepositoryConfig {
            url: Some("s3:///x".into()),
            ..RepositoryConfig::default()
        };
        assert!(location(&bad).is_err());
    }
}
