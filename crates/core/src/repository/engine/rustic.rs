//! [`RusticEngine`]: the [`Engine`] over `rustic_core`, and creating and opening repositories.
//!
//! Owns the library's repository handle (kept fully indexed, re-read after writes and under a
//! lock), the translation of each [`Engine`] operation into library calls, and the sealing of
//! unpacked files with the master key. It does not read the backup source
//! ([`super::source`]), walk trees ([`super::tree`]) or classify errors ([`super::error`]).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, DataId, Id, IndexedFullStatus,
    KeepOptions, KeyOptions, ParentOptions, PruneOptions, ReadSubsetOption, Repository,
    RepositoryOptions, RusticError, SnapshotOptions, StringList,
    repofile::{SnapshotFile, SnapshotId},
};
use sha2::{Digest, Sha256};

use super::{
    BlobRef, DamagedFile, Engine, EngineError, EngineFinding, EngineResult, Entry, Location,
    NewSnapshot, PartStats, PruneSummary, ReadSubset, Retention, RetentionDecision, SnapshotInfo,
    SourcePart,
    error::{first_line, is_not_found, poisoned},
    source::SetSource,
    tree,
};
use crate::progress::ProgressRef;

impl ReadSubset {
    /// The library's form of the subset (a named part resolves against today's date).
    pub(super) fn option(&self) -> EngineResult<ReadSubsetOption> {
        let sub = self.as_str();
        sub.parse()
            .map_err(|_: Box<RusticError>| EngineError::Library {
                what: "--read-data-subset",
                message: format!("\"{sub}\" is not a subset: use a share like 5%, a part like 1/7, or a size like 500MiB"),
            })
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
    let backend: Arc<dyn rustic_core::WriteBackend> = match location {
        Location::Local(path) => Arc::new(
            rustic_backend::LocalBackend::new(path.display().to_string(), std::iter::empty())
                .map_err(|e| EngineError::storage("opening repository backend", location, &e))?,
        ),
        Location::S3(_) | Location::Sftp(_) => {
            Arc::new(super::storage::OpendalBackend::new(location).map_err(|e| {
                let e = rustic_core::RusticError::with_source(
                    rustic_core::ErrorKind::Backend,
                    "Building the storage operator failed.",
                    e,
                );
                EngineError::storage("opening repository backend", location, &e)
            })?)
        }
    };
    Ok(rustic_core::RepositoryBackends::new(backend, None))
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
        tree::walk(&repo, &snap, id, path)
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

    fn copy_to(&self, dest: &Self, ids: &[String]) -> EngineResult<Vec<String>> {
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

    fn check(
        &self,
        read_data: bool,
        subset: Option<&ReadSubset>,
    ) -> EngineResult<Vec<EngineFinding>> {
        let mut opts = CheckOptions::default().read_data(read_data || subset.is_some());
        if let Some(sub) = subset {
            // Parsed again now: it parsed when it was made, and a named part resolves
            // against the date the check runs.
            opts = opts.read_data_subset(sub.option()?);
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
