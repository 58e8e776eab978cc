//! The SSDB component: one store (`/var/lib/ssdb/<name>` with the LevelDB databases `data/`
//! and `meta/`), backed up while it serves traffic, verified before the set completes.
//!
//! Backup stages the store in a hidden sibling directory on the same filesystem
//! (`/var/lib/ssdb/.<name>.akbackup-stage-<pid>-<random>`, mode 0700, owned by the run: see
//! [`crate::stage`]): in `online` mode by the
//! checkpoint of [`checkpoint`] (tables hard-linked, logs and MANIFEST copied, races detected
//! and retried), in `stop` mode by the same copy with the unit stopped, and started again right
//! after staging, on every path. The staged copy is then checked at a cost that follows what
//! changed, not the store's size (reading every key of a large store took most of a nightly
//! backup, and grew with the store): each table file new since the parent set is checked
//! block by block against its CRCs (a damaged one is refused, named, the first time it would
//! enter a set); a table the parent set holds with the same name, size and mtime carries that
//! check forward (LevelDB never rewrites a table under its name, and the engine stores it as
//! the parent's bytes); and a scratch copy proves that LevelDB opens the checkpoint (the
//! tables its MANIFEST lists are there, the logs replay). Reading every key, for key counts
//! per SSDB type and a digest, is `verify --deep`'s job, or a backup's when
//! `deep-check-every` says one is due. Unchanged table files are unchanged files to the
//! repository, so the next day costs only the new tables and the logs.
//!
//! In-place restore writes the set to a hidden staging directory first (the service keeps
//! running meanwhile), then stops the unit, swaps the directories atomically, starts the unit
//! and health-checks it; when the check fails the previous directory is put back and started.

pub mod checkpoint;
pub mod config;
pub mod details;
pub mod inspect;
pub mod manifest;
pub mod protocol;
pub mod table;

pub use config::{SsdbConfig, SsdbMode};
pub use details::SsdbDetails;

use crate::component::Details;
use std::path::{Path, PathBuf};

use super::{
    Component, ComponentError, ComponentRestore, Estimate, HealthError, InPlace, LiveDirectory,
    ParentSet, Prepared, RestoreRequest, RestoreStep, RestoreTarget, ServedDirectory,
    ServiceControl, StagedRestore, StoredIndex, staged::Stopped,
};
use crate::{
    backup_set::{ComponentRecord, Status},
    config::ComponentName,
    progress::ProgressRef,
    repository::{PartStats, Repository, SourcePart},
    service,
};

/// The two LevelDB databases of a store.
pub const DATABASES: [&str; 2] = ["data", "meta"];
/// Online checkpoint attempts before giving up.
pub const MAX_ATTEMPTS: u32 = 10;

/// An SSDB store.
#[derive(Debug)]
pub struct SsdbComponent {
    name: ComponentName,
    config: SsdbConfig,
}

/// Keeps the staged copy, and its owner lock, until the set is stored; in snapshot mode also
/// the snapshot, released first.
struct Staged {
    snapshot: Option<crate::snapshot::Snapshot>,
    _stage: crate::stage::Stage,
}

impl SsdbComponent {
    /// Creates the component from its config section.
    #[must_use]
    pub const fn new(name: ComponentName, config: SsdbConfig) -> Self {
        Self { name, config }
    }

    fn source_err(&self, path: &Path, message: String) -> ComponentError {
        ComponentError::Source {
            name: self.name.clone(),
            path: path.to_path_buf(),
            message,
        }
    }

    fn service_err(&self, e: service::ServiceError) -> ComponentError {
        ComponentError::Service {
            name: self.name.clone(),
            error: Box::new(e),
        }
    }

    /// Where to health-check the server, and how that was decided.
    fn endpoint(&self) -> Result<(String, u16), String> {
        if let Some(port) = self.config.port {
            return Ok((
                self.config
                    .host
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1".to_string()),
                port,
            ));
        }
        let candidates = [
            self.config.path.join("ssdb.conf"),
            PathBuf::from(format!("/etc/ssdb/{}.conf", self.name.name)),
        ];
        for c in &candidates {
            if let Ok(text) = std::fs::read_to_string(c)
                && let Some((ip, port)) = protocol::endpoint_from_conf(&text)
            {
                return Ok((self.config.host.clone().unwrap_or(ip), port));
            }
        }
        Err(format!(
            "no port configured and no ssdb.conf at {} or {}: protocol health check skipped (set host/port in [{}])",
            candidates[0].display(),
            candidates[1].display(),
            self.name
        ))
    }

