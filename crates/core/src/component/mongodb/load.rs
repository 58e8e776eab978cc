//! Loading a mongodump directory into a server, as `mongorestore --drop` does: per
//! collection drop, create with the dumped options, insert the raw documents in size-bounded
//! batches, then build the indexes; views last; the captured oplog replayed at the end.
//! Several collections load at once.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use serde::Serialize;

use super::{
    client::{Connection, NsFilter, NsRename, split_ns},
    error::MongoError,
    format,
};
use crate::progress::ProgressRef;

/// Documents are sent in batches of at most this many bytes (the server's message limit is
/// 48 MB; smaller batches keep memory flat and progress moving).
const BATCH_BYTES: usize = 8 << 20;

/// How to load a dump.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Which source namespaces to load.
    pub filter: NsFilter,
    /// Renames applied to the source names.
    pub rename: Option<NsRename>,
    /// Drop each target collection first (the default, like `mongorestore --drop`).
    pub drop: bool,
    /// Collections loaded at once.
    pub parallel: usize,
    /// Documents per insert.
    pub batch_docs: usize,
}

/// What was loaded into one namespace.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedCollection {
    /// Namespace in the dump.
    pub ns: String,
    /// Namespace written.
    pub target: String,
    /// `collection`, `view`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Documents inserted.
    pub documents: u64,
    /// Bytes of BSON inserted.
    pub bytes: u64,
    /// Documents the server refused (duplicate keys, validation).
    pub failed: u64,
    /// Indexes created (besides `_id_`).
    pub indexes: usize,
    /// Seconds taken.
    pub seconds: f64,
}

/// What a load did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadSummary {
    /// Per namespace, sorted by target.
    pub collections: Vec<LoadedCollection>,
    /// Oplog entries replayed.
    pub oplog_applied: Option<u64>,
    /// Problems that did not stop the load.
    pub warnings: Vec<String>,
}

/// One namespace of the dump, with where its files are.
#[derive(Debug, Clone)]
struct Item {
    ns: String,
    target: String,
    kind: String,
    bson: PathBuf,
    metadata: Document,
}

impl Item {
    /// `e`, naming the namespace it happened to.
    fn failed(&self, e: MongoError) -> MongoError {
        MongoError::Loading {
            ns: self.ns.clone(),
            target: self.target.clone(),
            error: Box::new(e),
        }
    }
}

/// Loads the plain mongodump directory `dir` into the server behind `conn`.
///
/// # Errors
/// [`MongoError`] naming the namespace and what failed; namespaces already loaded stay
/// loaded.
pub async fn load(
    conn: &Connection,
    dir: &Path,
    options: &LoadOptions,
    label: &str,
    progress: &ProgressRef,
) -> Result<LoadSummary, MongoError> {
    let items = plan(dir, options)?;
    let (views, collections): (Vec<Item>, Vec<Item>) =
        items.into_iter().partition(|i| i.kind == "view");
    let limit = Arc::new(tokio::sync::Semaphore::new(options.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for item in collections {
        let conn = conn.clone();
        let limit = Arc::clone(&limit);
        let progress = Arc::clone(progress);
        let label = label.to_string();
        let (drop, batch) = (options.drop, options.batch_docs);
        tasks.spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .map_err(|error| MongoError::Limit { error })?;
            load_one(&conn, &item, drop, batch, &label, &progress)
                .await
                .map_err(|e| item.failed(e))
        });
    }
    let mut summary = LoadSummary {
        collections: super::client::join_all(tasks, "load").await?,
        ..LoadSummary::default()
    };
    // Views after the collections they read from.
    for item in views {
        let rec = load_one(
            conn,
            &item,
            options.drop,
            options.batch_docs,
            label,
            progress,
        )
        .await
        .map_err(|e| item.failed(e))?;
        summary.collections.push(rec);
    }
    summary.collections.sort_by(|a, b| a.target.cmp(&b.target));

    let oplog = dir.join("oplog.bson");
    if oplog.is_file() {
        if options.rename.is_some() {
            summary.warnings.push(
                "oplog.bson not replayed: its entries name the original namespaces, and a \
                 rename was asked for; the restored data is per-collection consistent only"
                    .to_string(),
            );
        } else {
            let wanted: Vec<String> = summary.collections.iter().map(|c| c.ns.clone()).collect();
            summary.oplog_applied = Some(replay_oplog(conn, &oplog, &wanted).await?);
        }
    }
    Ok(summary)
}

