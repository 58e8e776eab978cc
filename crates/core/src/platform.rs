//! `restore --all`: the whole platform back from one set, in an order that keeps it
//! consistent, with every service started again on every path.
//!
//! The sequence:
//!
//! 1. **Check** the services that stay up during the restore (a MongoDB instance is loaded
//!    through its own server, like `mongorestore`): if one does not answer, stop here with
//!    nothing changed.
//! 2. **Stop** the platform, the control module first (`akd stop`: it is the only writer of
//!    the databases), then the SSDB units. A failing stop ends the sequence: what was stopped
//!    is started again and nothing is restored.
//! 3. **Restore** each component with its services left to us (no component stops or starts
//!    anything itself): MongoDB instances first (a load is the slowest step and the one that
//!    can fail halfway, so a failure there leaves the other parts untouched), then the SSDB
//!    stores, then the control module (each swapped in atomically, the previous data kept
//!    aside under a printed name). The first failure ends this phase: later components are
//!    not attempted.
//! 4. **Start** in the reverse order of the stops (MongoDB restarts, SSDB units, then
//!    `akd start`), each followed by its health check. A failed start or check does not stop
//!    the others from starting: a half-started platform is worse than a reported failure.
//!
//! Stops are registered with [`crate::cleanup`], so Ctrl-C or SIGTERM in the middle starts
//! the stopped services again. The summary has one row per component (data, service,
//! health) and, on failure, the commands that finish the job by hand.

use std::time::Instant;

use serde::Serialize;

use crate::{
    backup_set::Status,
    cleanup::{self, Action},
    component::{Component, ComponentRestore, RestoreTarget},
    plan::RestorePlan,
    progress::ProgressRef,
    repository::{LockMode, Repository},
    restore::RestoreError,
    service,
};

/// One service command of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceCommand {
    /// `kind.name`.
    pub component: String,
    /// The command, for printing.
    pub command: String,
    /// The argv that runs.
    #[serde(skip)]
    argv: Vec<String>,
}

/// What `restore --all` will do, in order.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformPlan {
    /// Components whose service stays up and must answer before anything is stopped.
    pub check_first: Vec<String>,
    /// Phase 2, in order.
    pub stop: Vec<ServiceCommand>,
    /// Phase 3: the component restores, in order.
    pub restore: RestorePlan,
    /// Phase 4, in order; each is followed by the component's health check.
    pub start: Vec<ServiceCommand>,
}

/// The in-place target of `restore --all`: every service is ours to stop and start.
#[must_use]
pub fn target() -> RestoreTarget {
    RestoreTarget::InPlace {
        no_restart: false,
        services_managed: true,
        db: crate::component::DbRestoreOptions::default(),
    }
}

/// Builds the whole-platform plan from a restore plan (built with [`target`]) and its
/// components.
#[must_use]
pub fn plan(components: &[Box<dyn Component>], mut restore: RestorePlan) -> PlatformPlan {
    // A step with no component (none: the plan was built from these) would go last.
    let rank = |name: &str| {
        components
            .iter()
            .find(|c| c.name().to_string() == name)
            .map_or(u8::MAX, |c| c.name().kind.restore_rank())
    };
    restore.steps.sort_by_key(|s| rank(&s.name));
    let mut ordered: Vec<&dyn Component> = components
        .iter()
        .map(AsRef::as_ref)
        .filter(|c| restore.steps.iter().any(|s| s.name == c.name().to_string()))
        .collect();
    ordered.sort_by_key(|c| c.name().kind.stop_rank());
    let mut check_first = Vec::new();
    let mut stop = Vec::new();
    let mut start = Vec::new();
    for c in &ordered {
        let name = c.name().to_string();
        let Some(control) = c.service_control() else {
            continue;
        };
        match control.stop {
            Some(argv) => stop.push(command(&name, argv)),
            None => check_first.push(name.clone()),
        }
        start.push(command(&name, control.start));
    }
    start.reverse();
    PlatformPlan {
        check_first,
        stop,
        restore,
        start,
    }
}

fn command(component: &str, argv: Vec<String>) -> ServiceCommand {
    ServiceCommand {
        component: component.to_string(),
        command: shell_words::join(&argv),
        argv,
    }
}

/// What happened to one component's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataState {
    /// Restored from the set.
    Restored,
    /// Its restore failed (the message says where the data is).
    Failed,
    /// Not attempted: an earlier step failed; the data on the server is unchanged.
    NotAttempted,
}

