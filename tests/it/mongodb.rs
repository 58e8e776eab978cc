//! MongoDB instances (`[mongodb.control]`): backups of a real wire-protocol server (mongoeco,
//! started per test on loopback) seeded with the mongodump fixture dataset, restored into other
//! servers and compared document byte for byte, index for index; `restore --target` against the
//! fixture's own mongodump files; namespace filters and renames; drop-before-restore and the
//! `systemctl restart` call; the cost of a second backup; import of the four mongodump fixture
//! formats and export round trips; failures (authentication, a closed port, a server killed
//! mid-backup, a truncated archive) and the secrets in a URI.
//!
//! Servers are compared through `tests/support/mongo_tool.py state` (see `support::mongo`),
//! which knows nothing of akbackup. mongoeco limits what can be shown: `find` on a view returns
//! nothing (a view is compared by its definition only) and it has no replica sets (so only the
//! standalone `per-collection` consistency is tested).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::mongo::{
    self, MongoServer, arg, assert_state_eq, expected, files_and_mongo_sandbox, fixtures,
    mongo_config, mongo_sandbox, one_line_failure, run, run_json, run_ok, systemctl_calls,
    systemctl_log,
};
use crate::support::{self, Sandbox, all_output, component, dir_size, parse_json};

/// The component every test here configures.
const NAME: &str = "mongodb.control";

/// Its systemd unit, as configured by `support::mongo::mongo_section`.
const SERVICE: &str = "mongod-control";

/// The collections of the fixture dataset (the view `control.active_users` is not one).
const COLLECTIONS: &[&str] = &[
    "account_1.contacts",
    "account_1.suppressions",
    "control.accounts",
    "control.audit_log",
    "control.users",
];

/// The view of the fixture dataset.
const VIEW: &str = "control.active_users";

/// `db.coll` as the fixture's `dump-dir/<db>/<coll>.bson`.
fn fixture_bson(ns: &str) -> PathBuf {
    let (db, coll) = ns.split_once('.').expect("db.coll");
    fixtures()
        .join("dump-dir")
        .join(db)
        .join(format!("{coll}.bson"))
}

/// Backs up [`NAME`] with `--json`, asserts the set and the component are complete; returns
/// the summary and the set id.
fn backup(sb: &Sandbox) -> (Value, String) {
    let summary = run_json(sb, &["backup", "--only", NAME]);
    assert_eq!(summary["status"], "complete", "{summary:#}");
    assert_eq!(
        component(&summary, NAME)["status"],
        "complete",
        "{summary:#}"
    );
    let set = Sandbox::set_id(&summary);
    (summary, set)
}

/// `restore SET --only NAME --yes --to-uri URI --no-restart EXTRA...`, asserting exit 0.
fn restore_to(sb: &Sandbox, set: &str, uri: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "restore",
        set,
        "--only",
        NAME,
        "--yes",
        "--to-uri",
        uri,
        "--no-restart",
    ];
    args.extend_from_slice(extra);
    run_json(sb, &args)
}

/// The `details.collections` entries of the component in a backup summary, keyed by `ns`.
fn collections(summary: &Value) -> std::collections::BTreeMap<String, Value> {
    let record = component(summary, NAME);
    record["details"]["collections"]
        .as_array()
        .unwrap_or_else(|| panic!("no details.collections array: {record:#}"))
        .iter()
        .map(|c| {
            let ns = c["ns"]
                .as_str()
                .unwrap_or_else(|| panic!("a collection without ns: {record:#}"));
            (ns.to_string(), c.clone())
        })
        .collect()
}

/// Sets listed by `snapshots --json` whose status is `complete`.
fn complete_sets(sb: &Sandbox) -> usize {
    sb.sets()
        .iter()
        .filter(|s| s["status"] == "complete")
        .count()
}

/// `expected` with every namespace of database `from` renamed into database `to`.
fn renamed(state: &Value, from: &str, to: &str) -> Value {
    let map = state.as_object().expect("state is an object");
    Value::Object(
        map.iter()
            .map(|(ns, v)| match ns.strip_prefix(&format!("{from}.")) {
                Some(coll) => (format!("{to}.{coll}"), v.clone()),
                None => (ns.clone(), v.clone()),
            })
            .collect(),
    )
}

