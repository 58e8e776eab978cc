//! Filesystem snapshots, shared by every kind whose data is a live directory that a running
//! server writes (`mode = "snapshot"` of `[ssdb.NAME]` and `[mongodb.NAME]`).
//!
//! Altcraft recommends them for heavy MongoDB and SSDB: the snapshot is one instant of the
//! whole volume, taken in well under a second whatever the size, and the backup then reads
//! the frozen view at leisure while the server goes on writing to the live one. What a
//! snapshot holds is what a power cut would leave (crash-consistent); both LevelDB and
//! MongoDB's WiredTiger (with its journal on the same volume) recover from that by design.
//!
//! A backend ([`Provider`]) finds the volume holding the data, says whether a snapshot can
//! work there ([`Probe`], for `doctor` and `backup --dry-run`), and takes one ([`Snapshot`]).
//! A snapshot is released on every path: explicitly after the data is stored, by its
//! guards when the run fails, by the signal thread on Ctrl-C or SIGTERM ([`crate::cleanup`]);
//! each lives in a stage ([`crate::stage`]) whose owner file the run holds locked, so one
//! left by a run killed with `kill -9` is found by the next run that snapshots the same
//! volume, and released.
//!
//! [`Backend::provider`] is the only place that matches on the backend.

pub mod btrfs;
pub mod lvm;
pub mod mounts;

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    cleanup::{self, Action},
    service::ServiceError,
    stage::Stage,
};

/// Which snapshot technology holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A read-only btrfs subvolume snapshot.
    Btrfs,
    /// An LVM snapshot (classic or thin) of the logical volume, mounted read-only.
    Lvm,
}

impl Backend {
    /// The backend's code: the only match on [`Backend`].
    #[must_use]
    pub fn provider(self) -> &'static dyn Provider {
        match self {
            Self::Btrfs => &btrfs::Btrfs,
            Self::Lvm => &lvm::Lvm,
        }
    }

    /// `btrfs` or `lvm`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Btrfs => "btrfs",
            Self::Lvm => "lvm",
        }
    }
}

/// A section's snapshot keys: `snapshot`, `snapshot-size`, `snapshot-volume`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The backend.
    pub backend: Backend,
    /// LVM classic snapshots: the room reserved for changes while the snapshot exists
    /// (`20G`, `512M`, or a percentage of the origin volume, `10%`, the default).
    pub size: Option<String>,
    /// LVM: the logical volume (`vg0/mongo`), when the mount table's device does not name it.
    pub volume: Option<String>,
}

impl Settings {
    /// The settings of a section in snapshot mode (`snapshot`, `snapshot-size`,
    /// `snapshot-volume`); `None` in any other mode or without a backend.
    #[must_use]
    pub fn of(
        snapshot_mode: bool,
        backend: Option<Backend>,
        size: &Option<String>,
        volume: &Option<String>,
    ) -> Option<Self> {
        Some(Self {
            backend: backend.filter(|_| snapshot_mode)?,
            size: size.clone(),
            volume: volume.clone(),
        })
    }

    /// Validates a section's snapshot keys: snapshot mode needs a backend, the keys need
    /// snapshot mode, and their values must parse.
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn check_keys(
        snapshot_mode: bool,
        backend: Option<Backend>,
        size: &Option<String>,
        volume: &Option<String>,
    ) -> Result<(), String> {
        match (snapshot_mode, backend) {
            (true, None) => Err(
                "mode = \"snapshot\" needs snapshot = \"btrfs\" or snapshot = \"lvm\"".to_string(),
            ),
            (false, Some(_)) => Err("snapshot is set but mode is not \"snapshot\": set mode = \"snapshot\" or remove it".to_string()),
            (false, None) if size.is_some() || volume.is_some() => {
                Err("snapshot-size and snapshot-volume need mode = \"snapshot\"".to_string())
            }
            (false, None) => Ok(()),
            (true, Some(backend)) => Self {
                backend,
                size: size.clone(),
                volume: volume.clone(),
            }
            .validate(),
        }
    }

    /// Checks the keys without touching the system (config validation).
    ///
    /// # Errors
    /// The key and what is wrong with it.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(size) = &self.size {
            if self.backend != Backend::Lvm {
                return Err("snapshot-size applies to snapshot = \"lvm\" only".to_string());
            }
            parse_size(size, 1 << 30).map_err(|e| format!("snapshot-size: {e}"))?;
        }
        if self.volume.is_some() && self.backend != Backend::Lvm {
            return Err("snapshot-volume applies to snapshot = \"lvm\" only".to_string());
        }
        Ok(())
    }

    /// Whether a snapshot can be taken of the volume holding `paths` now.
    ///
    /// # Errors
    /// [`SnapshotError`]: why not, and what to do.
    pub fn probe(&self, paths: &[&Path]) -> Result<Probe, SnapshotError> {
        self.backend.provider().probe(self, paths)
    }

    /// Takes a read-only snapshot of the volume holding `paths` for component `label`,
    /// first releasing what dead runs left on that volume.
    ///
    /// # Errors
    /// [`SnapshotError`]; nothing is left behind.
    pub fn take(&self, paths: &[&Path], label: &str) -> Result<Snapshot, SnapshotError> {
        self.backend.provider().take(self, paths, label)
    }
}

