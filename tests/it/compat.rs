//! Sets written by an earlier release still list, verify and restore with this binary.
//!
//! `tests/fixtures/compat-0.1.0-2d1f488/` holds a repository that akbackup 0.1.0 (commit
//! 2d1f488, the release before the component kinds moved into one registry) wrote: one set
//! with the control module, an SSDB store written through LevelDB and a MongoDB instance on
//! the wire-protocol test server, plus `expected.json`, what the data was when the set was
//! taken (file contents, LevelDB key counts, the MongoDB state). The repository is copied
//! into a sandbox before use, so the fixture itself is never written to.
//!
//! The fixture was made by [`make_fixture`], which is a generator, not a test: run it with
//! the earlier binary to write a new fixture directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::leveldb::{count, fill};
use crate::support::mongo::{MongoServer, mongo_section};
use crate::support::{Sandbox, assert_exit, copy_tree, parse_json, toml_str, write_file};

const FIXTURE: &str = "tests/fixtures/compat-0.1.0-2d1f488";
const NS: &str = "control.campaigns";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

/// The control module's files: small, deterministic, nested, no empty directories (git keeps
/// none), plus a `*.log` the default excludes leave out.
fn control_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    files.insert("conf/main.json".into(), "{\"ok\": true}\n".into());
    files.insert("templates/a.html".into(), "<p>a</p>\n".into());
    for i in 0..12 {
        files.insert(
            format!("templates/deep/t{i}.html"),
            format!("<p>template {i}</p>\n").repeat(40 + i),
        );
    }
    files
}

/// The sandbox config: its repository, the control module at `source`, the store at
/// `store` and a MongoDB instance at `uri`. A set locates a component by the path it was
/// read from, so a restore from the fixture names the paths the fixture's sandbox had.
fn config(sb: &Sandbox, source: &Path, store: &Path, uri: &str) -> String {
    format!(
        "[repository]\npath = {repo}\npassword-file = {pw}\n\n\
         [files.control]\npath = {src}\nrestart = []\n\n\
         [ssdb.actions]\npath = {store}\n\n{mongo}",
        repo = toml_str(&sb.repo()),
        pw = toml_str(&sb.password_file()),
        src = toml_str(source),
        store = toml_str(store),
        mongo = mongo_section("control", uri, "timeout = 3\n")
    )
}

/// Writes a new fixture with the binary named by `AKBACKUP_FIXTURE_BIN` (an earlier release)
/// into `AKBACKUP_FIXTURE_OUT`. A generator, run by hand:
/// `AKBACKUP_FIXTURE_BIN=/tmp/old/akbackup AKBACKUP_FIXTURE_OUT=tests/fixtures/NEW
/// cargo test --test it compat::make_fixture -- --ignored`.
#[test]
#[ignore = "a generator for the fixture, run by hand with an earlier binary"]
fn make_fixture() {
    let bin = std::env::var("AKBACKUP_FIXTURE_BIN").expect("AKBACKUP_FIXTURE_BIN");
    let out_dir = PathBuf::from(std::env::var("AKBACKUP_FIXTURE_OUT").expect("OUT"));
    let sb = Sandbox::new();
    for (rel, text) in control_files() {
        write_file(&sb.source().join(rel), text.as_bytes());
    }
    write_file(&sb.source().join("akd.log"), b"excluded\n");
    let store = sb.root().join("var/lib/ssdb/actions");
    fill(&store, 0.05, 7, false);
    let mongo = MongoServer::start();
    mongo.insert(NS, 25, 0);
    sb.write_config(&config(&sb, &sb.source(), &store, &mongo.uri()));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .args(args)
            .env("AKBACKUP_CONFIG", sb.config_path())
            .env("XDG_CACHE_HOME", sb.root().join("cache"))
            .current_dir(sb.root())
            .output()
            .expect("spawn the earlier binary");
        assert_exit(&out, 0, &format!("earlier akbackup {}", args.join(" ")));
        out
    };
    run(&["init"]);
    let summary = parse_json(&run(&["--json", "backup"]));
    assert_eq!(summary["status"], "complete", "{summary:#}");
    let version = String::from_utf8_lossy(&run(&["--version"]).stdout)
        .trim()
        .to_string();
    let expected = json!({
        "written_by": version,
        "set": summary["set"],
        "files": control_files(),
        "ssdb_actions": count(&store),
        "mongo": mongo.state(),
        "components": ["files.control", "mongodb.control", "ssdb.actions"],
        "paths": { "files.control": sb.source(), "ssdb.actions": store },
    });
    fs::create_dir_all(&out_dir).expect("mkdir");
    copy_tree(&sb.repo(), &out_dir.join("repo"));
    let _ = fs::remove_file(out_dir.join("repo/akbackup.lock"));
    fs::write(
        out_dir.join("expected.json"),
        serde_json::to_string_pretty(&expected).expect("json"),
    )
    .expect("write expected.json");
}

