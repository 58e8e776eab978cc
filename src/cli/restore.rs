//! `akbackup restore`.

use std::{
    fmt::Write as _,
    io::{BufRead, IsTerminal, Write},
    process::ExitCode,
    sync::Arc,
};

use akbackup_core::{
    backup_set::Status,
    component::{self, RestoreTarget},
    config::ComponentName,
    plan, platform, restore,
    units::human_bytes,
};

use super::{Globals, exit, open_repo};
use crate::render::{self, Reporter};

/// Restore a backup set.
///
/// With --target DIR every component goes to DIR/<kind>/<name>/ (the control module to
/// DIR/files/control/) and no service is touched. Without it, in place and safely: the set is
/// written to a staging directory next to the live one, then swapped in atomically; the
/// previous contents are kept under a printed name (e.g. /opt/altcraft.akbackup-prev-...)
/// and the component's restart command runs (/opt/altcraft/akd restart for the control
/// module). Data that fails authentication is never written. On a terminal you are asked to
/// confirm; elsewhere pass --yes.
///
/// A MongoDB instance is loaded into its configured server (or --to-uri) like
/// `mongorestore --drop`: each restored collection is dropped, recreated with its options,
/// filled, and its indexes built; then `systemctl restart mongod-<name>`. With --target it
/// becomes a plain mongodump directory (DIR/mongodb/<name>/<db>/<coll>.bson) that
/// `mongorestore DIR/mongodb/<name>` reads.
///
/// With --all the whole platform comes back in a safe order: services that stay up (MongoDB,
/// loaded through its server) must answer first; then the control module is stopped
/// (akd stop), then the SSDB units; the MongoDB instances, SSDB stores and the control
/// module are restored in that order; then everything starts again in reverse (systemctl
/// restart mongod-*, systemctl start ssdb-*, akd start), each followed by a health check.
/// The first failure stops the restores, every stopped service is started again, and the
/// table at the end says what was restored, what runs, and what to do next (exit 1).
/// `akbackup doctor SET` first checks that this server is ready.
///
/// Examples:
///   akbackup doctor latest && akbackup restore latest --all --dry-run
///   akbackup restore latest --all --yes
///   akbackup restore latest --only files.control --target /tmp/check
///   akbackup restore latest --only mongodb.control --yes
///   akbackup restore latest --only mongodb.control --ns-include 'control.users' \
///       --ns-from 'control.*' --ns-to 'control_restored.*' --no-restart --yes
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The set: an id (prefix) or `latest`
    set: String,
    /// Restore only these components (repeatable)
    #[arg(long, value_name = "COMPONENT")]
    only: Vec<ComponentName>,
    /// Restore under this directory instead of in place
    #[arg(long, value_name = "DIR")]
    target: Option<std::path::PathBuf>,
    /// The whole platform in place: stop, restore, start and health-check in a safe order
    #[arg(
        long,
        conflicts_with_all = ["target", "no_restart", "to_uri", "ns_include", "ns_exclude", "ns_from", "no_drop"]
    )]
    all: bool,
    /// Do not run restart commands after an in-place restore
    #[arg(long)]
    no_restart: bool,
    /// Print the plan and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long, short)]
    yes: bool,
    /// MongoDB: load into this server instead of the configured one
    #[arg(long, value_name = "URI", help_heading = "MongoDB")]
    to_uri: Option<String>,
    /// MongoDB: load only namespaces matching this glob, e.g. 'control.users' (repeatable)
    #[arg(long, value_name = "GLOB", help_heading = "MongoDB")]
    ns_include: Vec<String>,
    /// MongoDB: leave out namespaces matching this glob (repeatable)
    #[arg(long, value_name = "GLOB", help_heading = "MongoDB")]
    ns_exclude: Vec<String>,
    /// MongoDB: rename from this pattern ('control.*'), with --ns-to
    #[arg(
        long,
        value_name = "PATTERN",
        requires = "ns_to",
        help_heading = "MongoDB"
    )]
    ns_from: Option<String>,
    /// MongoDB: rename to this pattern ('copy.*'); each * takes what the --ns-from * matched
    #[arg(
        long,
        value_name = "PATTERN",
        requires = "ns_from",
        help_heading = "MongoDB"
    )]
    ns_to: Option<String>,
    /// MongoDB: keep existing collections and insert into them instead of dropping them first
    #[arg(long, help_heading = "MongoDB")]
    no_drop: bool,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    let set = repo.find_set(&args.set)?;
    let wanted: Vec<ComponentName> = if args.only.is_empty() {
        set.manifest
            .components
            .iter()
            .filter_map(|c| c.name.parse().ok())
            .collect()
    } else {
        args.only.clone()
    };
    let components = component::build(&config, &wanted)?;
    if args.all {
        return run_all(g, args, &repo, &set, &components);
    }
    let target = match &args.target {
        Some(dir) => RestoreTarget::Directory(dir.clone()),
        None => RestoreTarget::InPlace {
            no_restart: args.no_restart,
            services_managed: false,
            db: component::DbRestoreOptions {
                to_uri: args.to_uri.clone(),
                ns_include: args.ns_include.clone(),
                ns_exclude: args.ns_exclude.clone(),
                ns_from: args.ns_from.clone(),
                ns_to: args.ns_to.clone(),
                no_drop: args.no_drop,
            },
        },
    };
    let plan = plan::restore_plan(&set, &components, &target)?;
    let plan_text = || {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "restore set {} taken {}:",
            &plan.set[..8],
            render::time(plan.set_time)
        );
        for step in &plan.steps {
            let _ = writeln!(
                s,
                "  {:<16} {} files, {} -> {}{}",
                step.name,
                step.files,
                human_bytes(step.bytes),
                step.destination.display(),
                replaces_note(step)
            );
            for cmd in &step.start {
                let _ = writeln!(s, "  then run: {cmd}");
            }
        }
        s
    };
    if args.dry_run {
        render::out(g, &plan, || {
            format!("{}dry run: nothing was changed", plan_text())
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if plan.in_place && !args.yes {
        confirm(&plan_text())?;
    }
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let summary = restore::run(&repo, &components, &plan, &target, &progress)?;
    render::out(g, &summary, || {
        let mut s = String::new();
        for c in &summary.components {
            let _ = writeln!(
                s,
                "{:<16} {} files, {} -> {}",
                c.name,
                c.written.files,
                human_bytes(c.written.bytes),
                c.destination.display()
            );
            // Every privileged file the set brought back is named, so a setuid-root binary
            // cannot come back unnoticed; and those that lost the bits, so nobody wonders.
            for k in &c.written.special_kept {
                let _ = writeln!(s, "  kept setuid/setgid (owner restored): {k}");
            }
            for k in &c.written.special_stripped {
                let _ = writeln!(
                    s,
                    "  dropped setuid/setgid (owner not restored; restore as root to keep it): {k}"
                );
            }
            let kind = c.name.parse::<ComponentName>().ok().map(|n| n.kind);
            for line in kind
                .map(|k| k.restore_lines(&c.details))
                .unwrap_or_default()
            {
                let _ = writeln!(s, "  {line}");
            }
            if let Some(prev) = &c.previous {
                let _ = writeln!(s, "  previous contents kept at {}", prev.display());
            }
            if let Some(cmd) = &c.restarted {
                let _ = writeln!(s, "  ran {cmd}");
            }
            for w in &c.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
        }
        if let Some(e) = &summary.error {
            let _ = writeln!(s, "restore FAILED: {e}");
        }
        if !summary.not_attempted.is_empty() {
            let _ = writeln!(s, "not attempted: {}", summary.not_attempted.join(", "));
        }
        if summary.status != Status::Failed {
            let _ = writeln!(s, "restore of set {} complete", &summary.set[..8]);
        }
        s
    })?;
    Ok(exit(summary.status != Status::Failed))
}

/// Asks on the terminal; refuses without one (pass --yes).
fn confirm(plan_text: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "an in-place restore replaces live data: pass --yes to confirm (or use --target DIR)"
        );
    }
    eprint!("{plan_text}Type yes to restore in place: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        anyhow::bail!("restore cancelled: nothing was changed");
    }
    Ok(())
}

