//! The journal of services a run stopped, so that a run killed with `kill -9` (or a power
//! cut) does not leave the platform down for good.
//!
//! Every stop akbackup makes (an SSDB unit in `mode = "stop"` or for an in-place restore, the
//! services of `restore --all`) is registered with [`crate::cleanup`] before the stop command
//! runs; that registration also writes an entry here: what is down, the command that starts
//! it, and which run stopped it (pid, host, command line, time). The entry goes when the run
//! starts the service again (or deliberately leaves it stopped, `--no-restart`). What a
//! signal can reach is handled by the signal thread; what only the journal survives is handled
//! by the next run: [`settle`], which every command that opens the repository calls first,
//! starts each service whose recording run is dead and says so. When that start fails (no
//! permission, the unit is broken) the entry stays, and `status` and `doctor` report it
//! loudly with the command to run.
//!
//! The journal is `akbackup-stopped.json` in the repository's local directory (the repository
//! itself, or the work directory of a remote one): it exists, the run can write it, and tests
//! keep it in their sandbox. So it is seen by the next run that uses the same repository; a run
//! of another config with another repository does not see it. Reads and writes take
//! `flock(2)` on `akbackup-stopped.lock` beside it; the file is replaced atomically.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// The journal's file name in the state directory.
pub const FILE: &str = "akbackup-stopped.json";
/// The lock taken around every read-modify-write of the journal.
const LOCK: &str = "akbackup-stopped.lock";

/// Where this process journals its stops (none until [`journal_in`]).
static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Errors reading or writing the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal or its lock cannot be read or written.
    #[error("cannot use the journal of stopped services {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// The journal is not what this version writes.
    #[error("the journal of stopped services {path} is damaged: {error}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Cause (printed in the message, so not also the `source()`).
        error: serde_json::Error,
    },
}

/// One service a run stopped and has not started again yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Unique in the journal: `<pid>-<n>`.
    pub id: String,
    /// What is down, for people: the unit (`ssdb-stat`) or the command that starts it.
    pub service: String,
    /// The command (argv) that starts it again.
    pub start: Vec<String>,
    /// The run that stopped it.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// Its command line.
    pub command: String,
    /// When it was stopped.
    pub time: String,
}

impl Entry {
    /// The command that starts it again, as a shell line.
    #[must_use]
    pub fn start_line(&self) -> String {
        shell_words::join(&self.start)
    }

    /// Whether the run that stopped it still runs (on another host: assumed so, we cannot
    /// see its processes).
    #[must_use]
    pub fn recorder_alive(&self) -> bool {
        self.host != crate::process::this_host()
            || (self.pid == std::process::id()
                || (crate::process::alive(self.pid) && crate::process::is_akbackup(self.pid)))
    }

    /// One line saying what is down and why, for `status` and `doctor`.
    #[must_use]
    pub fn describe(&self) -> String {
        if self.recorder_alive() {
            format!(
                "{} is stopped by akbackup pid {} on {} (`{}`) since {}, which is still running",
                self.service, self.pid, self.host, self.command, self.time
            )
        } else {
            format!(
                "{} was stopped by akbackup pid {} (`{}`) at {}, which died: run `{}` (or any akbackup command starts it)",
                self.service,
                self.pid,
                self.command,
                self.time,
                self.start_line()
            )
        }
    }
}

/// Journals this process's stops in `dir` from now on.
pub fn journal_in(dir: &Path) {
    if let Ok(mut d) = DIR.lock() {
        *d = Some(dir.to_path_buf());
    }
}

fn journal_dir() -> Option<PathBuf> {
    DIR.lock().ok().and_then(|d| d.clone())
}

/// Runs `change` on the journal in `dir` under its lock, writing it back when it changed.
fn with_journal<T>(
    dir: &Path,
    change: impl FnOnce(&mut Vec<Entry>) -> T,
) -> Result<T, JournalError> {
    let lock_path = dir.join(LOCK);
    let path = dir.join(FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::Io {
            path,
            error: source,
        }
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let _lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io(&lock_path)(std::io::Error::from(errno)))?;
    let mut entries: Vec<Entry> = match std::fs::read(&path) {
        Ok(bytes) if !bytes.is_empty() => {
            serde_json::from_slice(&bytes).map_err(|source| JournalError::Damaged {
                path: path.clone(),
                error: source,
            })?
        }
        Ok(_) => Vec::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&path)(e)),
    };
    let before = entries.clone();
    let out = change(&mut entries);
    if entries != before {
        if entries.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        } else {
            let body = serde_json::to_vec_pretty(&entries)
                .map_err(|e| io(&path)(std::io::Error::other(e)))?;
            crate::fsutil::write_atomic(&path, &body).map_err(io(&path))?;
        }
    }
    Ok(out)
}

