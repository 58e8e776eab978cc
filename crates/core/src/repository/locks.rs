//! restic's repository locks: files in `locks/` that every writer of a shared repository sees.
//!
//! The local lock ([`super::lock`]) only orders runs on one host. Several servers backing up
//! into one bucket, and an administrator running the standard `restic` client next to
//! akbackup, need a lock that lives in the repository itself. This module speaks restic's
//! protocol, so akbackup and restic exclude each other as two restic processes do:
//!
//! - A lock is a JSON document `{time, exclusive, hostname, username, pid, uid, gid}`
//!   sealed with the master key and stored as `locks/<sha256 of the sealed bytes>`. We add a
//!   `command` field, which restic ignores, to name what holds it.
//! - Shared locks (backup, restore, copy, key add) coexist; an exclusive one (forget, prune,
//!   key remove/passwd) excludes every other lock.
//! - Taking a lock: look for conflicting locks, write ours, wait 200 ms, look again (a writer
//!   that raced us is seen now; both back off rather than both proceed), then keep it fresh:
//!   every 5 minutes a new file with the current time replaces the old one.
//! - A lock is stale, and ignored, when it was not refreshed for 30 minutes, or when it was
//!   made on this host by a process that is gone. Stale locks are removed when found (what
//!   `restic unlock` does). A lock of another host is never judged by its pid: we cannot see
//!   that host's processes.
//!
//! What it does not do: detect a holder that keeps its lock fresh but is stuck. That is
//! restic's behaviour too; `--wait` bounds how long a run waits.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    engine::Engine,
    lock::{LockError, LockHolder, LockWait},
    store::Store,
    this_host,
};

/// A lock not refreshed for this long is stale (restic's rule).
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is refreshed (restic's interval).
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// Pause between writing our lock and looking for racing writers (restic's pause).
const SETTLE: Duration = Duration::from_millis(200);
/// The directory of lock files.
const DIR: &str = "locks";

/// Whether a lock lets other shared locks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LockMode {
    /// Coexists with other shared locks (backup, restore, copy).
    Shared,
    /// Excludes every other lock (forget, prune, key changes).
    Exclusive,
}

/// One lock file's content, in restic's field names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockFile {
    /// When it was taken or last refreshed.
    pub time: jiff::Timestamp,
    /// Exclusive or shared.
    pub exclusive: bool,
    /// The host of the holder.
    pub hostname: String,
    /// The user of the holder.
    #[serde(default)]
    pub username: String,
    /// The holder's process id on its host.
    pub pid: i64,
    /// The holder's user id.
    #[serde(default)]
    pub uid: u32,
    /// The holder's group id.
    #[serde(default)]
    pub gid: u32,
    /// What akbackup runs under it (absent in restic's locks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl LockFile {
    fn holder(&self) -> LockHolder {
        LockHolder {
            pid: u32::try_from(self.pid).unwrap_or(0),
            host: self.hostname.clone(),
            command: self.command.clone().unwrap_or_else(|| {
                format!(
                    "restic ({} lock, user {})",
                    if self.exclusive {
                        "exclusive"
                    } else {
                        "shared"
                    },
                    self.username
                )
            }),
            time: self.time.to_string(),
        }
    }

    /// Stale by restic's rules, judged on host `here` at `now`.
    fn is_stale(&self, here: &str, now: jiff::Timestamp) -> bool {
        let age = now.duration_since(self.time);
        if age > jiff::SignedDuration::try_from(STALE_AFTER).unwrap_or(jiff::SignedDuration::MAX) {
            return true;
        }
        if self.hostname != here {
            return false;
        }
        u32::try_from(self.pid).map_or(true, |pid| !crate::process::alive(pid))
    }
}

/// Reads one lock: unseal, then plain JSON or restic's compressed form (version byte 2 and
/// a zstd frame).
fn load(store: &Store, engine: &dyn Engine, path: &str) -> Option<LockFile> {
    let sealed = store.read(path).ok()?;
    let plain = engine.unseal(&sealed).ok()?;
    let json = match plain.first() {
        Some(b'{') => plain,
        Some(2) => zstd::decode_all(&plain[1..]).ok()?,
        _ => return None,
    };
    serde_json::from_slice(&json).ok()
}

