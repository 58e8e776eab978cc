//! Owners, groups and special mode bits survive a round trip; unreadable files fail the set
//! (or are skipped with a warning when the config says so).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::support::*;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests change file owners and run akbackup as another user: run them as root (CI does)"
    );
}

/// A restore as root gives every file, directory and symlink its original uid and gid, and
/// keeps setgid and sticky bits.
#[test]
fn target_restore_keeps_owners_groups_and_special_bits() {
    require_root();
    let sb = Sandbox::new();
    let src = sb.source();
    write_file(&src.join("conf/app.conf"), b"owned by 1234:2345\n");
    write_file(&src.join("shared/drop/readme"), b"setgid dir\n");
    symlink("../conf/app.conf", &src.join("shared/link"));
    chown(&src.join("conf/app.conf"), 1234, 2345);
    chown(&src.join("conf"), 4321, 4321);
    chown(&src.join("shared/link"), 777, 888);
    std::fs::set_permissions(
        src.join("shared/drop"),
        std::fs::Permissions::from_mode(0o2775),
    )
    .unwrap();
    std::fs::set_permissions(src.join("shared"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    sb.init();
    sb.backup(&[]);
    let target = sb.root().join("restored");
    sb.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let got = target.join("files/control");
    let meta = |p: &str| std::fs::symlink_metadata(got.join(p)).unwrap();
    assert_eq!(
        (meta("conf/app.conf").uid(), meta("conf/app.conf").gid()),
        (1234, 2345)
    );
    assert_eq!((meta("conf").uid(), meta("conf").gid()), (4321, 4321));
    assert_eq!(
        (meta("shared/link").uid(), meta("shared/link").gid()),
        (777, 888)
    );
    assert_eq!(meta("shared/drop").mode() & 0o7777, 0o2775);
    assert_eq!(meta("shared").mode() & 0o7777, 0o1777);
    assert_trees_equal(&src, &got);
}

/// Runs the binary as user `nobody` (65534) so that a mode-000 file is really unreadable.
fn as_nobody(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        env!("CARGO_BIN_EXE_akbackup"),
        "--json",
    ])
    .args(args)
    .env("AKBACKUP_CONFIG", sb.config_path())
    .env_remove("AKBACKUP_PASSWORD")
    .env("HOME", sb.root())
    .current_dir(sb.root());
    cmd.output().expect("run setpriv")
}

