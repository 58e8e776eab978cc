//! `akbackup key`.

use std::{fmt::Write as _, process::ExitCode};

use akbackup_core::repository::{LockMode, password::read_secret_file};

use super::{Globals, open_repo};
use crate::render;

/// Manage the repository's keys (each password opens one key).
///
/// Every repository is encrypted; each key is the repository's master key wrapped with one
/// password. Add a second key before handing the off-site copy to someone else, remove keys
/// of people who left, change the password with `passwd` (the new key is proven before the
/// old one is removed). The new password comes from --new-password-file (mode 0600) or
/// $AKBACKUP_NEW_PASSWORD, never from the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List key ids; the one the current password opens is marked
    List,
    /// Add a key for a new password
    Add(NewPassword),
    /// Remove a key by id (prefix); never the one in use
    Remove {
        /// Key id or unique prefix
        id: String,
    },
    /// Replace the current password's key with one for a new password
    Passwd(NewPassword),
}

#[derive(Debug, clap::Args)]
struct NewPassword {
    /// File whose first line is the new password (mode 0600)
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<std::path::PathBuf>,
}

impl NewPassword {
    fn resolve(&self) -> anyhow::Result<String> {
        if let Some(f) = &self.new_password_file {
            return Ok(read_secret_file(f)?);
        }
        match std::env::var(akbackup_core::repository::password::NEW_PASSWORD_ENV) {
            Ok(p) if !p.is_empty() => Ok(p),
            _ => anyhow::bail!(
                "no new password: pass --new-password-file FILE (mode 0600) or set AKBACKUP_NEW_PASSWORD"
            ),
        }
    }
}

pub fn run(g: &Globals, args: &Args) -> anyhow::Result<ExitCode> {
    let config = g.load_config()?;
    let repo = open_repo(&config)?;
    match &args.action {
        Action::List => {
            let keys = repo.keys()?;
            let rows: Vec<_> = keys
                .iter()
                .map(|(id, used)| serde_json::json!({ "id": id, "in_use": used }))
                .collect();
            render::out(g, &rows, || {
                let mut s = String::new();
                for (id, used) in &keys {
                    let _ = writeln!(s, "{}{}", id, if *used { "  (in use)" } else { "" });
                }
                s
            })?;
        }
        Action::Add(p) => {
            let _lock = repo.lock("key add", LockMode::Shared)?;
            let id = repo.add_key(&p.resolve()?)?;
            render::out(g, &serde_json::json!({ "added": id }), || {
                format!("added key {id}")
            })?;
        }
        Action::Remove { id } => {
            let _lock = repo.lock("key remove", LockMode::Exclusive)?;
            let removed = repo.remove_key(id)?;
            render::out(g, &serde_json::json!({ "removed": removed }), || {
                format!("removed key {removed}")
            })?;
        }
        Action::Passwd(p) => {
            let _lock = repo.lock("key passwd", LockMode::Exclusive)?;
            let (old, new) = repo.change_password(&config.repository, &p.resolve()?)?;
            render::out(
                g,
                &serde_json::json!({ "removed": old, "added": new }),
                || {
                    format!(
                        "password changed: key {new} added, key {old} removed; update password-file / AKBACKUP_PASSWORD now"
                    )
                },
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
