//! `akbackup import`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{archive, backup_set::Status, config::ComponentName, units::human_bytes};
use anyhow::Context;

use super::{Globals, exit, open_repo};
use crate::render::{self, Reporter};

/// Turn archives of the documented manual procedure into backup sets.
///
/// Accepts `altcraft-YYYY-MM-DD.tar.gz` (the control module, as `tar -czf` of /opt/altcraft
/// writes it) and `ssdb-NAME-YYYY-MM-DD.tar.gz` (an SSDB store). Each becomes one set dated by
/// its name and tagged `imported`, restorable like any other. An SSDB store that does not open
/// with LevelDB (archived while SSDB was writing) is refused.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Archives to import, oldest first
    #[arg(required = true, value_name = "ARCHIVE")]
    paths: Vec<std::path::PathBuf>,
    /// The component the archive holds, when its name does not say (e.g. ssdb.stat)
    #[arg(long = "as", value_name = "COMPONENT")]
    as_name: Option<ComponentName>,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let mut summaries = Vec::new();
    for path in &args.paths {
        let s = archive::import(&config, &repo, path, args.as_name.as_ref(), &progress)
            .context("import failed")?;
        summaries.push(s);
    }
    let ok = summaries.iter().all(|s| s.status != Status::Failed);
    render::out(g, &summaries, || {
        let mut t = String::new();
        for (path, s) in args.paths.iter().zip(&summaries) {
            let _ = writeln!(
                t,
                "{} -> {} ({}, {})",
                path.display(),
                s.set.as_deref().map_or("FAILED", |id| &id[..8]),
                s.components
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                human_bytes(s.total_bytes)
            );
        }
        t
    })?;
    Ok(exit(ok))
}