/// What a snapshot backend does.
pub trait Provider: Sync {
    /// Finds the volume holding `paths` (which must all be on it) and says whether and how a
    /// snapshot can be taken there.
    ///
    /// # Errors
    /// [`SnapshotError`].
    fn probe(&self, settings: &Settings, paths: &[&Path]) -> Result<Probe, SnapshotError>;

    /// Takes the snapshot.
    ///
    /// # Errors
    /// [`SnapshotError`].
    fn take(
        &self,
        settings: &Settings,
        paths: &[&Path],
        label: &str,
    ) -> Result<Snapshot, SnapshotError>;
}

/// Why a snapshot cannot be taken or released. Every variant prints its cause.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A path the snapshot must hold cannot be examined.
    #[error("{path}: {error}")]
    Path {
        /// The path.
        path: PathBuf,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// The data is not on the filesystem the backend snapshots.
    #[error(
        "{path} is on {fstype}, not btrfs: snapshot = \"btrfs\" needs the data inside a btrfs subvolume (or use snapshot = \"lvm\", or another mode)"
    )]
    NotBtrfs {
        /// The data path.
        path: PathBuf,
        /// What it is on.
        fstype: String,
    },
    /// Two paths that one snapshot must hold are on different volumes.
    #[error(
        "{other} is not on the same volume as {first}: one snapshot cannot hold both; put them on one volume"
    )]
    SplitVolumes {
        /// The first path (the data).
        first: PathBuf,
        /// The one elsewhere (a separate subvolume, mount or disk).
        other: PathBuf,
    },
    /// A backend command failed.
    #[error("{error}")]
    Command {
        /// Cause (printed in the message).
        error: ServiceError,
    },
    /// The volume group has no room for a classic snapshot of that size.
    #[error(
        "volume group {vg} has {free} free, and a snapshot of {lv} needs {need} (snapshot-size): free room in {vg} or set a smaller snapshot-size"
    )]
    NoRoom {
        /// Volume group.
        vg: String,
        /// Logical volume.
        lv: String,
        /// Free bytes, shown.
        free: String,
        /// Needed bytes, shown.
        need: String,
    },
    /// LVM answered something this release does not understand, or the volume is not an LV.
    #[error("{0}")]
    Lvm(String),
    /// The stage holding the snapshot could not be made.
    #[error("cannot make a directory for the snapshot in {dir}: {error}")]
    Stage {
        /// Where.
        dir: PathBuf,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
}

/// Where a snapshot would be taken and whether there is room: one line for `doctor` and
/// `backup --dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `btrfs` or `lvm`.
    pub backend: &'static str,
    /// The volume (`subvolume /srv/mongo`, `LV vg0/mongo`).
    pub volume: String,
    /// Its filesystem type.
    pub filesystem: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The room a snapshot has, in words.
    pub room: String,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} snapshot of {} ({}, mounted at {}): {}",
            self.backend,
            self.volume,
            self.filesystem,
            self.mount_point.display(),
            self.room
        )
    }
}

/// One release command and the guard that runs it if the run dies before [`Snapshot::release`].
struct Step {
    argv: Vec<String>,
    guard: cleanup::Guard,
}

/// Registers `argv` to run on drop and on a signal, until [`Snapshot::release`] runs it.
fn step(argv: Vec<String>) -> Step {
    let run = argv.clone();
    let guard = cleanup::register(Action::Call(cleanup::Callback(std::sync::Arc::new(
        move || {
            if let Err(e) = crate::service::run(&run) {
                eprintln!("akbackup: cannot release a snapshot: {e}; the next backup of it does");
            }
        },
    ))));
    Step { argv, guard }
}

/// A read-only snapshot this run took, readable at [`Snapshot::view`]. Dropping it releases it
/// (in the order the backend gave), then removes its stage.
pub struct Snapshot {
    /// The live directory the view's root corresponds to (the subvolume, the mount point).
    live_root: PathBuf,
    /// Where that directory is in the snapshot.
    view_root: PathBuf,
    /// What was taken, for notes and the manifest.
    described: String,
    /// What the take found and released of dead runs.
    notes: Vec<String>,
    // Field order is the order of drop: the release steps before the stage.
    steps: Vec<Step>,
    stage: Option<Stage>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("view_root", &self.view_root)
            .field("described", &self.described)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Where live path `live` (under the snapshotted volume) is in the snapshot.
    #[must_use]
    pub fn view(&self, live: &Path) -> PathBuf {
        let real = std::fs::canonicalize(live).unwrap_or_else(|_| live.to_path_buf());
        real.strip_prefix(&self.live_root)
            .map_or_else(|_| self.view_root.clone(), |rel| self.view_root.join(rel))
    }