/// The harness itself, runnable before the component exists: a fresh mongoeco server seeded
/// with the fixture dataset reports exactly the state `dataset.json` describes (every document
/// byte-identical, every index, capped options, the empty collection and the view's
/// definition), the fixture's own `.bson` files hold as many documents, and the tool's
/// insert and drop change that state as they say. Prints the seed time.
#[test]
fn harness_seeded_server_equals_dataset() {
    let started = Instant::now();
    let server = MongoServer::start();
    let up = started.elapsed();
    let seeded = Instant::now();
    let summary = server.seed_fixture();
    println!(
        "mongoeco: started in {:.2} s; fixture seed (510 documents, 6 namespaces) took {:.2} s \
         ({} s inside the tool, the rest is Python and pymongo starting)",
        up.as_secs_f64(),
        seeded.elapsed().as_secs_f64(),
        summary["seconds"]
    );
    assert_state_eq(&server.state(), &expected(&[]), "the freshly seeded server");

    let want = expected(&[]);
    let names: BTreeSet<&str> = want
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut all: BTreeSet<&str> = COLLECTIONS.iter().copied().collect();
    all.insert(VIEW);
    assert_eq!(names, all, "namespaces of the dataset");
    assert_eq!(
        want["control.audit_log"]["options"],
        json!({"capped": true, "max": 1000, "size": 1_048_576})
    );
    assert_eq!(want["account_1.suppressions"]["count"], 0);
    assert_eq!(want[VIEW]["type"], "view");
    assert_eq!(want[VIEW]["viewOn"], "users");
    let users = &want["control.users"]["indexes"];
    let ttl = users
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "lastSeenAt_1"))
        .expect("TTL index in the dataset");
    assert_eq!(
        ttl["expireAfterSeconds"],
        json!({"$numberInt": "315360000"})
    );

    // The fixture's mongodump files hold as many documents as the server reports.
    let state = server.state();
    for ns in COLLECTIONS {
        let bytes = fs::read(fixture_bson(ns)).expect("read fixture .bson");
        let (mut docs, mut at) = (Vec::new(), 0);
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            docs.push(&bytes[at..at + len]);
            at += len;
        }
        assert_eq!(
            state[*ns]["count"],
            docs.len(),
            "{ns}: documents in the fixture file"
        );
    }

    server.insert("control.accounts", 3, 1_000);
    server.insert("control.extra", 2, 0);
    let changed = server.state();
    assert_eq!(changed["control.accounts"]["count"], 43);
    assert_ne!(
        changed["control.accounts"]["sha256"],
        want["control.accounts"]["sha256"]
    );
    assert_eq!(changed["control.extra"]["count"], 2);
    server.drop_ns("control.extra");
    server.drop_ns("account_1");
    let dropped = server.state();
    assert!(dropped.get("control.extra").is_none(), "{dropped:#}");
    assert!(dropped.get("account_1.contacts").is_none(), "{dropped:#}");
    assert_eq!(dropped["control.users"], want["control.users"]);
}

/// The fixture dataset backed up from one server and restored (`--to-uri`) into a second,
/// empty one gives exactly the dataset again: every BSON type byte-identical, the unique, TTL,
/// compound and partial indexes, the capped options, the empty collection and the view. The
/// manifest says `per-collection` (standalone server) and lists each namespace with its type,
/// document count and BSON size.
#[test]
fn backup_then_restore_into_an_empty_server_reproduces_the_dataset() {
    let source = MongoServer::start();
    source.seed_fixture();
    let sb = mongo_sandbox("control", &source.uri(), "");
    let (summary, set) = backup(&sb);

    let record = component(&summary, NAME);
    assert_eq!(record["kind"], "mongodb", "{record:#}");
    assert_eq!(
        record["details"]["consistency"], "per-collection",
        "{record:#}"
    );
    let listed = collections(&summary);
    let want = expected(&[]);
    for ns in COLLECTIONS {
        let entry = listed
            .get(*ns)
            .unwrap_or_else(|| panic!("{ns} is not in details.collections: {record:#}"));
        assert_eq!(entry["type"], "collection", "{entry:#}");
        assert_eq!(entry["documents"], want[*ns]["count"], "{entry:#}");
        let size = fs::metadata(fixture_bson(ns)).expect("fixture .bson").len();
        assert_eq!(entry["bytes"], size, "{ns}: BSON bytes: {entry:#}");
    }
    assert_eq!(
        listed.get(VIEW).map(|v| &v["type"]),
        Some(&json!("view")),
        "{record:#}"
    );
    assert_eq!(listed.len(), COLLECTIONS.len() + 1, "{record:#}");
    let sets = sb.sets();
    assert_eq!(sets.len(), 1, "{sets:#?}");
    assert_eq!(sets[0]["components"], json!([NAME]), "{sets:#?}");

    let target = MongoServer::start();
    restore_to(&sb, &set, &target.uri(), &[]);
    assert_state_eq(&target.state(), &want, "the server restored with --to-uri");
    assert_state_eq(
        &source.state(),
        &want,
        "the source server after the restore",
    );
    assert!(
        systemctl_calls(&sb).is_empty(),
        "a --to-uri --no-restart restore called systemctl: {:?}",
        systemctl_calls(&sb)
    );
}

