//! `akbackup export`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{archive, config::ComponentName, units::human_bytes};

use super::{Globals, open_repo};
use crate::render::{self, Reporter};

/// Write a backup set as the archives of the documented manual procedure.
///
/// The control module becomes `altcraft-YYYY-MM-DD.tar.gz` (entries under opt/altcraft/),
/// each SSDB store `ssdb-NAME-YYYY-MM-DD.tar.gz` (entries under var/lib/ssdb/NAME/), dated by
/// the set, with owners, modes and times. Unpack them by hand with
/// `tar -xzpf FILE -C /` as the documentation describes. Existing files are never overwritten.
///
/// A MongoDB instance becomes `mongodb-NAME-YYYY-MM-DD.tar.gz`, a gzipped mongodump archive
/// (the documented name, though it is not a tar): `mongorestore --gzip --archive=FILE` loads
/// it. With `--format dir` it becomes a `mongodump --out` directory `mongodb-NAME-YYYY-MM-DD/`
/// (`--gzip` compresses each file) for `mongorestore [--gzip] DIR`.
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
    /// MongoDB: `archive` (mongodump --archive --gzip) or `dir` (mongodump --out)
    #[arg(long, value_enum, default_value = "archive")]
    format: Format,
    /// MongoDB with --format dir: gzip each file, as mongodump --gzip --out does
    #[arg(long)]
    gzip: bool,
}

/// MongoDB export forms.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// One gzipped mongodump archive file
    Archive,
    /// A mongodump directory
    Dir,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    let set = repo.find_set(&args.set)?;
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let mongo = match args.format {
        Format::Archive => {
            if args.gzip {
                anyhow::bail!(
                    "--gzip goes with --format dir (an archive is always gzipped, as the documented name says)"
                );
            }
            archive::MongoExport::Archive
        }
        Format::Dir => archive::MongoExport::Directory { gzip: args.gzip },
    };
    let written = match archive::export(&repo, &set, &args.only, &args.to, mongo, &progress) {
        Ok(w) => w,
        // Damaged data is a finding about the set (exit 1), not a failure to run (exit 2).
        Err(e) if e.is_damaged_data() => {
            render::log(
                render::Level::Error,
                None,
                &format!("export of set {} failed: {e}", set.short_id()),
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
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
