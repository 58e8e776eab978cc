//! `akbackup status`.

use std::{fmt::Write as _, process::ExitCode};

use akbackup_core::monitoring;

use super::{Globals, open_repo};
use crate::render;

/// How old each component's last good backup is, as a monitoring check.
///
/// Exit 0 when every configured component has a complete set younger than --warn-hours,
/// 1 (warning) when one is older, 2 (critical) when one is older than --crit-hours or was
/// never backed up, or when a service stopped by an akbackup run that died is still down:
/// the convention of Nagios, Icinga and Zabbix's external checks.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Age in hours from which a component is a warning
    #[arg(long, default_value_t = 26.0, value_name = "HOURS")]
    warn_hours: f64,
    /// Age in hours from which a component is critical
    #[arg(long, default_value_t = 50.0, value_name = "HOURS")]
    crit_hours: f64,
    /// Judge as if it were this moment (RFC 3339)
    #[arg(long, value_name = "TIME", hide = true)]
    now: Option<jiff::Timestamp>,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    // This host's sets: another server's fresh backup says nothing about this one.
    let sets = repo.scoped_sets()?;
    let names: Vec<String> = config
        .component_names()
        .iter()
        .map(ToString::to_string)
        .collect();
    let now = args.now.unwrap_or_else(jiff::Timestamp::now);
    let ages = monitoring::ages(&names, &sets, now, args.warn_hours, args.crit_hours);
    // Services a dead run stopped that opening the repository could not start again: the
    // platform is down, whatever the age of the backups.
    let down: Vec<String> = akbackup_core::stopped::pending(repo.path())
        .map(|entries| {
            entries
                .iter()
                .filter(|e| !e.recorder_alive())
                .map(akbackup_core::stopped::Entry::describe)
                .collect()
        })
        .unwrap_or_else(|e| vec![e.to_string()]);
    for line in &down {
        render::log(render::Level::Error, None, &format!("CRITICAL: {line}"));
    }
    render::out(g, &ages, || {
        let mut s = String::new();
        for a in &ages {
            let _ = writeln!(
                s,
                "{:<16} {:<9} {}",
                a.component,
                a.state.to_uppercase(),
                match (a.last_success, a.age_hours) {
                    (Some(t), Some(h)) =>
                        format!("last good backup {} ({h:.1} h ago)", render::time(t)),
                    _ => "never backed up".to_string(),
                }
            );
        }
        for line in &down {
            let _ = writeln!(s, "{:<16} {:<9} {line}", "service", "CRITICAL");
        }
        s
    })?;
    let code = if !down.is_empty() || ages.iter().any(|a| a.state == "critical") {
        2
    } else {
        u8::from(ages.iter().any(|a| a.state == "warning"))
    };
    Ok(ExitCode::from(code))
}
