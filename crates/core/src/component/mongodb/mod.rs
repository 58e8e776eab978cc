//! The MongoDB component: one instance (`control`, `account`), dumped natively through the
//! official driver into the mongodump directory layout and loaded back like `mongorestore`.
//!
//! Backup dumps into the run's private staging directory ([`dump`]); the repository stores
//! the plain `.bson` files uncompressed, so a collection that did not change deduplicates
//! against yesterday's dump and costs nothing (the repository compresses). The set keeps
//! the dump under `/akbackup/mongodb/<name>`, so `restore --target` and `export` give files
//! the official tools read ([`format`]).
//!
//! In-place restore writes the dump out of the repository into a private directory next to
//! it, loads it into the configured server or `--to-uri` ([`load`]: drop, create, insert,
//! indexes, views, oplog), then restarts the configured unit. Unlike files and SSDB there is
//! no directory to swap: a collection that failed to load is named in the error, and the
//! ones before it are already replaced.

pub mod archive;
pub mod client;
pub mod config;
pub mod details;
pub mod dump;
pub mod error;
pub mod format;
pub mod load;
pub mod physical;

use crate::component::Details;
use std::{path::Path, path::PathBuf, time::Duration};

use mongodb::bson::doc;

use super::{
    Component, ComponentError, ComponentRestore, DbRestoreOptions, Estimate, HealthError,
    LiveDirectory, Prepared, RestoreRequest, RestoreStep, RestoreTarget, ServiceControl,
    StoredIndex,
};
use crate::{
    backup_set::{ComponentRecord, Status},
    config::ComponentName,
    progress::ProgressRef,
    redact::redact_uri,
    repository::{PartStats, Repository, SourcePart},
    service,
};
use client::{Connection, NsFilter, NsRename};
pub use config::{MongodbConfig, MongodbMode};
pub use error::MongoError;

/// A MongoDB instance.
#[derive(Debug)]
pub struct MongodbComponent {
    name: ComponentName,
    config: MongodbConfig,
    repo_path: PathBuf,
}

impl MongodbComponent {
    /// Creates the component from its config section.
    #[must_use]
    pub fn new(name: ComponentName, config: MongodbConfig) -> Self {
        let repo_path = PathBuf::from(format!("/akbackup/mongodb/{}", name.name));
        Self {
            name,
            config,
            repo_path,
        }
    }

    fn err(&self, error: MongoError) -> ComponentError {
        ComponentError::Database {
            name: self.name.clone(),
            error: Box::new(error),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout)
    }

    /// A runtime for one operation: the driver is async, the rest of akbackup is not.
    fn runtime(&self) -> Result<tokio::runtime::Runtime, MongoError> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.config.parallel_collections.clamp(1, 4))
            .enable_all()
            .build()
            .map_err(|error| MongoError::Runtime { error })
    }

    fn filter(&self) -> NsFilter {
        NsFilter::new(&self.config.include, &self.config.exclude)
    }
}

impl Component for MongodbComponent {
    fn name(&self) -> &ComponentName {
        &self.name
    }

    fn source(&self) -> String {
        redact_uri(&self.config.uri)
    }

    fn repo_path(&self) -> &Path {
        &self.repo_path
    }

    fn check(&self) -> Vec<String> {
        let Ok(rt) = self.runtime() else {
            return vec![format!("{}: cannot start the async runtime", self.name)];
        };
        let timeout = self.timeout().min(Duration::from_secs(5));
        match rt.block_on(Connection::open(&self.config.uri, &self.config, timeout)) {
            Ok(_) => Vec::new(),
            Err(e) => vec![format!("{}: {e}", self.name)],
        }
    }

    fn estimate(&self, stored: Option<&StoredIndex>) -> Result<Estimate, ComponentError> {
        if self.config.mode == MongodbMode::Snapshot {
            return self.estimate_physical(stored);
        }
        let rt = self.runtime().map_err(|e| self.err(e))?;
        let filter = self.filter();
        rt.block_on(async {
            let conn = Connection::open(&self.config.uri, &self.config, self.timeout())
                .await
                .map_err(|e| self.err(e))?;
            let names = conn
                .client
                .list_database_names()
                .await
                .map_err(|e| self.err(conn.error(e)))?;
            let mut est = Estimate::default();
            for db in names.iter().filter(|d| filter.wants_database(d)) {
                // dataSize is the uncompressed BSON a dump writes; a server that cannot say
                // only loses the size in the plan, not the backup.
                if let Ok(stats) = conn
                    .client
                    .database(db)
                    .run_command(doc! { "dbStats": 1 })
                    .await
                {
                    est.bytes += number(stats.get("dataSize"));
                    est.files += number(stats.get("collections")) * 2;
                }
            }
            // Every byte of a dump is read again each time; unchanged data deduplicates.
            est.changed_bytes = est.bytes;
            Ok(est)
        })
    }

