//! Restoring a kind whose data is a live directory (`files`, `ssdb`, a physical MongoDB set):
//! the part every such kind shares, so each implements only what differs ([`LiveDirectory`]).
//!
//! The shared part: `--target DIR` writes `DIR/<kind>/<name>/`; in place, the set is written
//! into a hidden sibling of the live directory while the service still runs
//! ([`StagedRestore::write`]), the kind's check runs on the written copy (discarding it and
//! changing nothing when it fails), and only then does the kind stop its service, swap the copy
//! in ([`StagedRestore::swap`]) and start it again. The plan of such a restore is built here
//! too ([`LiveDirectory::plan_step`]).

use std::path::{Path, PathBuf};

use super::{
    ComponentError, ComponentRestore, HealthError, RestoreRequest, RestoreStep, RestoreTarget,
    stamp,
};
use crate::{
    backup_set::ComponentRecord,
    cleanup::{self, Action},
    config::ComponentName,
    progress::ProgressRef,
    repository::Repository,
    service,
    tree::MaterializeSummary,
};

/// How long a restore waits for a started server to answer; overridable with
/// `AKBACKUP_START_TIMEOUT` (or the older `AKBACKUP_SSDB_START_TIMEOUT`), in seconds, for
/// tests and slow disks.
pub static START_TIMEOUT: std::sync::LazyLock<std::time::Duration> =
    std::sync::LazyLock::new(|| {
        ["AKBACKUP_START_TIMEOUT", "AKBACKUP_SSDB_START_TIMEOUT"]
            .iter()
            .find_map(|k| std::env::var(k).ok()?.parse().ok())
            .map_or(
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs,
            )
    });

/// What an in-place restore was asked to do about the service.
#[derive(Debug, Clone, Copy)]
pub struct InPlace {
    /// Do not start (or restart) the service afterwards.
    pub no_restart: bool,
    /// `restore --all` stops and starts the service itself.
    pub services_managed: bool,
}

/// What differs between kinds whose data is a live directory.
pub trait LiveDirectory {
    /// `kind.name`.
    fn component(&self) -> &ComponentName;
    /// The live directory: where the data is read from and restored to.
    fn live(&self) -> &Path;
    /// The data's path in a set: the live directory's own path, unless the kind stores it
    /// elsewhere (a MongoDB dbpath under `/akbackup/mongodb/NAME`).
    fn set_path(&self) -> &Path {
        self.live()
    }
    /// Checks a restored copy before it counts (SSDB: every database opens with LevelDB).
    ///
    /// # Errors
    /// What is wrong with the copy, as the kind's own error (printed as one line).
    fn check_restored(&self, _dir: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
    /// The commands an in-place restore runs before the swap and after it (for the plan).
    fn service_steps(&self, how: InPlace) -> (Vec<String>, Vec<String>);
    /// Puts the checked copy in place: stops what must be stopped, swaps
    /// ([`StagedRestore::swap`]), starts and checks. On error the live directory holds
    /// either the old data or the new, and the message says which.
    ///
    /// # Errors
    /// [`ComponentError`] saying where the data is.
    fn swap_in(
        &self,
        staged: StagedRestore,
        how: InPlace,
        progress: &ProgressRef,
    ) -> Result<ComponentRestore, ComponentError>;

    /// The restore step for `target`: `DIR/<kind>/<name>/`, or the live directory with the
    /// kind's service steps.
    fn plan_step(&self, target: &RestoreTarget, record: &ComponentRecord) -> RestoreStep {
        let name = self.component();
        let (destination, replaces, (stop, start)) = match target {
            RestoreTarget::Directory(dir) => (
                dir.join(name.kind.as_str()).join(&name.name),
                false,
                (Vec::new(), Vec::new()),
            ),
            RestoreTarget::InPlace {
                no_restart,
                services_managed,
                ..
            } => (
                self.live().to_path_buf(),
                self.live().exists(),
                self.service_steps(InPlace {
                    no_restart: *no_restart,
                    services_managed: *services_managed,
                }),
            ),
        };
        RestoreStep {
            name: name.to_string(),
            repo_path: self.set_path().to_path_buf(),
            destination,
            replaces_existing: replaces,
            keeps_previous: true,
            stop,
            start,
            files: record.files,
            bytes: record.bytes,
        }
    }

    /// Restores set `set_id` to `target` (see the module header).
    ///
    /// # Errors
    /// [`ComponentError`]: nothing was changed, or (from [`LiveDirectory::swap_in`]) where
    /// the data is now.
    fn restore_live(&self, req: &RestoreRequest<'_>) -> Result<ComponentRestore, ComponentError> {
        let RestoreRequest {
            repo,
            set_id,
            target,
            progress,
        } = *req;
        let name = self.component();
        let err = |message: String| ComponentError::Restore {
            name: name.clone(),
            message,
        };
        let how = match target {
            RestoreTarget::Directory(dir) => {
                let restored = super::restore_to_directory(
                    name,
                    self.set_path(),
                    dir,
                    repo,
                    set_id,
                    progress,
                )?;
                self.check_restored(&restored.destination).map_err(|e| {
                    err(format!(
                        "restored to {} but {e}",
                        restored.destination.display()
                    ))
                })?;
                return Ok(restored);
            }
            RestoreTarget::InPlace {
                no_restart,
                services_managed,
                ..
            } => InPlace {
                no_restart: *no_restart,
                services_managed: *services_managed,
            },
        };
        let live = self.live();
        // The swap renames the copy beside the live directory into its place, which cannot
        // cross volumes: refused before anything is written, not after a full copy.
        if let Some(why) = top_of_volume(live) {
            return Err(err(format!(
                "{} is {why}: an in-place restore swaps it with a copy written beside it, which cannot cross volumes; restore with --target DIR on that volume and move the files in with the service stopped; nothing was changed",
                live.display()
            )));
        }
        // Written while the service still runs: its downtime is only the swap.
        let staged = StagedRestore::write(name, live, self.set_path(), repo, set_id, progress)?;
        // Every byte was authenticated as it was written; the kind's own check of the result
        // runs before anything is stopped.
        if let Err(e) = self.check_restored(&staged.staging) {
            staged.discard();
            return Err(err(format!(
                "the restored {e}; nothing was changed at {}",
                live.display()
            )));
        }
        self.swap_in(staged, how, progress)
    }
}

/// Why `live` cannot be swapped with a sibling: it is the top of its own volume (a mount
/// point or a btrfs subvolume: another device number than its parent's). `None` when it can,
/// or does not exist.
fn top_of_volume(live: &Path) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let here = std::fs::metadata(live).ok()?;
    let parent = std::fs::metadata(live.parent()?).ok()?;
    (here.dev() != parent.dev())
        .then_some("the top of its own volume (a mount point or a btrfs subvolume)")
}