    /// The paths a snapshot of the store must hold: the store and its databases.
    fn snapshot_paths(&self) -> Vec<PathBuf> {
        std::iter::once(self.config.path.clone())
            .chain(
                DATABASES
                    .iter()
                    .map(|db| self.config.path.join(db))
                    .filter(|p| p.exists()),
            )
            .collect()
    }

    /// Takes the configured snapshot of the store's volume.
    fn take_snapshot(
        &self,
        progress: &ProgressRef,
    ) -> Result<crate::snapshot::Snapshot, ComponentError> {
        let settings = self.config.snapshot_settings().ok_or_else(|| {
            self.source_err(
                &self.config.path,
                "mode = \"snapshot\" needs snapshot = \"btrfs\" or \"lvm\"".to_string(),
            )
        })?;
        let paths = self.snapshot_paths();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        progress.note(&format!(
            "{}: taking a {} snapshot of {}",
            self.name,
            settings.name(),
            self.config.path.display()
        ));
        let snap = settings
            .take(&refs, &self.name.to_string())
            .map_err(|e| self.snapshot_err(e))?;
        for note in snap.notes() {
            progress.note(&format!("{}: {note}", self.name));
        }
        Ok(snap)
    }

    fn snapshot_err(&self, error: crate::snapshot::SnapshotError) -> ComponentError {
        ComponentError::Snapshot {
            name: self.name.clone(),
            error: Box::new(error),
        }
    }

    /// Whether snapshot mode can work for this store now; `None` in other modes.
    fn probe_snapshot(&self) -> Option<Result<String, String>> {
        let settings = self.config.snapshot_settings()?;
        let paths = self.snapshot_paths();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        Some(
            settings
                .probe(&refs)
                .map(|p| p.to_string())
                .map_err(|e| e.to_string()),
        )
    }

    /// Removes staging directories next to the store whose run died (never one whose run
    /// still holds it: a backup of this store into another repository may be running).
    fn remove_leftovers(&self, progress: &ProgressRef) {
        let Some(parent) = self.config.path.parent() else {
            return;
        };
        for note in crate::stage::sweep(parent, &crate::stage::ssdb_prefix(&self.config.path)) {
            progress.note(&format!("{}: {note}", self.name));
        }
    }

    /// Checkpoints every database into `stage`: the details it starts a set's record with.
    fn stage(&self, stage: &Path, attempts: u32) -> Result<SsdbDetails, ComponentError> {
        let mut dbs = std::collections::BTreeMap::new();
        let mut total_attempts = 0;
        for db in DATABASES {
            let src = self.config.path.join(db);
            if !src.join("CURRENT").is_file() {
                if db == "data" {
                    return Err(self.source_err(
                        &src,
                        "is not a LevelDB database (no CURRENT file): check [ssdb] path"
                            .to_string(),
                    ));
                }
                continue;
            }
            let stats = checkpoint::checkpoint(&src, &stage.join(db), attempts)
                .map_err(|e| self.source_err(&src, e.to_string()))?;
            total_attempts = total_attempts.max(stats.attempts);
            dbs.insert(
                db.to_string(),
                serde_json::to_value(&stats).unwrap_or_default(),
            );
        }
        Ok(SsdbDetails {
            attempts: Some(total_attempts),
            databases: Some(dbs),
            ..SsdbDetails::default()
        })
    }

