//! `akbackup doctor`.

use std::{fmt::Write as _, process::ExitCode};

use akbackup_core::{component, config::ComponentName, doctor};

use super::{Globals, exit, open_repo};
use crate::render;

/// Check this server before a restore: one line per check, exit 1 if any failed.
///
/// For the set to restore (default: latest): the repository opens with the password, each
/// component's systemd unit is installed (ssdb-NAME, mongod-NAME), the users and groups that
/// own the set's files exist here, each target directory's parent exists and has room for the
/// set, and each MongoDB server answers. Run it on a new server after installing Altcraft's
/// services and before `akbackup restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The set that will be restored: an id (prefix) or `latest`
    #[arg(default_value = "latest")]
    set: String,
    /// Check only these components (repeatable)
    #[arg(long, value_name = "COMPONENT")]
    only: Vec<ComponentName>,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    let set = repo.find_set(&args.set)?;
    let components = component::build(&config, &args.only)?;
    let checks = doctor::run(&repo, &set, &components);
    let ok = checks.iter().all(|c| c.ok);
    render::out(g, &checks, || {
        let mut s = String::new();
        for c in &checks {
            let _ = writeln!(
                s,
                "{:<4} {:<24} {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(
            s,
            "{}",
            if ok {
                "ready to restore"
            } else {
                "NOT READY: fix the FAIL lines above, then run doctor again"
            }
        );
        s
    })?;
    Ok(exit(ok))
}