/// `restore --target DIR` writes a plain mongodump directory,
/// `DIR/mongodb/control/<db>/<coll>.bson` byte-equal to the fixture's own mongodump files and a
/// `.metadata.json` per namespace (the view's without a `.bson`), without a server: the source
/// is killed first.
#[test]
fn restore_target_writes_the_mongodump_directory_layout() {
    let mut source = MongoServer::start();
    source.seed_fixture();
    let sb = mongo_sandbox("control", &source.uri(), "");
    let (_, set) = backup(&sb);
    source.kill();

    let target = sb.root().join("restored");
    run_ok(
        &sb,
        &[
            "restore",
            &set,
            "--only",
            NAME,
            "--target",
            arg(&target),
            "--yes",
        ],
    );
    let root = target.join("mongodb/control");
    for ns in COLLECTIONS {
        let (db, coll) = ns.split_once('.').expect("db.coll");
        let bson = root.join(db).join(format!("{coll}.bson"));
        let got = fs::read(&bson).unwrap_or_else(|e| panic!("read {}: {e}", bson.display()));
        let want = fs::read(fixture_bson(ns)).expect("read fixture .bson");
        assert!(
            got == want,
            "{}: {} bytes, the fixture has {} bytes",
            bson.display(),
            got.len(),
            want.len()
        );
    }
    let mut all: Vec<&str> = COLLECTIONS.to_vec();
    all.push(VIEW);
    for ns in all {
        let (db, coll) = ns.split_once('.').expect("db.coll");
        let path = root.join(db).join(format!("{coll}.metadata.json"));
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let meta: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let fixture: Value = serde_json::from_str(
            &fs::read_to_string(
                fixtures()
                    .join("dump-dir")
                    .join(db)
                    .join(format!("{coll}.metadata.json")),
            )
            .expect("read fixture metadata"),
        )
        .expect("fixture metadata is JSON");
        assert_eq!(meta["collectionName"], coll, "{}", path.display());
        let names = |m: &Value| -> BTreeSet<String> {
            m["indexes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            names(&meta),
            names(&fixture),
            "{}: index names",
            path.display()
        );
        for index in fixture["indexes"].as_array().into_iter().flatten() {
            let mine = meta["indexes"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["name"] == index["name"]))
                .expect("index present");
            for key in [
                "key",
                "unique",
                "expireAfterSeconds",
                "partialFilterExpression",
            ] {
                assert_eq!(
                    mine[key],
                    index[key],
                    "{}: index {} {key}",
                    path.display(),
                    index["name"]
                );
            }
        }
    }
    assert!(
        !root.join("control/active_users.bson").exists(),
        "the view got a .bson file"
    );
    let view: Value = serde_json::from_str(
        &fs::read_to_string(root.join("control/active_users.metadata.json"))
            .expect("view metadata"),
    )
    .expect("JSON");
    assert_eq!(view["options"]["viewOn"], "users", "{view:#}");
    let capped: Value = serde_json::from_str(
        &fs::read_to_string(root.join("control/audit_log.metadata.json")).expect("capped metadata"),
    )
    .expect("JSON");
    assert_eq!(capped["options"]["capped"], true, "{capped:#}");
}