/// Records that this run is about to stop `service` (started again by `start`); returns the
/// entry's id, or `None` when no journal is in use or it cannot be written (the stop goes
/// ahead: the run itself still starts the service on every path it lives through).
pub(crate) fn record(service: &str, start: &[String], n: u64) -> Option<String> {
    let dir = journal_dir()?;
    let me = crate::stage::Owner::me();
    let entry = Entry {
        id: format!("{}-{n}", me.pid),
        service: service.to_string(),
        start: start.to_vec(),
        pid: me.pid,
        host: me.host,
        command: me.command,
        time: me.time,
    };
    let id = entry.id.clone();
    match with_journal(&dir, |entries| entries.push(entry)) {
        Ok(()) => Some(id),
        Err(e) => {
            tracing::warn!("{e}: a kill -9 now would leave {service} stopped unrecorded");
            None
        }
    }
}

/// Removes entry `id`: the run started the service again (or left it stopped on purpose).
pub(crate) fn clear(id: &str) {
    let Some(dir) = journal_dir() else { return };
    if let Err(e) = with_journal(&dir, |entries| entries.retain(|e| e.id != id)) {
        tracing::warn!("{e}");
    }
}

/// The services the journal in `dir` says are stopped.
///
/// # Errors
/// [`JournalError`].
pub fn pending(dir: &Path) -> Result<Vec<Entry>, JournalError> {
    if !dir.join(FILE).exists() {
        return Ok(Vec::new());
    }
    with_journal(dir, |entries| entries.clone())
}

/// What [`settle`] did about one service a dead run left stopped.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The journal entry.
    pub entry: Entry,
    /// The start command's outcome; on failure the entry stays in the journal.
    pub started: Result<(), String>,
}

impl Settled {
    /// One line for the operator.
    #[must_use]
    pub fn describe(&self) -> String {
        let e = &self.entry;
        match &self.started {
            Ok(()) => format!(
                "{} was stopped by akbackup pid {} (`{}`) at {}, which died: started it again (`{}`)",
                e.service,
                e.pid,
                e.command,
                e.time,
                e.start_line()
            ),
            Err(why) => format!(
                "{} was stopped by akbackup pid {} (`{}`) at {}, which died; starting it again failed: {why}; run `{}` by hand",
                e.service,
                e.pid,
                e.command,
                e.time,
                e.start_line()
            ),
        }
    }
}

/// Starts every service the journal in `dir` records as stopped by a run that died, and
/// removes its entry when the start succeeds. Entries of live runs are left alone.
///
/// # Errors
/// [`JournalError`] when the journal cannot be read or written.
pub fn settle(dir: &Path) -> Result<Vec<Settled>, JournalError> {
    if !dir.join(FILE).exists() {
        return Ok(Vec::new());
    }
    // Taken out under the lock, so two runs settling at once do not both start a service;
    // started outside it (a start may take a while); put back if the start fails.
    let orphans = with_journal(dir, |entries| {
        let (dead, live): (Vec<Entry>, Vec<Entry>) =
            entries.drain(..).partition(|e| !e.recorder_alive());
        *entries = live;
        dead
    })?;
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for entry in orphans {
        let started = crate::service::run(&entry.start).map_err(|e| e.to_string());
        if started.is_err() {
            failed.push(entry.clone());
        }
        out.push(Settled { entry, started });
    }
    if !failed.is_empty() {
        with_journal(dir, |entries| entries.extend(failed))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, pid: u32) -> Entry {
        Entry {
            id: id.to_string(),
            service: "unit".to_string(),
            start: vec!["true".to_string()],
            pid,
            host: crate::process::this_host(),
            command: "akbackup backup".to_string(),
            time: "t".to_string(),
        }
    }

    #[test]
    /// The next run starts what a dead run stopped and forgets it; a live run's entry (this
    /// process) stays; a failed start stays for `status` and `doctor` to report.
    fn settle_starts_only_what_dead_runs_stopped() {
        let t = tempfile::tempdir().unwrap();
        // A pid that no process has: above the kernel's maximum.
        let dead = 1 << 23;
        let mut failing = entry("b", dead);
        failing.start = vec!["false".to_string()];
        with_journal(t.path(), |e| {
            e.extend([entry("a", dead), failing, entry("c", std::process::id())]);
        })
        .unwrap();
        let settled = settle(t.path()).unwrap();
        assert_eq!(settled.len(), 2, "{settled:?}");
        assert!(settled[0].started.is_ok() && settled[1].started.is_err());
        assert!(
            settled[0]
                .describe()
                .contains("which died: started it again")
        );
        let left: Vec<String> = pending(t.path())
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(left, vec!["c".to_string(), "b".to_string()]);
    }
}
