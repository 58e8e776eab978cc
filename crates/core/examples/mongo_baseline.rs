//! Baseline for the MongoDB throughput benchmark (`bench/mongodb`): the plainest use of the
//! same driver, so the overhead of akbackup itself is visible next to it.
//!
//! `mongo_baseline find URI` reads every document of every non-system collection with a
//! plain `find` (raw BSON, nothing written); `mongo_baseline insert URI DIR` inserts the
//! `.bson` files of a plain mongodump directory with `insert_many` in batches of BATCH
//! documents (no drop, no indexes, one collection after the other).
//! Each prints one JSON line: documents, bytes, seconds.

use std::{path::Path, time::Instant};

use akbackup_core::component::mongodb::format;
use mongodb::{
    Client,
    bson::{RawDocumentBuf, doc},
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (documents, bytes) = match args.get(1).map(String::as_str) {
        Some("find") if args.len() == 3 => rt.block_on(find(&args[2]))?,
        Some("insert") if args.len() == 5 => {
            let batch: usize = args[4].parse()?;
            rt.block_on(insert(&args[2], Path::new(&args[3]), batch.max(1)))?
        }
        _ => {
            eprintln!("usage: mongo_baseline find URI | insert URI DUMP_DIR BATCH");
            std::process::exit(2);
        }
    };
    println!(
        "{{\"documents\": {documents}, \"bytes\": {bytes}, \"seconds\": {}}}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn find(uri: &str) -> Result<(u64, u64)> {
    let client = Client::with_uri_str(uri).await?;
    let (mut documents, mut bytes) = (0u64, 0u64);
    for db_name in client.list_database_names().await? {
        if ["admin", "local", "config"].contains(&db_name.as_str()) {
            continue;
        }
        let db = client.database(&db_name);
        for coll in db.list_collection_names().await? {
            if coll.starts_with("system.") {
                continue;
            }
            let mut cursor = db.collection::<RawDocumentBuf>(&coll).find(doc! {}).await?;
            while cursor.advance().await? {
                documents += 1;
                bytes += cursor.current().as_bytes().len() as u64;
            }
        }
    }
    Ok((documents, bytes))
}

async fn insert(uri: &str, dir: &Path, batch_docs: usize) -> Result<(u64, u64)> {
    let client = Client::with_uri_str(uri).await?;
    let (mut documents, mut bytes) = (0u64, 0u64);
    for ns in format::scan_directory(dir)? {
        if ns.db.is_empty() || ns.kind != "collection" {
            continue;
        }
        let path = dir.join(&ns.db).join(format!(
            "{}.bson",
            format::collection_file_stem(&ns.collection)
        ));
        let file = std::io::BufReader::new(std::fs::File::open(&path)?);
        let mut reader = format::BsonFileReader::new(file, &path);
        let coll = client
            .database(&ns.db)
            .collection::<RawDocumentBuf>(&ns.collection);
        let mut batch = Vec::new();
        let mut buf = Vec::new();
        loop {
            let more = reader.next_into(&mut buf)?;
            if more {
                bytes += buf.len() as u64;
                batch.push(RawDocumentBuf::from_bytes(std::mem::take(&mut buf))?);
            }
            if !batch.is_empty() && (!more || batch.len() >= batch_docs) {
                documents += batch.len() as u64;
                coll.insert_many(std::mem::take(&mut batch)).await?;
            }
            if !more {
                break;
            }
        }
    }
    Ok((documents, bytes))
}
