//! `akbackup config show|check`.

use std::{fmt::Write as _, process::ExitCode};

use akbackup_core::{component, fsutil, repository};
use serde::Serialize;

use super::{Globals, exit};
use crate::render;

/// Show the effective configuration or check it against this machine.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print the effective config (defaults filled in, secrets redacted)
    Show,
    /// Check paths, permissions, repository and password; list every problem (exit 1 if any)
    Check,
}

#[derive(Serialize)]
struct CheckReport {
    ok: bool,
    problems: Vec<String>,
    checked: Vec<String>,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    match args.action {
        Action::Show => {
            let text = config.to_redacted_toml();
            render::out(g, &config.redacted(), || text.clone())?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Check => {
            let mut problems = Vec::new();
            let mut checked = Vec::new();
            for name in config.component_names() {
                checked.push(name.to_string());
                match component::build(&config, std::slice::from_ref(&name)) {
                    Ok(cs) => {
                        for c in cs {
                            problems.extend(c.check());
                        }
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
            checked.push("repository".to_string());
            match repository::Repository::open(&config) {
                Ok(repo) => {
                    if let Ok(free) = fsutil::free_space(repo.path()) {
                        checked.push(format!(
                            "free space at {}: {}",
                            repo.path().display(),
                            akbackup_core::units::human_bytes(free)
                        ));
                    }
                }
                Err(e) => problems.push(format!("repository: {e}")),
            }
            let report = CheckReport {
                ok: problems.is_empty(),
                problems,
                checked,
            };
            render::out(g, &report, || {
                let mut s = String::new();
                for p in &report.problems {
                    let _ = writeln!(s, "problem: {p}");
                }
                let _ = writeln!(
                    s,
                    "{} ({} checked: {})",
                    if report.ok {
                        "config ok"
                    } else {
                        "config has problems"
                    },
                    report.checked.len(),
                    report.checked.join(", ")
                );
                s
            })?;
            Ok(exit(report.ok))
        }
    }
}
