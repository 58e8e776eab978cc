//! Stages: the private working directories a run makes (backup staging in the repository's
//! local directory, an SSDB store's checkpoint next to the store, an in-place restore's
//! staging next to the live directory, MongoDB restore scratch, import and export work), and
//! who owns them.
//!
//! Every stage is `<dir>/<prefix><pid>-<random>` (mode 0700), so two runs never share a name,
//! even in the same second, and beside it an owner file `<stage>.owner` that the run holds
//! with `flock(2)` for the stage's lifetime and that names it (`{pid, host, command, time}`).
//! The kernel releases that lock when the run dies, however it dies, so a lock that can be
//! taken means the owner is gone: [`sweep`] removes such leftovers and never touches a stage
//! whose owner still holds its lock (another run, for instance a backup of the same SSDB store
//! into a second repository). The owner file is made and locked before the directory and
//! removed after it, so a directory without an owner file was made by an older akbackup: it
//! is removed once it is a day old.
//!
//! The owner file sits beside the stage, not inside it, because a stage's contents become
//! a set (or the live directory, after a restore's swap). What this module does not do: the
//! swap of a restored tree and the settling of an interrupted swap ([`crate::fsutil`]).

use std::{
    io::{Read, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::cleanup::{self, Action};

/// Prefix of a backup's staging directory in the repository's local directory.
pub const BACKUP: &str = ".akbackup-staging-";
/// Prefix of an import's unpacked archive in the repository's local directory.
pub const IMPORT: &str = ".akbackup-import-";
/// Prefix of a MongoDB restore's dump in the repository's local directory.
pub const MONGODB_RESTORE: &str = ".akbackup-mongodb-restore-";
/// Prefix of an export's work directory in the export directory.
pub const EXPORT: &str = ".akbackup-export-";
/// Prefix of `verify --deep`'s copies in the temporary directory.
pub const VERIFY: &str = "akbackup-verify-";
/// Suffix of the owner file beside each stage.
pub const OWNER_SUFFIX: &str = ".owner";

/// How old a stage without an owner file (made by an akbackup from before owner files) must
/// be before it is removed: no run of that version can still be using it.
const LEGACY_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Prefix of an SSDB store's backup checkpoint, next to the store: `.<name>.akbackup-stage-`.
#[must_use]
pub fn ssdb_prefix(store: &Path) -> String {
    format!(".{}.akbackup-stage-", file_name(store))
}

/// Prefix of an in-place restore's staging, next to the live directory:
/// `.<name>.akbackup-restore-`.
#[must_use]
pub fn restore_prefix(live: &Path) -> String {
    format!(".{}.akbackup-restore-", file_name(live))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "root".into(), |n| n.to_string_lossy().into_owned())
}

/// Who owns a stage, as written in its owner file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The command line of the run.
    pub command: String,
    /// When the stage was made.
    pub time: String,
}

impl Owner {
    /// This process.
    #[must_use]
    pub fn me() -> Self {
        Self {
            pid: std::process::id(),
            host: crate::process::this_host(),
            command: command_line(),
            time: jiff::Timestamp::now().to_string(),
        }
    }
}

/// The command line of this run (`akbackup backup --only ssdb.stat`), for owner records.
#[must_use]
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let mut shown = args;
    if let Some(first) = shown.first_mut()
        && let Some(base) = Path::new(first.as_str()).file_name()
    {
        *first = base.to_string_lossy().into_owned();
    }
    shell_words::join(shown)
}

/// A stage this run owns. Dropping it removes the directory, then the owner file, then
/// releases the lock; SIGINT and SIGTERM do the same through [`crate::cleanup`].
pub struct Stage {
    path: PathBuf,
    // Field order is the order of drop: the directory goes before its owner file, and the
    // owner file before the lock that protects it.
    _dir: cleanup::Guard,
    _owner_file: cleanup::Guard,
    _lock: Flock<std::fs::File>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage").field("path", &self.path).finish()
    }
}