    fn prepare(&self, staging: &Path, progress: &ProgressRef) -> Result<Prepared, ComponentError> {
        if self.config.mode == MongodbMode::Snapshot {
            return self.prepare_physical(progress);
        }
        let dest = staging.join(format!("mongodb-{}", self.name.name));
        std::fs::create_dir_all(&dest)
            .map_err(|e| self.err(MongoError::io("create the dump directory", &dest, e)))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o700));
        }
        let rt = self.runtime().map_err(|e| self.err(e))?;
        let label = self.name.to_string();
        let filter = self.filter();
        let summary = rt.block_on(async {
            let conn = Connection::open(&self.config.uri, &self.config, self.timeout()).await?;
            dump::dump(
                &conn,
                &filter,
                self.config.parallel_collections,
                &dest,
                &label,
                progress,
            )
            .await
        });
        let summary = summary.map_err(|e| self.err(e))?;
        progress.note(&format!(
            "{label}: dumped {} namespace(s), {} documents; consistency: {}",
            summary.collections.len(),
            summary.collections.iter().map(|c| c.documents).sum::<u64>(),
            summary.consistency_note
        ));
        let bytes = summary.collections.iter().map(|c| c.bytes).sum();
        let details = serde_json::to_value(&summary).unwrap_or_default();
        Ok(Prepared {
            part: SourcePart {
                label,
                read_root: dest.clone(),
                repo_path: self.repo_path.clone(),
                excludes: Vec::new(),
                meta_root: dest,
                ctime_from_mtime: false,
                expected_bytes: Some(bytes),
            },
            details,
            guard: None,
        })
    }

    fn finish(&self, mut prepared: Prepared, stats: PartStats) -> ComponentRecord {
        let snapshot = prepared
            .guard
            .take()
            .and_then(|g| g.downcast::<crate::snapshot::Snapshot>().ok())
            .map(|b| *b);
        let mut record = super::staged_record(&self.name, self.source(), prepared, &stats);
        record
            .warnings
            .extend(crate::snapshot::release_kept(snapshot));
        record
    }

    fn plan_restore(&self, target: &RestoreTarget, record: &ComponentRecord) -> RestoreStep {
        if let Some(copy) = details::SetDetails::of(&record.details).physical {
            return self.physical_target(&copy).plan_step(target, record);
        }
        let unit = self.config.unit(&self.name.name);
        let (destination, replaces, start) = match target {
            RestoreTarget::Directory(dir) => {
                (dir.join("mongodb").join(&self.name.name), false, vec![])
            }
            RestoreTarget::InPlace {
                no_restart,
                services_managed,
                db,
            } => (
                PathBuf::from(redact_uri(db.to_uri.as_deref().unwrap_or(&self.config.uri))),
                !db.no_drop,
                if *no_restart || *services_managed {
                    vec![]
                } else {
                    vec![format!("systemctl restart {unit}")]
                },
            ),
        };
        RestoreStep {
            name: self.name.to_string(),
            repo_path: self.repo_path.clone(),
            destination,
            replaces_existing: replaces,
            keeps_previous: false,
            stop: Vec::new(),
            start,
            files: record.files,
            bytes: record.bytes,
        }
    }

    fn restore(&self, req: &RestoreRequest<'_>) -> Result<ComponentRestore, ComponentError> {
        let RestoreRequest {
            repo,
            set_id,
            target,
            progress,
        } = *req;
        let set = repo.find_set(set_id).map_err(|e| ComponentError::Repo {
            name: self.name.clone(),
            error: Box::new(e),
        })?;
        let physical = set
            .manifest
            .component(&self.name.to_string())
            .and_then(|r| details::SetDetails::of(&r.details).physical);
        if let RestoreTarget::InPlace {
            services_managed: true,
            ..
        } = target
        {
            // restore --all stopped (or not) the unit by the config's mode.
            let snapshot_mode = self.config.mode == MongodbMode::Snapshot;
            if physical.is_some() != snapshot_mode {
                return Err(self.err(
                    error::PhysicalError::ModeMismatch {
                        held: if physical.is_some() {
                            "a physical copy"
                        } else {
                            "a dump"
                        },
                        mode: if snapshot_mode { "snapshot" } else { "dump" },
                    }
                    .into(),
                ));
            }
        }
        match (&physical, target) {
            (Some(copy), RestoreTarget::InPlace { db, .. }) => {
                return self.restore_physical(copy, req, db);
            }
            // The plain dbpath tree, checked to be one.
            (Some(copy), RestoreTarget::Directory(_)) => {
                return self.physical_target(copy).restore_live(req);
            }
            (None, _) => {}
        }
        let (no_restart, db) = match target {
            RestoreTarget::Directory(dir) => {
                return super::restore_to_directory(
                    &self.name,
                    &self.repo_path,
                    dir,
                    repo,
                    set_id,
                    progress,
                );
            }
            RestoreTarget::InPlace {
                no_restart,
                services_managed,
                db,
            } => (*no_restart || *services_managed, db),
        };
        let options = self.load_options(db)?;
        let uri = db.to_uri.clone().unwrap_or_else(|| self.config.uri.clone());
        let label = self.name.to_string();

        // The dump comes out of the repository first (authenticated blob by blob), so a
        // damaged set is found before the server is touched.
        for note in crate::stage::sweep(repo.path(), crate::stage::MONGODB_RESTORE) {
            progress.note(&note);
        }
        // Removed when dropped, and on SIGINT/SIGTERM.
        let scratch = crate::stage::Stage::create(repo.path(), crate::stage::MONGODB_RESTORE)
            .map_err(|e| {
                self.err(MongoError::io(
                    "create a scratch directory in",
                    repo.path(),
                    e,
                ))
            })?;
        let dir = scratch.path().join("dump");
        let written = crate::tree::materialize(
            repo,
            set_id,
            &self.repo_path,
            &dir,
            &label,
            progress,
            crate::tree::Durability::Cached,
        )
        .map_err(|e| self.err(MongoError::Unpack { error: Box::new(e) }))?;

        let rt = self.runtime().map_err(|e| self.err(e))?;
        let started = std::time::Instant::now();
        let summary = rt
            .block_on(async {
                let conn = Connection::open(&uri, &self.config, self.timeout()).await?;
                progress.note(&format!("{label}: loading into {}", conn.shown));
                load::load(&conn, &dir, &options, &label, progress).await
            })
            .map_err(|e| self.err(e))?;
        let seconds = started.elapsed().as_secs_f64();
        drop(rt);

        let mut warnings = summary.warnings.clone();
        let failed: u64 = summary.collections.iter().map(|c| c.failed).sum();
        if failed > 0 {
            warnings.push(format!(
                "{failed} document(s) were refused by the server (duplicate keys or validation)"
            ));
        }
        let restarted = if no_restart {
            None
        } else {
            let unit = self.config.unit(&self.name.name);
            progress.note(&format!("{label}: systemctl restart {unit}"));
            service::systemctl("restart", &unit)
                .map_err(|error| self.err(MongoError::Restart { error }))?;
            Some(format!("systemctl restart {unit}"))
        };
        let documents: u64 = summary.collections.iter().map(|c| c.documents).sum();
        let bytes: u64 = summary.collections.iter().map(|c| c.bytes).sum();
        Ok(ComponentRestore {
            name: label,
            destination: PathBuf::from(redact_uri(&uri)),
            previous: None,
            restarted,
            written,
            status: if failed > 0 {
                Status::Warning
            } else {
                Status::Complete
            },
            warnings,
            details: serde_json::to_value(details::RestoreDetails {
                documents,
                bytes,
                seconds,
                documents_per_second: if seconds > 0.0 {
                    documents as f64 / seconds
                } else {
                    0.0
                },
                collections: serde_json::to_value(&summary.collections).unwrap_or_default(),
                oplog_applied: summary.oplog_applied,
            })
            .unwrap_or_default(),
        })
    }

    fn unit(&self) -> Option<String> {
        Some(self.config.unit(&self.name.name))
    }

    fn service_control(&self) -> Option<ServiceControl> {
        let unit = self.config.unit(&self.name.name);
        let systemctl = |verb: &str| vec!["systemctl".to_string(), verb.to_string(), unit.clone()];
        if self.config.mode == MongodbMode::Snapshot {
            // Its files are swapped: stopped before, started after, like an SSDB store.
            return Some(ServiceControl {
                stop: Some(systemctl("stop")),
                start: systemctl("start"),
            });
        }
        // Loaded through the server, so it stays up during the restore; restarted after, as
        // a single-instance restore does.
        Some(ServiceControl {
            stop: None,
            start: systemctl("restart"),
        })
    }

    fn health_check(&self) -> Result<String, HealthError> {
        if self.config.mode == MongodbMode::Snapshot {
            return self.wait_answering();
        }
        self.ping()
    }

    fn snapshot_probe(&self) -> Option<Result<String, String>> {
        self.probe_physical()
    }
}

