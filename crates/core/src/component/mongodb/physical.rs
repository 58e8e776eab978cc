//! `mode = "snapshot"`: a physical copy of the instance's dbpath, read from a filesystem
//! snapshot, following MongoDB's procedure for WiredTiger ("Back Up and Restore with
//! Filesystem Snapshots").
//!
//! Backup: ask the server for its version, storage engine, dbpath (`getCmdLineOpts`, unless
//! `dbpath` is set; both must agree), layout options and replica-set config; refuse anything
//! but WiredTiger; require the data files and the journal (and every directory in the dbpath)
//! on one volume, because a snapshot is one instant of one volume and WiredTiger recovers
//! from its journal only when both are of the same instant; with `lock = true`, hold
//! `fsyncLock` from just before the snapshot to just after it (unlocked on every path, the
//! signal thread included); then store the dbpath as the snapshot shows it under
//! `/akbackup/mongodb/NAME`. What a restore needs is recorded ([`PhysicalCopy`]).
//!
//! Restore in place is the SSDB procedure ([`super::super::staged`]): the files are written
//! beside the dbpath while the server runs, then the unit is stopped, the directories are
//! swapped (the previous one kept), the unit started and `ping`ed through the driver, and
//! the previous dbpath put back when it does not answer. Before anything is touched, the
//! version that will open the files (the running server's, or `mongod --version`) must be
//! the recorded major.minor: WiredTiger files are not portable across feature versions.
//! `--target DIR` writes the plain dbpath tree.
//!
//! Not proven here: no real `mongod` runs on the machines this is built and tested on, so
//! that a mongod starts on a restored copy rests on MongoDB's documentation, not on a test.

use std::path::{Path, PathBuf};

use mongodb::bson::{Bson, Document, doc};
use serde::{Deserialize, Serialize};

use super::{
    MongodbComponent,
    client::Connection,
    error::{MongoError, PhysicalError},
};
use crate::{
    cleanup::{self, Action},
    component::{
        ComponentError, ComponentRestore, HealthError, InPlace, LiveDirectory, ServedDirectory,
        StagedRestore,
    },
    config::ComponentName,
    progress::ProgressRef,
};

/// What a physical set records for its restore.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhysicalCopy {
    /// The dbpath the files came from.
    #[serde(default)]
    pub dbpath: PathBuf,
    /// The server version (`buildInfo`): only the same major.minor opens the files.
    #[serde(default)]
    pub server_version: String,
    /// The storage engine (`wiredTiger`).
    #[serde(default)]
    pub storage_engine: String,
    /// `storage.directoryPerDB`: one directory a database.
    #[serde(default)]
    pub directory_per_db: bool,
    /// `storage.wiredTiger.engineConfig.directoryForIndexes`.
    #[serde(default)]
    pub directory_for_indexes: bool,
    /// The replica-set config (`replSetGetConfig`) of a member, as Extended JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_set_config: Option<serde_json::Value>,
    /// Whether `fsyncLock` was held around the snapshot.
    #[serde(default)]
    pub locked: bool,
    /// The snapshot the files were read from.
    #[serde(default)]
    pub snapshot: String,
}

impl PhysicalCopy {
    /// The lines `snapshots SET` prints for it.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "physical copy of {} (MongoDB {}, {}{}{}{})",
            self.dbpath.display(),
            self.server_version,
            self.storage_engine,
            if self.directory_per_db {
                ", directoryPerDB"
            } else {
                ""
            },
            if self.directory_for_indexes {
                ", directoryForIndexes"
            } else {
                ""
            },
            if self.locked { ", fsyncLock held" } else { "" }
        )];
        if !self.snapshot.is_empty() {
            out.push(format!("from {}", self.snapshot));
        }
        if let Some(rs) = self.replica_set_config.as_ref().and_then(|c| c.get("_id")) {
            out.push(format!("replica set {rs} (its config is in the manifest)"));
        }
        out
    }
}

/// What the server says about itself.
#[derive(Debug, Clone, Default)]
struct ServerFacts {
    version: String,
    engine: Option<String>,
    dbpath: Option<PathBuf>,
    directory_per_db: bool,
    directory_for_indexes: bool,
    replica_set_config: Option<serde_json::Value>,
}

fn path_in<'a>(doc: &'a Document, path: &[&str]) -> Option<&'a Bson> {
    let (last, parents) = path.split_last()?;
    let mut at = doc;
    for p in parents {
        at = at.get_document(p).ok()?;
    }
    at.get(last)
}