    /// Checks the staged copy for the set, at a cost that follows what changed since
    /// `parent`: the table files new since then are checked block by block, tables the parent
    /// holds with the same identity carry their check forward, and a scratch copy proves that
    /// LevelDB opens the checkpoint (MANIFEST and log replay). Every key is read only when
    /// `deep-check-every` says a full read is due; a database whose files are all the
    /// parent's keeps the parent's counts and digest.
    ///
    /// `store` holds the databases (the staged copy, or the store in a snapshot); scratch
    /// copies go into `scratch_dir`.
    fn inspect_staged(
        &self,
        store: &Path,
        scratch_dir: &Path,
        parent: Option<&ParentSet<'_>>,
    ) -> Result<Inspected, ComponentError> {
        let record = parent.and_then(|p| self.parent_record(p).map(|r| (p, r)));
        let now = jiff::Timestamp::now();
        let last_full = record.and_then(|(p, r)| last_full_read(p.set, r));
        let full = self.full_read_due(last_full, now);
        let mut out = Inspected {
            last_full_read: if full { Some(now) } else { last_full },
            ..Inspected::default()
        };
        for db in DATABASES {
            let staged = store.join(db);
            if !staged.exists() {
                continue;
            }
            let failed = |e: inspect::InspectError| {
                self.source_err(
                    &staged,
                    format!("the staged copy does not open with LevelDB: {e}"),
                )
            };
            let stored = record.and_then(|(p, _)| self.parent_files(p, db));
            let since = record.map_or(String::new(), |(p, _)| {
                format!(" since set {}", p.set.short_id())
            });
            let (how, summary, check) = if full {
                let summary =
                    scratch_in(&staged, scratch_dir, inspect::summarize).map_err(failed)?;
                let how = "every key read (deep-check-every)".to_string();
                (how, Some(summary), None)
            } else if let Some(summary) = record
                .and_then(|(_, r)| recorded_summary(r, db))
                .filter(|_| stored.is_some() && stored == staged_files(&staged))
            {
                let how = format!("files unchanged{since}: counts and digest carried over");
                (how, Some(summary), None)
            } else {
                let known = |name: &std::ffi::OsStr, meta: &std::fs::Metadata| {
                    stored.as_ref().is_some_and(|s| {
                        mtime_of(meta).is_some_and(|t| s.get(name) == Some(&(meta.len(), t)))
                    })
                };
                let check = inspect::check_tables(&staged, known).map_err(failed)?;
                scratch_in(&staged, scratch_dir, inspect::opens).map_err(failed)?;
                let how = format!(
                    "{} new table(s) checked block by block, {} unchanged{since}; MANIFEST and logs replayed",
                    check.checked, check.carried
                );
                (how, None, Some(check))
            };
            out.inspection.insert(db.to_string(), how);
            if let Some(summary) = summary {
                out.summary.insert(db, summary);
            }
            if let Some(check) = check {
                out.tables.insert(db.to_string(), check);
            }
        }
        Ok(out)
    }

    /// Whether this backup reads every key: `deep-check-every` is set and the last full read
    /// (none yet counts as due) is at least that old.
    fn full_read_due(&self, last: Option<jiff::Timestamp>, now: jiff::Timestamp) -> bool {
        let Some(every) = self
            .config
            .deep_check_every
            .as_deref()
            .and_then(|d| crate::units::parse_duration(d).ok())
        else {
            return false;
        };
        last.is_none_or(|t| now.duration_since(t).unsigned_abs().ge(&every))
    }

    /// This component's record in the parent set, when it describes the same store and is
    /// not a failure.
    fn parent_record<'a>(&self, parent: &ParentSet<'a>) -> Option<&'a ComponentRecord> {
        let record = parent.set.manifest.component(&self.name.to_string())?;
        (record.status != Status::Failed
            && record.repo_path == self.config.path.display().to_string())
        .then_some(record)
    }

    /// Size and mtime of each file the parent set stored for database `db`, by name. LevelDB
    /// never rewrites a table under the same name, and the engine trusts the same test to
    /// reuse a file's stored data: a table with the same name, size and mtime (to the
    /// nanosecond) is stored as the parent's bytes, which were checked when they entered.
    fn parent_files(&self, parent: &ParentSet<'_>, db: &str) -> Option<FileIds> {
        parent
            .repo
            .walk(&parent.set.id, &self.config.path.join(db))
            .ok()?
            .into_iter()
            .filter(|e| e.kind == crate::repository::EntryKind::File)
            .map(|e| Some((e.path.into_os_string(), (e.size, e.mtime?))))
            .collect()
    }
}

/// What a backup read in a snapshot leaves out of the store: what carry-over leaves out (pid
/// files, the snapshots' directory), and the table files the databases' MANIFESTs do not list
/// (a compaction's output caught half-written, or obsolete tables), which LevelDB would delete
/// on open and which the online checkpoint never links.
fn snapshot_excludes(store: &Path) -> Vec<String> {
    let mut out = vec!["*.pid".to_string(), crate::snapshot::EXCLUDE.to_string()];
    for db in DATABASES {
        let dir = store.join(db);
        let (Ok(listed), Ok(entries)) = (inspect::listed_tables(&dir), std::fs::read_dir(&dir))
        else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if inspect::table_number(&name).is_some_and(|n| !listed.contains(&n)) {
                out.push(format!("**/{db}/{}", name.to_string_lossy()));
            }
        }
    }
    out
}