impl MongodbComponent {
    /// One `ping`: whether the server answers now.
    fn ping(&self) -> Result<String, HealthError> {
        let answers = self.runtime().and_then(|rt| {
            rt.block_on(Connection::open(
                &self.config.uri,
                &self.config,
                self.timeout(),
            ))
        });
        answers
            .map(|c| format!("{} answers ping", c.shown))
            .map_err(|e| HealthError::Mongodb { error: Box::new(e) })
    }
}

/// `verify --deep`: restores the dump to a scratch directory, reads every `.bson` document
/// by document and compares namespaces, document counts and bytes with the manifest.
/// Returns the problems found (empty when everything matches).
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
    if details::SetDetails::of(&record.details).physical.is_some() {
        // Every byte was authenticated on the way out; what can be said of the files
        // without a mongod is that they form a WiredTiger data directory.
        return physical::check_dbpath(&dest)
            .err()
            .map(|e| e.to_string())
            .into_iter()
            .collect();
    }
    let found = match format::scan_directory(&dest) {
        Ok(f) => f,
        Err(e) => return vec![format!("the stored dump does not read back: {e}")],
    };
    let expected = details::SetDetails::of(&record.details).collections;
    compare_collections(&expected, &found)
}

/// Differences between what the manifest recorded and what a dump directory holds.
fn compare_collections(
    expected: &[dump::CollectionRecord],
    found: &[format::NsSummary],
) -> Vec<String> {
    let mut problems = Vec::new();
    for want in expected {
        match found.iter().find(|f| f.namespace() == want.ns) {
            None => problems.push(format!(
                "{}: in the manifest but not in the stored dump",
                want.ns
            )),
            Some(got) if got.documents != want.documents || got.bytes != want.bytes => {
                problems.push(format!(
                    "{}: manifest says {} documents / {} bytes, the stored dump has {} / {}",
                    want.ns, want.documents, want.bytes, got.documents, got.bytes
                ));
            }
            Some(_) => {}
        }
    }
    for got in found {
        if !got.db.is_empty() && !expected.iter().any(|w| w.ns == got.namespace()) {
            problems.push(format!(
                "{}: in the stored dump but not in the manifest",
                got.namespace()
            ));
        }
    }
    problems
}