async fn facts(conn: &Connection) -> Result<ServerFacts, MongoError> {
    let admin = conn.client.database("admin");
    let build = admin
        .run_command(doc! { "buildInfo": 1 })
        .await
        .map_err(|e| conn.failed("buildInfo", e))?;
    let opts = admin
        .run_command(doc! { "getCmdLineOpts": 1 })
        .await
        .map_err(|e| conn.failed("getCmdLineOpts", e))?;
    // Not every server says (or lets this user ask); the dbpath check still runs.
    let status = admin.run_command(doc! { "serverStatus": 1 }).await.ok();
    let replica = admin
        .run_command(doc! { "replSetGetConfig": 1 })
        .await
        .ok()
        .and_then(|r| r.get("config").cloned())
        .map(Bson::into_relaxed_extjson);
    let flag = |path: &[&str]| matches!(path_in(&opts, path), Some(Bson::Boolean(true)));
    Ok(ServerFacts {
        version: build.get_str("version").unwrap_or_default().to_string(),
        engine: status
            .as_ref()
            .and_then(|s| path_in(s, &["storageEngine", "name"]))
            .and_then(Bson::as_str)
            .map(str::to_string),
        dbpath: path_in(&opts, &["parsed", "storage", "dbPath"])
            .and_then(Bson::as_str)
            .map(PathBuf::from),
        directory_per_db: flag(&["parsed", "storage", "directoryPerDB"]),
        directory_for_indexes: flag(&[
            "parsed",
            "storage",
            "wiredTiger",
            "engineConfig",
            "directoryForIndexes",
        ]),
        replica_set_config: replica,
    })
}

/// `fsyncLock` held on a server: released by [`FsyncLock::release`], or on drop and by the
/// signal thread (registered before the lock is taken, like every stop). A run killed with
/// `kill -9` while holding it cannot unlock: the next run sees the server's lock count above
/// its own and says so ([`FsyncLock::take`]).
struct FsyncLock {
    handle: tokio::runtime::Handle,
    conn: std::sync::Arc<Connection>,
    guard: Option<cleanup::Guard>,
}