/// Files by name: size and mtime.
type FileIds = std::collections::BTreeMap<std::ffi::OsString, (u64, jiff::Timestamp)>;

/// What [`SsdbComponent::inspect_staged`] found, as the manifest records it.
#[derive(Default)]
struct Inspected {
    /// Key counts and digest by database, for those read in full or carried over.
    summary: std::collections::BTreeMap<&'static str, inspect::DbSummary>,
    /// How each database was checked, in words.
    inspection: std::collections::BTreeMap<String, String>,
    /// The table checks by database.
    tables: std::collections::BTreeMap<String, inspect::TableCheck>,
    /// When every key of the store was last read (this set or an earlier one).
    last_full_read: Option<jiff::Timestamp>,
}

/// The mtime of `meta` to the nanosecond.
fn mtime_of(meta: &std::fs::Metadata) -> Option<jiff::Timestamp> {
    use std::os::unix::fs::MetadataExt;
    jiff::Timestamp::new(meta.mtime(), i32::try_from(meta.mtime_nsec()).ok()?).ok()
}

/// Size and mtime of every file in `dir`, by name; `None` when anything is not a plain file
/// or cannot be read.
fn staged_files(dir: &Path) -> Option<FileIds> {
    std::fs::read_dir(dir)
        .ok()?
        .map(|entry| {
            let entry = entry.ok()?;
            let m = entry.metadata().ok()?;
            m.is_file()
                .then(|| Some((entry.file_name(), (m.len(), mtime_of(&m)?))))
                .flatten()
        })
        .collect()
}

/// The key counts and digest `record` holds for database `db`, when that set read them.
fn recorded_summary(record: &ComponentRecord, db: &str) -> Option<inspect::DbSummary> {
    SsdbDetails::of(&record.details).summary(db)
}

/// When every key of the store in `record` was last read (see
/// [`SsdbDetails::last_full_read`]).
fn last_full_read(
    set: &crate::backup_set::BackupSet,
    record: &ComponentRecord,
) -> Option<jiff::Timestamp> {
    SsdbDetails::of(&record.details).last_full_read(set.manifest.started)
}

/// Runs `f` on a scratch copy of the database `staged` (LevelDB's recovery writes to what it
/// opens), made beside it in the same private directory and removed afterwards.
fn scratch<T>(
    staged: &Path,
    f: impl FnOnce(&Path) -> Result<T, inspect::InspectError>,
) -> Result<T, inspect::InspectError> {
    scratch_in(staged, staged.parent().unwrap_or(staged), f)
}

