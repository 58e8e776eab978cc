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
    config::{Config, RepositoryConfig},
    progress::ProgressRef,
};
pub use engine::EngineError;
pub use engine::{BlobRef, Entry, EntryKind, PartStats, SourcePart};
use engine::{Engine, SnapshotInfo};
pub use lock::{LockError, LockHolder, LockWait, RepoLock};
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
    /// Local directory for staging and the lock (the repository itself when local).
    path: PathBuf,
    /// Where the repository is, for messages.
    shown: String,
    /// Whether `path` is the repository itself.
    local: bool,
    engine: Box<dyn Engine>,
    /// Whether [`Repository::lock`] waits for another run's lock (`--wait`).
    lock_wait: LockWait,
    /// Told once when a wait for the lock begins (the front end says why nothing happens).
    on_wait: Option<WaitNotice>,
}

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
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        RepoError::Config(format!(
            "repository url \"{url}\" is not supported: use s3://bucket/prefix"
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
    let work = config.work_dir.clone().unwrap_or_else(|| {
        let name: String = format!("{bucket}-{prefix}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from(DEFAULT_WORK_DIR).join(name)
    });
    Ok((engine::Location::S3(s3), work))
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
            source,
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
        Ok(Self {
            path: work,
            shown: loc.display(),
            local,
            engine: Box::new(engine),
            lock_wait: LockWait::No,
            on_wait: None,
        })
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
        let lock = self.lock(command)?;
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

    /// Takes the write lock for `command` (waiting as [`Repository::set_lock_wait`] says),
    /// then re-reads the index: it was loaded when the repository was opened, before the
    /// lock, and a `forget --prune` that held the lock meanwhile may have removed packs it
    /// lists. Deduplicating against such a stale index would make the new set reference
    /// data that is gone.
    ///
    /// # Errors
    /// [`LockError::Held`] / [`LockError::StillHeld`] naming the holder; storage errors of
    /// the index reload.
    pub fn lock(&self, command: &str) -> Result<RepoLock, RepoError> {
        let lock = RepoLock::acquire_waiting(&self.path, command, self.lock_wait, &|h| {
            if let Some(tell) = &self.on_wait {
                tell(&self.shown, h);
            }
        })?;
        self.engine.reload_index()?;
        Ok(lock)
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
        let (info, stats) = self
            .engine
            .backup(
                parts,
                &all_tags,
                "akbackup set in progress",
                parent,
                time,
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

#[cfg(test)]
mod tests {
    use super::*;

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
