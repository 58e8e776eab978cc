//! The standard `restic` client reads what `akbackup` wrote: the repository is plain restic
//! format, each set one snapshot tagged `akbackup` holding the source under its absolute path.
//! These tests fail (never skip) when `restic` is missing: scripts/test installs it.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::{DEFAULT_EXCLUDES, Sandbox, assert_trees_equal_excluding, build_rich_tree};

/// A sandbox whose source (a rich tree) has been backed up once with `--tag nightly`.
fn backed_up() -> Sandbox {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 512 * 1024);
    sb.init();
    sb.backup(&["--tag", "nightly"]);
    sb
}

/// Runs a prepared `restic` command and asserts it succeeded.
fn run_restic(sb: &Sandbox, args: &[&str]) -> Output {
    let out = sb.restic().args(args).output().expect("spawn restic");
    assert!(
        out.status.success(),
        "restic {} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `restic snapshots --json` sees exactly the one set, with the source path and the tags
/// `akbackup` and `nightly`.
#[test]
fn restic_lists_the_set_with_source_path_and_tag() {
    let sb = backed_up();
    let out = run_restic(&sb, &["snapshots", "--json"]);
    let snapshots: Vec<Value> = serde_json::from_slice(&out.stdout).expect("restic JSON");
    assert_eq!(
        snapshots.len(),
        1,
        "one set is one snapshot: {snapshots:#?}"
    );
    let snapshot = &snapshots[0];
    let source = sb.source();
    let source = source.to_str().expect("utf-8");
    assert!(
        snapshot["paths"]
            .as_array()
            .is_some_and(|paths| paths.iter().any(|p| p == source)),
        "snapshot paths lack {source}: {snapshot:#}"
    );
    for tag in ["akbackup", "nightly"] {
        assert!(
            snapshot["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|t| t == tag)),
            "snapshot tags lack {tag}: {snapshot:#}"
        );
    }
}

/// `restic restore latest --target T` yields `T/<absolute source path>` identical to the
/// source (contents, modes, mtimes, symlinks) minus the excluded files.
#[test]
fn restic_restore_reproduces_the_source_tree() {
    let sb = backed_up();
    let target = sb.root().join("restic-restore");
    run_restic(
        &sb,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ],
    );
    let source = sb.source();
    let restored = target.join(
        source
            .strip_prefix(Path::new("/"))
            .expect("absolute source"),
    );
    assert_trees_equal_excluding(&source, &restored, DEFAULT_EXCLUDES);
}

/// `restic check --read-data` finds nothing wrong with a repository `akbackup` wrote.
#[test]
fn restic_check_read_data_passes() {
    let sb = backed_up();
    run_restic(&sb, &["check", "--read-data"]);
}