fn is_lock_name(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The first live lock that conflicts with a `mode` lock, removing stale ones on the way.
fn conflict(
    store: &Store,
    engine: &dyn Engine,
    mode: LockMode,
    own: Option<&str>,
) -> Result<Option<LockFile>, LockError> {
    let here = this_host();
    let now = jiff::Timestamp::now();
    let files = store.list(DIR).map_err(|source| io_err(store, source))?;
    for (path, _) in files {
        if !is_lock_name(&path) || Some(path.as_str()) == own {
            continue;
        }
        // Unreadable locks are ignored, as restic 0.14 does: a damaged file must not block
        // every backup forever.
        let Some(lock) = load(store, engine, &path) else {
            continue;
        };
        if lock.is_stale(&here, now) {
            tracing::info!(
                "removing a stale repository lock of pid {} on {} from {}",
                lock.pid,
                lock.hostname,
                lock.time
            );
            let _ = store.remove(&path);
            continue;
        }
        if mode == LockMode::Exclusive || lock.exclusive {
            return Ok(Some(lock));
        }
    }
    Ok(None)
}

fn io_err(store: &Store, source: std::io::Error) -> LockError {
    LockError::Io {
        repo: store.shown().into(),
        error: source,
    }
}

/// Writes a fresh lock file; returns its path.
fn write(store: &Store, engine: &dyn Engine, me: &LockFile) -> Result<String, LockError> {
    let mut me = me.clone();
    me.time = jiff::Timestamp::now();
    let json = serde_json::to_vec(&me).map_err(|e| io_err(store, std::io::Error::other(e)))?;
    let sealed = engine
        .seal(&json)
        .map_err(|e| io_err(store, std::io::Error::other(e)))?;
    let path = format!("{DIR}/{}", hex::encode(Sha256::digest(&sealed)));
    store
        .write(&path, &sealed)
        .map_err(|source| io_err(store, source))?;
    Ok(path)
}

/// The outcome of one attempt to take a lock.
enum Attempt {
    /// Taken: the path of our lock file.
    Got(String),
    /// Refused: the lock in the way.
    Held(Box<LockFile>),
}

/// A lock held in the repository; refreshed in the background, removed on drop and on
/// SIGINT/SIGTERM.
pub struct RemoteLock {
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
    store: Store,
    _cleanup: crate::cleanup::Guard,
}

impl std::fmt::Debug for RemoteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLock")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        // The cleanup guard removes the current file when it drops, just after this.
    }
}