/// `include = ["control.*"]` and `exclude = ["*.audit_log"]` in the config: the set lists and
/// restores exactly `control.accounts`, `control.users` and the view, nothing of `account_1`.
#[test]
fn config_include_and_exclude_choose_the_namespaces() {
    let source = MongoServer::start();
    source.seed_fixture();
    let sb = mongo_sandbox(
        "control",
        &source.uri(),
        "include = [\"control.*\"]\nexclude = [\"*.audit_log\"]\n",
    );
    let (summary, set) = backup(&sb);
    let kept = ["control.accounts", "control.users", VIEW];
    let listed: BTreeSet<String> = collections(&summary).into_keys().collect();
    assert_eq!(
        listed,
        kept.iter()
            .map(|s| (*s).to_string())
            .collect::<BTreeSet<_>>(),
        "namespaces in the set"
    );
    let target = MongoServer::start();
    restore_to(&sb, &set, &target.uri(), &[]);
    assert_state_eq(&target.state(), &expected(&kept), "the filtered restore");
}

/// `--ns-include 'account_1.*'` restores only that database; `--ns-from 'account_1.*'
/// --ns-to 'account_2.*'` restores it under the new name (documents and indexes unchanged) and
/// the rest as it was.
#[test]
fn restore_ns_include_and_ns_rename() {
    let source = MongoServer::start();
    source.seed_fixture();
    let sb = mongo_sandbox("control", &source.uri(), "");
    let (_, set) = backup(&sb);

    let only = MongoServer::start();
    restore_to(&sb, &set, &only.uri(), &["--ns-include", "account_1.*"]);
    assert_state_eq(
        &only.state(),
        &expected(&["account_1.contacts", "account_1.suppressions"]),
        "restore --ns-include 'account_1.*'",
    );

    let moved = MongoServer::start();
    restore_to(
        &sb,
        &set,
        &moved.uri(),
        &["--ns-from", "account_1.*", "--ns-to", "account_2.*"],
    );
    assert_state_eq(
        &moved.state(),
        &renamed(&expected(&[]), "account_1", "account_2"),
        "restore --ns-from 'account_1.*' --ns-to 'account_2.*'",
    );
}

/// An in-place restore drops each restored collection first (documents inserted after the
/// backup, also into the empty collection, are gone; the dataset is back byte for byte), then
/// runs `systemctl restart mongod-control` exactly once; with `--no-restart` it restores the
/// same way and calls nothing.
#[test]
fn in_place_restore_drops_first_then_restarts_unless_no_restart() {
    let server = MongoServer::start();
    server.seed_fixture();
    let sb = mongo_sandbox("control", &server.uri(), "");
    let (_, set) = backup(&sb);
    let want = expected(&[]);

    for (round, no_restart) in [(1, false), (2, true)] {
        server.insert("control.accounts", 25, 10_000 * round);
        server.insert("account_1.suppressions", 5, 10_000 * round);
        let changed = server.state();
        assert_eq!(changed["control.accounts"]["count"], 65, "{changed:#}");
        let _ = fs::remove_file(systemctl_log(&sb));

        let mut args = vec!["restore", set.as_str(), "--only", NAME, "--yes"];
        if no_restart {
            args.push("--no-restart");
        }
        run_json(&sb, &args);
        assert_state_eq(
            &server.state(),
            &want,
            &format!("the server after in-place restore round {round}"),
        );
        let calls = systemctl_calls(&sb);
        if no_restart {
            assert!(
                calls.is_empty(),
                "--no-restart still called systemctl: {calls:?}"
            );
        } else {
            assert_eq!(calls, vec![format!("restart {SERVICE}")], "systemctl calls");
        }
    }
}

