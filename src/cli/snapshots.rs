//! `akbackup snapshots`.

use std::{fmt::Write as _, process::ExitCode};

use akbackup_core::backup::human_bytes;
use serde::Serialize;

use super::{Globals, open_repo};
use crate::render;

/// List backup sets: id, time, components, sizes, duration, status.
///
/// The id works with every command (`restore 1a2b3c4d`) and with the restic client.
#[derive(Debug, clap::Args)]
pub struct Args {}

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

pub fn run(g: &Globals, _args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    let rows: Vec<Row> = repo
        .sets()?
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
            "{:<8}  {:<23}  {:>10}  {:>10}  {:>7}  {:<8}  components",
            "id", "time", "size", "added", "took", "status"
        );
        for r in &rows {
            let _ = writeln!(
                s,
                "{:<8}  {:<23}  {:>10}  {:>10}  {:>6.1}s  {:<8}  {}",
                &r.id[..8],
                render::time(r.time),
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