impl Stage {
    /// Makes `<dir>/<prefix><pid>-<random>` (0700) with its locked owner file beside it.
    ///
    /// # Errors
    /// I/O errors creating either.
    pub fn create(dir: &Path, prefix: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let me = Owner::me();
        for _ in 0..8 {
            // The owner file first, with a name nobody else has (O_EXCL), and locked before
            // the directory exists: a directory never exists without its owner's lock.
            let tmp = tempfile::Builder::new()
                .prefix(&format!("{prefix}{}-", me.pid))
                .suffix(OWNER_SUFFIX)
                .rand_bytes(8)
                .tempfile_in(dir)?;
            let (file, owner_path) = tmp.keep().map_err(|e| e.error)?;
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                // A sweep of another run saw the new file and holds it: take another name.
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
                Err((_, errno)) => {
                    let _ = std::fs::remove_file(&owner_path);
                    return Err(std::io::Error::from(errno));
                }
            };
            // That sweep may also have removed it before we locked: then our lock guards
            // nothing anyone can see.
            if !same_file(&owner_path, &lock) {
                continue;
            }
            let owner_file = cleanup::register(Action::RemoveFile(owner_path.clone()));
            // The record is for messages; the lock is what counts (a full disk may refuse it).
            if let Ok(body) = serde_json::to_vec(&me) {
                let _ = lock.write_all(&body).and_then(|()| lock.sync_all());
            }
            let path = stage_of(&owner_path);
            std::fs::DirBuilder::new().mode(0o700).create(&path)?;
            let dir_guard = cleanup::register(Action::RemoveDir(path.clone()));
            // The umask may have narrowed the mode further; never wider.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
            return Ok(Self {
                path,
                _dir: dir_guard,
                _owner_file: owner_file,
                _lock: lock,
            });
        }
        Err(std::io::Error::other(format!(
            "cannot create a stage {prefix}* in {}: its owner file kept being taken",
            dir.display()
        )))
    }

    /// Takes the stage over from its guards: the caller removes the directory and then the
    /// owner file when (and only when) what it put in it is undone, and holds the returned
    /// lock until then. Dropping the lock with the files left makes the stage a dead run's,
    /// which the next sweep of its directory handles.
    #[must_use]
    pub fn into_parts(self) -> (PathBuf, PathBuf, Flock<std::fs::File>) {
        let Self {
            path,
            _dir,
            _owner_file,
            _lock,
        } = self;
        _dir.disarm();
        _owner_file.disarm();
        let owner = PathBuf::from(format!("{}{OWNER_SUFFIX}", path.display()));
        (path, owner, _lock)
    }

    /// The stage directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `<stage>.owner` -> `<stage>`.
fn stage_of(owner: &Path) -> PathBuf {
    let name = owner
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    owner.with_file_name(name.strip_suffix(OWNER_SUFFIX).unwrap_or(&name))
}

/// Whether `path` still names the file `lock` holds.
fn same_file(path: &Path, lock: &Flock<std::fs::File>) -> bool {
    match (std::fs::metadata(path), lock.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// What [`sweep`] found about one leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its owner is gone: the stage was removed.
    Removed,
    /// Its owner still runs: left alone.
    Alive,
    /// Its owner ran on another host (a shared directory): left alone.
    OtherHost(String),
}

/// Removes the stages `<dir>/<prefix>*` whose owner is dead (its owner file's lock is free),
/// and stages without an owner file that are a day old. Returns one line per stage removed.
/// A stage whose owner holds its lock is never touched.
#[must_use]
pub fn sweep(dir: &Path, prefix: &str) -> Vec<String> {
    sweep_with(dir, prefix, &|_| Ok(()))
}

/// [`sweep`], running `release` on each dead stage before it is removed (a snapshot mounted
/// on it, or a read-only subvolume in it, must go first). When `release` fails, the stage and
/// its owner file stay, for the next sweep, and the line says why.
#[must_use]
pub fn sweep_with(
    dir: &Path,
    prefix: &str,
    release: &dyn Fn(&Path) -> Result<(), String>,
) -> Vec<String> {
    let mut notes = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return notes;
    };
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    for name in &names {
        let path = dir.join(name);
        if name.ends_with(OWNER_SUFFIX) {
            let mut refused = None;
            let verdict = judge(&path, |stage: &Path| {
                release(stage).map_err(|why| {
                    refused = Some(format!(
                        "cannot release {}, left by a run that died: {why}",
                        stage.display()
                    ));
                })
            });
            notes.extend(refused);
            if let Some((Verdict::Removed, owner)) = verdict {
                notes.push(match owner {
                    Some(o) => format!(
                        "removed {}, left by akbackup pid {} (`{}`, {}), which died",
                        stage_of(&path).display(),
                        o.pid,
                        o.command,
                        o.time
                    ),
                    None => format!(
                        "removed {}, left by a run that died",
                        stage_of(&path).display()
                    ),
                });
            }
        } else if !names.contains(&format!("{name}{OWNER_SUFFIX}"))
            && legacy_and_old(&path)
            && std::fs::remove_dir_all(&path).is_ok()
        {
            notes.push(format!(
                "removed {}, left by an earlier akbackup a day ago or more",
                path.display()
            ));
        }
    }
    notes
}

/// Whether some stage `<dir>/<prefix>*` has a live owner (its lock is held).
#[must_use]
pub fn any_alive(dir: &Path, prefix: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.starts_with(prefix)
            && name.ends_with(OWNER_SUFFIX)
            && std::fs::File::open(e.path()).is_ok_and(|f| {
                matches!(
                    Flock::lock(f, FlockArg::LockSharedNonblock),
                    Err((_, nix::errno::Errno::EWOULDBLOCK))
                )
            })
    })
}

