//! Test helpers shared by the unit tests of the dump formats: the fixture dump in
//! `tests/fixtures/mongodump` (one dataset in all four forms mongodump writes) and a small
//! dump with every kind of namespace. Compiled for tests only.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    path::{Path, PathBuf},
};

use ::mongodb::bson::{self, Bson, doc};

use super::{NsSummary, unpack_archive, unpack_directory};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/mongodump"
);

pub(super) fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// The expected (namespace, kind, documents) of the fixture dump.
fn expected_namespaces() -> Vec<(&'static str, &'static str, &'static str, u64)> {
    vec![
        ("account_1", "contacts", "collection", 300),
        ("account_1", "suppressions", "collection", 0),
        ("control", "accounts", "collection", 40),
        ("control", "active_users", "view", 0),
        ("control", "audit_log", "collection", 50),
        ("control", "users", "collection", 120),
    ]
}

/// The BSON of each collection of `dataset.json`, encoded from its canonical extjson.
pub(super) fn dataset_bson() -> BTreeMap<(String, String), Vec<Vec<u8>>> {
    let text = fs::read_to_string(fixture("dataset.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    for (db, dbv) in json["databases"].as_object().unwrap() {
        for (coll, cv) in dbv["collections"].as_object().unwrap() {
            let docs: Vec<Vec<u8>> = cv["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let bson = Bson::try_from(d.clone()).unwrap();
                    let Bson::Document(doc) = bson else {
                        panic!("not a document: {d}")
                    };
                    bson::to_vec(&doc).unwrap()
                })
                .collect();
            assert_eq!(docs.len() as u64, cv["count"].as_u64().unwrap());
            out.insert((db.clone(), coll.clone()), docs);
        }
    }
    out
}

/// Every file under `dir`, by relative path.
pub(super) fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
            out.insert(rel, fs::read(e.path()).unwrap());
        }
    }
    out
}

pub(super) fn unpack_fixture(form: &str) -> (tempfile::TempDir, Vec<NsSummary>) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let summaries = if form.starts_with("dump-dir") {
        unpack_directory(&fixture(form), &dest).unwrap()
    } else {
        let f = File::open(fixture(form)).unwrap();
        unpack_archive(f, form, &dest).unwrap()
    };
    (tmp, summaries)
}

pub(super) fn check_summaries(form: &str, summaries: &[NsSummary]) {
    let got: Vec<(&str, &str, &str, u64)> = summaries
        .iter()
        .map(|s| {
            (
                s.db.as_str(),
                s.collection.as_str(),
                s.kind.as_str(),
                s.documents,
            )
        })
        .collect();
    assert_eq!(got, expected_namespaces(), "{form}");
}

/// A small dump with every kind of namespace: documents, an empty collection, a view, a
/// timeseries collection and the oplog.
pub(super) fn small_dump(dir: &Path) {
    let d = dir.join("d");
    fs::create_dir_all(&d).unwrap();
    let mut c = Vec::new();
    for i in 0..3 {
        c.extend(bson::to_vec(&doc! {"_id": i, "s": "x".repeat(i as usize)}).unwrap());
    }
    fs::write(d.join("c%2Fx.bson"), &c).unwrap();
    fs::write(
        d.join("c%2Fx.metadata.json"),
        r#"{"indexes":[],"collectionName":"c/x","type":"collection"}"#,
    )
    .unwrap();
    fs::write(d.join("e.bson"), b"").unwrap();
    fs::write(
        d.join("e.metadata.json"),
        r#"{"indexes":[],"type":"collection"}"#,
    )
    .unwrap();
    fs::write(
        d.join("v.metadata.json"),
        r#"{"options":{"viewOn":"c/x","pipeline":[]},"indexes":[],"type":"view"}"#,
    )
    .unwrap();
    fs::write(
        d.join("t.metadata.json"),
        r#"{"indexes":[],"type":"timeseries"}"#,
    )
    .unwrap();
    fs::write(
        d.join("system.buckets.t.bson"),
        bson::to_vec(&doc! {"_id": 1, "control": {}}).unwrap(),
    )
    .unwrap();
    fs::write(
        dir.join("oplog.bson"),
        bson::to_vec(&doc! {"op": "n", "o": {}}).unwrap(),
    )
    .unwrap();
}
