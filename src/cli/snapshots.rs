//! `akbackup snapshots`.

use std::{fmt::Write as _, process::ExitCode};

use akbackup_core::{config::Kind, units::human_bytes};
use serde::Serialize;

use super::{Globals, open_repo};
use crate::render;

/// List backup sets: id, time, components, sizes, duration, status.
///
/// The id works with every command (`restore 1a2b3c4d`) and with the restic client.
/// With a SET (`latest` or an id) it shows that set's manifest instead: per component its
/// source, files, bytes, status and kind-specific facts (MongoDB: per-collection document
/// counts and the consistency of the dump).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show one set in full: an id (prefix) or `latest`
    set: Option<String>,
}

#[derive(Serialize)]
struct Row {
    id: String,
    time: jiff::Timestamp,
    host: String,
    components: Vec<String>,
    bytes: u64,
    added_bytes: Option<u64>,
    duration_secs: f64,
    status: akbackup_core::backup_set::Status,
    tags: Vec<String>,
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    if let Some(spec) = &args.set {
        let set = repo.find_set(spec)?;
        let m = &set.manifest;
        render::out(g, m, || {
            let mut s = String::new();
            let _ = writeln!(
                s,
                "set {} taken {} on {}, {}",
                set.short_id(),
                render::time(m.started),
                m.host,
                format!("{:?}", m.status).to_lowercase()
            );
            for c in &m.components {
                let _ = writeln!(
                    s,
                    "  {:<16} {} files, {}  from {}  [{}]",
                    c.name,
                    c.files,
                    human_bytes(c.bytes),
                    c.source,
                    format!("{:?}", c.status).to_lowercase()
                );
                for line in Kind::parse(&c.kind)
                    .map(|k| k.set_lines(&c.details))
                    .unwrap_or_default()
                {
                    let _ = writeln!(s, "    {line}");
                }
                for w in &c.warnings {
                    let _ = writeln!(s, "    warning: {w}");
                }
            }
            s
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    // Every host's sets unless --host / --all-hosts narrows them: the listing is where an
    // administrator finds out which hosts write here.
    let sets = if super::explicit_host_scope().is_some() {
        repo.scoped_sets()?
    } else {
        repo.sets()?
    };
    let rows: Vec<Row> = sets
        .into_iter()
        .map(|s| Row {
            time: s.manifest.started,
            host: s.manifest.host.clone(),
            components: s
                .manifest
                .components
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            bytes: s.manifest.total_bytes(),
            added_bytes: s.added_bytes,
            duration_secs: (s.manifest.finished - s.manifest.started)
                .total(jiff::Unit::Second)
                .unwrap_or(0.0),
            status: s.manifest.status,
            tags: s.manifest.tags.clone(),
            id: s.id,
        })
        .collect();
    render::out(g, &rows, || {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<8}  {:<23}  {:<16}  {:>10}  {:>10}  {:>7}  {:<8}  components",
            "id", "time", "host", "size", "added", "took", "status"
        );
        for r in &rows {
            let _ = writeln!(
                s,
                "{:<8}  {:<23}  {:<16}  {:>10}  {:>10}  {:>6.1}s  {:<8}  {}",
                &r.id[..8],
                render::time(r.time),
                r.host,
                human_bytes(r.bytes),
                r.added_bytes.map_or_else(|| "-".to_string(), human_bytes),
                r.duration_secs,
                format!("{:?}", r.status).to_lowercase(),
                r.components.join(", ")
            );
        }
        let _ = writeln!(s, "{} set(s)", rows.len());
        s
    })?;
    Ok(ExitCode::SUCCESS)
}
