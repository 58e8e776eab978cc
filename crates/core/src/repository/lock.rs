//! The repository write lock: one writer at a time, stale locks after a crash detected.
//!
//! The lock is a file `akbackup.lock` in the repository root, created with `O_EXCL` and
//! holding JSON `{pid, host, command, time}`. A lock whose holder is on this host and no
//! longer alive is stale: it is removed with a warning and the new run proceeds. A lock from
//! another host is never broken automatically (we cannot see its processes); the message says
//! which host and how to remove it. The `restic` client ignores this file.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Name of the lock file in the repository root.
pub const LOCK_FILE: &str = "akbackup.lock";

/// Who holds a lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// The command it runs.
    pub command: String,
    /// When it took the lock.
    pub time: String,
}

/// Lock errors.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error(
        "repository {repo} is locked by pid {} on {} running `{}` since {}: wait for it to finish{}",
        holder.pid, holder.host, holder.command, holder.time,
        if holder.host == this_host() { String::new() } else { format!(", or if that host is gone remove {}", repo.join(LOCK_FILE).display()) }
    )]
    Held {
        /// Repository path.
        repo: PathBuf,
        /// The holder.
        holder: LockHolder,
    },
    /// The lock file cannot be written or read.
    #[error("cannot lock repository {repo}: {source}")]
    Io {
        /// Repository path.
        repo: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A held lock; released on drop, and on SIGINT/SIGTERM through [`crate::cleanup`].
#[derive(Debug)]
pub struct RepoLock {
    _release: crate::cleanup::Guard,
    /// A stale lock that was broken to take this one.
    pub broke_stale: Option<LockHolder>,
}

fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

impl RepoLock {
    /// Takes the lock.
    ///
    /// # Errors
    /// [`LockError::Held`] with the holder, or I/O errors.
    pub fn acquire(repo: &Path, command: &str) -> Result<Self, LockError> {
        let path = repo.join(LOCK_FILE);
        let io = |source| LockError::Io {
            repo: repo.to_path_buf(),
            source,
        };
        let me = LockHolder {
            pid: std::process::id(),
            host: this_host(),
            command: command.to_string(),
            time: jiff::Timestamp::now().to_string(),
        };
        let body = serde_json::to_vec(&me).map_err(|e| io(std::io::Error::other(e)))?;
        let mut broke_stale = None;
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&body).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    let release =
                        crate::cleanup::register(crate::cleanup::Action::RemoveFile(path));
                    return Ok(Self {
                        _release: release,
                        broke_stale,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match serde_json::from_str::<LockHolder>(&text) {
                        Ok(holder) if holder.host != me.host || alive(holder.pid) => {
                            return Err(LockError::Held {
                                repo: repo.to_path_buf(),
                                holder,
                            });
                        }
                        Ok(holder) => {
                            // Same host, process gone: a crash left it.
                            std::fs::remove_file(&path).map_err(io)?;
                            broke_stale = Some(holder);
                        }
                        Err(_) if text.is_empty() => {
                            // Created but not yet written by a racing process, or a crash
                            // between create and write: treat as stale after a short wait.
                            std::thread::sleep(std::time::Duration::from_millis(200));
                            if std::fs::read_to_string(&path)
                                .unwrap_or_default()
                                .is_empty()
                            {
                                std::fs::remove_file(&path).map_err(io)?;
                            }
                        }
                        Err(_) => {
                            return Err(io(std::io::Error::other(format!(
                                "{} is not an akbackup lock; remove it if no akbackup runs",
                                path.display()
                            ))));
                        }
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other(
            "the lock kept changing; try again",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A second lock while the first is held fails naming the holder; a dead holder is stale.
    fn held_and_stale() {
        let t = tempfile::tempdir().unwrap();
        let first = RepoLock::acquire(t.path(), "backup").unwrap();
        let err = RepoLock::acquire(t.path(), "forget")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let stale = LockHolder {
            pid: u32::MAX - 1,
            host: this_host(),
            command: "backup".into(),
            time: "t".into(),
        };
        std::fs::write(
            t.path().join(LOCK_FILE),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
        let lock = RepoLock::acquire(t.path(), "backup").unwrap();
        assert_eq!(lock.broke_stale.as_ref().map(|h| h.pid), Some(u32::MAX - 1));
    }
}
