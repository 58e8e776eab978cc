//! Backup -> restore --target round trips, deduplication, `verify --read-data` against a
//! corrupted pack, dry runs, `snapshots` and `forget --prune`.

use std::fs;

use crate::support::{
    self, COMPONENT, DEFAULT_EXCLUDES, Sandbox, assert_exit, assert_trees_equal_excluding,
    build_random_tree, build_rich_tree, component, dir_size, file_stats, parse_json, same_id,
};

/// `backup --json` reports the files component as spec'd: kind `files`, status `ok`, its
/// source path, and the count and bytes of the regular files backed up (excludes left out).
#[test]
fn backup_json_reports_the_files_component() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 100_000);
    sb.init();
    let summary = sb.backup(&[]);

    let files = component(&summary, COMPONENT);
    assert_eq!(files["kind"], "files", "{summary:#}");
    assert_eq!(files["status"], "complete", "{summary:#}");
    assert_eq!(
        files["source"],
        sb.source().to_str().expect("utf-8"),
        "{summary:#}"
    );
    let (count, bytes) = file_stats(&sb.source(), DEFAULT_EXCLUDES);
    assert_eq!(
        files["files"], count,
        "files counted (excludes left out): {summary:#}"
    );
    assert_eq!(
        files["bytes"], bytes,
        "bytes counted (excludes left out): {summary:#}"
    );
    assert!(summary["added_bytes"].is_u64(), "added_bytes: {summary:#}");
    assert!(
        summary["duration_secs"].is_number(),
        "duration_secs: {summary:#}"
    );
}

/// Backup then `restore --target` reproduces the source byte for byte: contents, modes
/// (0640, 0600, 0755, 0700 dir, 0750 root), mtimes of files and dirs, symlinks (relative,
/// absolute, dangling, to a dir), empty and nested dirs, a random blob and 300 small files;
/// `*.pid` / `*.log` files are left out.
#[test]
fn target_restore_reproduces_tree_byte_for_byte_minus_excludes() {
    let sb = Sandbox::new();
    let tree = build_rich_tree(&sb.source(), 3 * 1024 * 1024);
    sb.init();
    let summary = sb.backup(&[]);

    let target = sb.root().join("restored");
    let set = Sandbox::set_id(&summary);
    sb.ok(&["restore", &set, "--target", target.to_str().expect("utf-8")]);
    let restored = target.join("files").join("control");
    assert_trees_equal_excluding(&sb.source(), &restored, DEFAULT_EXCLUDES);
    for path in &tree.excluded {
        assert!(
            sb.source().join(path).exists(),
            "source lost {}",
            path.display()
        );
        assert!(
            fs::symlink_metadata(restored.join(path)).is_err(),
            "excluded {} was restored",
            path.display()
        );
    }
}

/// A second backup of an unchanged ~20 MiB incompressible tree grows the repository by
/// less than 1% of the data size.
#[test]
fn second_backup_of_unchanged_tree_adds_under_one_percent() {
    let sb = Sandbox::new();
    let data = build_random_tree(&sb.source(), 10, 2 * 1024 * 1024);
    sb.init();
    let first = sb.backup(&[]);
    let after_first = dir_size(&sb.repo());
    assert!(
        after_first >= data,
        "repository ({after_first} B) smaller than incompressible data ({data} B)"
    );
    let second = sb.backup(&[]);
    let after_second = dir_size(&sb.repo());
    let growth = after_second - after_first;
    assert!(
        growth * 100 < data,
        "second backup grew the repository by {growth} B, over 1% of {data} B"
    );
    assert!(
        !same_id(&Sandbox::set_id(&first), &Sandbox::set_id(&second)),
        "two backups gave the same set id"
    );
    let added = second["added_bytes"].as_u64().expect("added_bytes");
    assert!(
        added * 100 < data,
        "second backup reports added_bytes {added}"
    );
}

