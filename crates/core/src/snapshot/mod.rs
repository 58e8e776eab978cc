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

/// The name of the directory a snapshot may leave inside the data's volume (btrfs puts its
/// snapshots at the top of the subvolume): never stored, never carried over by a restore.
pub const EXCLUDE: &str = btrfs::DIR;

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
    /// snapshot mode, and the backend checks its own.
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
            (false, Some(_)) => Err(
                "snapshot is set but mode is not \"snapshot\": set mode = \"snapshot\" or remove it"
                    .to_string(),
            ),
            (false, None) if size.is_some() || volume.is_some() => {
                Err("snapshot-size and snapshot-volume need mode = \"snapshot\"".to_string())
            }
            (false, None) => Ok(()),
            (true, Some(backend)) => backend.provider().validate(&Self {
                backend,
                size: size.clone(),
                volume: volume.clone(),
            }),
        }
    }

    /// `btrfs` or `lvm`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.backend.provider().name()
    }

    /// Whether a snapshot can be taken of the volume holding `paths` now.
    ///
    /// # Errors
    /// [`SnapshotError`]: why not, and what to do.
    pub fn probe(&self, paths: &[&Path]) -> Result<Probe, SnapshotError> {
        self.backend.provider().probe(self, paths)
    }

    /// Everything before the instant of a snapshot of the volume holding `paths` for
    /// component `label`: the probe, the release of what dead runs left on that volume, and
    /// the stage. [`Pending::capture`] then takes the instant.
    ///
    /// # Errors
    /// [`SnapshotError`]; nothing is left behind.
    pub fn prepare(&self, paths: &[&Path], label: &str) -> Result<Pending, SnapshotError> {
        self.backend.provider().prepare(self, paths, label)
    }

    /// [`Settings::prepare`], [`Pending::capture`] and [`Captured::open`] at once: for data
    /// that needs no lock around the instant.
    ///
    /// # Errors
    /// [`SnapshotError`]; nothing is left behind but what the next run releases.
    pub fn take(&self, paths: &[&Path], label: &str) -> Result<Snapshot, SnapshotError> {
        self.prepare(paths, label)?.capture()?.open()
    }
}

/// What a snapshot backend does.
pub trait Provider: Sync {
    /// `btrfs` or `lvm`.
    fn name(&self) -> &'static str;

    /// Checks the backend's own keys (config validation, nothing touched).
    ///
    /// # Errors
    /// The key and what is wrong with it.
    fn validate(&self, settings: &Settings) -> Result<(), String>;

    /// Finds the volume holding `paths` (which must all be on it) and says whether and how a
    /// snapshot can be taken there.
    ///
    /// # Errors
    /// [`SnapshotError`].
    fn probe(&self, settings: &Settings, paths: &[&Path]) -> Result<Probe, SnapshotError>;

