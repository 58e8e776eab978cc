//! `akbackup init`.

use std::process::ExitCode;

use anyhow::Context;

use super::Globals;
use crate::render;

/// Create the repository (refuses to overwrite an existing one).
///
/// The one in [repository] (path = local directory, url = s3://bucket/prefix), or the one
/// chosen with --repo NAME.
///
/// The password comes from $AKBACKUP_PASSWORD, password-command or password-file. Keep a copy
/// of the password somewhere safe: without it the backups cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(g: &Globals, _args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let path = akbackup_core::repository::init(&config).context("cannot create repository")?;
    render::out(
        g,
        &serde_json::json!({ "repository": path, "created": true }),
        || format!("created repository {path} (restic format v2, encrypted, zstd)"),
    )?;
    Ok(ExitCode::SUCCESS)
}
