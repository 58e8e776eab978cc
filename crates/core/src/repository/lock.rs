//! The repository write lock: one writer at a time, stale locks after a crash detected.
//!
//! The lock is a file `akbackup.lock` in the repository root, held with `flock(2)` (so the
//! kernel releases it when a holder dies, and two runs breaking the same stale lock cannot
//! both win) and holding JSON `{pid, host, command, time}` to name the holder in messages.
//! A file naming a process that is gone on this host is stale: it is taken over with a
//! warning and the new run proceeds. A lock from
//! another host is never broken automatically (we cannot see its processes); the message says
//! which host and how to remove it. The `restic` client ignores this file; the lock that
//! hosts and restic share lives in the repository ([`super::locks`]) and is held inside
//! this one.
//!
//! A run may wait for the lock instead of failing ([`RepoLock::acquire_waiting`], the
//! `--wait` flag): it polls, so a holder that dies (kernel lock released) or finishes lets the
//! waiter in at once, and a stale file is judged again on every attempt.

use std::{
    io::{Read, Seek, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use crate::process::{alive, is_akbackup, this_host};

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
    /// Another live process still held it when the wait ran out.
    #[error(
        "repository {repo} is still locked by pid {} on {} running `{}` since {} (waited {waited}s): try again later or wait longer with --wait",
        holder.pid, holder.host, holder.command, holder.time
    )]
    StillHeld {
        /// Repository path.
        repo: PathBuf,
        /// The holder.
        holder: LockHolder,
        /// Seconds waited.
        waited: u64,
    },
    /// Another live process holds a conflicting lock in the repository (akbackup on any
    /// host, or the restic client).
    #[error(
        "repository {repo} is locked by {} lock of pid {} on {} running `{}` since {}: wait for it to finish (--wait); a lock whose host is gone is ignored from {stale_at}, 30 minutes after its last refresh",
        if *exclusive { "an exclusive" } else { "a" },
        holder.pid, holder.host, holder.command, holder.time
    )]
    RepoHeld {
        /// Repository location.
        repo: String,
        /// The holder (boxed: this error travels in every repository result).
        holder: Box<LockHolder>,
        /// Whether the holder's lock is exclusive.
        exclusive: bool,
        /// When the holder's lock goes stale unless refreshed.
        stale_at: String,
    },
    /// The lock file cannot be written or read.
    #[error("cannot lock repository {repo}: {error}")]
    Io {
        /// Repository path.
        repo: PathBuf,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
}

/// A held lock; released on drop, and on SIGINT/SIGTERM through [`crate::cleanup`].
#[derive(Debug)]
pub struct RepoLock {
    // Field order matters: the repository's lock goes first, then the local file is removed
    // (guard), then the kernel lock is released.
    remote: Option<super::locks::RemoteLock>,
    _release: crate::cleanup::Guard,
    _kernel_lock: Flock<std::fs::File>,
    /// A stale lock that was broken to take this one.
    pub broke_stale: Option<LockHolder>,
}

/// Who holds the lock at `path`, for the message. The holder empties the file and writes
/// itself in just after taking the kernel lock: reading in between gives nothing, so read
/// again for up to a second before settling for "unknown".
fn read_holder(path: &Path) -> LockHolder {
    for _ in 0..50 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Ok(holder) = serde_json::from_str::<LockHolder>(&text) {
            return holder;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    LockHolder {
        pid: 0,
        host: "unknown".to_string(),
        command: "unknown".to_string(),
        time: "just now".to_string(),
    }
}

/// How long to wait for a lock that another run holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once, naming the holder.
    #[default]
    No,
    /// Wait up to this long, then fail naming the holder.
    Up(std::time::Duration),
    /// Wait until the holder is done.
    Forever,
}

impl RepoLock {
    /// Adds the lock held in the repository itself, released before the local one.
    pub(crate) fn attach(&mut self, remote: super::locks::RemoteLock) {
        self.remote = Some(remote);
    }