/// A second backup of unchanged data adds little to the repository: its growth is under a
/// third of what the first backup added (the documents are deduplicated; what remains is the
/// set's own metadata).
#[test]
fn second_backup_of_unchanged_data_adds_little() {
    let server = MongoServer::start();
    server.seed_fixture();
    let sb = mongo_sandbox("control", &server.uri(), "");
    let data: u64 = COLLECTIONS
        .iter()
        .map(|ns| fs::metadata(fixture_bson(ns)).expect("fixture").len())
        .sum();
    let empty = dir_size(&sb.repo());
    backup(&sb);
    let after_first = dir_size(&sb.repo());
    backup(&sb);
    let after_second = dir_size(&sb.repo());
    let (first, second) = (after_first - empty, after_second - after_first);
    println!(
        "mongodb second backup: data {data} B of BSON; first backup added {first} B to the \
         repository, the second {second} B ({:.1}% of the first)",
        second as f64 * 100.0 / first as f64
    );
    assert!(
        second * 3 < first,
        "the second backup of unchanged data added {second} B, the first {first} B"
    );
    assert_eq!(sb.sets().len(), 2);
}

/// Imports `path` (with `--as NAME` when `as_component`) into a fresh sandbox, checks one
/// imported set, restores it into a fresh server and compares with the dataset; returns the
/// set as `snapshots --json` lists it.
fn import_and_restore(path: &Path, as_component: bool) -> Value {
    let server = MongoServer::start();
    let sb = mongo_sandbox("control", &server.uri(), "");
    let mut args = vec!["import", arg(path)];
    if as_component {
        args.extend(["--as", NAME]);
    }
    let imported = run_json(&sb, &args);
    let first = &imported[0];
    assert_eq!(first["status"], "complete", "{imported:#}");
    let set = Sandbox::set_id(first);
    let sets = sb.sets();
    assert_eq!(sets.len(), 1, "{sets:#?}");
    assert_eq!(sets[0]["components"], json!([NAME]), "{sets:#?}");
    assert!(
        sets[0]["tags"].to_string().contains("imported"),
        "{sets:#?}"
    );

    restore_to(&sb, &set, &server.uri(), &[]);
    assert_state_eq(
        &server.state(),
        &expected(&[]),
        &format!("the server restored from imported {}", path.display()),
    );
    sets[0].clone()
}

/// `mongodb-control-2019-06-01.tar.gz` (the fixture's gzip'd mongodump archive, renamed)
/// imports without `--as` as a set of `mongodb.control` dated 2019-06-01 that restores to the
/// dataset.
#[test]
fn import_gzip_archive_named_by_component_and_date() {
    let dir = tempfile::tempdir().expect("temp dir");
    let named = dir.path().join("mongodb-control-2019-06-01.tar.gz");
    fs::copy(fixtures().join("dump.archive.gz"), &named).expect("copy fixture");
    let set = import_and_restore(&named, false);
    assert!(
        set["time"].as_str().unwrap_or("").starts_with("2019-06-01"),
        "the set is not dated by the name: {set:#}"
    );
}

/// A plain mongodump archive (`--archive`) imported with `--as` restores to the dataset.
#[test]
fn import_plain_archive_as_component() {
    import_and_restore(&fixtures().join("dump.archive"), true);
}

/// A mongodump directory (`--out`) imported with `--as` restores to the dataset.
#[test]
fn import_dump_directory_as_component() {
    import_and_restore(&fixtures().join("dump-dir"), true);
}

/// A gzip'd mongodump directory (`--gzip --out`) imported with `--as` restores to the dataset.
#[test]
fn import_gzip_dump_directory_as_component() {
    import_and_restore(&fixtures().join("dump-dir-gzip"), true);
}

