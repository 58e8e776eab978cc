//! `akbackup demo`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{demo, units::human_bytes};
use anyhow::Context;

use super::{Globals, exit};
use crate::render::{self, Reporter};

/// Run the whole job on a generated sandbox platform.
///
/// Generates a control-module tree (configs, templates, binaries, pid and log files,
/// symlinks, empty directories) and a local repository, then: init, backup, change ~1% of
/// the files, backup again, verify --read-data, restore to a target and compare, delete a
/// directory and restore in place (with the restart stand-in), and prints what happened
/// next to `tar -czf` of the same tree. Touches nothing outside the sandbox directory.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sandbox directory, kept afterwards (default: a temporary directory, removed)
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
    /// Size of the generated control module in MiB
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    size_mb: u64,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                anyhow::bail!(
                    "demo directory {} is not empty: give a new or empty --dir",
                    d.display()
                );
            }
            // The demo writes a config naming this directory, and configs take absolute
            // paths only.
            std::fs::canonicalize(d).with_context(|| format!("cannot resolve {}", d.display()))?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("akbackup-demo-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let s = demo::run(&dir, args.size_mb * 1024 * 1024, &progress)?;
    render::out(g, &s, || {
        let mut t = String::new();
        let _ = writeln!(t, "\nakbackup demo in {}", s.dir.display());
        for st in &s.steps {
            let _ = writeln!(t, "  {:<50} {:>7.2}s  {}", st.name, st.secs, st.detail);
        }
        let _ = writeln!(t, "\nsummary");
        let _ = writeln!(
            t,
            "  platform: control module {} + SSDB store {}; {} backed up (*.pid, *.log excluded)",
            human_bytes(s.tree_bytes),
            human_bytes(s.store_bytes),
            human_bytes(s.backed_up_bytes)
        );
        let _ = writeln!(
            t,
            "  repository after day 1: {}; after day 2: {} (+{} for {} of changed files and {} new SSDB keys)",
            human_bytes(s.repo_after_first),
            human_bytes(s.repo_after_second),
            human_bytes(s.repo_after_second.saturating_sub(s.repo_after_first)),
            human_bytes(s.changed_bytes),
            s.new_keys
        );
        #[allow(clippy::cast_precision_loss)]
        let ratio = (2 * s.backed_up_bytes) as f64 / s.repo_after_second.max(1) as f64;
        let _ = writeln!(
            t,
            "  two full copies would be {}; the repository holds both days in {} ({ratio:.2}x less)",
            human_bytes(2 * s.backed_up_bytes),
            human_bytes(s.repo_after_second)
        );
        if let Some(tar) = s.tar_bytes {
            let _ = writeln!(
                t,
                "  documented tar -czf of the same directories: {} per day, {} for two days",
                human_bytes(tar),
                human_bytes(2 * tar)
            );
        }
        let _ = writeln!(
            t,
            "  verify --read-data --deep: {}",
            if s.verify_ok { "ok" } else { "PROBLEMS" }
        );
        let _ = writeln!(
            t,
            "  restore identical to source (files byte for byte, SSDB by digest): {}",
            if s.differences.is_empty() {
                "yes".to_string()
            } else {
                format!("NO: {:?}", s.differences)
            }
        );
        let _ = writeln!(
            t,
            "  restart command after in-place restore: {}",
            if s.restart_calls.is_empty() {
                "NOT RUN".to_string()
            } else {
                s.restart_calls.join("; ")
            }
        );
        let _ = writeln!(t, "{}", if s.ok() { "demo OK" } else { "demo FAILED" });
        if args.dir.is_some() {
            let _ = writeln!(
                t,
                "sandbox kept: akbackup --config {}/akbackup.toml snapshots",
                s.dir.display()
            );
        }
        t
    })?;
    Ok(exit(s.ok()))
}