/// `restore --all`: plan, confirm, run, and the table.
fn run_all(
    g: &Globals,
    args: &Args,
    repo: &akbackup_core::repository::Repository,
    set: &akbackup_core::backup_set::BackupSet,
    components: &[Box<dyn akbackup_core::component::Component>],
) -> anyhow::Result<ExitCode> {
    let restore_plan = plan::restore_plan(set, components, &platform::target())?;
    let plan = platform::plan(components, restore_plan);
    let plan_text = {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "restore --all of set {} taken {}:",
            set.short_id(),
            render::time(plan.restore.set_time)
        );
        let mut n = 0;
        let mut line = |s: &mut String, phase: &str, who: &str, what: &str| {
            n += 1;
            let _ = writeln!(s, "  {n:>2}. {phase:<8} {who:<16} {what}");
        };
        for name in &plan.check_first {
            line(
                &mut s,
                "check",
                name,
                "server answers (it stays up: the dump is loaded through it)",
            );
        }
        for c in &plan.stop {
            line(&mut s, "stop", &c.component, &c.command);
        }
        for step in &plan.restore.steps {
            let what = format!(
                "{} files, {} -> {}{}",
                step.files,
                human_bytes(step.bytes),
                step.destination.display(),
                replaces_note(step)
            );
            line(&mut s, "restore", &step.name, &what);
        }
        for c in &plan.start {
            line(
                &mut s,
                "start",
                &c.component,
                &format!("{}, then health check", c.command),
            );
        }
        s
    };
    if args.dry_run {
        render::out(g, &plan, || {
            format!("{plan_text}dry run: nothing was changed")
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        confirm(&plan_text)?;
    }
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let summary = platform::run(repo, components, &plan, &progress)?;
    render::out(g, &summary, || {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} {:<14} {:<8} detail",
            "component", "data", "service"
        );
        for r in &summary.rows {
            let data = match r.data {
                platform::DataState::Restored => "restored",
                platform::DataState::Failed => "FAILED",
                platform::DataState::NotAttempted => "not restored",
            };
            let detail = [r.data_detail.as_str(), r.service_detail.as_str()]
                .iter()
                .filter(|d| !d.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(s, "{:<16} {data:<14} {:<8} {detail}", r.name, r.service);
        }
        if let Some(e) = &summary.error {
            let _ = writeln!(s, "restore --all FAILED: {e}");
            for step in &summary.next_steps {
                let _ = writeln!(s, "next: {step}");
            }
        } else {
            let _ = writeln!(
                s,
                "restore --all of set {} complete in {:.1}s: every component restored and up",
                &summary.set[..summary.set.len().min(8)],
                summary.seconds
            );
        }
        s
    })?;
    Ok(exit(summary.status != Status::Failed))
}

/// What happens to the data a step replaces, for the plan.
const fn replaces_note(step: &akbackup_core::component::RestoreStep) -> &'static str {
    match (step.replaces_existing, step.keeps_previous) {
        (false, _) => "",
        (true, true) => " (current contents kept aside)",
        (true, false) => " (its collections in the set are dropped and reloaded)",
    }
}