/// `export` writes `mongodb-control-DATE.tar.gz` (gzip around a mongodump archive: 1f 8b, then
/// 6d e2 99 81), `--format dir` a mongodump directory whose `.bson` files equal the fixture's,
/// `--format dir --gzip` the same gzip'd; each imports again and restores to the dataset.
#[test]
fn export_archive_and_directories_import_again_to_the_same_data() {
    let source = MongoServer::start();
    source.seed_fixture();
    let sb = mongo_sandbox("control", &source.uri(), "");
    let (_, set) = backup(&sb);
    let date = sb.sets()[0]["time"].as_str().expect("set time")[..10].to_string();
    let stem = format!("mongodb-control-{date}");
    let target = MongoServer::start();
    let want = expected(&[]);

    let check = |path: &Path, as_component: bool, what: &str| {
        let mut args = vec!["import", arg(path)];
        if as_component {
            args.extend(["--as", NAME]);
        }
        let imported = run_json(&sb, &args);
        assert_eq!(imported[0]["status"], "complete", "{what}: {imported:#}");
        let id = Sandbox::set_id(&imported[0]);
        target.drop_ns("control");
        target.drop_ns("account_1");
        restore_to(&sb, &id, &target.uri(), &[]);
        assert_state_eq(&target.state(), &want, what);
    };

    let archives = sb.root().join("export-archive");
    run_ok(
        &sb,
        &["export", &set, "--to", arg(&archives), "--only", NAME],
    );
    let archive = archives.join(format!("{stem}.tar.gz"));
    let bytes = fs::read(&archive).unwrap_or_else(|e| panic!("read {}: {e}", archive.display()));
    assert_eq!(
        &bytes[..2],
        &[0x1f, 0x8b],
        "{} is not gzip",
        archive.display()
    );
    let gunzip = Command::new("gzip")
        .arg("-dc")
        .arg(&archive)
        .output()
        .expect("run gzip -dc");
    assert!(
        gunzip.status.success(),
        "gzip -dc {}: {}",
        archive.display(),
        all_output(&gunzip)
    );
    assert_eq!(
        gunzip.stdout.get(..4),
        Some(&[0x6d, 0xe2, 0x99, 0x81][..]),
        "the gunzipped export is not a mongodump archive"
    );
    // Named as the import expects: component and date come from the name.
    check(&archive, false, "the exported archive, imported again");

    let plain = sb.root().join("export-dir");
    run_ok(
        &sb,
        &[
            "export",
            &set,
            "--to",
            arg(&plain),
            "--only",
            NAME,
            "--format",
            "dir",
        ],
    );
    let dump = plain.join(&stem);
    for ns in COLLECTIONS {
        let (db, coll) = ns.split_once('.').expect("db.coll");
        let path = dump.join(db).join(format!("{coll}.bson"));
        let got = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(
            got == fs::read(fixture_bson(ns)).expect("fixture"),
            "{} differs from the fixture",
            path.display()
        );
        assert!(
            dump.join(db)
                .join(format!("{coll}.metadata.json"))
                .is_file()
        );
    }
    check(&dump, true, "the exported directory, imported again");

    let gz = sb.root().join("export-dir-gzip");
    run_ok(
        &sb,
        &[
            "export",
            &set,
            "--to",
            arg(&gz),
            "--only",
            NAME,
            "--format",
            "dir",
            "--gzip",
        ],
    );
    let dump = gz.join(&stem);
    for ns in COLLECTIONS {
        let (db, coll) = ns.split_once('.').expect("db.coll");
        let path = dump.join(db).join(format!("{coll}.bson.gz"));
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "{} is not gzip", path.display());
    }
    check(&dump, true, "the exported gzip'd directory, imported again");
}

/// Authentication: with the password in `password-file` a backup of a server that requires a
/// SCRAM user succeeds; a wrong password (in the file, or in the URI) fails with exit 1 or 2
/// and one line naming `mongodb.control`, and records no complete set.
#[test]
fn wrong_password_fails_with_one_line_and_no_set() {
    let server = MongoServer::start_with_auth("backup", "Right-pw-5521");
    server.seed(&["control.accounts"]);
    let sb = Sandbox::new();
    let pw_file = sb.root().join("mongo.password");
    let uri = format!(
        "mongodb://backup@127.0.0.1:{}/?authMechanism=SCRAM-SHA-256",
        server.port()
    );
    let config = mongo_config(
        &sb,
        "control",
        &uri,
        &format!("password-file = {}\n", support::toml_str(&pw_file)),
    );
    sb.write_config(&config);
    sb.init();
    support::write_file(&pw_file, b"Right-pw-5521\n");
    support::chmod(&pw_file, 0o600);
    let (summary, _) = backup(&sb);
    assert_eq!(collections(&summary)["control.accounts"]["documents"], 40);

    support::write_file(&pw_file, b"Wrong-pw-0001\n");
    let out = run(&sb, &["backup", "--only", NAME]);
    one_line_failure(&out, NAME, "backup with a wrong password in password-file");
    assert!(
        !all_output(&out).contains("Wrong-pw-0001"),
        "{}",
        all_output(&out)
    );

    let inline = format!(
        "mongodb://backup:Wrong-pw-0002@127.0.0.1:{}/?authMechanism=SCRAM-SHA-256",
        server.port()
    );
    sb.write_config(&mongo_config(&sb, "control", &inline, ""));
    let out = run(&sb, &["backup", "--only", NAME]);
    one_line_failure(&out, NAME, "backup with a wrong password in the URI");
    assert!(
        !all_output(&out).contains("Wrong-pw-0002"),
        "{}",
        all_output(&out)
    );
    assert_eq!(
        complete_sets(&sb),
        1,
        "a failed backup recorded a complete set"
    );
}