/// `fsyncUnlock`, tried three times a second apart: a server that keeps writes held back
/// is an outage, worth a retry.
async fn unlock(conn: &Connection) -> Result<(), MongoError> {
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        match conn
            .client
            .database("admin")
            .run_command(doc! { "fsyncUnlock": 1 })
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if attempt == ATTEMPTS => {
                return Err(PhysicalError::Unlock {
                    error: conn.server_error_of(e),
                }
                .into());
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

impl FsyncLock {
    /// Locks; warns when the server was already locked (by a run that died holding it, or
    /// by an operator), which this run does not undo.
    fn take(
        rt: &tokio::runtime::Runtime,
        conn: std::sync::Arc<Connection>,
        label: &str,
        progress: &ProgressRef,
    ) -> Result<Self, MongoError> {
        let handle = rt.handle().clone();
        let (h, c) = (handle.clone(), conn.clone());
        let guard = cleanup::register(Action::Call(cleanup::Callback(std::sync::Arc::new(
            move || {
                if let Err(e) = h.block_on(unlock(&c)) {
                    eprintln!("akbackup: {e}");
                }
            },
        ))));
        let locked = rt.block_on(async {
            conn.client
                .database("admin")
                .run_command(doc! { "fsync": 1, "lock": true })
                .await
        });
        match locked {
            Ok(reply) => {
                let count = match reply.get("lockCount") {
                    Some(Bson::Int32(n)) => i64::from(*n),
                    Some(Bson::Int64(n)) => *n,
                    _ => 1,
                };
                if count > 1 {
                    progress.warn(&format!(
                        "{label}: {} already held fsyncLock {} time(s) before this run: a run killed while holding it, or an operator; this run unlocks only its own; run db.fsyncUnlock() until lockCount is 0",
                        conn.shown,
                        count - 1
                    ));
                }
                Ok(Self {
                    handle,
                    conn,
                    guard: Some(guard),
                })
            }
            Err(e) => {
                // The server may have applied the lock before the error reached us: the
                // guard unlocks (a spare unlock is refused harmlessly).
                drop(guard);
                Err(PhysicalError::Lock {
                    error: conn.server_error_of(e),
                }
                .into())
            }
        }
    }

    /// Unlocks now; when that keeps failing the guard stays armed and tries once more when
    /// the lock is dropped.
    fn release(mut self) -> Result<(), MongoError> {
        let result = self.handle.block_on(unlock(&self.conn));
        if result.is_ok()
            && let Some(g) = self.guard.take()
        {
            g.disarm();
        }
        result
    }
}

impl Drop for FsyncLock {
    fn drop(&mut self) {
        // Performs the unlock (an error path).
        self.guard.take();
    }
}

/// The dbpath to copy: the configured one, which must be the one the server reports when it
/// reports one.
fn dbpath(
    configured: Option<&Path>,
    facts: &ServerFacts,
    shown: &str,
) -> Result<PathBuf, PhysicalError> {
    match (configured, &facts.dbpath) {
        (Some(c), Some(r)) if !same_dir(c, r) => Err(PhysicalError::DbPathDiffers {
            configured: c.to_path_buf(),
            reported: r.clone(),
            shown: shown.to_string(),
        }),
        (Some(c), _) => Ok(c.to_path_buf()),
        (None, Some(r)) => Ok(r.clone()),
        (None, None) => Err(PhysicalError::NoDbPath {
            shown: shown.to_string(),
        }),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The dbpath and every directory in it (the journal, `directoryPerDB` databases, ...): all
/// must be on the volume the snapshot takes. A symbolic link anywhere in the dbpath is
/// refused: a snapshot holds the link, and a restore would pair the old files with whatever
/// it points to (a journal moved to another directory).
fn snapshot_paths(dbpath: &Path) -> Result<Vec<PathBuf>, crate::snapshot::SnapshotError> {
    use crate::snapshot::SnapshotError;
    let mut out = vec![dbpath.to_path_buf()];
    let walk = walkdir::WalkDir::new(dbpath)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.file_name() != crate::snapshot::EXCLUDE);
    for entry in walk {
        let entry = entry.map_err(|e| SnapshotError::Path {
            path: dbpath.to_path_buf(),
            error: e.into(),
        })?;
        let path = entry.path().to_path_buf();
        if entry.path_is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            // Said as the volume problem when it leads off the volume (a journal on another
            // disk), which is what an operator is likely to have done.
            if let (Ok(here), Ok(there)) = (std::fs::metadata(dbpath), std::fs::metadata(&path))
                && std::os::unix::fs::MetadataExt::dev(&here)
                    != std::os::unix::fs::MetadataExt::dev(&there)
            {
                return Err(SnapshotError::SplitVolumes {
                    first: dbpath.to_path_buf(),
                    other: path,
                });
            }
            return Err(SnapshotError::LinkOut { link: path, target });
        }
        if entry.file_type().is_dir() {
            out.push(path);
        }
    }
    Ok(out)
}

/// The files of a WiredTiger dbpath that must be in a restored copy.
const REQUIRED: [&str; 3] = ["WiredTiger", "storage.bson", "_mdb_catalog.wt"];

/// Checks that `dir` holds a WiredTiger data directory (the files mongod reads first).
///
/// # Errors
/// [`PhysicalError::NotDbpath`] naming the missing file.
pub fn check_dbpath(dir: &Path) -> Result<(), PhysicalError> {
    for f in REQUIRED {
        if !dir.join(f).is_file() {
            return Err(PhysicalError::NotDbpath { missing: f });
        }
    }
    Ok(())
}

/// `7.0.5` -> `(7, 0)`.
fn series(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `mongod --version`'s `db version v7.0.5`.
fn binary_version() -> Result<String, String> {
    let out = crate::service::output(&["mongod".to_string(), "--version".to_string()])
        .map_err(|e| e.to_string())?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("db version "))
        .map(|v| v.trim_start_matches('v').to_string())
        .ok_or_else(|| format!("`mongod --version` printed no \"db version\" line: {out:?}"))
}

impl MongodbComponent {
    /// Backs the instance up from a snapshot of its dbpath's volume (see the module header).
    pub(super) fn prepare_physical(
        &self,
        progress: &ProgressRef,
    ) -> Result<super::super::Prepared, ComponentError> {
        let label = self.name.to_string();
        let snapshot_err = |error| ComponentError::Snapshot {
            name: self.name.clone(),
            error: Box::new(error),
        };
        let settings = self.config.snapshot_settings().ok_or_else(|| {
            snapshot_err(crate::snapshot::SnapshotError::Setting(
                "mode = \"snapshot\" needs snapshot = \"btrfs\" or \"lvm\"".to_string(),
            ))
        })?;
        let rt = self.runtime().map_err(|e| self.err(e))?;
        let conn = std::sync::Arc::new(
            rt.block_on(Connection::open(
                &self.config.uri,
                &self.config,
                self.timeout(),
            ))
            .map_err(|e| self.err(e))?,
        );
        let facts = rt.block_on(facts(&conn)).map_err(|e| self.err(e))?;
        let dbpath = dbpath(self.config.dbpath.as_deref(), &facts, &conn.shown)
            .map_err(|e| self.err(e.into()))?;
        // A set that cannot say which version opens it, or of an engine whose files are not
        // WiredTiger's, could never be restored safely.
        let engine = facts.engine.clone().unwrap_or_default();
        if engine != "wiredTiger" || series(&facts.version).is_none() {
            return Err(self.err(
                PhysicalError::NotWiredTiger {
                    shown: conn.shown.clone(),
                    engine: if engine.is_empty() {
                        format!("unreported (version {:?})", facts.version)
                    } else {
                        format!("{engine} (version {:?})", facts.version)
                    },
                }
                .into(),
            ));
        }
        let paths = snapshot_paths(&dbpath).map_err(snapshot_err)?;
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        // Everything but the instant happens before the server is locked: the probe (the
        // journal elsewhere, the wrong filesystem, no room in the volume group), the release
        // of dead runs' leftovers, the stage.
        let pending = settings.prepare(&refs, &label).map_err(snapshot_err)?;
        for note in pending.notes() {
            progress.note(&format!("{label}: {note}"));
        }
        let lock = if self.config.lock {
            progress.note(&format!("{label}: fsyncLock on {}", conn.shown));
            Some(FsyncLock::take(&rt, conn.clone(), &label, progress).map_err(|e| self.err(e))?)
        } else {
            None
        };
        progress.note(&format!(
            "{label}: taking a {} snapshot of {}",
            settings.name(),
            dbpath.display()
        ));
        // On error the lock drops here, which unlocks.
        let captured = pending.capture().map_err(snapshot_err)?;
        let locked = lock.is_some();
        if let Some(lock) = lock {
            // On error the snapshot drops here, which releases it.
            lock.release().map_err(|e| self.err(e))?;
            progress.note(&format!("{label}: fsyncUnlock: writes go on"));
        }
        let snap = captured.open().map_err(snapshot_err)?;
        let view = snap.view(&dbpath).map_err(snapshot_err)?;
        let copy = PhysicalCopy {
            dbpath: dbpath.clone(),
            server_version: facts.version,
            storage_engine: engine,
            directory_per_db: facts.directory_per_db,
            directory_for_indexes: facts.directory_for_indexes,
            replica_set_config: facts.replica_set_config,
            locked,
            snapshot: snap.describe().to_string(),
        };
        let details = super::details::SetDetails {
            server_version: copy.server_version.clone(),
            consistency: "point-in-time".to_string(),
            consistency_note: if locked {
                "one instant of the dbpath (filesystem snapshot under fsyncLock)".to_string()
            } else {
                "one instant of the dbpath with its journal (filesystem snapshot): WiredTiger recovers it as after a power cut".to_string()
            },
            physical: Some(copy),
            ..super::details::SetDetails::default()
        };
        Ok(super::super::Prepared {
            part: crate::repository::SourcePart {
                label,
                read_root: view.clone(),
                repo_path: self.repo_path.clone(),
                excludes: vec![crate::snapshot::EXCLUDE.to_string()],
                meta_root: view,
                ctime_from_mtime: false,
                expected_bytes: None,
            },
            details: crate::component::Details::to_value(&details),
            guard: Some(Box::new(snap)),
        })
    }

    /// The dbpath snapshot mode copies: the configured one, or the one the server reports.
    fn physical_dbpath(&self) -> Result<PathBuf, MongoError> {
        if let Some(p) = &self.config.dbpath {
            return Ok(p.clone());
        }
        self.runtime()?.block_on(async {
            let conn = Connection::open(&self.config.uri, &self.config, self.timeout()).await?;
            let f = facts(&conn).await?;
            dbpath(None, &f, &conn.shown).map_err(MongoError::from)
        })
    }

    /// The dbpath's files now, and how much of them differs from the parent set's.
    pub(super) fn estimate_physical(
        &self,
        stored: Option<&crate::component::StoredIndex>,
    ) -> Result<crate::component::Estimate, ComponentError> {
        let dbpath = self.physical_dbpath().map_err(|e| self.err(e))?;
        let mut est = crate::component::Estimate::default();
        let walk = walkdir::WalkDir::new(&dbpath)
            .into_iter()
            .filter_entry(|e| e.file_name() != crate::snapshot::EXCLUDE);
        for entry in walk.filter_map(Result::ok) {
            if let (Ok(meta), Ok(rel)) = (entry.metadata(), entry.path().strip_prefix(&dbpath))
                && meta.is_file()
            {
                est.count(rel, &meta, stored);
            }
        }
        Ok(est)
    }

    /// Whether snapshot mode can work now: the dbpath (configured, or asked of the server)
    /// and the snapshot backend's probe of its volume.
    pub(super) fn probe_physical(&self) -> Option<Result<String, String>> {
        let settings = self.config.snapshot_settings()?;
        let dbpath = match self.physical_dbpath() {
            Ok(p) => p,
            Err(e) => return Some(Err(e.to_string())),
        };
        let paths = match snapshot_paths(&dbpath) {
            Ok(p) => p,
            Err(e) => return Some(Err(format!("dbpath {}: {e}", dbpath.display()))),
        };
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        Some(
            settings
                .probe(&refs)
                .map(|p| format!("dbpath {}: {p}", dbpath.display()))
                .map_err(|e| format!("dbpath {}: {e}", dbpath.display())),
        )
    }

    /// Refuses to put files of MongoDB `set` where another version would open them: asks the
    /// running server, or `mongod --version` when it does not answer.
    ///
    /// A server that answers must also use `target` as its dbpath, or the restore would
    /// swap a directory it does not read.
    fn check_version(&self, set: &str, target: &Path) -> Result<String, PhysicalError> {
        let asked = self.runtime().and_then(|rt| {
            rt.block_on(async {
                let timeout = self.timeout().min(std::time::Duration::from_secs(5));
                let conn = Connection::open(&self.config.uri, &self.config, timeout).await?;
                let admin = conn.client.database("admin");
                let build = admin
                    .run_command(doc! { "buildInfo": 1 })
                    .await
                    .map_err(|e| conn.failed("buildInfo", e))?;
                // Only to compare: a user not allowed to ask is not refused for it.
                let reported = admin
                    .run_command(doc! { "getCmdLineOpts": 1 })
                    .await
                    .ok()
                    .and_then(|o| {
                        path_in(&o, &["parsed", "storage", "dbPath"])
                            .and_then(Bson::as_str)
                            .map(PathBuf::from)
                    });
                let version = build.get_str("version").unwrap_or_default().to_string();
                Ok::<_, MongoError>((version, reported, conn.shown.clone()))
            })
        });
        let (found, how) = match asked {
            Ok((v, reported, shown)) => {
                if let Some(r) = reported
                    && !same_dir(&r, target)
                {
                    return Err(PhysicalError::DbPathDiffers {
                        configured: target.to_path_buf(),
                        reported: r,
                        shown,
                    });
                }
                (v.clone(), format!("this server runs {v}"))
            }
            Err(server) => match binary_version() {
                Ok(v) => (v.clone(), format!("`mongod --version` says {v}")),
                Err(binary) => {
                    return Err(PhysicalError::VersionUnknown {
                        set: set.to_string(),
                        why: format!("the server does not answer ({server}) and {binary}"),
                    });
                }
            },
        };
        match (series(set), series(&found)) {
            (Some(a), Some(b)) if a == b => Ok(how),
            _ => Err(PhysicalError::VersionMismatch {
                set: set.to_string(),
                found: how,
            }),
        }
    }

    /// Polls `ping` until the server answers or [`crate::component::staged::START_TIMEOUT`]
    /// has passed: mongod recovering a large dbpath takes a while after `systemctl start`.
    pub(super) fn wait_answering(&self) -> Result<String, HealthError> {
        crate::component::staged::wait_healthy(|| {
            self.ping().map(|note| format!("health check ok: {note}"))
        })
    }

    /// The in-place restore of a physical set: version check, then the staged swap.
    pub(super) fn restore_physical(
        &self,
        copy: &PhysicalCopy,
        req: &crate::component::RestoreRequest<'_>,
        db: &crate::component::DbRestoreOptions,
    ) -> Result<ComponentRestore, ComponentError> {
        let refused = [
            (db.to_uri.is_some(), "--to-uri"),
            (!db.ns_include.is_empty(), "--ns-include"),
            (!db.ns_exclude.is_empty(), "--ns-exclude"),
            (
                db.ns_from.is_some() || db.ns_to.is_some(),
                "--ns-from/--ns-to",
            ),
            (db.no_drop, "--no-drop"),
        ];
        if let Some((_, option)) = refused.iter().find(|(set, _)| *set) {
            return Err(self.err(PhysicalError::NotForPhysical { option }.into()));
        }
        let target = self.physical_target(copy);
        let how = self
            .check_version(&copy.server_version, &target.dbpath)
            .map_err(|e| self.err(e.into()))?;
        req.progress.note(&format!(
            "{}: set from MongoDB {}, {how}",
            self.name, copy.server_version
        ));
        if let Some(rs) = copy.replica_set_config.as_ref().and_then(|c| c.get("_id")) {
            req.progress.warn(&format!(
                "{}: this set is from a member of replica set {rs}: its oplog is of the backup's time; restore members by MongoDB's procedure for replica sets (restore one, resync or seed the others)",
                self.name
            ));
        }
        target.restore_live(req)
    }

    /// The restore's view of a physical set: the dbpath to put it in (the configured one, or
    /// the one it came from).
    pub(super) fn physical_target<'a>(&'a self, copy: &PhysicalCopy) -> Physical<'a> {
        Physical {
            component: self,
            dbpath: self
                .config
                .dbpath
                .clone()
                .unwrap_or_else(|| copy.dbpath.clone()),
        }
    }
}