    /// What was taken (`btrfs snapshot of subvolume /srv/ssdb`).
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Lines about leftovers of dead runs released before this snapshot was taken.
    #[must_use]
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Releases the snapshot now. When a step fails, the rest are not run and the stage is
    /// kept with its owner file unlocked: the next run on this volume releases it.
    ///
    /// # Errors
    /// [`SnapshotError::Command`]: the step that failed.
    pub fn release(mut self) -> Result<(), SnapshotError> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<(), SnapshotError> {
        let steps = std::mem::take(&mut self.steps);
        for s in steps {
            s.guard.disarm();
            if let Err(error) = crate::service::run(&s.argv) {
                if let Some(stage) = self.stage.take() {
                    stage.abandon();
                }
                return Err(SnapshotError::Command { error });
            }
        }
        Ok(())
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Err(e) = self.release_now() {
            eprintln!(
                "akbackup: cannot release the {}: {e}; the next backup of it releases it",
                self.described
            );
        }
    }
}

/// Checks that every path exists and that all are on the volume of the first (the same
/// device number: a btrfs subvolume, or a mounted filesystem, has its own).
///
/// # Errors
/// [`SnapshotError::Path`] or [`SnapshotError::SplitVolumes`].
pub fn same_volume(paths: &[&Path]) -> Result<PathBuf, SnapshotError> {
    let meta = |p: &Path| {
        std::fs::metadata(p).map_err(|error| SnapshotError::Path {
            path: p.to_path_buf(),
            error,
        })
    };
    let Some(first) = paths.first() else {
        return Err(SnapshotError::Path {
            path: PathBuf::new(),
            error: std::io::Error::other("no data path to snapshot"),
        });
    };
    let dev = meta(first)?.dev();
    for p in &paths[1..] {
        if meta(p)?.dev() != dev {
            return Err(SnapshotError::SplitVolumes {
                first: first.to_path_buf(),
                other: p.to_path_buf(),
            });
        }
    }
    std::fs::canonicalize(first).map_err(|error| SnapshotError::Path {
        path: first.to_path_buf(),
        error,
    })
}

/// Makes `dir` (mode 0700) when missing and a stage in it for this run's snapshot.
fn stage_in(dir: &Path, prefix: &str) -> Result<Stage, SnapshotError> {
    use std::os::unix::fs::DirBuilderExt;
    let failed = |error| SnapshotError::Stage {
        dir: dir.to_path_buf(),
        error,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(failed)?;
    Stage::create(dir, prefix).map_err(failed)
}

/// Parses a size: bytes with an optional binary unit (`512M`, `20G`, `1T`, `20GiB`), or a
/// percentage of `whole` (`10%`).
///
/// # Errors
/// A message showing the accepted forms.
pub fn parse_size(text: &str, whole: u64) -> Result<u64, String> {
    let s = text.trim();
    let bad = || format!("\"{text}\" is not a size like 20G, 512M or 10%");
    if let Some(pct) = s.strip_suffix('%') {
        let p: u64 = pct.trim().parse().map_err(|_| bad())?;
        if p == 0 || p > 100 {
            return Err(format!("\"{text}\": a percentage must be from 1 to 100"));
        }
        let part = u128::from(whole) * u128::from(p) / 100;
        return u64::try_from(part).map_err(|_| bad());
    }
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let unit = s[digits..].trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).filter(|v| *v > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units_and_percentages() {
        assert_eq!(parse_size("512M", 0), Ok(512 << 20));
        assert_eq!(parse_size("20G", 0), Ok(20 << 30));
        assert_eq!(parse_size("20GiB", 0), Ok(20 << 30));
        assert_eq!(parse_size("4096", 0), Ok(4096));
        assert_eq!(parse_size("10%", 1000 << 20), Ok(100 << 20));
        for bad in [
            "",
            "G",
            "10 parsecs",
            "0",
            "0%",
            "101%",
            "-5G",
            "99999999999T",
        ] {
            assert!(parse_size(bad, 100).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_on_two_devices_are_refused_naming_the_other() {
        let t = tempfile::tempdir().unwrap();
        assert!(same_volume(&[t.path(), &t.path().join(".")]).is_ok());
        let err = same_volume(&[t.path(), Path::new("/proc")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/proc is not on the same volume"),
            "{err}"
        );
        let err = same_volume(&[&t.path().join("missing")]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn settings_refuse_lvm_keys_for_btrfs() {
        let s = Settings {
            backend: Backend::Btrfs,
            size: Some("10G".to_string()),
            volume: None,
        };
        assert!(s.validate().unwrap_err().contains("snapshot-size"));
        let s = Settings {
            backend: Backend::Lvm,
            size: Some("ten".to_string()),
            volume: None,
        };
        assert!(s.validate().unwrap_err().starts_with("snapshot-size: "));
    }
}
