//! `akbackup verify`.

use std::{fmt::Write as _, process::ExitCode, sync::Arc};

use akbackup_core::{monitoring, repository::ReadSubset, units::human_bytes, verify};

use super::{Globals, exit, open_repo};
use crate::render::{self, Reporter};

/// Check the repository and backup sets.
///
/// Without --read-data: the index, pack list and every tree, and each component against its
/// manifest. With --read-data: also every byte of every pack, and every file of the checked
/// sets blob by blob, so damage is reported with the set, component and file it affects.
/// With --read-data-subset 5% (or 1/7, or 500MiB): a share of the packs, for a cheap daily
/// check; `1/7` .. `7/7` on the days of a week read everything once a week.
/// Exit 1 when anything is wrong.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The set to check: an id (prefix) or `latest` (default: all sets)
    set: Option<String>,
    /// Read and authenticate all data
    #[arg(long)]
    read_data: bool,
    /// Read and authenticate only this share of the packs: 5%, n/m (part n of m), or a size
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
    /// Also restore each SSDB store to a temporary directory, open it with LevelDB, read every
    /// key and check every block, comparing key counts and digest with the manifest when the
    /// set recorded them (backups record them only with `deep-check-every`), and read every
    /// MongoDB dump back
    #[arg(long)]
    deep: bool,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let subset = args
        .read_data_subset
        .as_deref()
        .map(str::parse::<ReadSubset>)
        .transpose()?;
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    let sets = match &args.set {
        Some(spec) => vec![repo.find_set(spec)?],
        None => repo.sets()?,
    };
    let progress: akbackup_core::progress::ProgressRef = Arc::new(Reporter::new(g));
    let summary = verify::run(
        &repo,
        &sets,
        args.read_data,
        subset.as_ref(),
        args.deep,
        &progress,
    )
    .map_err(|e| {
        let e = anyhow::Error::new(e);
        let body = serde_json::json!({ "ok": false, "error": format!("{e:#}") });
        monitoring::notify(&config, "verify", body, 2, &progress);
        e
    })?;
    render::out(g, &summary, || {
        let mut s = String::new();
        for set in &summary.sets {
            for c in &set.components {
                let _ = writeln!(
                    s,
                    "set {} {:<16} {:>7} files {:>10}{}  {}",
                    &set.id[..8],
                    c.name,
                    c.files,
                    human_bytes(c.bytes),
                    if summary.read_data {
                        format!("  read {}", human_bytes(c.verified_bytes))
                    } else {
                        String::new()
                    },
                    if c.errors == 0 {
                        "ok".to_string()
                    } else {
                        format!("{} ERROR(S)", c.errors)
                    }
                );
            }
        }
        for f in &summary.findings {
            let _ = writeln!(
                s,
                "{}: {}{}{}",
                if f.level == verify::Level::Error {
                    "ERROR"
                } else {
                    "warning"
                },
                f.set
                    .as_ref()
                    .map(|id| format!("set {} ", &id[..8]))
                    .unwrap_or_default(),
                f.component
                    .as_ref()
                    .map(|c| format!("{c}: "))
                    .unwrap_or_default(),
                f.message
            );
        }
        let _ = writeln!(
            s,
            "{}: {} set(s) checked{}, {} finding(s)",
            if summary.ok { "ok" } else { "PROBLEMS FOUND" },
            summary.sets.len(),
            match (&summary.read_data_subset, summary.read_data) {
                (Some(sub), _) => format!(" with a {sub} subset of the packs read"),
                (None, true) => " with all data read".to_string(),
                (None, false) =>
                    " (structure only; add --read-data to read every byte)".to_string(),
            },
            summary.findings.len()
        );
        s
    })?;
    if let Some(path) = &config.monitoring.textfile {
        let facts = monitoring::VerifyFacts {
            finished: jiff::Timestamp::now(),
            success: summary.ok,
            read_data: summary.read_data || summary.read_data_subset.is_some(),
        };
        let existing = std::fs::read_to_string(path).unwrap_or_default();
        let text = monitoring::merge(&existing, &monitoring::verify_metrics(&facts));
        if let Err(e) = monitoring::write_atomically(path, &text) {
            render::log(
                render::Level::Warn,
                None,
                &format!("cannot write metrics to {}: {e}", path.display()),
            );
        }
    }
    let body = serde_json::to_value(&summary).unwrap_or_default();
    monitoring::notify(
        &config,
        "verify",
        body,
        if summary.ok { 0 } else { 1 },
        &progress,
    );
    Ok(exit(summary.ok))
}