/// A physical set being restored into a dbpath.
pub(super) struct Physical<'a> {
    component: &'a MongodbComponent,
    dbpath: PathBuf,
}

impl LiveDirectory for Physical<'_> {
    fn component(&self) -> &ComponentName {
        &self.component.name
    }

    fn live(&self) -> &Path {
        &self.dbpath
    }

    fn set_path(&self) -> &Path {
        &self.component.repo_path
    }

    fn check_restored(&self, dir: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        check_dbpath(dir).map_err(Into::into)
    }

    fn service_steps(&self, how: InPlace) -> (Vec<String>, Vec<String>) {
        crate::component::staged::unit_steps(&self.unit_name(), how, "ping")
    }

    fn swap_in(
        &self,
        staged: StagedRestore,
        how: InPlace,
        progress: &ProgressRef,
    ) -> Result<ComponentRestore, ComponentError> {
        crate::component::staged::swap_with_unit(self, staged, how, progress)
    }
}

impl ServedDirectory for Physical<'_> {
    fn unit_name(&self) -> String {
        self.component.config.unit(&self.component.name.name)
    }

    fn noun(&self) -> &'static str {
        "dbpath"
    }

    fn health_after_start(&self) -> Box<dyn Fn() -> Result<String, HealthError> + '_> {
        Box::new(|| self.component.wait_answering())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(series("7.0.5"), Some((7, 0)));
        assert_eq!(series("v6.0.14"), Some((6, 0)));
        assert_eq!(series("7"), None);
        assert_eq!(series(""), None);
    }

    #[test]
    fn the_dbpath_is_the_configured_one_and_must_match_the_reported_one() {
        let t = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let facts = ServerFacts {
            dbpath: Some(t.path().to_path_buf()),
            ..ServerFacts::default()
        };
        assert_eq!(dbpath(None, &facts, "s").unwrap(), t.path());
        assert_eq!(dbpath(Some(t.path()), &facts, "s").unwrap(), t.path());
        let e = dbpath(Some(other.path()), &facts, "s").unwrap_err();
        assert!(e.to_string().contains("fix dbpath"), "{e}");
        let e = dbpath(None, &ServerFacts::default(), "mongodb://h:1").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("mongodb://h:1 does not report its dbPath"),
            "{e}"
        );
    }

    #[test]
    fn a_dbpath_needs_the_files_mongod_reads_first() {
        let t = tempfile::tempdir().unwrap();
        let e = check_dbpath(t.path()).unwrap_err();
        assert!(e.to_string().contains("WiredTiger"), "{e}");
        for f in REQUIRED {
            std::fs::write(t.path().join(f), b"x").unwrap();
        }
        assert!(check_dbpath(t.path()).is_ok());
    }
}
