//! A real btrfs filesystem for one test: a sparse image in the test's temp dir, `mkfs.btrfs`,
//! loop-mounted as root, with a subvolume for the data. Unmounted on drop (after deleting any
//! subvolume left in it, so a failing test leaves no mount behind).
//!
//! `scripts/test` installs `btrfs-progs`; a machine without it fails the test. A kernel that
//! refuses the loop mount (no root, no loop devices, no btrfs module) makes [`Btrfs::new`]
//! return `None` after printing why, loudly: the caller then skips, and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted btrfs filesystem.
pub struct Btrfs {
    mount: PathBuf,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

impl Btrfs {
    /// Makes a 512 MiB btrfs image under `dir` and mounts it at `dir/mnt`; `None` (after
    /// printing `SKIPPED` and the reason) when the kernel refuses the mount.
    pub fn new(dir: &Path) -> Option<Self> {
        let image = dir.join("btrfs.img");
        let mount = dir.join("mnt");
        std::fs::create_dir_all(&mount).expect("create mount point");
        run(Command::new("truncate").args(["-s", "512M"]).arg(&image)).expect("truncate");
        run(Command::new("mkfs.btrfs").arg("-q").arg(&image))
            .expect("mkfs.btrfs (from btrfs-progs, which scripts/test installs)");
        if let Err(why) = run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))
        {
            eprintln!(
                "SKIPPED: the kernel refused to loop-mount a btrfs image (root, loop devices and \
                 the btrfs module are needed): {why}"
            );
            return None;
        }
        Some(Self { mount })
    }

    /// Creates subvolume `name` at the top of the filesystem.
    pub fn subvolume(&self, name: &str) -> PathBuf {
        let path = self.mount.join(name);
        run(Command::new("btrfs")
            .args(["subvolume", "create"])
            .arg(&path))
        .expect("btrfs subvolume create");
        path
    }

    /// The paths of every subvolume in the filesystem, relative to its top.
    pub fn subvolumes(&self) -> Vec<String> {
        let all = Command::new("btrfs")
            .args(["subvolume", "list"])
            .arg(&self.mount)
            .output()
            .expect("btrfs subvolume list");
        String::from_utf8_lossy(&all.stdout)
            .lines()
            .filter_map(|l| l.split(" path ").nth(1).map(str::to_string))
            .collect()
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let mut subs = self.subvolumes();
        // Nested ones first.
        subs.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in subs {
            let _ = Command::new("btrfs")
                .args(["subvolume", "delete"])
                .arg(self.mount.join(s))
                .output();
        }
        let _ = Command::new("umount").arg(&self.mount).output();
    }
}