/// A server that does not answer (a closed port): the backup fails with exit 1 or 2 and one
/// line naming `mongodb.control` and the server's address, and records no complete set.
#[test]
fn unreachable_server_fails_with_one_line_and_no_set() {
    let port = mongo::free_port();
    let sb = mongo_sandbox("control", &format!("mongodb://127.0.0.1:{port}"), "");
    let out = run(&sb, &["backup", "--only", NAME]);
    let line = one_line_failure(&out, NAME, "backup of a closed port");
    assert!(
        line.contains(&format!("127.0.0.1:{port}")),
        "the error does not name the server 127.0.0.1:{port}: {line}"
    );
    assert_eq!(
        complete_sets(&sb),
        0,
        "a failed backup recorded a complete set"
    );
    assert!(
        !sb.lock_file().exists(),
        "the repository lock was left behind"
    );
}

/// The server is SIGKILLed as soon as akbackup holds a connection to it: the backup fails
/// (exit 1 or 2) naming `mongodb.control`, records no complete set and releases the lock.
#[test]
fn server_killed_during_backup_fails_without_a_set() {
    let _quiet = crate::support::network_heavy_guard();
    let mut server = MongoServer::start();
    server.seed_fixture();
    let sb = mongo_sandbox("control", &server.uri(), "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_akbackup"))
        .args(["backup", "--only", NAME])
        .env("AKBACKUP_CONFIG", sb.config_path())
        .env_remove("AKBACKUP_PASSWORD")
        .env("XDG_CACHE_HOME", sb.root().join("cache"))
        .env("NO_COLOR", "1")
        .current_dir(sb.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn akbackup");
    let connected = mongo::wait_for_client(server.port(), Duration::from_secs(120), || {
        child.try_wait().expect("poll akbackup").is_none()
    });
    server.kill();
    let out = child.wait_with_output().expect("wait for akbackup");
    assert!(
        connected,
        "akbackup never connected, or finished before the kill: exit {:?}\n{}",
        out.status.code(),
        all_output(&out)
    );
    one_line_failure(&out, NAME, "backup whose server was killed");
    assert_eq!(
        complete_sets(&sb),
        0,
        "a failed backup recorded a complete set"
    );
    assert!(
        !sb.lock_file().exists(),
        "the repository lock was left behind"
    );
}

/// A truncated mongodump archive is refused, gzip'd (named form) or plain (`--as`): non-zero
/// exit, an error naming the file, and no set; the whole archive then imports.
#[test]
fn truncated_import_archive_is_refused_without_a_set() {
    let sb = mongo_sandbox("control", "mongodb://127.0.0.1:1", "");
    for (fixture, name, as_component) in [
        (
            "dump.archive.gz",
            "mongodb-control-2019-06-03.tar.gz",
            false,
        ),
        ("dump.archive", "truncated.archive", true),
    ] {
        let bytes = fs::read(fixtures().join(fixture)).expect("read fixture");
        let path = sb.root().join(name);
        fs::write(&path, &bytes[..bytes.len() / 2]).expect("write truncated archive");
        let mut args = vec!["import", arg(&path)];
        if as_component {
            args.extend(["--as", NAME]);
        }
        let out = run(&sb, &args);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "import of truncated {name}: exit {:?}\n{}",
            out.status.code(),
            all_output(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(name),
            "the error does not name {name}:\n{}",
            all_output(&out)
        );
        assert!(
            sb.sets().is_empty(),
            "a failed import of {name} recorded a set"
        );
    }
    // The same archive whole imports, so the refusals above were about the truncation.
    let whole = sb.root().join("mongodb-control-2019-06-04.tar.gz");
    fs::copy(fixtures().join("dump.archive.gz"), &whole).expect("copy fixture");
    run_json(&sb, &["import", arg(&whole)]);
    assert_eq!(complete_sets(&sb), 1, "the whole archive did not import");
}