/// Reads `DIR`'s regular files as `rel -> text`.
fn read_tree(dir: &Path) -> BTreeMap<String, String> {
    crate::support::files_under(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let rel = p.strip_prefix(dir).expect("under").display().to_string();
            (rel, fs::read_to_string(&p).expect("read"))
        })
        .collect()
}

/// A set written by 0.1.0 lists with its three components, passes `verify --read-data
/// --deep`, restores to a target (files equal, the store opens with the same key counts, the
/// dump is a mongodump directory) and loads into a fresh MongoDB server with the state it
/// had.
#[test]
fn sets_written_by_0_1_0_list_verify_and_restore() {
    let expected: Value = serde_json::from_slice(
        &fs::read(fixture().join("expected.json")).expect("read expected.json"),
    )
    .expect("expected.json");
    let sb = Sandbox::new();
    copy_tree(&fixture().join("repo"), &sb.repo());
    let path = |name: &str| PathBuf::from(expected["paths"][name].as_str().expect("a path"));
    let mongo = MongoServer::start();
    sb.write_config(&config(
        &sb,
        &path("files.control"),
        &path("ssdb.actions"),
        &mongo.uri(),
    ));

    let sets = sb.sets();
    assert_eq!(sets.len(), 1, "{sets:#?}");
    let set = &sets[0];
    assert!(
        crate::support::same_id(
            set["id"].as_str().expect("id"),
            expected["set"].as_str().expect("set")
        ),
        "{set:#}"
    );
    let mut names: Vec<&str> = set["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| c.as_str().expect("a component name"))
        .collect();
    names.sort_unstable();
    assert_eq!(json!(names), expected["components"], "{set:#}");

    let verify = sb
        .cmd(&["--json", "verify", "--read-data", "--deep"])
        .output()
        .expect("spawn");
    assert_exit(&verify, 0, "verify --read-data --deep of a 0.1.0 set");

    let target = sb.root().join("restored");
    let out = sb
        .cmd(&[
            "--json",
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ])
        .output()
        .expect("spawn");
    assert_exit(&out, 0, "restore --target of a 0.1.0 set");
    let files: BTreeMap<String, String> =
        serde_json::from_value(expected["files"].clone()).expect("files");
    assert_eq!(read_tree(&target.join("files/control")), files);
    assert_eq!(
        count(&target.join("ssdb/actions")),
        expected["ssdb_actions"]
    );
    assert!(
        target
            .join("mongodb/control/control/campaigns.bson")
            .is_file(),
        "the dump is a mongodump directory: {:?}",
        crate::support::files_under(&target.join("mongodb"))
    );

    // The text forms print the MongoDB facts of the 0.1.0 manifest and of the load.
    let shown = sb.ok(&["snapshots", "latest"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("consistency: ") && shown.contains(NS) && shown.contains("25 docs"),
        "{shown}"
    );
    let out = sb
        .cmd(&[
            "restore",
            "latest",
            "--only",
            "mongodb.control",
            "--no-restart",
            "--yes",
        ])
        .output()
        .expect("spawn");
    assert_exit(&out, 0, "restore of a 0.1.0 MongoDB dump into a server");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{NS} -> {NS}")) && text.contains("25 documents"),
        "{text}"
    );
    crate::support::mongo::assert_state_eq(&mongo.state(), &expected["mongo"], "0.1.0 set");
}
