//! `akbackup export`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{archive, backup::human_bytes, config::ComponentName};

use super::{Globals, open_repo};
use crate::render::{self, Reporter};

/// Write a backup set as the archives of the documented manual procedure.
///
/// The control module becomes `altcraft-YYYY-MM-DD.tar.gz` (entries under opt/altcraft/),
/// each SSDB store `ssdb-NAME-YYYY-MM-DD.tar.gz` (entries under var/lib/ssdb/NAME/), dated by
/// the set, with owners, modes and times. Unpack them by hand with
/// `tar -xzpf FILE -C /` as the documentation describes. Existing files are never overwritten.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The set: an id (prefix) or `latest`
    set: String,
    /// Directory for the archives
    #[arg(long, value_name = "DIR")]
    to: std::path::PathBuf,
    /// Export only these components (repeatable)
    #[arg(long, value_name = "COMPONENT")]
    only: Vec<ComponentName>,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    let set = repo.find_set(&args.set)?;
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let written = archive::export(&repo, &set, &args.only, &args.to, &progress)?;
    render::out(g, &written, || {
        let mut t = String::new();
        for w in &written {
            let _ = writeln!(
                t,
                "{:<16} {} ({})",
                w.component,
                w.path.display(),
                human_bytes(w.bytes)
            );
        }
        t
    })?;
    Ok(ExitCode::SUCCESS)
}