/// Judges the stage of owner file `owner_path` and removes it when its owner is dead.
fn judge(
    owner_path: &Path,
    release: impl FnOnce(&Path) -> Result<(), ()>,
) -> Option<(Verdict, Option<Owner>)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(owner_path)
        .ok()?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Some((Verdict::Alive, None)),
        Err(_) => return None,
    };
    // Removed by its owner (or another sweep) between our open and our lock.
    if !same_file(owner_path, &lock) {
        return None;
    }
    let mut text = String::new();
    let _ = lock.read_to_string(&mut text);
    let owner = serde_json::from_str::<Owner>(&text).ok();
    if let Some(o) = &owner
        && o.host != crate::process::this_host()
    {
        // On a directory shared between hosts the lock may not cross them: never guess.
        return Some((Verdict::OtherHost(o.host.clone()), owner));
    }
    let stage = stage_of(owner_path);
    release(&stage).ok()?;
    match std::fs::remove_dir_all(&stage) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Keep the owner file, so the directory is judged again next time.
        Err(_) => return None,
    }
    let _ = std::fs::remove_file(owner_path);
    Some((Verdict::Removed, owner))
}

fn legacy_and_old(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        m.is_dir()
            && m.modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= LEGACY_AGE)
    })
}

/// Removes what dead runs left in the places a run of `config` makes stages: the
/// repository's local directory `work_dir`, and beside each configured component's directory
/// (SSDB checkpoints, in-place restore staging). Interrupted swaps of a restore are settled
/// by the next restore of that directory ([`crate::fsutil::recover_interrupted_restore`]),
/// not here. Returns one line per stage removed.
#[must_use]
pub fn sweep_all(config: &crate::config::Config, work_dir: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    for prefix in [BACKUP, IMPORT, MONGODB_RESTORE] {
        notes.extend(sweep(work_dir, prefix));
    }
    let mut places: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for files in config.files.values() {
        places.push((files.path.clone(), vec![restore_prefix(&files.path)]));
    }
    for store in config.ssdb.values() {
        places.push((
            store.path.clone(),
            vec![ssdb_prefix(&store.path), restore_prefix(&store.path)],
        ));
    }
    for (path, prefixes) in places {
        let Some(parent) = path.parent() else {
            continue;
        };
        for prefix in prefixes {
            notes.extend(sweep(parent, &prefix));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    /// Two stages made at the same instant with the same prefix get different names, each
    /// with its owner file beside it naming this process; dropping one removes both.
    fn stages_made_together_never_share_a_name() {
        let t = tempfile::tempdir().unwrap();
        let a = Stage::create(t.path(), BACKUP).unwrap();
        let b = Stage::create(t.path(), BACKUP).unwrap();
        assert_ne!(a.path(), b.path());
        let pid = format!("{BACKUP}{}-", std::process::id());
        for s in [&a, &b] {
            let name = s.path().file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with(&pid), "{name}");
            let owner: Owner = serde_json::from_str(
                &std::fs::read_to_string(format!("{}{OWNER_SUFFIX}", s.path().display())).unwrap(),
            )
            .unwrap();
            assert_eq!(owner.pid, std::process::id());
        }
        assert_eq!(entries(t.path()).len(), 4);
        drop(a);
        assert_eq!(entries(t.path()).len(), 2);
        drop(b);
        assert!(entries(t.path()).is_empty());
    }

    #[test]
    /// A sweep leaves a stage whose owner holds its lock, removes one whose lock is free (its
    /// owner died), and keeps a young stage without an owner file (an older akbackup may still
    /// be using it).
    fn sweep_removes_only_dead_owners_stages() {
        let t = tempfile::tempdir().unwrap();
        let live = Stage::create(t.path(), BACKUP).unwrap();
        let dead = t.path().join(format!("{BACKUP}1-dead"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("f"), "x").unwrap();
        std::fs::write(
            t.path().join(format!("{BACKUP}1-dead{OWNER_SUFFIX}")),
            r#"{"pid":1,"host":"h","command":"akbackup backup","time":"t"}"#
                .replace("\"h\"", &format!("\"{}\"", crate::process::this_host())),
        )
        .unwrap();
        let legacy = t.path().join(format!("{BACKUP}Ab12Cd"));
        std::fs::create_dir(&legacy).unwrap();

        let notes = sweep(t.path(), BACKUP);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("pid 1"), "{notes:?}");
        assert!(!dead.exists());
        assert!(live.path().is_dir(), "a live owner's stage was removed");
        assert!(legacy.is_dir(), "a young legacy stage was removed");
        assert!(any_alive(t.path(), BACKUP));
        drop(live);
        assert!(!any_alive(t.path(), BACKUP));
    }
}