    /// Takes the lock, waiting for a live holder as `wait` allows; `on_wait` is called once
    /// with the holder when waiting starts (to tell the operator why nothing happens).
    ///
    /// # Errors
    /// [`LockError::Held`] (no wait), [`LockError::StillHeld`] (the wait ran out), I/O errors.
    pub fn acquire_waiting(
        repo: &Path,
        command: &str,
        wait: LockWait,
        on_wait: &dyn Fn(&LockHolder),
    ) -> Result<Self, LockError> {
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            match Self::acquire(repo, command) {
                Err(LockError::Held { repo, holder }) => {
                    let limit = match wait {
                        LockWait::No => return Err(LockError::Held { repo, holder }),
                        LockWait::Up(d) => Some(d),
                        LockWait::Forever => None,
                    };
                    if let Some(limit) = limit
                        && started.elapsed() >= limit
                    {
                        return Err(LockError::StillHeld {
                            repo,
                            holder,
                            waited: limit.as_secs(),
                        });
                    }
                    if !told {
                        on_wait(&holder);
                        told = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Takes the lock.
    ///
    /// # Errors
    /// [`LockError::Held`] with the holder, or I/O errors.
    pub fn acquire(repo: &Path, command: &str) -> Result<Self, LockError> {
        let path = repo.join(LOCK_FILE);
        let io = |source| LockError::Io {
            repo: repo.to_path_buf(),
            error: source,
        };
        let me = LockHolder {
            pid: std::process::id(),
            host: this_host(),
            command: command.to_string(),
            time: jiff::Timestamp::now().to_string(),
        };
        let body = serde_json::to_vec(&me).map_err(|e| io(std::io::Error::other(e)))?;
        for _ in 0..3 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(LockError::Held {
                        repo: repo.to_path_buf(),
                        holder: read_holder(&path),
                    });
                }
                Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
            };
            // The file may have been removed by the previous holder between our open and our
            // lock: then we hold a lock nobody else can see. Start again on the new file.
            let same = match (std::fs::metadata(&path), locked.metadata()) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            let mut text = String::new();
            let _ = locked.read_to_string(&mut text);
            let mut broke_stale = None;
            if let Ok(holder) = serde_json::from_str::<LockHolder>(&text) {
                // A lock file naming a live akbackup, or one on another host, without the
                // kernel lock: written by hand or by an older version; respect it. A live
                // process that is not akbackup got the pid of one that crashed (pids are
                // reused): waiting for it would never end.
                if holder.host != me.host
                    || (holder.pid != me.pid && alive(holder.pid) && is_akbackup(holder.pid))
                {
                    return Err(LockError::Held {
                        repo: repo.to_path_buf(),
                        holder,
                    });
                }
                // Same host, process gone: a crash left it.
                broke_stale = Some(holder);
            }
            locked.set_len(0).map_err(io)?;
            locked.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
            locked.write_all(&body).map_err(io)?;
            locked.sync_all().map_err(io)?;
            let release = crate::cleanup::register(crate::cleanup::Action::RemoveFile(path));
            return Ok(Self {
                remote: None,
                _release: release,
                _kernel_lock: locked,
                broke_stale,
            });
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

    #[test]
    /// A waiter gets the lock once the holder releases it, and a limited wait gives up
    /// naming the holder and how long it waited.
    fn waiting_for_the_lock() {
        let t = tempfile::tempdir().unwrap();
        let first = RepoLock::acquire(t.path(), "backup").unwrap();
        let err = RepoLock::acquire_waiting(
            t.path(),
            "backup",
            LockWait::Up(std::time::Duration::from_millis(300)),
            &|_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("still locked") && err.contains("waited 0s"),
            "{err}"
        );
        let path = t.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            RepoLock::acquire_waiting(&path, "forget", LockWait::Forever, &|_| {}).is_ok()
        });
        std::thread::sleep(std::time::Duration::from_millis(400));
        drop(first);
        assert!(waiter.join().unwrap());
    }
}