fn nobody_sandbox(on_read_error: &str) -> Sandbox {
    require_root();
    let sb = Sandbox::new();
    write_file(&sb.source().join("ok.conf"), b"fine\n");
    write_file(&sb.source().join("secret/unreadable.bin"), b"root only\n");
    chmod(&sb.source().join("secret/unreadable.bin"), 0o000);
    let mut config = sb.default_config();
    config.push_str(&format!("on-read-error = \"{on_read_error}\"\n"));
    sb.write_config(&config);
    std::fs::set_permissions(sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(sb.repo()).unwrap();
    chown(&sb.repo(), 65534, 65534);
    chown(&sb.password_file(), 65534, 65534);
    // The config is 0600 (as one holding a secret must be): nobody reads it as its owner.
    chown(&sb.config_path(), 65534, 65534);
    let out = as_nobody(&sb, &["init"]);
    assert_exit(&out, 0, "init as nobody");
    sb
}

/// A file the backup cannot read fails the component by default: exit 1, the file is named,
/// and no set is recorded.
#[test]
fn unreadable_file_fails_the_set_and_names_the_file() {
    let sb = nobody_sandbox("fail");
    let out = as_nobody(&sb, &["backup"]);
    assert_exit(&out, 1, "backup with an unreadable file");
    let summary = parse_json(&out);
    assert_eq!(summary["status"], "failed", "{summary:#}");
    assert!(summary["set"].is_null(), "{summary:#}");
    let errors = component(&summary, COMPONENT)["errors"].to_string();
    assert!(errors.contains("unreadable.bin"), "{errors}");
    let sets = as_nobody(&sb, &["snapshots"]);
    assert_exit(&sets, 0, "snapshots");
    assert_eq!(parse_json(&sets), serde_json::json!([]));
}

/// With `on-read-error = "skip"` the set completes with a warning naming the skipped file,
/// and its manifest counts only what was stored.
#[test]
fn unreadable_file_is_skipped_with_a_warning_when_configured() {
    let sb = nobody_sandbox("skip");
    let out = as_nobody(&sb, &["backup"]);
    assert_exit(&out, 0, "backup skipping an unreadable file");
    let summary = parse_json(&out);
    assert_eq!(summary["status"], "warning", "{summary:#}");
    let warnings = component(&summary, COMPONENT)["warnings"].to_string();
    assert!(
        warnings.contains("skipped") && warnings.contains("unreadable.bin"),
        "{warnings}"
    );
    assert_eq!(component(&summary, COMPONENT)["files"], 1, "{summary:#}");
    // The manifest counts what was stored, so verify agrees with it.
    assert_exit(
        &as_nobody(&sb, &["verify"]),
        0,
        "verify after a skipped file",
    );
}

fn chown(path: &std::path::Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// A restore as root keeps a setuid-root file's 4755 and a setgid directory's 2775 (their
/// owners are restored too) and says so, by path, in the text report and in `--json`.
#[test]
fn root_restore_keeps_setuid_and_names_each_file_it_kept_it_on() {
    require_root();
    let sb = Sandbox::new();
    let src = sb.source();
    write_file(&src.join("bin/helper"), b"#!/bin/sh\n");
    write_file(&src.join("shared/drop/readme"), b"setgid dir\n");
    chmod(&src.join("bin/helper"), 0o4755);
    chmod(&src.join("shared/drop"), 0o2775);
    sb.init();
    sb.backup(&[]);
    let helper = format!("{} (4755)", src.join("bin/helper").display());
    let drop = format!("{} (2775)", src.join("shared/drop").display());

    let target = sb.root().join("restored");
    let out = sb.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    for kept in [&helper, &drop] {
        assert!(
            text.contains(&format!("kept setuid/setgid (owner restored): {kept}")),
            "{text}"
        );
    }
    let got = target.join("files/control");
    let mode = |p: &str| std::fs::metadata(got.join(p)).unwrap().mode() & 0o7777;
    assert_eq!((mode("bin/helper"), mode("shared/drop")), (0o4755, 0o2775));

    let target = sb.root().join("restored-json");
    let summary = sb.json(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let written = &summary["components"][0]["written"];
    assert_eq!(
        written["special_kept"],
        serde_json::json!([helper, drop]),
        "{summary:#}"
    );
    assert_eq!(
        written["special_stripped"],
        serde_json::json!([]),
        "{summary:#}"
    );
}

/// A restore by a user who cannot restore owners drops setuid and setgid (the file would
/// otherwise run with that user's identity for anyone) and lists each file it dropped them
/// from; the rest of the mode is kept.
#[test]
fn restore_without_owners_drops_setuid_and_says_so() {
    require_root();
    let sb = Sandbox::new();
    write_file(&sb.source().join("bin/helper"), b"#!/bin/sh\n");
    chmod(&sb.source().join("bin/helper"), 0o4755);
    std::fs::set_permissions(sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(sb.repo()).unwrap();
    chown(&sb.repo(), 65534, 65534);
    chown(&sb.password_file(), 65534, 65534);
    // The config is 0600 (as one holding a secret must be): nobody reads it as its owner.
    chown(&sb.config_path(), 65534, 65534);
    assert_exit(&as_nobody(&sb, &["init"]), 0, "init as nobody");
    assert_exit(&as_nobody(&sb, &["backup"]), 0, "backup as nobody");
    let target = sb.root().join("restored");
    std::fs::create_dir_all(&target).unwrap();
    chown(&target, 65534, 65534);
    chmod(&target, 0o700);
    let out = as_nobody(
        &sb,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_exit(&out, 0, "restore as nobody");
    let summary = parse_json(&out);
    let written = &summary["components"][0]["written"];
    let helper = format!("{} (4755)", sb.source().join("bin/helper").display());
    assert_eq!(
        written["special_stripped"],
        serde_json::json!([helper]),
        "{summary:#}"
    );
    assert_eq!(
        written["special_kept"],
        serde_json::json!([]),
        "{summary:#}"
    );
    let restored = target.join("files/control/bin/helper");
    assert_eq!(std::fs::metadata(restored).unwrap().mode() & 0o7777, 0o755);
}