/// A non-negative count from a server reply, whatever numeric type the server chose.
fn number(v: Option<&mongodb::bson::Bson>) -> u64 {
    use mongodb::bson::Bson;
    match v {
        Some(Bson::Int32(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Int64(n)) => u64::try_from(*n).unwrap_or(0),
        Some(Bson::Double(f)) if f.is_finite() && *f > 0.0 => *f as u64,
        _ => 0,
    }
}

impl MongodbComponent {
    fn load_options(&self, db: &DbRestoreOptions) -> Result<load::LoadOptions, ComponentError> {
        let rename = match (&db.ns_from, &db.ns_to) {
            (Some(from), Some(to)) => Some(NsRename::new(from, to).map_err(|e| self.err(e))?),
            (None, None) => None,
            _ => return Err(self.err(MongoError::RenameHalf)),
        };
        Ok(load::LoadOptions {
            filter: NsFilter::new(&db.ns_include, &db.ns_exclude),
            rename,
            drop: !db.no_drop,
            parallel: self.config.parallel_collections,
            batch_docs: self.config.insert_batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ns: &str, documents: u64, bytes: u64) -> dump::CollectionRecord {
        dump::CollectionRecord {
            ns: ns.to_string(),
            kind: "collection".to_string(),
            documents,
            bytes,
        }
    }

    fn ns(db: &str, coll: &str, documents: u64, bytes: u64) -> format::NsSummary {
        format::NsSummary {
            db: db.to_string(),
            collection: coll.to_string(),
            kind: "collection".to_string(),
            documents,
            bytes,
        }
    }

    /// A component's MongoDB error is one line that stands alone: the component, then the
    /// cause, which is not also returned from `source()`.
    #[test]
    fn database_errors_print_their_cause_once() {
        let e = ComponentError::Database {
            name: "mongodb.control".parse().unwrap(),
            error: Box::new(MongoError::RenameWildcards { from: 2, to: 1 }),
        };
        assert_eq!(
            crate::error::chain(&e),
            "mongodb.control: --ns-from has 2 wildcard(s) and --ns-to 1: use the same number of *"
        );
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn deep_comparison_names_each_difference() {
        let want = vec![rec("a.x", 2, 40), rec("a.y", 1, 20), rec("a.gone", 1, 5)];
        let got = vec![
            ns("a", "x", 2, 40),
            ns("a", "y", 2, 40),
            ns("a", "extra", 0, 0),
        ];
        let p = compare_collections(&want, &got);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("a.y: manifest says 1 documents"), "{p:?}");
        assert!(p[1].starts_with("a.gone: in the manifest but not"), "{p:?}");
        assert!(
            p[2].starts_with("a.extra: in the stored dump but not"),
            "{p:?}"
        );
        assert!(compare_collections(&want[..1], &got[..1]).is_empty());
    }
}
