//! Dumping an instance into the mongodump directory layout, through the official driver.
//!
//! Documents are copied as the raw bytes the server sent, never decoded, into
//! `<db>/<collection>.bson`; `<db>/<collection>.metadata.json` carries the options, every
//! index and the UUID as canonical Extended JSON, as mongodump writes them. Several
//! collections are dumped at once; memory is bounded by the driver's batch size. On a
//! replica-set member the oplog written while the dump ran is captured into `oplog.bson`
//! (as `mongodump --oplog` does), so a restore can replay it up to one point in time.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use mongodb::{
    bson::{Bson, Document, RawDocumentBuf, Timestamp, doc, spec::BinarySubtype},
    options::FindOptions,
};
use serde::Serialize;

use super::{
    client::{Connection, NsFilter},
    error::MongoError,
    format,
};
use crate::progress::ProgressRef;

/// What was dumped of one namespace.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CollectionRecord {
    /// `db.collection`.
    pub ns: String,
    /// `collection`, `view`, `timeseries`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Documents written.
    pub documents: u64,
    /// Bytes of BSON written.
    pub bytes: u64,
}

/// What a dump produced.
#[derive(Debug, Clone, Serialize)]
pub struct DumpSummary {
    /// Server version (`buildInfo`), for the archive header of an export.
    pub server_version: String,
    /// The replica set, when the server is a member.
    pub replica_set: Option<String>,
    /// `point-in-time` (replica set, oplog captured) or `per-collection` (standalone).
    pub consistency: String,
    /// The same in words for the operator.
    pub consistency_note: String,
    /// Oplog entries captured (replica sets only).
    pub oplog_entries: Option<u64>,
    /// Per namespace, sorted.
    pub collections: Vec<CollectionRecord>,
}

/// One namespace to dump, as `listCollections` described it.
struct Spec {
    db: String,
    name: String,
    kind: String,
    options: Document,
    uuid: Option<String>,
}

/// Dumps every wanted namespace of the instance under `dest`.
///
/// # Errors
/// [`MongoError`] naming the namespace and what failed; the caller fails the component.
pub async fn dump(
    conn: &Connection,
    filter: &NsFilter,
    parallel: usize,
    dest: &Path,
    label: &str,
    progress: &ProgressRef,
) -> Result<DumpSummary, MongoError> {
    let client = &conn.client;
    let admin = client.database("admin");
    let hello = admin
        .run_command(doc! { "hello": 1 })
        .await
        .map_err(|e| conn.error(e))?;
    let replica_set = hello.get_str("setName").ok().map(str::to_string);
    let server_version = admin
        .run_command(doc! { "buildInfo": 1 })
        .await
        .ok()
        .and_then(|b| b.get_str("version").ok().map(str::to_string))
        .unwrap_or_default();

    let oplog_start = match &replica_set {
        Some(_) => Some(oplog_position(conn).await?),
        None => None,
    };

    let specs = list_namespaces(conn, filter).await?;
    progress.note(&format!(
        "{label}: dumping {} namespace(s), {} at a time",
        specs.len(),
        parallel
    ));
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for spec in specs {
        let conn = conn.clone();
        let limit = Arc::clone(&limit);
        let dest = dest.to_path_buf();
        let progress = Arc::clone(progress);
        let label = label.to_string();
        tasks.spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .map_err(|error| MongoError::Limit { error })?;
            dump_one(&conn, &spec, &dest, &label, &progress)
                .await
                .map_err(|e| MongoError::InNamespace {
                    ns: format!("{}.{}", spec.db, spec.name),
                    error: Box::new(e),
                })
        });
    }
    let mut collections = super::client::join_all(tasks, "dump").await?;
    collections.sort_by(|a, b| a.ns.cmp(&b.ns));

    let oplog_entries = match oplog_start {
        Some(start) => Some(capture_oplog(conn, start, &dest.join("oplog.bson")).await?),
        None => None,
    };
    let consistency = if replica_set.is_some() {
        "point-in-time"
    } else {
        "per-collection"
    }
    .to_string();
    let consistency_note = match &replica_set {
        Some(set) => format!(
            "point in time: replica set {set}, oplog captured from the start to the end of the \
             dump and replayed on restore"
        ),
        None => "per collection only: the server is standalone (no oplog), so collections \
                 were read at different moments"
            .to_string(),
    };
    Ok(DumpSummary {
        server_version,
        replica_set,
        consistency,
        consistency_note,
        oplog_entries,
        collections,
    })
}

