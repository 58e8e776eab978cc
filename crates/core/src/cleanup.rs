//! Cleanup on every exit path, Ctrl-C included.
//!
//! Staging directories and stopped services are registered here while they exist. Normal
//! paths release them through guards (`Drop`); on SIGINT, SIGTERM or SIGHUP a background
//! thread started by [`install_signal_handler`] performs every registered action (remove the
//! staging directory, start the stopped service) before the process exits with 130. A `kill -9`
//! cannot be caught: the next run removes leftover staging directories itself.

use std::{
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

/// Something to undo.
#[derive(Debug, Clone)]
pub enum Action {
    /// Remove a staging directory.
    RemoveDir(PathBuf),
    /// Remove a file (the repository lock).
    RemoveFile(PathBuf),
    /// Start a systemd unit that we stopped.
    StartUnit(String),
    /// Run a command (argv, no shell) that starts what we stopped.
    Run(Vec<String>),
    /// Call a function (remove the repository's lock file in the storage).
    Call(Callback),
}

/// A cleanup function; its `Debug` says only that it is one.
#[derive(Clone)]
pub struct Callback(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

static REGISTRY: Mutex<Vec<(u64, Action)>> = Mutex::new(Vec::new());
/// Set by the signal thread before it starts undoing things.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether a signal arrived and the signal thread is cleaning up (it exits the process with
/// 130 when done).
#[must_use]
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Blocks the calling thread for good once [`interrupted`]: the signal thread finishes the
/// cleanup and exits with 130. Without this, the main thread could fail on the staging
/// directory the cleanup just removed and exit 1 first, or print a confusing error.
pub fn park_if_interrupted() {
    while interrupted() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Performs its action when dropped, unless [`Guard::disarm`]ed.
#[derive(Debug)]
pub struct Guard {
    id: u64,
    action: Option<Action>,
}

/// Registers `action` until the returned guard is dropped (which performs it) or disarmed.
#[must_use]
pub fn register(action: Action) -> Guard {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut r) = REGISTRY.lock() {
        r.push((id, action.clone()));
    }
    Guard {
        id,
        action: Some(action),
    }
}

fn unregister(id: u64) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|(i, _)| *i != id);
    }
}

fn perform(action: &Action) {
    match action {
        Action::RemoveDir(p) => {
            let _ = std::fs::remove_dir_all(p);
        }
        Action::RemoveFile(p) => {
            let _ = std::fs::remove_file(p);
        }
        Action::StartUnit(unit) => {
            if let Err(e) = crate::service::systemctl("start", unit) {
                eprintln!("akbackup: could not start {unit} again: {e}; start it by hand");
            }
        }
        Action::Run(argv) => {
            if let Err(e) = crate::service::run(argv) {
                eprintln!("akbackup: {e}; run it by hand");
            }
        }
        Action::Call(f) => (f.0)(),
    }
}

impl Guard {
    /// Forgets the action without performing it (the owner did the work itself).
    pub fn disarm(mut self) {
        unregister(self.id);
        self.action = None;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        unregister(self.id);
        if let Some(a) = self.action.take() {
            perform(&a);
        }
    }
}

/// Starts the thread that undoes registered actions on SIGINT, SIGTERM and SIGHUP.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn install_signal_handler() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("akbackup-signals".to_string())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                INTERRUPTED.store(true, Ordering::SeqCst);
                let actions: Vec<Action> = REGISTRY
                    .lock()
                    .map(|mut r| r.drain(..).rev().map(|(_, a)| a).collect())
                    .unwrap_or_default();
                if !actions.is_empty() {
                    eprintln!(
                        "akbackup: interrupted (signal {sig}): cleaning up {} item(s)",
                        actions.len()
                    );
                }
                for a in &actions {
                    perform(a);
                }
                std::process::exit(130);
            }
        })?;
    Ok(())
}
