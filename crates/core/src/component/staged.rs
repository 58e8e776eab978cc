//! Restoring a kind whose data is a live directory (`files`, `ssdb`): the part every such kind
//! shares, so each implements only what differs ([`LiveDirectory`]).
//!
//! The shared part: `--target DIR` writes `DIR/<kind>/<name>/`; in place, the set is written
//! into a hidden sibling of the live directory while the service still runs
//! ([`StagedRestore::write`]), the kind's check runs on the written copy (discarding it and
//! changing nothing when it fails), and only then does the kind stop its service, swap the copy
//! in ([`StagedRestore::swap`]) and start it again. The plan of such a restore is built here
//! too ([`LiveDirectory::plan_step`]).

use std::path::{Path, PathBuf};

use super::{ComponentError, ComponentRestore, RestoreRequest, RestoreStep, RestoreTarget, stamp};
use crate::{
    backup_set::ComponentRecord, config::ComponentName, progress::ProgressRef,
    repository::Repository, tree::MaterializeSummary,
};

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
    /// The live directory: where the data is read from and restored to, and its path in a set.
    fn live(&self) -> &Path;
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
            repo_path: self.live().to_path_buf(),
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
                let restored =
                    super::restore_to_directory(name, self.live(), dir, repo, set_id, progress)?;
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
        // Written while the service still runs: its downtime is only the swap.
        let staged = StagedRestore::write(name, live, repo, set_id, progress)?;
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
    /// Writes the set into a hidden sibling of `live` (same filesystem, so the swap is a
    /// rename); on failure the staging is removed and the error says nothing changed.
    ///
    /// # Errors
    /// [`ComponentError::Restore`].
    pub fn write(
        name: &ComponentName,
        live: &Path,
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
            live,
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