/// `verify --read-data` is clean on a fresh repository and, after one byte of the largest
/// pack under `data/` is flipped, exits 1 with an error finding naming the set and component.
#[test]
fn verify_read_data_detects_flipped_byte_in_pack() {
    let sb = Sandbox::new();
    build_random_tree(&sb.source(), 2, 1024 * 1024);
    sb.init();
    let set = Sandbox::set_id(&sb.backup(&[]));

    let clean = sb.json(&["verify", "--read-data"]);
    assert_eq!(clean["ok"], true, "fresh repository: {clean:#}");

    let pack = support::files_under(&sb.repo().join("data"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack file under data/");
    support::chmod(&pack, 0o644);
    let mut bytes = fs::read(&pack).expect("read pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&pack, &bytes).expect("write pack");

    let out = sb
        .cmd(&["--json", "verify", "latest", "--read-data"])
        .output()
        .expect("spawn");
    assert_exit(&out, 1, "verify --read-data after corruption");
    let report = parse_json(&out);
    assert_eq!(report["ok"], false, "{report:#}");
    let findings = report["findings"].as_array().expect("findings array");
    assert!(
        findings.iter().any(|f| f["level"] == "error"
            && f["component"] == COMPONENT
            && same_id(f["set"].as_str().unwrap_or_default(), &set)),
        "no error finding names set {set} and {COMPONENT}: {report:#}"
    );

    let human = sb.cmd(&["verify", "--read-data"]).output().expect("spawn");
    assert_exit(&human, 1, "verify --read-data (text) after corruption");
}

/// `backup --dry-run` prints a plan naming the component and writes nothing: repository
/// size and set count unchanged.
#[test]
fn dry_run_backup_writes_nothing() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 64 * 1024);
    sb.init();
    sb.backup(&[]);
    support::write_file(
        &sb.source().join("new/after-first.bin"),
        &support::random_bytes(5, 200_000),
    );
    let size = dir_size(&sb.repo());
    let sets = sb.sets().len();

    let out = sb.ok(&["backup", "--dry-run"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains(COMPONENT),
        "the plan does not name {COMPONENT}:\n{plan}"
    );
    assert_eq!(
        dir_size(&sb.repo()),
        size,
        "dry run changed the repository size"
    );
    assert_eq!(sb.sets().len(), sets, "dry run added a set");
    assert!(!sb.lock_file().exists(), "dry run left a lock behind");
}

/// `snapshots --json` lists every set with its id, time, components, bytes and status.
#[test]
fn snapshots_json_lists_every_set() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 16 * 1024);
    sb.init();
    assert!(sb.sets().is_empty(), "fresh repository lists sets");
    let first = Sandbox::set_id(&sb.backup(&[]));
    support::write_file(&sb.source().join("etc/main.conf"), b"changed\n");
    let second = Sandbox::set_id(&sb.backup(&["--tag", "nightly"]));

    let sets = sb.sets();
    assert_eq!(sets.len(), 2, "{sets:#?}");
    for id in [&first, &second] {
        let set = sets
            .iter()
            .find(|s| same_id(s["id"].as_str().unwrap_or_default(), id))
            .unwrap_or_else(|| panic!("set {id} missing from {sets:#?}"));
        assert!(
            set["time"].as_str().is_some_and(|t| !t.is_empty()),
            "time: {set:#}"
        );
        assert_eq!(set["components"], serde_json::json!([COMPONENT]), "{set:#}");
        assert_eq!(set["status"], "complete", "{set:#}");
        assert!(
            set["bytes"].as_u64().is_some_and(|b| b > 0),
            "bytes: {set:#}"
        );
    }
}

/// `forget --keep-last 1 --prune` leaves only the newest set, which still restores
/// identically and passes `verify --read-data`.
#[test]
fn forget_keep_last_prune_leaves_one_restorable_set() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 256 * 1024);
    sb.init();
    sb.backup(&[]);
    support::write_file(&sb.source().join("etc/main.conf"), b"second version\n");
    support::write_file(
        &sb.source().join("data/blob.bin"),
        &support::random_bytes(99, 300_000),
    );
    support::set_old_mtimes(&sb.source());
    let newest = Sandbox::set_id(&sb.backup(&[]));
    assert_eq!(sb.sets().len(), 2);

    sb.ok(&["forget", "--keep-last", "1", "--prune"]);
    let sets = sb.sets();
    assert_eq!(sets.len(), 1, "{sets:#?}");
    assert!(
        same_id(sets[0]["id"].as_str().unwrap_or_default(), &newest),
        "kept {} instead of the newest {newest}",
        sets[0]["id"]
    );

    let target = sb.root().join("restored");
    sb.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert_trees_equal_excluding(
        &sb.source(),
        &target.join("files").join("control"),
        DEFAULT_EXCLUDES,
    );
    sb.ok(&["verify", "--read-data"]);
}

/// `forget --keep-last 1 --dry-run` says what would go but removes no set and leaves the
/// repository size unchanged.
#[test]
fn forget_dry_run_removes_nothing() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 16 * 1024);
    sb.init();
    sb.backup(&[]);
    support::write_file(&sb.source().join("etc/main.conf"), b"second\n");
    sb.backup(&[]);
    let size = dir_size(&sb.repo());

    let out = sb.ok(&["forget", "--keep-last", "1", "--prune", "--dry-run"]);
    assert!(!out.stdout.is_empty(), "forget --dry-run printed nothing");
    assert_eq!(sb.sets().len(), 2, "forget --dry-run removed a set");
    assert_eq!(
        dir_size(&sb.repo()),
        size,
        "forget --dry-run changed the repository"
    );
}
