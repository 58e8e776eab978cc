//! `doctor`: is this server ready to receive a restore of a set?
//!
//! The documentation says the environment must be set up before a restore; this is that
//! checklist, run against the set that will be restored: the repository opens with the
//! password, the set is there, each component's units exist, the users that own its files
//! exist here, its target directory's parent exists and has room, and each MongoDB server
//! answers; and no service is left stopped by an akbackup run that died. One line per check,
//! so the operator fixes them in order.

use std::{collections::BTreeSet, path::Path};

use serde::Serialize;

use crate::{
    backup_set::BackupSet,
    component::Component,
    repository::{EntryKind, Repository},
    service,
};

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked (`repository`, `ssdb.stat: unit`, ...).
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// What was found, and the fix when it failed.
    pub detail: String,
}

fn check(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// Runs every check for restoring `set` of `repo` with `components` on this machine.
#[must_use]
pub fn run(repo: &Repository, set: &BackupSet, components: &[Box<dyn Component>]) -> Vec<Check> {
    let mut out = vec![check(
        "repository",
        true,
        format!(
            "{} opens with the password; set {} from {}",
            repo.location(),
            set.short_id(),
            set.manifest.started
        ),
    )];
    let writable = repo.check_writable();
    out.push(check(
        "repository: writable",
        writable.is_ok(),
        writable.unwrap_or_else(|e| e.to_string()),
    ));
    for c in components {
        let name = c.name().to_string();
        let Some(record) = set.manifest.component(&name) else {
            out.push(check(
                &name,
                false,
                format!("not in set {}: pick another set", set.short_id()),
            ));
            continue;
        };
        if let Some(unit) = c.unit() {
            let present = service::run(&["systemctl".into(), "cat".into(), unit.clone()]).is_ok();
            out.push(check(
                format!("{name}: unit"),
                present,
                if present {
                    format!("{unit} is installed")
                } else {
                    format!("{unit} is not installed: install and configure the service first")
                },
            ));
        }
        if c.name().kind.loads_through_server() {
            let problems = c.check();
            out.push(check(
                format!("{name}: server"),
                problems.is_empty(),
                if problems.is_empty() {
                    format!("{} answers", c.source())
                } else {
                    problems.join("; ")
                },
            ));
        } else {
            out.push(target_room(&name, c.repo_path(), record.bytes));
        }
        out.push(owners(repo, set, &name, c.repo_path()));
        if let Some(snap) = crate::plan::SnapshotReadiness::of(c.as_ref()) {
            out.push(check(format!("{name}: snapshot"), snap.ok, snap.detail));
        }
    }
    out.extend(stopped_services(repo));
    out
}

/// A service an akbackup run stopped and did not start again: a run that died and whose
/// service the next command could not start (it said why) fails the check; one still
/// running (a stop-mode backup) is noted.
fn stopped_services(repo: &Repository) -> Vec<Check> {
    match crate::stopped::pending(repo.path()) {
        Ok(entries) => entries
            .iter()
            .map(|e| {
                check(
                    format!("{}: stopped", e.service),
                    e.recorder_alive(),
                    e.describe(),
                )
            })
            .collect(),
        Err(e) => vec![check("stopped services", false, e.to_string())],
    }
}

/// The parent of the component's directory exists and its filesystem has room for the
/// set's bytes (the previous data is kept aside, so the whole set must fit beside it).
fn target_room(name: &str, path: &Path, bytes: u64) -> Check {
    let parent = path.parent().unwrap_or(path);
    if !parent.is_dir() {
        return check(
            format!("{name}: target"),
            false,
            format!("{} does not exist: create it first", parent.display()),
        );
    }
    match crate::fsutil::free_space(parent) {
        Ok(free) if free > bytes + crate::plan::FREE_SPACE_MARGIN => check(
            format!("{name}: space"),
            true,
            format!(
                "{} free at {}, the set needs {}",
                crate::units::human_bytes(free),
                parent.display(),
                crate::units::human_bytes(bytes)
            ),
        ),
        Ok(free) => check(
            format!("{name}: space"),
            false,
            format!(
                "only {} free at {}, the set needs {} plus {} headroom: free some space",
                crate::units::human_bytes(free),
                parent.display(),
                crate::units::human_bytes(bytes),
                crate::units::human_bytes(crate::plan::FREE_SPACE_MARGIN)
            ),
        ),
        Err(e) => check(
            format!("{name}: space"),
            false,
            format!("cannot tell the free space at {}: {e}", parent.display()),
        ),
    }
}

/// Every user and group owning files of the component in the set exists on this machine
/// (a restore as root gives files to the stored ids; ids without names mean the service
/// users were not created yet).
fn owners(repo: &Repository, set: &BackupSet, name: &str, path: &Path) -> Check {
    let entries = match repo.walk(&set.id, path) {
        Ok(e) => e,
        Err(e) => return check(format!("{name}: owners"), false, e.to_string()),
    };
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    for e in entries
        .iter()
        .filter(|e| !matches!(e.kind, EntryKind::Other(_)))
    {
        uids.extend(e.uid);
        gids.extend(e.gid);
    }
    let missing_u: Vec<String> = uids
        .iter()
        .filter(|u| {
            !matches!(
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(**u)),
                Ok(Some(_))
            )
        })
        .map(ToString::to_string)
        .collect();
    let missing_g: Vec<String> = gids
        .iter()
        .filter(|g| {
            !matches!(
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(**g)),
                Ok(Some(_))
            )
        })
        .map(ToString::to_string)
        .collect();
    if missing_u.is_empty() && missing_g.is_empty() {
        check(
            format!("{name}: owners"),
            true,
            format!("uids {uids:?} and gids {gids:?} exist here"),
        )
    } else {
        check(
            format!("{name}: owners"),
            false,
            format!(
                "no user for uid(s) [{}] / no group for gid(s) [{}] of the set's files: create the service users (same ids) first",
                missing_u.join(", "),
                missing_g.join(", ")
            ),
        )
    }
}