/// Lists the wanted namespaces of every database, views included, system collections out.
async fn list_namespaces(conn: &Connection, filter: &NsFilter) -> Result<Vec<Spec>, MongoError> {
    let client = &conn.client;
    let names = client
        .list_database_names()
        .await
        .map_err(|e| conn.error(e))?;
    let mut out = Vec::new();
    for db_name in names {
        if !filter.wants_database(&db_name) {
            continue;
        }
        let db = client.database(&db_name);
        let in_db = |e: MongoError| MongoError::InDatabase {
            db: db_name.clone(),
            error: Box::new(e),
        };
        let mut cursor = db
            .run_cursor_command(doc! { "listCollections": 1 })
            .await
            .map_err(|e| in_db(conn.error(e)))?;
        while cursor.advance().await.map_err(|e| in_db(conn.error(e)))? {
            let entry: Document = cursor.deserialize_current().map_err(|error| {
                in_db(MongoError::Unreadable {
                    what: "listCollections entry",
                    error,
                })
            })?;
            let Ok(name) = entry.get_str("name") else {
                continue;
            };
            if name.starts_with("system.") {
                continue;
            }
            let ns = format!("{db_name}.{name}");
            if !filter.wants(&ns) {
                continue;
            }
            let uuid = entry
                .get_document("info")
                .ok()
                .and_then(|i| i.get("uuid"))
                .and_then(|u| match u {
                    Bson::Binary(b) if b.subtype == BinarySubtype::Uuid => {
                        Some(hex::encode(&b.bytes))
                    }
                    _ => None,
                });
            out.push(Spec {
                db: db_name.clone(),
                name: name.to_string(),
                kind: entry.get_str("type").unwrap_or("collection").to_string(),
                options: entry.get_document("options").cloned().unwrap_or_default(),
                uuid,
            });
        }
    }
    Ok(out)
}

/// The metadata file of a namespace, as mongodump writes it: canonical Extended JSON with
/// `options` (left out when empty), `indexes`, `uuid`, `collectionName`, `type`.
#[must_use]
pub fn metadata_json(
    options: &Document,
    indexes: Vec<Document>,
    uuid: Option<&str>,
    collection: &str,
    kind: &str,
) -> String {
    let mut meta = Document::new();
    if !options.is_empty() {
        meta.insert("options", options.clone());
    }
    meta.insert(
        "indexes",
        indexes.into_iter().map(Bson::Document).collect::<Vec<_>>(),
    );
    if let Some(u) = uuid {
        meta.insert("uuid", u);
    }
    meta.insert("collectionName", collection);
    meta.insert("type", kind);
    Bson::Document(meta).into_canonical_extjson().to_string()
}

