//! LVM: a snapshot of the logical volume holding the data, mounted read-only.
//!
//! The volume is the mount table's device for the data (or `snapshot-volume`), asked of
//! `lvs`. A thin volume gets a thin snapshot (no size; `--setactivationskip n` so it can be
//! activated and mounted); a classic one gets a snapshot with `snapshot-size` of room for the
//! changes made while it exists (default 10% of the origin), refused before anything is made
//! when the volume group has less free. The snapshot is named after its stage,
//! `akbackup-snap-<pid>-<random>`, and mounted on that stage in `/run/akbackup`, read-only, with
//! `nouuid` on XFS (the snapshot carries the origin's UUID, which XFS refuses twice). Release
//! is `umount`, then `lvremove -f`.

use std::path::{Path, PathBuf};

use super::{
    Probe, Provider, Settings, Snapshot, SnapshotError, mounts, parse_size, same_volume, stage_in,
    step,
};

/// Where snapshots are mounted, one stage each, unless `AKBACKUP_RUN_DIR` says otherwise (for
/// tests, which must not sweep each other's leftovers).
pub const RUN_DIR: &str = "/run/akbackup";

fn run_dir() -> PathBuf {
    std::env::var_os("AKBACKUP_RUN_DIR").map_or_else(|| PathBuf::from(RUN_DIR), PathBuf::from)
}
/// Prefix of each stage, and of each snapshot volume's name.
const PREFIX: &str = "akbackup-snap-";
/// A classic snapshot's room when `snapshot-size` is not set: 10% of the origin.
const DEFAULT_SIZE: &str = "10%";

/// The LVM backend.
pub struct Lvm;

/// What `lvs` says of a logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Volume {
    vg: String,
    lv: String,
    size: u64,
    vg_free: u64,
    /// The thin pool, empty for a classic volume.
    pool: String,
}

fn text(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_string()).collect()
}

/// Asks `lvs` about `target` (`vg0/mongo` or a device path).
fn lvs(target: &str) -> Result<Volume, SnapshotError> {
    let mut argv = text(&[
        "lvs",
        "--noheadings",
        "--nosuffix",
        "--units",
        "b",
        "--separator",
        "|",
        "-o",
        "vg_name,lv_name,lv_size,vg_free,pool_lv",
    ]);
    argv.push(target.to_string());
    let out = crate::service::output(&argv).map_err(|error| SnapshotError::Command { error })?;
    parse_lvs(&out).ok_or_else(|| {
        SnapshotError::Lvm(format!(
            "`lvs` did not describe {target} as a logical volume (it printed {:?}): set snapshot-volume = \"VG/LV\"",
            out.trim()
        ))
    })
}

fn parse_lvs(out: &str) -> Option<Volume> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let f: Vec<&str> = line.split('|').map(str::trim).collect();
    let [vg, lv, size, free, pool] = f.as_slice() else {
        return None;
    };
    Some(Volume {
        vg: (*vg).to_string(),
        lv: (*lv).to_string(),
        size: size.parse().ok()?,
        vg_free: free.parse().ok()?,
        pool: (*pool).to_string(),
    })
}

/// The volume and how much room its snapshot needs (0: thin).
fn plan(
    settings: &Settings,
    paths: &[&Path],
) -> Result<(Volume, mounts::Mount, u64, Probe), SnapshotError> {
    let data = same_volume(paths)?;
    let mount = mounts::holding(&data).map_err(|error| SnapshotError::Path {
        path: data.clone(),
        error,
    })?;
    let target = settings
        .volume
        .clone()
        .unwrap_or_else(|| mount.source.clone());
    let vol = lvs(&target)?;
    let name = format!("{}/{}", vol.vg, vol.lv);
    let (need, room) = if vol.pool.is_empty() {
        let asked = settings.size.as_deref().unwrap_or(DEFAULT_SIZE);
        let need = parse_size(asked, vol.size).map_err(SnapshotError::Lvm)?;
        if vol.vg_free < need {
            return Err(SnapshotError::NoRoom {
                vg: vol.vg,
                lv: name,
                free: crate::units::human_bytes(vol.vg_free),
                need: crate::units::human_bytes(need),
            });
        }
        let room = format!(
            "classic snapshot with {} for changes (snapshot-size {asked}), volume group {} has {} free",
            crate::units::human_bytes(need),
            vol.vg,
            crate::units::human_bytes(vol.vg_free)
        );
        (need, room)
    } else {
        (0, format!("thin snapshot in pool {}", vol.pool))
    };
    let probe = Probe {
        backend: "lvm",
        volume: format!("LV {name} ({target})"),
        filesystem: mount.fstype.clone(),
        mount_point: mount.point.clone(),
        room,
    };
    Ok((vol, mount, need, probe))
}

