//! Disk-full campaign: the repository (and with it the backup's staging directory) on a
//! 20 MiB tmpfs, then more data than fits. The backup must exit 1 with one line saying which
//! path is full and how much was needed, leave the repository valid and remove its staging.
//! A restore into a full target is refused the same way. Needs root (`mount -t tmpfs`),
//! which the CI runs as.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Campaign, expect_exit, one_line, run};
use crate::support::{self, Sandbox, build_random_tree, build_rich_tree};

/// A size-limited tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("spawn mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (the campaign needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Entries whose name starts with `.akbackup-` directly under `dir`.
fn staging_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".akbackup-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Several shapes of "does not fit": a backup of 30 MB into 20 MiB (with `--force` past the
/// free-space check, and without it), the same after a first set filled part of the disk,
/// and a restore `--target` onto a full filesystem.
#[test]
fn disk_full() {
    let sb = Sandbox::new();
    let mnt = sb.root().join("small");
    let _fs = Tmpfs::mount(&mnt, "20m");
    let repo = mnt.join("repo");
    sb.write_config(
        &sb.default_config()
            .replace(&support::toml_str(&sb.repo()), &support::toml_str(&repo)),
    );
    build_rich_tree(&sb.source(), 16 * 1024);
    sb.init();
    super::cheap_key(&repo);
    // A first set that fits (~2 MB).
    build_random_tree(&sb.source().join("first"), 4, 512 * 1024);
    let out = run(&sb, &["backup", "--force"]);
    expect_exit(&out, 0, "first backup").expect("first set fits");
    build_random_tree(&sb.source().join("big"), 30, 1024 * 1024);
    let mut c = Campaign::new("disk-full");

    // Without --force: refused before anything is written, naming the path and the need.
    let out = run(&sb, &["backup"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    c.record(
        "backup without --force",
        expect_exit(&out, 2, "backup").and_then(|()| {
            if err.lines().count() == 1
                && err.contains(&repo.display().to_string())
                && err.contains("needed")
            {
                Ok(one_line(err.as_bytes()))
            } else {
                Err(format!("message: {err}"))
            }
        }),
    );

    for trial in 0..3 {
        let out = run(&sb, &["backup", "--force"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let outcome = (|| {
            expect_exit(&out, 1, "backup --force")?;
            let errors: Vec<&str> = err
                .lines()
                .filter(|l| !l.contains("akbackup: files.control: preparing"))
                .collect();
            let line = errors
                .iter()
                .find(|l| l.contains("no space"))
                .ok_or_else(|| format!("no 'no space' line: {err}"))?;
            if !(line.contains(&mnt.display().to_string()) && line.contains("needed")) {
                return Err(format!(
                    "the line does not say which path is full and how much was needed: {line}"
                ));
            }
            let left = staging_left(&repo);
            if !left.is_empty() {
                return Err(format!("staging left in the repository: {left:?}"));
            }
            let out = run(&sb, &["verify", "--read-data"]);
            expect_exit(&out, 0, "verify --read-data after ENOSPC")?;
            let sets = super::sets(&sb, None)?;
            if sets.len() != 1 {
                return Err(format!("{} sets listed", sets.len()));
            }
            Ok((*line).to_string())
        })();
        c.record(&format!("backup --force #{trial}"), outcome);
    }

    // Restore to a target on the full filesystem: refused, nothing half written kept.
    let filler = mnt.join("filler");
    let free = nix::sys::statvfs::statvfs(&mnt).expect("statvfs");
    let avail = free.blocks_available() * free.fragment_size();
    let _ = std::fs::write(
        &filler,
        vec![0u8; usize::try_from(avail.saturating_sub(256 * 1024)).expect("fits")],
    );
    let target = mnt.join("target");
    let out = run(
        &sb,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ],
    );
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    c.record(
        "restore --target on a full filesystem",
        (|| {
            if out.status.code() == Some(0) {
                return Err("restore succeeded on a full disk".to_string());
            }
            if !(err.contains(&mnt.display().to_string()) && err.contains("needed")) {
                return Err(format!("message: {err}"));
            }
            Ok(one_line(err.as_bytes()))
        })(),
    );
    let _ = std::fs::remove_file(&filler);
    c.finish();
}