/// Reads every metadata file of the dump and decides what goes where.
fn plan(dir: &Path, options: &LoadOptions) -> Result<Vec<Item>, MongoError> {
    let found = format::scan_directory(dir).map_err(|error| MongoError::Format { error })?;
    let mut items = Vec::new();
    for ns in found {
        if ns.db.is_empty() {
            continue; // the oplog
        }
        let source = format!("{}.{}", ns.db, ns.collection);
        if !options.filter.wants(&source) {
            continue;
        }
        let target = match &options.rename {
            Some(r) => r.apply(&source).unwrap_or_else(|| source.clone()),
            None => source.clone(),
        };
        if split_ns(&target).is_none() {
            return Err(MongoError::RenamedOutOfShape {
                from: source,
                target,
            });
        }
        let stem = format::collection_file_stem(&ns.collection);
        let meta_path = dir.join(&ns.db).join(format!("{stem}.metadata.json"));
        let metadata = read_metadata(&meta_path)?;
        items.push(Item {
            ns: source,
            target,
            kind: ns.kind.clone(),
            bson: dir.join(&ns.db).join(format!("{stem}.bson")),
            metadata,
        });
    }
    Ok(items)
}

/// Parses a `.metadata.json` (canonical or relaxed Extended JSON).
fn read_metadata(path: &Path) -> Result<Document, MongoError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Document::new()),
        Err(e) => return Err(MongoError::io("read", path, e)),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| MongoError::MetadataJson {
            path: path.to_path_buf(),
            error,
        })?;
    match Bson::try_from(value) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(_) => Err(MongoError::MetadataNotObject {
            path: path.to_path_buf(),
        }),
        Err(error) => Err(MongoError::MetadataExtJson {
            path: path.to_path_buf(),
            error,
        }),
    }
}

fn bson_file(path: &Path, error: format::FormatError) -> MongoError {
    MongoError::BsonFile {
        path: path.to_path_buf(),
        error,
    }
}

/// Server error codes that mean "already in the state we want".
const NAMESPACE_NOT_FOUND: i32 = 26;
const NAMESPACE_EXISTS: i32 = 48;

fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

async fn load_one(
    conn: &Connection,
    item: &Item,
    drop: bool,
    batch_docs: usize,
    label: &str,
    progress: &ProgressRef,
) -> Result<LoadedCollection, MongoError> {
    let started = Instant::now();
    let (db_name, coll_name) = split_ns(&item.target).ok_or_else(|| MongoError::NotNamespace {
        target: item.target.clone(),
    })?;
    let db = conn.client.database(db_name);
    if drop
        && let Err(e) = db.run_command(doc! { "drop": coll_name }).await
        && command_code(&e) != Some(NAMESPACE_NOT_FOUND)
    {
        return Err(conn.failed("drop", e));
    }
    let options = item
        .metadata
        .get_document("options")
        .cloned()
        .unwrap_or_default();
    let mut create = doc! { "create": coll_name };
    for (k, v) in options {
        // A restore under another name gets a new UUID from the server.
        if k != "uuid" {
            create.insert(k, v);
        }
    }
    if let Err(e) = db.run_command(create).await
        && command_code(&e) != Some(NAMESPACE_EXISTS)
    {
        return Err(conn.failed("create", e));
    }
    let mut rec = LoadedCollection {
        ns: item.ns.clone(),
        target: item.target.clone(),
        kind: item.kind.clone(),
        documents: 0,
        bytes: 0,
        failed: 0,
        indexes: 0,
        seconds: 0.0,
    };
    if item.kind != "view" && item.bson.is_file() {
        let target = (db_name, coll_name, batch_docs);
        insert_all(conn, &item.bson, target, &mut rec, label, progress).await?;
    }
    let indexes: Vec<Bson> = item
        .metadata
        .get_array("indexes")
        .map(|a| {
            a.iter()
                .filter(|i| {
                    i.as_document()
                        .is_some_and(|d| d.get_str("name").ok() != Some("_id_"))
                })
                .cloned()
                .map(|i| match i {
                    Bson::Document(mut d) => {
                        d.remove("ns");
                        Bson::Document(d)
                    }
                    other => other,
                })
                .collect()
        })
        .unwrap_or_default();
    if !indexes.is_empty() {
        rec.indexes = indexes.len();
        db.run_command(doc! { "createIndexes": coll_name, "indexes": indexes })
            .await
            .map_err(|e| conn.failed("createIndexes", e))?;
    }
    rec.seconds = started.elapsed().as_secs_f64();
    Ok(rec)
}

