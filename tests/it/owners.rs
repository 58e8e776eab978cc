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
