//! In-place restore (staging dir, swap, previous contents kept, restart command) and the
//! cases that must not restart: `--no-restart`, `--target`, `--dry-run`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{
    self, COMPONENT, DEFAULT_EXCLUDES, Sandbox, assert_trees_equal, assert_trees_equal_excluding,
    build_rich_tree, component, copy_tree,
};

/// A sandbox with a backed-up rich tree, a `cp -a` copy of that state at `<root>/expected`,
/// and then the source changed: one file modified, one deleted, one added, a mode changed,
/// an empty dir removed.
fn backed_up_then_changed() -> (Sandbox, PathBuf) {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 128 * 1024);
    sb.init();
    sb.backup(&[]);
    let expected = sb.root().join("expected");
    copy_tree(&sb.source(), &expected);

    support::write_file(
        &sb.source().join("etc/main.conf"),
        b"modified after backup\n",
    );
    fs::remove_file(sb.source().join("many/d0/f000.txt")).expect("delete a file");
    support::write_file(&sb.source().join("new/added.txt"), b"added after backup\n");
    support::chmod(&sb.source().join("bin/akd-worker"), 0o600);
    fs::remove_dir(sb.source().join("var/empty")).expect("remove empty dir");
    (sb, expected)
}

/// The entries next to `path` in its parent dir, other than `path` itself.
fn siblings(path: &Path) -> BTreeSet<PathBuf> {
    let parent = path.parent().expect("source has a parent");
    fs::read_dir(parent)
        .expect("read parent")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p != path)
        .collect()
}

/// `restore latest --yes` in place puts the source back exactly to the backed-up state,
/// keeps the previous contents (with the modification) at the printed sibling path, and
/// runs the restart command exactly once with `restart`.
#[test]
fn in_place_restore_returns_source_to_backed_up_state_and_restarts_once() {
    let (sb, expected) = backed_up_then_changed();
    let changed = sb.root().join("changed");
    copy_tree(&sb.source(), &changed);
    let summary = sb.json(&["restore", "latest", "--yes"]);

    assert_trees_equal_excluding(&expected, &sb.source(), DEFAULT_EXCLUDES);

    let previous = component(&summary, COMPONENT)["previous"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no components[].previous path: {summary:#}"));
    assert_ne!(
        previous,
        sb.source(),
        "previous contents path is the source itself"
    );
    assert_eq!(
        previous.parent(),
        sb.source().parent(),
        "previous contents {} are not a sibling of the source",
        previous.display()
    );
    assert_eq!(
        fs::read(previous.join("etc/main.conf")).expect("previous etc/main.conf"),
        b"modified after backup\n"
    );
    // Everything, excluded files included, is kept exactly as it was before the restore.
    assert_trees_equal(&changed, &previous);

    assert_eq!(
        sb.restart_calls(),
        vec!["restart".to_string()],
        "restart calls"
    );
}

/// With `--no-restart` an in-place restore still restores, prints where the previous
/// contents went, and never runs the restart command.
#[test]
fn in_place_restore_with_no_restart_does_not_run_restart() {
    let (sb, expected) = backed_up_then_changed();
    let before = siblings(&sb.source());
    let out = sb.ok(&["restore", "latest", "--yes", "--no-restart"]);

    assert_trees_equal_excluding(&expected, &sb.source(), DEFAULT_EXCLUDES);
    let new: Vec<PathBuf> = siblings(&sb.source())
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(
        new.len(),
        1,
        "expected one new sibling with the previous contents: {new:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = new[0].to_str().expect("utf-8");
    assert!(
        stdout.contains(shown) || stderr.contains(shown),
        "the previous-contents path {shown} is not printed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        sb.restart_calls().is_empty(),
        "restart ran: {:?}",
        sb.restart_calls()
    );
}

/// `restore --only files.control --target` writes under the target only: the source keeps
/// its changes and the restart command does not run.
#[test]
fn target_restore_does_not_run_restart() {
    let (sb, expected) = backed_up_then_changed();
    let target = sb.root().join("restored");
    sb.ok(&[
        "restore",
        "latest",
        "--only",
        "files.control",
        "--yes",
        "--target",
        target.to_str().expect("utf-8"),
    ]);

    assert_trees_equal_excluding(&expected, &target.join("files/control"), DEFAULT_EXCLUDES);
    assert_eq!(
        fs::read(sb.source().join("etc/main.conf")).expect("source etc/main.conf"),
        b"modified after backup\n",
        "a --target restore touched the source"
    );
    assert!(
        sb.restart_calls().is_empty(),
        "restart ran: {:?}",
        sb.restart_calls()
    );
}

/// `restore latest --dry-run --yes` prints a plan and changes nothing: the source keeps its
/// changes, no sibling dir appears, no restart.
#[test]
fn in_place_restore_dry_run_changes_nothing() {
    let (sb, _expected) = backed_up_then_changed();
    let before = siblings(&sb.source());
    let out = sb.ok(&["restore", "latest", "--dry-run", "--yes"]);

    assert!(!out.stdout.is_empty(), "dry run printed no plan");
    assert_eq!(
        fs::read(sb.source().join("etc/main.conf")).expect("source etc/main.conf"),
        b"modified after backup\n"
    );
    assert!(
        sb.source().join("new/added.txt").exists(),
        "dry run removed a file"
    );
    assert_eq!(
        siblings(&sb.source()),
        before,
        "dry run created a sibling dir"
    );
    assert!(
        sb.restart_calls().is_empty(),
        "restart ran: {:?}",
        sb.restart_calls()
    );
}

/// Numeric owners (uid:gid of files, dirs and symlinks, foreign ids included) survive both a
/// `--target` restore and an in-place restore. Needs root to chown, as CI has.
#[test]
fn ownership_survives_target_and_in_place_restore() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 4 * 1024);
    let owned = [
        ("etc/main.conf", 1234, 5678),
        ("private", 2345, 2345),
        ("private/secret.key", 2345, 2345),
        ("var/empty", 0, 4321),
    ];
    for (path, uid, gid) in owned {
        std::os::unix::fs::chown(sb.source().join(path), Some(uid), Some(gid)).unwrap_or_else(
            |e| panic!("chown {path} to {uid}:{gid} (this test needs root, as CI has): {e}"),
        );
    }
    std::os::unix::fs::lchown(sb.source().join("links/relative"), Some(3333), Some(4444))
        .expect("lchown a symlink (needs root)");
    support::set_old_mtimes(&sb.source());
    sb.init();
    sb.backup(&[]);
    let expected = sb.root().join("expected");
    copy_tree(&sb.source(), &expected);

    let target = sb.root().join("restored");
    sb.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert_trees_equal_excluding(&expected, &target.join("files/control"), DEFAULT_EXCLUDES);

    for (path, _, _) in owned {
        std::os::unix::fs::chown(sb.source().join(path), Some(0), Some(0)).expect("chown back");
    }
    sb.ok(&["restore", "latest", "--yes", "--no-restart"]);
    assert_trees_equal_excluding(&expected, &sb.source(), DEFAULT_EXCLUDES);
}
