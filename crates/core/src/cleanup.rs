//! Cleanup on every exit path, Ctrl-C included.
//!
//! Staging directories and stopped services are registered here while they exist. Normal
//! paths release them through guards (`Drop`); on SIGINT, SIGTERM or SIGHUP a background
//! thread started by [`install_signal_handler`] performs every registered action (remove the
//! staging directory, start the stopped service) before the process exits with 130. A `kill -9`
//! cannot be caught: the next run removes leftover staging directories whose owner died
//! ([`crate::stage`]), and starts the services the dead run stopped, which are journaled on
//! disk when registered here ([`crate::stopped`]): register a start *before* running the stop.

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

/// Registered actions: id, action, and the journal entry of a stopped service.
static REGISTRY: Mutex<Vec<(u64, Action, Option<String>)>> = Mutex::new(Vec::new());
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
    journal: Option<String>,
}

/// Registers `action` until the returned guard is dropped (which performs it) or disarmed.
/// A start of something stopped is also journaled on disk ([`crate::stopped`]) until then, so
/// register it before the stop runs.
#[must_use]
pub fn register(action: Action) -> Guard {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let journal = match &action {
        Action::StartUnit(unit) => crate::stopped::record(
            unit,
            &["systemctl".to_string(), "start".to_string(), unit.clone()],
            id,
        ),
        Action::Run(argv) => {
            // `systemctl start UNIT` is named by its unit, any other command by itself.
            let service = match argv.as_slice() {
                [ctl, start, unit] if ctl == "systemctl" && start == "start" => unit.clone(),
                _ => format!("the service of `{}`", shell_words::join(argv)),
            };
            crate::stopped::record(&service, argv, id)
        }
        Action::RemoveDir(_) | Action::RemoveFile(_) | Action::Call(_) => None,
    };
    if let Ok(mut r) = REGISTRY.lock() {
        r.push((id, action.clone(), journal.clone()));
    }
    Guard {
        id,
        action: Some(action),
        journal,
    }
}

fn unregister(id: u64) {
    if let Ok(mut r) = REGISTRY.lock() {
        r.retain(|(i, _, _)| *i != id);
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
        if let Some(j) = self.journal.take() {
            crate::stopped::clear(&j);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        unregister(self.id);
        if let Some(a) = self.action.take() {
            perform(&a);
        }
        if let Some(j) = self.journal.take() {
            crate::stopped::clear(&j);
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
                let actions: Vec<(Action, Option<String>)> = REGISTRY
                    .lock()
                    .map(|mut r| r.drain(..).rev().map(|(_, a, j)| (a, j)).collect())
                    .unwrap_or_default();
                if !actions.is_empty() {
                    eprintln!(
                        "akbackup: interrupted (signal {sig}): cleaning up {} item(s)",
                        actions.len()
                    );
                }
                for (a, journal) in &actions {
                    perform(a);
                    if let Some(j) = journal {
                        crate::stopped::clear(j);
                    }
                }
                std::process::exit(130);
            }
        })?;
    Ok(())
}

/// What the next run does about a run that died where no signal could reach it (`kill -9`,
/// a power cut), before anything else: starts the services the dead run stopped (journaled
/// in `work_dir`, see [`crate::stopped`]; entries of runs still alive are left alone) and
/// removes its stages ([`crate::stage::sweep_all`]); from then on this run's own stops are
/// journaled in `work_dir`. `work_dir` is the repository's local directory. Returns one line
/// per thing done or found wrong, for the operator.
#[must_use]
pub fn after_dead_runs(config: &crate::config::Config, work_dir: &std::path::Path) -> Vec<String> {
    crate::stopped::journal_in(work_dir);
    let mut notes = match crate::stopped::settle(work_dir) {
        Ok(settled) => settled
            .iter()
            .map(crate::stopped::Settled::describe)
            .collect(),
        Err(e) => vec![e.to_string()],
    };
    notes.extend(crate::stage::sweep_all(config, work_dir));
    notes
}