/// [`scratch`] with the copy made in `dir` (a private directory): the database may be in a
/// read-only snapshot.
fn scratch_in<T>(
    staged: &Path,
    dir: &Path,
    f: impl FnOnce(&Path) -> Result<T, inspect::InspectError>,
) -> Result<T, inspect::InspectError> {
    let name = staged
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let scratch = dir.join(format!(".scratch-{name}"));
    let result = checkpoint::scratch_copy(staged, &scratch)
        .map_err(inspect::InspectError::Scratch)
        .and_then(|()| f(&scratch));
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A database of a restored store that LevelDB does not open.
#[derive(Debug, thiserror::Error)]
#[error("{db}/ does not open with LevelDB: {error}")]
pub struct NotOpening {
    /// `data` or `meta`.
    pub db: &'static str,
    /// What LevelDB or the checks found (printed in the message).
    pub error: inspect::InspectError,
}

/// Proves that every database of the store at `store` opens with LevelDB (see
/// [`inspect::opens`]): what a restore checks before it reports success.
///
/// # Errors
/// The database that does not open, and why.
pub fn check_opens(store: &Path) -> Result<(), (&'static str, inspect::InspectError)> {
    for db in DATABASES {
        let dir = store.join(db);
        if dir.exists() {
            scratch(&dir, inspect::opens).map_err(|e| (db, e))?;
        }
    }
    Ok(())
}

/// Describes a store directory (`data/`, `meta/`) by opening scratch copies of its databases
/// and reading every key: counts and digest by database. The store itself is not modified.
///
/// # Errors
/// The database that does not open, and the LevelDB error.
pub fn describe_store(
    store: &Path,
) -> Result<
    std::collections::BTreeMap<&'static str, inspect::DbSummary>,
    (&'static str, inspect::InspectError),
> {
    let mut out = std::collections::BTreeMap::new();
    for db in DATABASES {
        let staged = store.join(db);
        if !staged.exists() {
            continue;
        }
        let summary = scratch(&staged, inspect::summarize).map_err(|e| (db, e))?;
        out.insert(db, summary);
    }
    Ok(out)
}

/// An SSDB store: LevelDB must open the restored copy; the unit is stopped for the swap, the
/// files beside `data/` and `meta/` carried over, and the unit started and health-checked,
/// with a rollback to the previous store when it does not come up.
impl LiveDirectory for SsdbComponent {
    fn component(&self) -> &ComponentName {
        &self.name
    }

    fn live(&self) -> &Path {
        &self.config.path
    }

    fn check_restored(&self, dir: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        check_opens(dir).map_err(|(db, error)| Box::new(NotOpening { db, error }).into())
    }

    fn service_steps(&self, how: InPlace) -> (Vec<String>, Vec<String>) {
        super::staged::unit_steps(&self.config.unit(&self.name.name), how, "health check")
    }

    fn swap_in(
        &self,
        staged: StagedRestore,
        how: InPlace,
        progress: &ProgressRef,
    ) -> Result<ComponentRestore, ComponentError> {
        super::staged::swap_with_unit(self, staged, how, progress)
    }
}

/// The unit `ssdb-NAME` serves the store; the files beside `data/` and `meta/` stay those of
/// the live store; the health check is SSDB's `ping` at the endpoint `ssdb.conf` names.
impl ServedDirectory for SsdbComponent {
    fn unit_name(&self) -> String {
        self.config.unit(&self.name.name)
    }

    fn noun(&self) -> &'static str {
        "store"
    }

    fn carry_over(&self, live: &Path, staging: &Path) -> std::io::Result<()> {
        carry_over(live, staging)
    }

    fn health_after_start(&self) -> Box<dyn Fn() -> Result<String, HealthError> + '_> {
        // Found now: ssdb.conf next to the store moves aside with the swap.
        let endpoint = self.endpoint();
        Box::new(move || match &endpoint {
            Ok((host, port)) => self.wait_healthy(host, *port),
            Err(why) => Ok(why.clone()),
        })
    }
}

impl Component for SsdbComponent {
    fn name(&self) -> &ComponentName {
        &self.name
    }

    fn source(&self) -> String {
        self.config.path.display().to_string()
    }