async fn dump_one(
    conn: &Connection,
    spec: &Spec,
    dest: &Path,
    label: &str,
    progress: &ProgressRef,
) -> Result<CollectionRecord, MongoError> {
    let db = conn.client.database(&spec.db);
    let dir = dest.join(&spec.db);
    std::fs::create_dir_all(&dir).map_err(|e| MongoError::io("create", &dir, e))?;
    let stem = format::collection_file_stem(&spec.name);
    let is_view = spec.kind == "view";

    let indexes = if is_view {
        Vec::new()
    } else {
        let mut cursor = db
            .run_cursor_command(doc! { "listIndexes": &spec.name })
            .await
            .map_err(|e| conn.failed("listIndexes", e))?;
        let mut out = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| conn.failed("listIndexes", e))?
        {
            let mut spec: Document =
                cursor
                    .deserialize_current()
                    .map_err(|error| MongoError::Unreadable {
                        what: "index spec",
                        error,
                    })?;
            // Old servers repeat the namespace in every spec; a restore under another name
            // must not carry it.
            spec.remove("ns");
            out.push(spec);
        }
        out
    };

    let mut record = CollectionRecord {
        ns: format!("{}.{}", spec.db, spec.name),
        kind: spec.kind.clone(),
        documents: 0,
        bytes: 0,
    };
    if !is_view {
        let path = dir.join(format!("{stem}.bson"));
        let file = std::fs::File::create(&path).map_err(|e| MongoError::io("create", &path, e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let coll = db.collection::<RawDocumentBuf>(&spec.name);
        let mut cursor = coll
            .find(doc! {})
            .with_options(FindOptions::builder().batch_size(1000).build())
            .await
            .map_err(|e| conn.failed("find", e))?;
        while cursor
            .advance()
            .await
            .map_err(|e| conn.failed("reading documents", e))?
        {
            let raw = cursor.current().as_bytes();
            out.write_all(raw)
                .map_err(|e| MongoError::io("write", &path, e))?;
            record.documents += 1;
            record.bytes += raw.len() as u64;
            progress.advance(label, raw.len() as u64);
        }
        out.flush()
            .and_then(|()| out.get_ref().sync_data())
            .map_err(|e| MongoError::io("write", &path, e))?;
    }
    let meta = metadata_json(
        &spec.options,
        indexes,
        spec.uuid.as_deref(),
        &spec.name,
        &spec.kind,
    );
    let meta_path = dir.join(format!("{stem}.metadata.json"));
    std::fs::write(&meta_path, meta).map_err(|e| MongoError::io("write", &meta_path, e))?;
    Ok(record)
}

/// The step named when reading the oplog fails.
const OPLOG: &str = "reading local.oplog.rs";

/// The newest oplog entry's timestamp: where the captured oplog starts.
async fn oplog_position(conn: &Connection) -> Result<Timestamp, MongoError> {
    let oplog = conn
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let last = oplog
        .find_one(doc! {})
        .sort(doc! { "$natural": -1 })
        .await
        .map_err(|e| conn.failed(OPLOG, e))?
        .ok_or(MongoError::OplogEmpty)?;
    last.get_timestamp("ts")
        .map_err(|_| MongoError::OplogWithoutTs)
}

/// Writes every oplog entry from `start` on to `path` and checks that `start` itself is still
/// there: if it was overwritten, entries in between may be lost and the dump is not one
/// point in time.
async fn capture_oplog(
    conn: &Connection,
    start: Timestamp,
    path: &PathBuf,
) -> Result<u64, MongoError> {
    let oplog = conn
        .client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let file = std::fs::File::create(path).map_err(|e| MongoError::io("create", path, e))?;
    let mut out = std::io::BufWriter::new(file);
    let mut cursor = oplog
        .find(doc! { "ts": { "$gte": start } })
        .sort(doc! { "$natural": 1 })
        .await
        .map_err(|e| conn.failed(OPLOG, e))?;
    let mut count = 0u64;
    let mut saw_start = false;
    while cursor.advance().await.map_err(|e| conn.failed(OPLOG, e))? {
        let raw = cursor.current();
        if count == 0 {
            saw_start = matches!(raw.get_timestamp("ts"), Ok(ts) if ts == start);
        }
        out.write_all(raw.as_bytes())
            .map_err(|e| MongoError::io("write", path, e))?;
        count += 1;
    }
    out.flush().map_err(|e| MongoError::io("write", path, e))?;
    if !saw_start {
        return Err(MongoError::OplogRolledOver);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_has_the_mongodump_shape() {
        let idx = vec![doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }];
        let text = metadata_json(
            &Document::new(),
            idx,
            Some("0f32"),
            "accounts",
            "collection",
        );
        assert_eq!(
            text,
            r#"{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],"uuid":"0f32","collectionName":"accounts","type":"collection"}"#
        );
        let opts = doc! { "capped": true, "size": 1_048_576 };
        let text = metadata_json(&opts, Vec::new(), None, "log", "collection");
        assert!(
            text.starts_with(
                r#"{"options":{"capped":true,"size":{"$numberInt":"1048576"}},"indexes":[]"#
            ),
            "{text}"
        );
    }
}