/// Unmounts and removes the snapshots whose run died (their stage's owner lock is free), then
/// the stages; one line per snapshot released.
#[must_use]
pub fn sweep(dir: &Path) -> Vec<String> {
    crate::stage::sweep_with(dir, PREFIX, &|stage: &Path| {
        if mounts::is_mount_point(stage) {
            crate::service::run(&umount(stage)).map_err(|e| e.to_string())?;
        }
        let name = stage
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let all = crate::service::output(&text(&[
            "lvs",
            "--noheadings",
            "--separator",
            "|",
            "-o",
            "vg_name,lv_name",
        ]))
        .map_err(|e| e.to_string())?;
        for line in all.lines() {
            if let Some((vg, lv)) = line.trim().split_once('|')
                && lv.trim() == name
            {
                crate::service::run(&lvremove(vg.trim(), &name)).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

fn umount(dir: &Path) -> Vec<String> {
    vec!["umount".to_string(), dir.display().to_string()]
}

fn lvremove(vg: &str, lv: &str) -> Vec<String> {
    text(&["lvremove", "-f", &format!("{vg}/{lv}")])
}

impl Provider for Lvm {
    fn probe(&self, settings: &Settings, paths: &[&Path]) -> Result<Probe, SnapshotError> {
        plan(settings, paths).map(|(_, _, _, probe)| probe)
    }

    fn take(
        &self,
        settings: &Settings,
        paths: &[&Path],
        _label: &str,
    ) -> Result<Snapshot, SnapshotError> {
        let (vol, mount, need, probe) = plan(settings, paths)?;
        let dir = run_dir();
        let notes = sweep(&dir);
        let stage = stage_in(&dir, PREFIX)?;
        let name = stage
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let origin = format!("{}/{}", vol.vg, vol.lv);
        let mut create = text(&["lvcreate", "--snapshot", "--name", &name]);
        if need == 0 {
            create.extend(text(&["--setactivationskip", "n"]));
        } else {
            create.extend(text(&["--size", &format!("{need}b")]));
        }
        create.push(origin);
        let remove = step(lvremove(&vol.vg, &name));
        if let Err(error) = crate::service::run(&create) {
            remove.guard.disarm();
            return Err(SnapshotError::Command { error });
        }
        let mut options = "ro".to_string();
        if mount.fstype == "xfs" {
            options.push_str(",nouuid");
        }
        let unmount = step(umount(stage.path()));
        let mount_argv = vec![
            "mount".to_string(),
            "-o".to_string(),
            options,
            format!("/dev/{}/{name}", vol.vg),
            stage.path().display().to_string(),
        ];
        if let Err(error) = crate::service::run(&mount_argv) {
            unmount.guard.disarm();
            // `remove` drops here: the snapshot volume goes.
            return Err(SnapshotError::Command { error });
        }
        Ok(Snapshot {
            live_root: mount.point,
            view_root: stage.path().to_path_buf(),
            described: format!("read-only {probe}, as {}/{name}", vol.vg),
            notes,
            steps: vec![unmount, remove],
            stage: Some(stage),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvs_lines_with_and_without_a_pool() {
        let v = parse_lvs("  vg0|mongo|10737418240|5368709120|\n").unwrap();
        assert_eq!(
            (v.vg.as_str(), v.lv.as_str(), v.size, v.pool.as_str()),
            ("vg0", "mongo", 10 << 30, "")
        );
        assert_eq!(v.vg_free, 5 << 30);
        assert_eq!(parse_lvs("vg0|data|100|0|pool0").unwrap().pool, "pool0");
        assert!(parse_lvs("").is_none());
        assert!(parse_lvs("vg0|data").is_none());
    }
}