async fn insert_all(
    conn: &Connection,
    path: &Path,
    (db, coll, batch_docs): (&str, &str, usize),
    rec: &mut LoadedCollection,
    label: &str,
    progress: &ProgressRef,
) -> Result<(), MongoError> {
    let file = std::fs::File::open(path).map_err(|e| MongoError::io("read", path, e))?;
    let mut reader =
        format::BsonFileReader::new(std::io::BufReader::with_capacity(1 << 20, file), path);
    let coll = conn.client.database(db).collection::<RawDocumentBuf>(coll);
    let mut batch: Vec<RawDocumentBuf> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut buf = Vec::new();
    loop {
        let more = reader.next_into(&mut buf).map_err(|e| bson_file(path, e))?;
        if more {
            let doc = RawDocumentBuf::from_bytes(std::mem::take(&mut buf)).map_err(|error| {
                MongoError::BadDocument {
                    path: path.to_path_buf(),
                    error,
                }
            })?;
            batch_bytes += doc.as_bytes().len();
            batch.push(doc);
        }
        if !batch.is_empty() && (!more || batch_bytes >= BATCH_BYTES || batch.len() >= batch_docs) {
            let n = batch.len() as u64;
            let bytes = batch_bytes as u64;
            let failed = insert_batch(conn, &coll, &batch).await?;
            rec.documents += n - failed;
            rec.failed += failed;
            rec.bytes += bytes;
            progress.advance(label, bytes);
            batch.clear();
            batch_bytes = 0;
        }
        if !more {
            return Ok(());
        }
    }
}

/// Inserts one batch, unordered; documents the server refuses are counted, not fatal
/// (as mongorestore does), anything else is.
async fn insert_batch(
    conn: &Connection,
    coll: &mongodb::Collection<RawDocumentBuf>,
    batch: &[RawDocumentBuf],
) -> Result<u64, MongoError> {
    match coll.insert_many(batch).ordered(false).await {
        Ok(_) => Ok(0),
        Err(e) => match e.kind.as_ref() {
            mongodb::error::ErrorKind::InsertMany(m)
                if m.write_concern_error.is_none() && m.write_errors.is_some() =>
            {
                Ok(m.write_errors.as_ref().map_or(0, |w| w.len() as u64))
            }
            _ => Err(conn.failed("insert", e)),
        },
    }
}

/// Replays the captured oplog (entries of the restored namespaces only) with `applyOps`.
async fn replay_oplog(
    conn: &Connection,
    path: &Path,
    wanted: &[String],
) -> Result<u64, MongoError> {
    let file = std::fs::File::open(path).map_err(|e| MongoError::io("read", path, e))?;
    let mut reader = format::BsonFileReader::new(std::io::BufReader::new(file), path);
    let admin = conn.client.database("admin");
    let mut buf = Vec::new();
    let mut batch: Vec<Bson> = Vec::new();
    let mut applied = 0u64;
    loop {
        let more = reader.next_into(&mut buf).map_err(|e| bson_file(path, e))?;
        if more {
            let entry = mongodb::bson::Document::from_reader(buf.as_slice()).map_err(|error| {
                MongoError::BadOplogEntry {
                    path: path.to_path_buf(),
                    error,
                }
            })?;
            if oplog_entry_applies(&entry, wanted) {
                batch.push(Bson::Document(entry));
            }
        }
        if !batch.is_empty() && (!more || batch.len() >= 1000) {
            let n = batch.len() as u64;
            admin
                .run_command(doc! { "applyOps": std::mem::take(&mut batch) })
                .await
                .map_err(|e| conn.failed("oplog replay", e))?;
            applied += n;
        }
        if !more {
            return Ok(applied);
        }
    }
}

/// Whether an oplog entry is replayed: data operations on restored namespaces (no-ops and
/// entries of other namespaces are skipped).
#[must_use]
pub fn oplog_entry_applies(entry: &Document, wanted: &[String]) -> bool {
    let op = entry.get_str("op").unwrap_or("n");
    if op == "n" {
        return false;
    }
    let ns = entry.get_str("ns").unwrap_or("");
    if op == "c" {
        // Commands run on `db.$cmd` and name their collection in `o`.
        let Some(db) = ns.strip_suffix(".$cmd") else {
            return false;
        };
        let target = entry
            .get_document("o")
            .ok()
            .and_then(|o| o.iter().next().map(|(_, v)| v.clone()));
        return match target {
            Some(Bson::String(c)) => wanted.contains(&format!("{db}.{c}")),
            _ => false,
        };
    }
    wanted.iter().any(|w| w == ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oplog_filter_takes_only_restored_namespaces() {
        let wanted = vec!["control.users".to_string()];
        assert!(oplog_entry_applies(
            &doc! { "op": "i", "ns": "control.users", "o": { "_id": 1 } },
            &wanted
        ));
        assert!(!oplog_entry_applies(
            &doc! { "op": "i", "ns": "control.other", "o": { "_id": 1 } },
            &wanted
        ));
        assert!(!oplog_entry_applies(
            &doc! { "op": "n", "ns": "", "o": { "msg": "periodic noop" } },
            &wanted
        ));
        assert!(oplog_entry_applies(
            &doc! { "op": "c", "ns": "control.$cmd", "o": { "drop": "users" } },
            &wanted
        ));
        assert!(!oplog_entry_applies(
            &doc! { "op": "c", "ns": "control.$cmd", "o": { "drop": "x" } },
            &wanted
        ));
    }
}