/// The first half of an in-place restore: the set written next to `live`, not yet swapped in.
#[derive(Debug)]
pub struct StagedRestore {
    /// The hidden staging directory holding the restored data.
    pub staging: PathBuf,
    /// Where the live data goes when swapped out.
    pub keep: PathBuf,
    /// The timestamp both names carry.
    pub stamp: String,
    /// What was written.
    pub written: MaterializeSummary,
    /// The owner lock of `staging`: another run's sweep leaves it alone while we live.
    pub owner: crate::stage::Stage,
}

impl StagedRestore {
    /// Writes the set's `set_path` into a hidden sibling of `live` (same filesystem, so the
    /// swap is a rename); on failure the staging is removed and the error says nothing changed.
    ///
    /// # Errors
    /// [`ComponentError::Restore`].
    pub fn write(
        name: &ComponentName,
        live: &Path,
        set_path: &Path,
        repo: &Repository,
        set_id: &str,
        progress: &ProgressRef,
    ) -> Result<Self, ComponentError> {
        let err = |message: String| ComponentError::Restore {
            name: name.clone(),
            message,
        };
        // A restore of the same path that was killed may have left data behind: settle it
        // first (the caller holds the repository lock, so no live restore owns it).
        for note in crate::fsutil::recover_interrupted_restore(live) {
            progress.note(&format!("{name}: {note}"));
        }
        let stamp = stamp();
        let keep = crate::fsutil::unused_name(&crate::fsutil::sibling(
            live,
            &format!("prev-{stamp}"),
            false,
        ));
        let parent = live.parent().unwrap_or_else(|| Path::new("/"));
        std::fs::create_dir_all(parent)
            .map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
        // `.<name>.akbackup-restore-<pid>-<random>`: two restores of the same directory (from
        // two repositories) never share it, and neither removes the other's.
        let owner = crate::stage::Stage::create(parent, &crate::stage::restore_prefix(live))
            .map_err(|e| {
                err(format!(
                    "cannot create a staging directory in {}: {e}; nothing was changed",
                    parent.display()
                ))
            })?;
        let staging = owner.path().to_path_buf();
        match crate::tree::materialize(
            repo,
            set_id,
            set_path,
            &staging,
            &name.to_string(),
            progress,
            crate::tree::Durability::Synced,
        ) {
            Ok(written) => Ok(Self {
                staging,
                keep,
                stamp,
                written,
                owner,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(err(format!(
                    "{e}; nothing was changed at {}",
                    live.display()
                )))
            }
        }
    }

    /// Swaps the staged data into `live`, keeping the previous data (see
    /// [`crate::fsutil::swap_into_place`]); on failure the staging is removed.
    ///
    /// # Errors
    /// [`ComponentError::Restore`] saying nothing was changed.
    pub fn swap(
        &self,
        name: &ComponentName,
        live: &Path,
        progress: &ProgressRef,
    ) -> Result<Option<PathBuf>, ComponentError> {
        if live.exists() {
            // Said before the swap, so even a run killed right after it has named the place.
            progress.note(&format!(
                "{name}: swapping the restored data into {}; the current contents will be kept at {}",
                live.display(),
                self.keep.display()
            ));
        }
        crate::fsutil::swap_into_place(&self.staging, live, &self.keep).map_err(|e| {
            let _ = std::fs::remove_dir_all(&self.staging);
            ComponentError::Restore {
                name: name.clone(),
                message: format!(
                    "cannot swap the restored data into {}: {e}; nothing was changed",
                    live.display()
                ),
            }
        })
    }

    /// Drops the staged data (a later step failed before the swap).
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// A live directory that a systemd unit serves (SSDB's store, MongoDB's dbpath): swapping a
/// restored copy in means stopping the unit, swapping, starting it and checking it answers,
/// and putting the previous directory back when it does not ([`swap_with_unit`]).
pub trait ServedDirectory: LiveDirectory {
    /// The unit serving the directory.
    fn unit_name(&self) -> String;
    /// What the directory is, for messages (`store`, `dbpath`).
    fn noun(&self) -> &'static str;
    /// Copies into the staged copy what the live directory holds beside the set's data, once
    /// the unit is down (SSDB: `ssdb.conf`). The default copies nothing.
    ///
    /// # Errors
    /// I/O errors; nothing has changed then.
    fn carry_over(&self, _live: &Path, _staging: &Path) -> std::io::Result<()> {
        Ok(())
    }
    /// The health check to run after the start, prepared before the stop (it may read
    /// files that move aside with the swap). Waits a bounded time for a starting service.
    fn health_after_start(&self) -> Box<dyn Fn() -> Result<String, HealthError> + '_>;
}

/// The plan's service steps of an in-place restore of a directory `unit` serves: stopped
/// before the swap and started after it, then `check`ed, unless `restore --all` does both
/// or `--no-restart` leaves it stopped.
#[must_use]
pub fn unit_steps(unit: &str, how: InPlace, check: &str) -> (Vec<String>, Vec<String>) {
    let stop = if how.services_managed {
        vec![]
    } else {
        vec![format!("systemctl stop {unit}")]
    };
    let start = if how.no_restart || how.services_managed {
        vec![]
    } else {
        vec![format!("systemctl start {unit}"), check.to_string()]
    };
    (stop, start)
}

/// Polls `check` every half second until it answers or [`START_TIMEOUT`] has passed: a
/// server opening a large store or dbpath takes a while after `systemctl start` returns.
///
/// # Errors
/// [`HealthError::StillFailing`] with the last failure.
pub fn wait_healthy(
    check: impl Fn() -> Result<String, HealthError>,
) -> Result<String, HealthError> {
    let deadline = std::time::Instant::now() + *START_TIMEOUT;
    loop {
        match check() {
            Ok(note) => return Ok(note),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(HealthError::StillFailing {
                    seconds: START_TIMEOUT.as_secs(),
                    last: Box::new(e),
                });
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// A unit stopped by us; started again when dropped unless started explicitly.
pub(crate) struct Stopped {
    unit: String,
    guard: Option<cleanup::Guard>,
}

impl Stopped {
    /// Stops `unit`, registered (and journaled on disk) first, so that even a run killed
    /// during or right after the stop leaves a record the next run starts it from.
    pub(crate) fn stop(unit: &str) -> Result<Self, service::ServiceError> {
        let guard = cleanup::register(Action::StartUnit(unit.to_string()));
        if let Err(e) = service::systemctl("stop", unit) {
            guard.disarm();
            return Err(e);
        }
        Ok(Self {
            unit: unit.to_string(),
            guard: Some(guard),
        })
    }

    /// A unit someone else stopped and will start: nothing to undo here.
    const fn already() -> Self {
        Self {
            unit: String::new(),
            guard: None,
        }
    }

    /// Starts the unit now.
    pub(crate) fn start(mut self) -> Result<(), service::ServiceError> {
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
        service::systemctl("start", &self.unit)
    }

    /// Leaves the unit stopped on purpose (`--no-restart`, or `restore --all` starts it).
    fn leave_stopped(mut self) {
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // Dropping the guard starts the unit (error paths).
        self.guard.take();
    }
}

/// Puts the checked copy in place for a [`ServedDirectory`]: stops the unit (unless
/// `restore --all` did), carries the live directory's own files over, swaps, starts the unit
/// and health-checks it, putting the previous directory back and starting it when the check
/// fails. On error the live path holds either the old data or the new, and the message says
/// which.
///
/// # Errors
/// [`ComponentError::Restore`] or [`ComponentError::Service`] saying where the data is.
pub fn swap_with_unit(
    c: &impl ServedDirectory,
    staged: StagedRestore,
    how: InPlace,
    progress: &ProgressRef,
) -> Result<ComponentRestore, ComponentError> {
    let name = c.component();
    let label = name.to_string();
    let err = |message: String| ComponentError::Restore {
        name: name.clone(),
        message,
    };
    let (no_restart, managed) = (how.no_restart, how.services_managed);
    let live = c.live().to_path_buf();
    let health = c.health_after_start();
    let unit = c.unit_name();
    let stopped = if managed {
        // `restore --all` stopped the unit and starts it when everything is restored.
        Stopped::already()
    } else {
        progress.note(&format!("{label}: stopping {unit}"));
        match Stopped::stop(&unit) {
            Ok(s) => s,
            Err(e) => {
                staged.discard();
                return Err(err(format!(
                    "{e}; nothing was changed at {}",
                    live.display()
                )));
            }
        }
    };
    // Once the server is down (and its pid file gone), what the set does not hold is carried
    // over from the live directory.
    if let Err(e) = c.carry_over(&live, &staged.staging) {
        staged.discard();
        drop(stopped); // starts the unit on the untouched data
        return Err(err(format!(
            "cannot carry {} over: {e}; nothing was changed",
            live.display()
        )));
    }
    let previous = match staged.swap(name, &live, progress) {
        Ok(p) => p,
        Err(e) => {
            drop(stopped); // starts the unit on the untouched data
            return Err(e);
        }
    };
    let (written, stamp) = (staged.written, staged.stamp);
    let mut warnings = Vec::new();
    let done = |restarted: Option<String>, warnings: Vec<String>| ComponentRestore {
        name: label.clone(),
        destination: live.clone(),
        previous: previous.clone(),
        restarted,
        written: written.clone(),
        status: crate::backup_set::Status::Complete,
        warnings,
        details: serde_json::Value::Null,
    };
    if no_restart || managed {
        stopped.leave_stopped();
        if !managed {
            warnings.push(format!(
                "{unit} left stopped (--no-restart): start it with systemctl start {unit}"
            ));
        }
        return Ok(done(None, warnings));
    }
    progress.note(&format!("{label}: starting {unit}"));
    let check = stopped
        .start()
        .map_err(|error| HealthError::Service { error })
        .and_then(|()| health());
    match check {
        Ok(note) => {
            warnings.push(note);
            Ok(done(Some(format!("systemctl start {unit}")), warnings))
        }
        Err(why) => Err(rollback(c, &live, previous.as_deref(), &unit, &stamp, &why)),
    }
}

/// Puts the previous directory back after a failed start or health check, and starts it.
fn rollback(
    c: &impl ServedDirectory,
    live: &Path,
    previous: Option<&Path>,
    unit: &str,
    stamp: &str,
    why: &HealthError,
) -> ComponentError {
    let noun = c.noun();
    let err = |message: String| ComponentError::Restore {
        name: c.component().clone(),
        message,
    };
    // Journaled like every stop: a kill -9 during the rollback leaves a record.
    let restart = cleanup::register(Action::StartUnit(unit.to_string()));
    let _ = service::systemctl("stop", unit);
    let Some(prev) = previous else {
        // Left stopped, as before the journal: the restored copy failed its check.
        restart.disarm();
        return err(format!(
            "the restored {noun} failed: {why}; there was no previous {noun} to put back"
        ));
    };
    let failed = crate::fsutil::sibling(live, &format!("failed-{stamp}"), false);
    let back = crate::fsutil::swap_into_place(prev, live, &failed);
    restart.disarm();
    let started = service::systemctl("start", unit);
    match (back, started) {
        (Ok(_), Ok(())) => err(format!(
            "the restored {noun} failed: {why}; the previous {noun} was put back and {unit} started again; the restored copy is at {}",
            failed.display()
        )),
        (Ok(_), Err(e)) => err(format!(
            "the restored {noun} failed: {why}; the previous {noun} was put back but {unit} did not start: {e}"
        )),
        (Err(e), _) => err(format!(
            "the restored {noun} failed: {why}; putting the previous {noun} back failed too ({e}): it is at {}",
            prev.display()
        )),
    }
}