    fn repo_path(&self) -> &Path {
        &self.config.path
    }

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let data = self.config.path.join("data");
        if !data.join("CURRENT").is_file() {
            problems.push(format!(
                "{}: {} is not a LevelDB database (no CURRENT)",
                self.name,
                data.display()
            ));
        }
        if let Err(why) = self.endpoint() {
            // Not a problem: the check is optional; say it once in config check.
            tracing::info!("{}: {why}", self.name);
        }
        problems
    }

    fn estimate(&self, stored: Option<&StoredIndex>) -> Result<Estimate, ComponentError> {
        let mut est = Estimate::default();
        for db in DATABASES {
            let dir = self.config.path.join(db);
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.filter_map(Result::ok) {
                let Ok(m) = e.metadata() else { continue };
                if !m.is_file() {
                    continue;
                }
                est.count(&PathBuf::from(db).join(e.file_name()), &m, stored);
            }
        }
        if est.files == 0 {
            return Err(self.source_err(
                &self.config.path,
                "holds no LevelDB files: check [ssdb] path".to_string(),
            ));
        }
        Ok(est)
    }

    fn prepare(&self, staging: &Path, progress: &ProgressRef) -> Result<Prepared, ComponentError> {
        self.prepare_after(staging, progress, None)
    }

    fn prepare_after(
        &self,
        _staging: &Path,
        progress: &ProgressRef,
        parent: Option<&ParentSet<'_>>,
    ) -> Result<Prepared, ComponentError> {
        self.remove_leftovers(progress);
        let beside = self.config.path.parent().unwrap_or_else(|| Path::new("/"));
        // 0700 from the start: the hard links in it are the store's live table files.
        let owned =
            crate::stage::Stage::create(beside, &crate::stage::ssdb_prefix(&self.config.path))
                .map_err(|e| {
                    self.source_err(beside, format!("cannot create a staging directory: {e}"))
                })?;
        let stage = owned.path().to_path_buf();
        // In snapshot mode the databases are read in the snapshot; `stage` holds only
        // scratch copies, and the snapshot is released with the guard.
        let mut snapshot = None;
        let (mut details, mode) = match self.config.mode {
            SsdbMode::Online => {
                progress.note(&format!(
                    "{}: online checkpoint of {}",
                    self.name,
                    self.config.path.display()
                ));
                (self.stage(&stage, MAX_ATTEMPTS)?, "online")
            }
            SsdbMode::Stop => {
                let unit = self.config.unit(&self.name.name);
                progress.note(&format!("{}: stopping {unit}", self.name));
                let stopped = Stopped::stop(&unit).map_err(|e| self.service_err(e))?;
                let staged = self.stage(&stage, 1);
                progress.note(&format!("{}: starting {unit}", self.name));
                stopped.start().map_err(|e| self.service_err(e))?;
                (staged?, "stop")
            }
            SsdbMode::Snapshot => {
                let taken = self.take_snapshot(progress)?;
                let details = SsdbDetails {
                    snapshot: Some(taken.describe().to_string()),
                    ..SsdbDetails::default()
                };
                snapshot = Some(taken);
                (details, "snapshot")
            }
        };
        let read_root = if let Some(snap) = &snapshot {
            let view = snap
                .view(&self.config.path)
                .map_err(|e| self.snapshot_err(e))?;
            // As online mode checks the live store: a wrong path or view is refused here,
            // not stored without any LevelDB check.
            let data = view.join("data");
            if !data.join("CURRENT").is_file() {
                return Err(self.source_err(
                    &data,
                    "is not a LevelDB database (no CURRENT file) in the snapshot: check [ssdb] path"
                        .to_string(),
                ));
            }
            view
        } else {
            // The store's own files beside the databases (ssdb.conf, ...) belong to the set
            // too: on a new server there is no live directory to carry them over from.
            carry_over(&self.config.path, &stage).map_err(|e| {
                self.source_err(
                    &self.config.path,
                    format!("cannot copy the files beside data/ and meta/: {e}"),
                )
            })?;
            stage.clone()
        };
        let inspected = self.inspect_staged(&read_root, &stage, parent)?;
        for (db, how) in &inspected.inspection {
            progress.note(&format!("{}: {db}/: {}", self.name, how));
        }
        details.mode = Some(mode.to_string());
        details.inspection = Some(inspected.inspection);
        details.tables = Some(inspected.tables);
        details.last_full_read = inspected.last_full_read;
        details.consistency = Some(
            match self.config.mode {
                SsdbMode::Online => {
                    "point in time per database, crash-consistent (as after a power cut)"
                }
                SsdbMode::Stop => "clean copy of the stopped store",
                SsdbMode::Snapshot => {
                    "one instant of the whole store (filesystem snapshot), crash-consistent (as after a power cut)"
                }
            }
            .to_string(),
        );
        for (db, summary) in inspected.summary {
            details.set_summary(db, summary);
        }
        let excludes = if snapshot.is_some() {
            snapshot_excludes(&read_root)
        } else {
            Vec::new()
        };
        Ok(Prepared {
            part: SourcePart {
                label: self.name.to_string(),
                read_root,
                repo_path: self.config.path.clone(),
                excludes,
                meta_root: self.config.path.clone(),
                ctime_from_mtime: true,
                expected_bytes: None,
            },
            details: details.to_value(),
            guard: Some(Box::new(Staged {
                snapshot,
                _stage: owned,
            })),
        })
    }

    fn finish(&self, mut prepared: Prepared, stats: PartStats) -> ComponentRecord {
        let snapshot = prepared
            .guard
            .take()
            .and_then(|g| g.downcast::<Staged>().ok())
            .and_then(|staged| staged.snapshot);
        let mut record = super::staged_record(&self.name, self.source(), prepared, &stats);
        record
            .warnings
            .extend(crate::snapshot::release_kept(snapshot));
        record
    }

    fn plan_restore(&self, target: &RestoreTarget, record: &ComponentRecord) -> RestoreStep {
        self.plan_step(target, record)
    }

    fn restore(&self, req: &RestoreRequest<'_>) -> Result<ComponentRestore, ComponentError> {
        self.restore_live(req)
    }

    fn unit(&self) -> Option<String> {
        Some(self.config.unit(&self.name.name))
    }

    fn snapshot_probe(&self) -> Option<Result<String, String>> {
        self.probe_snapshot()
    }

    fn service_control(&self) -> Option<ServiceControl> {
        let unit = self.config.unit(&self.name.name);
        Some(ServiceControl {
            stop: Some(systemctl_argv("stop", &unit)),
            start: systemctl_argv("start", &unit),
        })
    }

    fn health_check(&self) -> Result<String, HealthError> {
        match self.endpoint() {
            Ok((host, port)) => self.wait_healthy(&host, port),
            Err(_) => {
                let unit = self.config.unit(&self.name.name);
                service::run(&systemctl_argv("is-active", &unit))
                    .map(|()| {
                        format!(
                            "{unit} is active (no SSDB port known to ping: set host/port in [{}])",
                            self.name
                        )
                    })
                    .map_err(|error| HealthError::Service { error })
            }
        }
    }
}

