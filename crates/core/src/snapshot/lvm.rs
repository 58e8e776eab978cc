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
    Pending, Probe, Provider, Release, Settings, SnapshotError, mounts, parse_size, same_volume,
    stage_in,
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
    /// The device numbers of the active volume (`None` when inactive or not reported).
    device: Option<(u64, u64)>,
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
        "vg_name,lv_name,lv_size,vg_free,pool_lv,lv_kernel_major,lv_kernel_minor",
    ]);
    argv.push(target.to_string());
    let out = crate::service::output(&argv).map_err(|error| {
        SnapshotError::command(error, "is LVM installed, and is akbackup root?")
    })?;
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
    let [vg, lv, size, free, pool, major, minor] = f.as_slice() else {
        return None;
    };
    Some(Volume {
        vg: (*vg).to_string(),
        lv: (*lv).to_string(),
        size: size.parse().ok()?,
        vg_free: free.parse().ok()?,
        pool: (*pool).to_string(),
        device: major.parse().ok().zip(minor.parse().ok()),
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
    // A snapshot of another volume than the data's would be a backup of something else.
    let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(&data).map_err(|error| {
        SnapshotError::Path {
            path: data.clone(),
            error,
        }
    })?);
    let data_device = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    if vol.device != Some(data_device) {
        return Err(SnapshotError::Lvm(format!(
            "{} is on device {}:{}, and `lvs` says LV {name} is {}: set snapshot-volume to the volume holding the data",
            data.display(),
            data_device.0,
            data_device.1,
            vol.device.map_or_else(
                || "not active".to_string(),
                |(a, b)| format!("device {a}:{b}")
            )
        )));
    }
    let (need, room) = if vol.pool.is_empty() {
        let asked = settings.size.as_deref().unwrap_or(DEFAULT_SIZE);
        let need = parse_size(asked, vol.size)
            .map_err(|e| SnapshotError::Setting(format!("snapshot-size: {e}")))?;
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
/// the stages; then removes snapshot volumes that have no stage at all (`/run` is emptied by
/// a reboot, and a power cut leaves the volumes). One line per snapshot released.
#[must_use]
pub fn sweep(dir: &Path) -> Vec<String> {
    let mut notes = sweep_stages(dir);
    let Ok(all) = crate::service::output(&list_argv()) else {
        return notes;
    };
    for (vg, lv) in parse_list(&all) {
        if lv.starts_with(PREFIX) && !dir.join(&lv).exists() {
            match crate::service::run(&lvremove(&vg, &lv)) {
                Ok(()) => notes.push(format!(
                    "removed snapshot volume {vg}/{lv}, left by a run that died (its stage is gone: a reboot?)"
                )),
                Err(e) => notes.push(format!("cannot remove snapshot volume {vg}/{lv}: {e}")),
            }
        }
    }
    notes
}

/// `lvs` listing every volume as `vg|lv`.
fn list_argv() -> Vec<String> {
    text(&[
        "lvs",
        "--noheadings",
        "--separator",
        "|",
        "-o",
        "vg_name,lv_name",
    ])
}

fn parse_list(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.trim().split_once('|'))
        .map(|(vg, lv)| (vg.trim().to_string(), lv.trim().to_string()))
        .collect()
}

/// The stage part of [`sweep`].
fn sweep_stages(dir: &Path) -> Vec<String> {
    crate::stage::sweep_with(dir, PREFIX, &|stage: &Path| {
        if mounts::is_mount_point(stage) {
            crate::service::run(&umount(stage)).map_err(|e| e.to_string())?;
        }
        let name = stage
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let all = crate::service::output(&list_argv()).map_err(|e| e.to_string())?;
        for (vg, lv) in parse_list(&all) {
            if lv == name {
                crate::service::run(&lvremove(&vg, &name)).map_err(|e| e.to_string())?;
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
    fn name(&self) -> &'static str {
        "lvm"
    }

    fn validate(&self, settings: &Settings) -> Result<(), String> {
        if let Some(size) = &settings.size {
            parse_size(size, 1 << 30).map_err(|e| format!("snapshot-size: {e}"))?;
        }
        Ok(())
    }

    fn probe(&self, settings: &Settings, paths: &[&Path]) -> Result<Probe, SnapshotError> {
        plan(settings, paths).map(|(_, _, _, probe)| probe)
    }

    fn prepare(
        &self,
        settings: &Settings,
        paths: &[&Path],
        _label: &str,
    ) -> Result<Pending, SnapshotError> {
        let (vol, mount, need, probe) = plan(settings, paths)?;
        let dir = run_dir();
        let notes = sweep(&dir);
        let release = Release::new(stage_in(&dir, PREFIX)?);
        let name = release
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut capture = text(&["lvcreate", "--snapshot", "--name", &name]);
        if need == 0 {
            capture.extend(text(&["--setactivationskip", "n"]));
        } else {
            capture.extend(text(&["--size", &format!("{need}b")]));
        }
        capture.push(format!("{}/{}", vol.vg, vol.lv));
        let mount_argv = vec![
            "mount".to_string(),
            "-o".to_string(),
            mount_options(&mount.fstype),
            format!("/dev/{}/{name}", vol.vg),
            release.dir.display().to_string(),
        ];
        let unmount = umount(&release.dir);
        // A bind mount or a btrfs `subvol=` shows a directory of the filesystem at its mount
        // point: the snapshot, mounted whole, has it at that path.
        let view_root = release
            .dir
            .join(mount.root.strip_prefix("/").unwrap_or(&mount.root));
        Ok(Pending {
            uncapture: lvremove(&vol.vg, &name),
            capture,
            open: Some((mount_argv, unmount)),
            live_root: mount.point,
            view_root,
            described: format!("read-only {probe}, as {}/{name}", vol.vg),
            notes,
            release,
        })
    }
}

/// Read-only, and nothing on it runs or is a device (a root process reading a filesystem it
/// does not vouch for); `nouuid` on XFS, which refuses a second filesystem with one UUID.
fn mount_options(fstype: &str) -> String {
    let mut options = "ro,nodev,nosuid,noexec".to_string();
    if fstype == "xfs" {
        options.push_str(",nouuid");
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lvs` lines of a classic volume, a thin one, and an inactive one (no device numbers).
    #[test]
    fn lvs_lines_with_and_without_a_pool() {
        let v = parse_lvs("  vg0|mongo|10737418240|5368709120||253|3\n").unwrap();
        assert_eq!(
            (v.vg.as_str(), v.lv.as_str(), v.size, v.pool.as_str()),
            ("vg0", "mongo", 10 << 30, "")
        );
        assert_eq!((v.vg_free, v.device), (5 << 30, Some((253, 3))));
        let thin = parse_lvs("vg0|data|100|0|pool0|-1|-1").unwrap();
        assert_eq!((thin.pool.as_str(), thin.device), ("pool0", None));
        assert!(parse_lvs("").is_none());
        assert!(parse_lvs("vg0|data").is_none());
    }

    /// XFS refuses to mount a second filesystem with the same UUID without `nouuid`.
    #[test]
    fn snapshots_mount_read_only_and_inert() {
        assert_eq!(mount_options("ext4"), "ro,nodev,nosuid,noexec");
        assert_eq!(mount_options("xfs"), "ro,nodev,nosuid,noexec,nouuid");
    }
}
