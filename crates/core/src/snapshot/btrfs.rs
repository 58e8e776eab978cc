//! btrfs: a read-only snapshot of the subvolume holding the data
//! (`btrfs subvolume snapshot -r`), made inside that subvolume in
//! `<subvolume>/.akbackup-snapshots/btrfs-<label>-<pid>-<random>/snap`, and deleted with
//! `btrfs subvolume delete`. A snapshot is itself a subvolume, so later snapshots of the same
//! subvolume see that directory empty: snapshots never nest. The directory is left out of
//! every backup and every restore's carry-over ([`DIR`]).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{Pending, Probe, Provider, Release, Settings, SnapshotError, same_volume, stage_in};

/// The directory at the top of a subvolume that holds akbackup's snapshots of it.
pub const DIR: &str = ".akbackup-snapshots";
/// Prefix of each snapshot's stage in [`DIR`].
const PREFIX: &str = "btrfs-";
/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
const SUBVOLUME_ROOT_INO: u64 = 256;

/// The btrfs backend.
pub struct Btrfs;

/// Where the snapshot goes: the root of the subvolume holding `data` (already resolved).
/// Every subvolume has its own device number, so the root is the highest directory above
/// `data` with the same one.
fn subvolume_root(data: &Path) -> Result<PathBuf, SnapshotError> {
    let meta = |p: &Path| {
        std::fs::metadata(p).map_err(|error| SnapshotError::Path {
            path: p.to_path_buf(),
            error,
        })
    };
    let dev = meta(data)?.dev();
    let mut root = data.to_path_buf();
    while let Some(parent) = root.parent() {
        if meta(parent)?.dev() != dev {
            break;
        }
        root = parent.to_path_buf();
    }
    if meta(&root)?.ino() != SUBVOLUME_ROOT_INO {
        return Err(SnapshotError::Path {
            path: root,
            error: std::io::Error::other(
                "is the top of the data's volume but not a btrfs subvolume root",
            ),
        });
    }
    Ok(root)
}

fn btrfs(args: &[&str], path: &Path) -> Vec<String> {
    let mut argv: Vec<String> = std::iter::once("btrfs")
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect();
    argv.push(path.display().to_string());
    argv
}

/// Deletes the snapshots in `dir` whose run died (the stage's owner lock is free), then the
/// stages; one line per snapshot released.
#[must_use]
pub fn sweep(dir: &Path) -> Vec<String> {
    crate::stage::sweep_with(dir, PREFIX, &|stage: &Path| {
        let snap = stage.join("snap");
        if snap.exists() {
            crate::service::run(&btrfs(&["subvolume", "delete"], &snap))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

impl Provider for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn validate(&self, settings: &Settings) -> Result<(), String> {
        if settings.size.is_some() || settings.volume.is_some() {
            return Err(
                "snapshot-size and snapshot-volume apply to snapshot = \"lvm\" only".to_string(),
            );
        }
        Ok(())
    }

    fn probe(&self, _settings: &Settings, paths: &[&Path]) -> Result<Probe, SnapshotError> {
        let data = same_volume(paths)?;
        let fs = nix::sys::statfs::statfs(&data).map_err(|e| SnapshotError::Path {
            path: data.clone(),
            error: e.into(),
        })?;
        if fs.filesystem_type() != nix::sys::statfs::BTRFS_SUPER_MAGIC {
            let fstype = super::mounts::holding(&data)
                .map_or_else(|_| "another filesystem".to_string(), |m| m.fstype);
            return Err(SnapshotError::NotBtrfs { path: data, fstype });
        }
        let root = subvolume_root(&data)?;
        let mount = super::mounts::holding(&root).map_err(|error| SnapshotError::Path {
            path: root.clone(),
            error,
        })?;
        let free = crate::fsutil::free_space(&root).map_err(|error| SnapshotError::Path {
            path: root.clone(),
            error,
        })?;
        Ok(Probe {
            backend: "btrfs",
            volume: format!("subvolume {} ({})", root.display(), mount.source),
            filesystem: mount.fstype,
            mount_point: mount.point,
            room: format!(
                "copy-on-write, {} free on the filesystem for the blocks that change while the backup reads",
                crate::units::human_bytes(free)
            ),
        })
    }

    fn prepare(
        &self,
        settings: &Settings,
        paths: &[&Path],
        label: &str,
    ) -> Result<Pending, SnapshotError> {
        let probe = self.probe(settings, paths)?;
        let root = subvolume_root(&same_volume(paths)?)?;
        let dir = root.join(DIR);
        let notes = sweep(&dir);
        let release = Release::new(stage_in(&dir, &format!("{PREFIX}{label}-"))?);
        let snap = release.dir.join("snap");
        let mut capture = btrfs(&["subvolume", "snapshot", "-r"], &root);
        capture.push(snap.display().to_string());
        Ok(Pending {
            release,
            capture,
            uncapture: btrfs(&["subvolume", "delete"], &snap),
            open: None,
            live_root: root,
            view_root: snap,
            described: format!("read-only {probe}"),
            notes,
        })
    }
}