fn systemctl_argv(verb: &str, unit: &str) -> Vec<String> {
    vec!["systemctl".to_string(), verb.to_string(), unit.to_string()]
}

/// Copies every entry of `live` except `data/`, `meta/` and `*.pid` into `staging`, with
/// owners, modes and times. Used twice: into a backup's staged copy (so the set holds
/// `ssdb.conf` and the like), and into a restore's staging before the swap (the live files
/// win over the set's, which they replace).
fn carry_over(live: &Path, staging: &Path) -> std::io::Result<()> {
    let Ok(rd) = std::fs::read_dir(live) else {
        return Ok(());
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let shown = name.to_string_lossy();
        if DATABASES.contains(&shown.as_ref())
            || shown.ends_with(".pid")
            || shown == crate::snapshot::EXCLUDE
        {
            continue;
        }
        for item in walkdir::WalkDir::new(entry.path()) {
            let item = item.map_err(std::io::Error::other)?;
            let rel = item
                .path()
                .strip_prefix(live)
                .map_err(std::io::Error::other)?;
            let to = staging.join(rel);
            let ft = item.file_type();
            if !ft.is_dir() && std::fs::symlink_metadata(&to).is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&to)?;
            }
            if ft.is_dir() {
                std::fs::create_dir_all(&to)?;
            } else if ft.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(item.path())?, &to)?;
                continue;
            } else if ft.is_file() {
                std::fs::copy(item.path(), &to)?;
            } else {
                continue;
            }
            checkpoint::clone_meta(item.path(), &to).map_err(std::io::Error::other)?;
        }
    }
    Ok(())
}

impl SsdbComponent {
    /// Polls the server until it answers or [`protocol::START_TIMEOUT`] has passed: a large
    /// store takes a while to open after `systemctl start` returns.
    fn wait_healthy(&self, host: &str, port: u16) -> Result<String, HealthError> {
        super::staged::wait_healthy(|| {
            protocol::health_check(host, port, self.config.auth.as_deref())
                .map(|size| format!("health check ok: ping answered, dbsize {size}"))
                .map_err(|error| HealthError::Ssdb { error })
        })
    }
}