/// A URI carrying `user:secret@` works (the backup of an auth server succeeds) and the secret
/// never appears in the output of `backup`, `config show` or `snapshots`, text or `--json`;
/// `config show` shows the user with the password redacted (`backup:***@`).
#[test]
fn uri_password_is_never_printed() {
    let secret = "Sx-uri-secret-4417";
    let server = MongoServer::start_with_auth("backup", secret);
    server.seed(&["control.accounts"]);
    let uri = format!(
        "mongodb://backup:{secret}@127.0.0.1:{}/?authMechanism=SCRAM-SHA-256",
        server.port()
    );
    let sb = mongo_sandbox("control", &uri, "");
    for args in [
        &["backup", "--only", NAME][..],
        &["--json", "backup", "--only", NAME][..],
        &["config", "show"][..],
        &["--json", "config", "show"][..],
        &["snapshots"][..],
        &["--json", "snapshots"][..],
    ] {
        let out = run_ok(&sb, args);
        let text = all_output(&out);
        assert!(
            !text.contains(secret),
            "{}: printed the URI password:\n{text}",
            args.join(" ")
        );
        if args.contains(&"--json") {
            parse_json(&out);
        }
        if args.contains(&"config") {
            assert!(
                text.contains("backup:***@"),
                "{}: no redacted URI:\n{text}",
                args.join(" ")
            );
        }
    }
    assert_eq!(complete_sets(&sb), 2);
}

/// A config with `files.control` and `mongodb.control`: one `backup` stores both, and
/// `restore --target` brings back the tree and the mongodump directory side by side.
#[test]
fn files_and_mongodb_in_one_set() {
    let server = MongoServer::start();
    server.seed(&["control.accounts"]);
    let sb = files_and_mongo_sandbox("control", &server.uri());
    support::build_rich_tree(&sb.source(), 4096);
    let summary = run_json(&sb, &["backup"]);
    assert_eq!(summary["status"], "complete", "{summary:#}");
    assert_eq!(
        component(&summary, support::COMPONENT)["status"],
        "complete"
    );
    assert_eq!(component(&summary, NAME)["status"], "complete");
    assert_eq!(collections(&summary)["control.accounts"]["documents"], 40);

    let target = sb.root().join("restored");
    let set = Sandbox::set_id(&summary);
    run_ok(&sb, &["restore", &set, "--target", arg(&target), "--yes"]);
    support::assert_trees_equal_excluding(
        &sb.source(),
        &target.join("files/control"),
        support::DEFAULT_EXCLUDES,
    );
    let bson = target.join("mongodb/control/control/accounts.bson");
    assert!(
        fs::read(&bson).unwrap_or_default()
            == fs::read(fixture_bson("control.accounts")).expect("fixture"),
        "{} differs from the fixture",
        bson.display()
    );
}

/// A collection longer than one cursor batch (the dump asks for 1000 documents a batch, so
/// 1200 need a `getMore`) is dumped whole and restored whole in several insert batches
/// (`insert-batch = 300`: mongoeco cancels long inserts, and slows down as a collection
/// grows): every document, byte for byte, in a second server.
#[test]
fn collections_longer_than_one_batch_round_trip() {
    let source = MongoServer::start();
    for start in (0..1200).step_by(300) {
        source.insert("control.events", 300, start);
    }
    let before = source.state();
    assert_eq!(before["control.events"]["count"], 1200, "{before:#}");
    let sb = mongo_sandbox("control", &source.uri(), "insert-batch = 300\n");
    let (summary, set) = backup(&sb);
    let listed = collections(&summary);
    assert_eq!(listed["control.events"]["documents"], 1200, "{summary:#}");
    let target = MongoServer::start();
    restore_to(&sb, &set, &target.uri(), &[]);
    assert_state_eq(&target.state(), &before, "the restored server");
}