impl RemoteLock {
    /// Takes a `mode` lock for `command`, waiting for conflicting holders as `wait` allows
    /// (`on_wait` is told once when waiting begins).
    ///
    /// # Errors
    /// [`LockError::RepoHeld`] naming the holder, [`LockError::StillHeld`] when the wait ran
    /// out, storage errors.
    pub fn acquire(
        store: &Store,
        engine: Arc<dyn Engine>,
        mode: LockMode,
        command: &str,
        wait: LockWait,
        on_wait: &dyn Fn(&LockHolder),
    ) -> Result<Self, LockError> {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        let me = LockFile {
            time: jiff::Timestamp::now(),
            exclusive: mode == LockMode::Exclusive,
            hostname: this_host(),
            username: user,
            pid: i64::from(std::process::id()),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            command: Some(command.to_string()),
        };
        let started = Instant::now();
        let mut told = false;
        loop {
            match Self::try_once(store, &engine, mode, &me)? {
                Attempt::Got(path) => return Ok(Self::hold(store, engine, me, path)),
                Attempt::Held(held) => {
                    let limit = match wait {
                        LockWait::No => {
                            return Err(LockError::RepoHeld {
                                repo: store.shown(),
                                holder: Box::new(held.holder()),
                                exclusive: held.exclusive,
                                stale_at: (held.time
                                    + jiff::SignedDuration::try_from(STALE_AFTER)
                                        .unwrap_or_default())
                                .to_string(),
                            });
                        }
                        LockWait::Up(d) => Some(d),
                        LockWait::Forever => None,
                    };
                    if let Some(limit) = limit
                        && started.elapsed() >= limit
                    {
                        return Err(LockError::StillHeld {
                            repo: store.shown().into(),
                            holder: held.holder(),
                            waited: limit.as_secs(),
                        });
                    }
                    if !told {
                        on_wait(&held.holder());
                        told = true;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// One attempt: our lock's path, or the lock that conflicts with it.
    fn try_once(
        store: &Store,
        engine: &Arc<dyn Engine>,
        mode: LockMode,
        me: &LockFile,
    ) -> Result<Attempt, LockError> {
        if let Some(other) = conflict(store, engine.as_ref(), mode, None)? {
            return Ok(Attempt::Held(Box::new(other)));
        }
        let path = write(store, engine.as_ref(), me)?;
        std::thread::sleep(SETTLE);
        match conflict(store, engine.as_ref(), mode, Some(&path)) {
            Ok(None) => Ok(Attempt::Got(path)),
            Ok(Some(other)) => {
                let _ = store.remove(&path);
                Ok(Attempt::Held(Box::new(other)))
            }
            Err(e) => {
                let _ = store.remove(&path);
                Err(e)
            }
        }
    }

    fn hold(store: &Store, engine: Arc<dyn Engine>, me: LockFile, path: String) -> Self {
        let current = Arc::new(Mutex::new(path));
        let cleanup = {
            let store = store.clone();
            let current = Arc::clone(&current);
            crate::cleanup::register(crate::cleanup::Action::Call(crate::cleanup::Callback(
                Arc::new(move || {
                    if let Ok(path) = current.lock() {
                        let _ = store.remove(&path);
                    }
                }),
            )))
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let refresher = {
            let store = store.clone();
            let current = Arc::clone(&current);
            std::thread::Builder::new()
                .name("akbackup-lock-refresh".to_string())
                .spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(REFRESH_EVERY)
                    {
                        match write(&store, engine.as_ref(), &me) {
                            Ok(new) => {
                                if let Ok(mut cur) = current.lock() {
                                    let old = std::mem::replace(&mut *cur, new);
                                    let _ = store.remove(&old);
                                }
                            }
                            Err(e) => tracing::warn!(
                                "cannot refresh the repository lock ({e}); it goes stale 30 minutes after its last refresh"
                            ),
                        }
                    }
                })
                .ok()
        };
        Self {
            stop: Some(stop),
            refresher,
            store: store.clone(),
            _cleanup: cleanup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(host: &str, pid: i64, age_minutes: i64) -> LockFile {
        LockFile {
            time: jiff::Timestamp::now() - jiff::SignedDuration::from_mins(age_minutes),
            exclusive: false,
            hostname: host.to_string(),
            username: "root".to_string(),
            pid,
            uid: 0,
            gid: 0,
            command: None,
        }
    }

    #[test]
    /// restic's staleness rules: 30 minutes without refresh, or this host and a dead pid;
    /// another host's lock is never judged by its pid.
    fn staleness_follows_restic() {
        let now = jiff::Timestamp::now();
        let me = i64::from(std::process::id());
        assert!(!lock("here", me, 1).is_stale("here", now));
        assert!(lock("here", me, 31).is_stale("here", now));
        assert!(lock("here", i64::from(i32::MAX - 7), 1).is_stale("here", now));
        assert!(!lock("there", i64::from(i32::MAX - 7), 29).is_stale("here", now));
        assert!(lock("there", 1, 31).is_stale("here", now));
    }

    #[test]
    /// restic writes `time` with a zone offset and nanoseconds (Go's RFC 3339); we read it.
    fn reads_restic_json() {
        let json = br#"{"time":"2026-12-05T21:10:03.123456789+01:00","exclusive":true,"hostname":"h","username":"u","pid":42,"uid":1000,"gid":1000}"#;
        let l: LockFile = serde_json::from_slice(json).unwrap();
        assert!(l.exclusive);
        assert_eq!(l.pid, 42);
        assert_eq!(l.time.to_string(), "2026-12-05T20:10:03.123456789Z");
        assert!(l.holder().command.contains("exclusive"));
    }

    #[test]
    /// Only 64-hex names are lock files (a temporary file beside them is not).
    fn lock_names() {
        assert!(is_lock_name(&format!("locks/{}", "a".repeat(64))));
        assert!(!is_lock_name("locks/.tmp-123"));
        assert!(!is_lock_name(&format!("locks/{}", "g".repeat(64))));
    }
}