    /// Probes, releases what dead runs left on the volume, and makes the stage and the
    /// commands of the snapshot.
    ///
    /// # Errors
    /// [`SnapshotError`].
    fn prepare(
        &self,
        settings: &Settings,
        paths: &[&Path],
        label: &str,
    ) -> Result<Pending, SnapshotError>;
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
    /// A link inside the data leads out of it: the snapshot would hold the link, not the data.
    #[error(
        "{link} is a symbolic link to {target}: a snapshot holds the link, not what it points to; move the data into place"
    )]
    LinkOut {
        /// The link.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A backend command failed.
    #[error("{error}{hint}")]
    Command {
        /// Cause (printed in the message).
        error: ServiceError,
        /// What to do, with a leading `; `.
        hint: String,
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
    /// LVM answered something this release does not understand, or the volume is not the
    /// one holding the data.
    #[error("{0}")]
    Lvm(String),
    /// A snapshot key's value cannot be used.
    #[error("{0}")]
    Setting(String),
    /// The stage holding the snapshot could not be made.
    #[error("cannot make a directory for the snapshot in {dir}: {error}")]
    Stage {
        /// Where.
        dir: PathBuf,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
}

impl SnapshotError {
    /// A failed backend command, with what to do about it.
    fn command(error: ServiceError, hint: &str) -> Self {
        Self::Command {
            error,
            hint: if hint.is_empty() {
                String::new()
            } else {
                format!("; {hint}")
            },
        }
    }
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

/// The undoing of a snapshot: its release commands, most recent resource first, then the
/// removal of its stage. One guard runs it on a signal (or when dropped unreleased); when a
/// command fails the rest are not run and the stage stays with its owner file, whose lock
/// dies with the run, so the next run on the volume finds it and tries again.
struct Release {
    steps: std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
    dir: PathBuf,
    owner: PathBuf,
    guard: Option<cleanup::Guard>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Runs `steps` in order, stopping at the first failure; then removes the stage.
fn undo(steps: &[Vec<String>], dir: &Path, owner: &Path) -> Result<(), ServiceError> {
    for argv in steps {
        crate::service::run(argv)?;
    }
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(owner);
    Ok(())
}

impl Release {
    fn new(stage: Stage) -> Self {
        let (dir, owner, lock) = stage.into_parts();
        let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
        let (s, d, o) = (steps.clone(), dir.clone(), owner.clone());
        let guard = cleanup::register(Action::Call(cleanup::Callback(std::sync::Arc::new(
            move || {
                let steps = s.lock().map(|v| v.clone()).unwrap_or_default();
                if let Err(e) = undo(&steps, &d, &o) {
                    eprintln!(
                        "akbackup: cannot release a snapshot: {e}; the next backup of its volume releases it"
                    );
                }
            },
        ))));
        Self {
            steps,
            dir,
            owner,
            guard: Some(guard),
            _lock: lock,
        }
    }

    /// Adds a step that undoes a resource just made: it runs before the earlier ones.
    fn push(&self, argv: Vec<String>) {
        if let Ok(mut v) = self.steps.lock() {
            v.insert(0, argv);
        }
    }

    /// Undoes everything now; on failure the stage stays for the next run.
    fn run(&mut self) -> Result<(), ServiceError> {
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
        let steps = self.steps.lock().map(|v| v.clone()).unwrap_or_default();
        undo(&steps, &self.dir, &self.owner)
    }

    /// Gives up on undoing now: the stage and its owner file stay, for the next run's sweep.
    fn abandon(mut self) {
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        // Unreleased (an error path): the guard undoes what was made.
        self.guard.take();
    }
}

/// A snapshot about to be taken: the stage exists, nothing is snapshotted yet.
pub struct Pending {
    release: Release,
    /// The command that takes the instant.
    capture: Vec<String>,
    /// The command that undoes it.
    uncapture: Vec<String>,
    /// The command that makes the snapshot readable (LVM: mount), and its undoing.
    open: Option<(Vec<String>, Vec<String>)>,
    live_root: PathBuf,
    view_root: PathBuf,
    described: String,
    notes: Vec<String>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("capture", &self.capture)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// Takes the instant: runs only the snapshot command, what must happen while a database
    /// holds its writes. Its undoing is registered before it runs.
    ///
    /// # Errors
    /// [`SnapshotError::Command`]; the stage is left to the next run's sweep, which releases
    /// what the command may have made.
    pub fn capture(self) -> Result<Captured, SnapshotError> {
        self.release.push(self.uncapture.clone());
        if let Err(error) = crate::service::run(&self.capture) {
            self.release.abandon();
            return Err(SnapshotError::command(
                error,
                "run akbackup as root, with the backend's tools installed",
            ));
        }
        Ok(Captured(self))
    }

    /// Lines about leftovers of dead runs released while preparing.
    #[must_use]
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// A snapshot taken but perhaps not readable yet ([`Captured::open`]).
#[derive(Debug)]
pub struct Captured(Pending);

impl Captured {
    /// Makes the snapshot readable (LVM: mounts it read-only).
    ///
    /// # Errors
    /// [`SnapshotError::Command`]; the snapshot is released.
    pub fn open(self) -> Result<Snapshot, SnapshotError> {
        let p = self.0;
        if let Some((open, close)) = &p.open {
            p.release.push(close.clone());
            if let Err(error) = crate::service::run(open) {
                // Not mounted: the unmount step must not run (it would fail and keep the
                // snapshot volume); the rest is undone when `p` drops.
                if let Ok(mut v) = p.release.steps.lock() {
                    v.remove(0);
                }
                return Err(SnapshotError::command(error, ""));
            }
        }
        Ok(Snapshot {
            live_root: p.live_root,
            view_root: p.view_root,
            described: p.described,
            notes: p.notes,
            release: p.release,
        })
    }
}

/// A read-only snapshot this run took, readable at [`Snapshot::view`]. Dropping it releases it
/// (its resources, newest first, then its stage).
pub struct Snapshot {
    /// The live directory the view's root corresponds to (the subvolume, the mount point).
    live_root: PathBuf,
    /// Where that directory is in the snapshot.
    view_root: PathBuf,
    /// What was taken, for notes and the manifest.
    described: String,
    /// What the take found and released of dead runs.
    notes: Vec<String>,
    release: Release,
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
    ///
    /// # Errors
    /// [`SnapshotError::Path`] when `live` is not under the snapshotted volume or is not
    /// in the snapshot.
    pub fn view(&self, live: &Path) -> Result<PathBuf, SnapshotError> {
        let missing = |why: String| SnapshotError::Path {
            path: live.to_path_buf(),
            error: std::io::Error::other(why),
        };
        let real = std::fs::canonicalize(live).map_err(|error| SnapshotError::Path {
            path: live.to_path_buf(),
            error,
        })?;
        let rel = real.strip_prefix(&self.live_root).map_err(|_| {
            missing(format!(
                "is not under {}, the snapshotted volume",
                self.live_root.display()
            ))
        })?;
        let view = self.view_root.join(rel);
        if !view.exists() {
            return Err(missing(format!(
                "is not in the snapshot at {}",
                view.display()
            )));
        }
        Ok(view)
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
    /// kept with its owner file: the next run on this volume releases it.
    ///
    /// # Errors
    /// [`SnapshotError::Command`]: the step that failed.
    pub fn release(mut self) -> Result<(), SnapshotError> {
        self.release.run().map_err(|error| {
            SnapshotError::command(error, "the next backup of this volume releases it")
        })
    }
}

/// Releases the snapshot a component kept as its `Prepared` guard (or inside it, through
/// `inner`), once its data is stored; `Some(warning)` when that failed, for the component's
/// record: the next backup of the volume releases it.
#[must_use]
pub fn release_kept(snapshot: Option<Snapshot>) -> Option<String> {
    let snap = snapshot?;
    let what = snap.describe().to_string();
    snap.release()
        .err()
        .map(|e| format!("the {what} was not released: {e}"))
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

    /// Sizes are binary like LVM's; a percentage is of the origin volume.
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

    /// One snapshot holds one volume: a path on another device is named.
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

    /// Snapshot mode needs a backend, the snapshot keys need snapshot mode, and each
    /// backend refuses the keys that are not its own.
    #[test]
    fn settings_refuse_lvm_keys_for_btrfs() {
        let size = Some("10G".to_string());
        let bad = Some("ten".to_string());
        let check =
            |mode, backend, size: &Option<String>| Settings::check_keys(mode, backend, size, &None);
        assert!(
            check(true, None, &None)
                .unwrap_err()
                .contains("needs snapshot")
        );
        assert!(
            check(false, Some(Backend::Lvm), &None)
                .unwrap_err()
                .contains("mode is not")
        );
        assert!(
            check(true, Some(Backend::Btrfs), &size)
                .unwrap_err()
                .contains("snapshot-size")
        );
        assert!(
            check(true, Some(Backend::Lvm), &bad)
                .unwrap_err()
                .starts_with("snapshot-size: ")
        );
        assert!(check(true, Some(Backend::Lvm), &size).is_ok());
        assert!(check(false, None, &None).is_ok());
    }
}