/// One component's row of the final table.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformRow {
    /// `kind.name`.
    pub name: String,
    /// Its data.
    pub data: DataState,
    /// Where the previous data was kept, or why the restore failed.
    pub data_detail: String,
    /// The service now: `up`, `down`, `failed`, `unknown` (its stop failed), or `none`
    /// when it has no service.
    pub service: String,
    /// What the start and health check said.
    pub service_detail: String,
}

/// What `restore --all` did.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformSummary {
    /// The set.
    pub set: String,
    /// One row per component, in restore order.
    pub rows: Vec<PlatformRow>,
    /// The component restores that ran.
    pub restores: Vec<ComponentRestore>,
    /// Every service command run, in order, with its outcome (`ok` or the error).
    pub commands: Vec<(String, String)>,
    /// The first failure.
    pub error: Option<String>,
    /// What to do next, when something failed.
    pub next_steps: Vec<String>,
    /// Seconds from the first stop to the last health check.
    pub seconds: f64,
    /// Overall.
    pub status: Status,
}

/// Runs the whole-platform restore.
///
/// # Errors
/// Lock problems only; every other failure is in the summary (status `failed`).
pub fn run(
    repo: &Repository,
    components: &[Box<dyn Component>],
    plan: &PlatformPlan,
    progress: &ProgressRef,
) -> Result<PlatformSummary, RestoreError> {
    let lock = repo.lock("restore --all", LockMode::Shared)?;
    let started = Instant::now();
    let find = |name: &str| {
        components
            .iter()
            .find(|c| c.name().to_string() == name)
            .map(AsRef::as_ref)
    };
    let mut run = Run {
        rows: plan
            .restore
            .steps
            .iter()
            .map(|s| PlatformRow {
                name: s.name.clone(),
                data: DataState::NotAttempted,
                data_detail: "unchanged".to_string(),
                service: "none".to_string(),
                service_detail: String::new(),
            })
            .collect(),
        commands: Vec::new(),
        error: None,
        next_steps: Vec::new(),
    };

    // 1. Services that stay up must answer before anything changes.
    for name in &plan.check_first {
        let Some(c) = find(name) else { continue };
        progress.note(&format!("{name}: checking the server before the restore"));
        if let Err(e) = c.health_check() {
            run.fail(format!(
                "{name}: does not answer before the restore: {e}; nothing was changed"
            ));
            run.next_steps.push(format!(
                "start the server of {name} (akbackup doctor shows what else is missing), then run the restore again"
            ));
            break;
        }
        run.row(name).service = "up".to_string();
    }

    // 2. Stop, control module first.
    let mut stopped: Vec<(&ServiceCommand, cleanup::Guard)> = Vec::new();
    if run.error.is_none() {
        for cmd in &plan.stop {
            progress.note(&format!("{}: {}", cmd.component, cmd.command));
            let start = plan
                .start
                .iter()
                .find(|s| s.component == cmd.component)
                .map(|s| s.argv.clone())
                .unwrap_or_default();
            // Registered (and journaled on disk) before the stop: a run killed from here on
            // leaves a record the next run starts the service from.
            let guard = cleanup::register(Action::Run(start));
            match service::run(&cmd.argv) {
                Ok(()) => {
                    run.commands.push((cmd.command.clone(), "ok".to_string()));
                    run.row(&cmd.component).service = "down".to_string();
                    stopped.push((cmd, guard));
                }
                Err(e) => {
                    guard.disarm();
                    run.commands.push((cmd.command.clone(), e.to_string()));
                    let row = run.row(&cmd.component);
                    row.service = "unknown".to_string();
                    row.service_detail = format!("stop failed: {e}");
                    run.fail(format!(
                        "{}: stopping failed: {e}; nothing was restored",
                        cmd.component
                    ));
                    run.next_steps.push(format!(
                        "find out why `{}` fails (journalctl, the service's own log), then run the restore again",
                        cmd.command
                    ));
                    break;
                }
            }
        }
    }

    // 3. Restore, databases first; stop at the first failure.
    let mut restores = Vec::new();
    if run.error.is_none() {
        let target = target();
        for step in &plan.restore.steps {
            let Some(c) = find(&step.name) else { continue };
            if run.error.is_some() {
                break;
            }
            progress.note(&format!(
                "{}: restoring to {}",
                step.name,
                step.destination.display()
            ));
            let req = crate::component::RestoreRequest {
                repo,
                set_id: &plan.restore.set,
                target: &target,
                progress,
            };
            match c.restore(&req) {
                Ok(r) => {
                    let row = run.row(&step.name);
                    row.data = DataState::Restored;
                    row.data_detail = r.previous.as_ref().map_or_else(
                        || format!("{} files restored", r.written.files),
                        |p| format!("previous kept at {}", p.display()),
                    );
                    // Privileged files the set brought back are named here too (see
                    // tree::MaterializeSummary::special_kept).
                    if !r.written.special_kept.is_empty() {
                        row.data_detail.push_str(&format!(
                            "; kept setuid/setgid on {}",
                            r.written.special_kept.join(", ")
                        ));
                    }
                    restores.push(r);
                }
                Err(e) => {
                    let row = run.row(&step.name);
                    row.data = DataState::Failed;
                    row.data_detail = e.to_string();
                    run.fail(e.to_string());
                }
            }
        }
        if run.error.is_some() {
            let left: Vec<String> = run
                .rows
                .iter()
                .filter(|r| r.data != DataState::Restored)
                .map(|r| format!("--only {}", r.name))
                .collect();
            run.next_steps.push(format!(
                "fix the cause above, then restore what is missing: akbackup restore {} --all {} --yes",
                &plan.restore.set[..plan.restore.set.len().min(8)],
                left.join(" ")
            ));
        }
    }

    // 4. Start in reverse order, each with its health check; one failure does not keep the
    //    others down.
    for cmd in &plan.start {
        let was_stopped = stopped.iter().any(|(s, _)| s.component == cmd.component);
        let stays_up = plan.check_first.contains(&cmd.component);
        let attempted = run
            .rows
            .iter()
            .any(|r| r.name == cmd.component && r.data != DataState::NotAttempted);
        // A service we never stopped is only restarted when its data was (re)loaded.
        if !(was_stopped || (stays_up && attempted)) {
            continue;
        }
        progress.note(&format!("{}: {}", cmd.component, cmd.command));
        let outcome = service::run(&cmd.argv);
        if let Some(i) = stopped
            .iter()
            .position(|(s, _)| s.component == cmd.component)
        {
            let (_, guard) = stopped.remove(i);
            guard.disarm();
        }
        if let Err(e) = outcome {
            run.commands.push((cmd.command.clone(), e.to_string()));
            let row = run.row(&cmd.component);
            row.service = "failed".to_string();
            row.service_detail = e.to_string();
            run.fail(format!("{}: {e}", cmd.component));
            run.next_steps.push(format!(
                "{}: start it by hand (`{}`) and read its log",
                cmd.component, cmd.command
            ));
            continue;
        }
        run.commands.push((cmd.command.clone(), "ok".to_string()));
        let Some(c) = find(&cmd.component) else {
            continue;
        };
        progress.note(&format!("{}: health check", cmd.component));
        let health = c.health_check();
        let row = run.row(&cmd.component);
        match health {
            Ok(note) => {
                row.service = "up".to_string();
                row.service_detail = note;
            }
            Err(e) => {
                row.service = "failed".to_string();
                row.service_detail = format!("health check failed: {e}");
                let restored = row.data == DataState::Restored;
                let previous = row.data_detail.clone();
                run.fail(format!("{}: health check failed: {e}", cmd.component));
                run.next_steps.push(if restored {
                    format!(
                        "{}: the restored data does not come up; read the service's log, or go back to the previous data ({previous})",
                        cmd.component
                    )
                } else {
                    format!("{}: read the service's log", cmd.component)
                });
            }
        }
    }
    drop(lock);

    let status = if run.error.is_some() {
        Status::Failed
    } else {
        Status::Complete
    };
    Ok(PlatformSummary {
        set: plan.restore.set.clone(),
        rows: run.rows,
        restores,
        commands: run.commands,
        error: run.error,
        next_steps: run.next_steps,
        seconds: started.elapsed().as_secs_f64(),
        status,
    })
}

/// The state of a run in progress.
struct Run {
    rows: Vec<PlatformRow>,
    commands: Vec<(String, String)>,
    error: Option<String>,
    next_steps: Vec<String>,
}

impl Run {
    /// Records a failure; the first one is the run's error.
    fn fail(&mut self, message: String) {
        self.error.get_or_insert(message);
    }

    /// The row of `name` (added if the plan had none, which cannot happen for planned
    /// components).
    fn row(&mut self, name: &str) -> &mut PlatformRow {
        if let Some(i) = self.rows.iter().position(|r| r.name == name) {
            return &mut self.rows[i];
        }
        self.rows.push(PlatformRow {
            name: name.to_string(),
            data: DataState::NotAttempted,
            data_detail: "unchanged".to_string(),
            service: "none".to_string(),
            service_detail: String::new(),
        });
        let last = self.rows.len() - 1;
        &mut self.rows[last]
    }
}