/// Re-checks an SSDB component of a stored set: restores it to a temporary directory, opens
/// it with LevelDB and compares key counts and digests with the manifest. Returns problems.
#[must_use]
pub fn deep_check(
    repo: &Repository,
    set_id: &str,
    record: &ComponentRecord,
    progress: &ProgressRef,
) -> Vec<String> {
    let (_tmp, dest) = match super::restore_for_check(repo, set_id, record, progress) {
        Ok(t) => t,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    for db in DATABASES {
        let dir = dest.join(db);
        let expected = recorded_summary(record, db);
        if !dir.exists() {
            if expected.is_some() {
                problems.push(format!("{db}/ is in the manifest but not in the set"));
            }
            continue;
        }
        // Every key is read either way: that the copy opens and every block of every table
        // checks is the finding for a set that recorded no digest (incremental inspection).
        match inspect::summarize(&dir) {
            Ok(s) => {
                let Some(want) = expected else {
                    continue;
                };
                if s.keys != want.keys {
                    let shown = |k: &inspect::KeyCounts| {
                        serde_json::to_value(k).unwrap_or_default().to_string()
                    };
                    problems.push(format!(
                        "{db}/: key counts {} differ from the manifest's {}",
                        shown(&s.keys),
                        shown(&want.keys)
                    ));
                }
                if s.digest != want.digest {
                    problems.push(format!(
                        "{db}/: digest {} differs from the manifest's",
                        &s.digest[..16.min(s.digest.len())]
                    ));
                }
            }
            Err(e) => problems.push(format!("{db}/ does not open with LevelDB: {e}")),
        }
    }
    problems
}

/// Opens the store an imported `tar.gz` held (`staged`, unpacked from `archive`) and adds
/// its description to the set's `details`: an archive taken while SSDB was running may not
/// open, and is refused before it becomes a set.
///
/// # Errors
/// [`crate::archive::ArchiveError::BrokenStore`] naming the archive and the database.
pub(crate) fn describe_import(
    archive: &Path,
    staged: &Path,
    details: &mut serde_json::Value,
) -> Result<(), crate::archive::ArchiveError> {
    let summary = describe_store(staged).map_err(|(db, reason)| {
        crate::archive::ArchiveError::BrokenStore {
            path: archive.to_path_buf(),
            db: db.to_string(),
            reason,
        }
    })?;
    let mut described = SsdbDetails {
        mode: Some("import".to_string()),
        imported_from: Some(archive.display().to_string()),
        ..SsdbDetails::of(details)
    };
    for (db, s) in summary {
        described.set_summary(db, s);
    }
    *details = described.to_value();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup_set::{BackupSet, Manifest};

    /// The manifest of a set written before incremental inspection, as that release wrote it:
    /// every set read every key, so the record holds counts and digests but neither
    /// `tables` nor `last_full_read`.
    const EARLIER: &str = r#"{"format":1,"akbackup_version":"0.1.0","host":"ak1",
        "started":"2026-12-01T02:00:00Z","finished":"2026-12-01T02:03:00Z","status":"complete",
        "tags":[],"components":[{"name":"ssdb.actions","kind":"ssdb",
        "source":"/var/lib/ssdb/actions","repo_path":"/var/lib/ssdb/actions","files":12,
        "dirs":3,"bytes":4096,"read_bytes":4096,"status":"complete","warnings":[],"errors":[],
        "details":{"attempts":1,"mode":"online","inspection":{"data":"every key read",
        "meta":"every key read"},"consistency":"point in time per database",
        "keys":{"kv":3,"hash":2,"zset":1,"queue":0,"binlog":1,"other":0,"total":7},
        "digest":"aa11","meta":{"keys":{"kv":1,"hash":0,"zset":0,"queue":0,"binlog":0,
        "other":0,"total":1},"digest":"bb22"}},"prepare_seconds":1.5}]}"#;

    /// A set of the earlier format counts as read in full at its start, and its counts and
    /// digests carry over to an unchanged store; a set of this format says when the store
    /// was last read in full, or nothing when it never was.
    #[test]
    fn earlier_sets_count_as_read_in_full_at_their_start() {
        let manifest = Manifest::from_description(EARLIER).expect("the earlier manifest parses");
        let set = BackupSet {
            id: "ab".repeat(32),
            manifest,
            added_bytes: None,
        };
        let earlier = set.manifest.component("ssdb.actions").expect("record");
        assert_eq!(last_full_read(&set, earlier), Some(set.manifest.started));
        let data = recorded_summary(earlier, "data").expect("data summary");
        assert_eq!((data.keys.total, data.digest.as_str()), (7, "aa11"));
        let meta = recorded_summary(earlier, "meta").expect("meta summary");
        assert_eq!((meta.keys.total, meta.digest.as_str()), (1, "bb22"));

        let mut now = earlier.clone();
        now.details = serde_json::json!({
            "tables": {"data": {"tables": 4, "checked": 1, "blocks": 9, "checked_bytes": 10,
                                "carried": 3}},
            "last_full_read": "2026-11-20T01:00:00Z",
        });
        assert_eq!(
            last_full_read(&set, &now),
            "2026-11-20T01:00:00Z".parse().ok()
        );
        assert!(recorded_summary(&now, "data").is_none());
        now.details = serde_json::json!({ "tables": {} });
        assert_eq!(last_full_read(&set, &now), None);
    }
}
