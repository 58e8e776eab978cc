//! `verify`: findings about the repository, each set and each component.
//!
//! Structure is always checked (the engine's check of index, packs and trees, plus every
//! component's tree against its manifest counts). With `read_data` every pack is read once by
//! the engine, which authenticates the pack and every blob in it. Only when that finds damage
//! (or reads a subset) is every file of every selected set read blob by blob, so a damaged
//! byte is reported with the set, component and file it breaks. Pass/fail is decided by the
//! caller from the findings.

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    backup_set::BackupSet,
    component::kind::Kind,
    progress::ProgressRef,
    repository::{BlobRef, EntryKind, ReadSubset, RepoError, Repository},
};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Data or structure is wrong.
    Error,
    /// Something odd that does not lose data.
    Warning,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Severity.
    pub level: Level,
    /// Set id, when the finding concerns one.
    pub set: Option<String>,
    /// Component, when the finding concerns one.
    pub component: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// What was checked for one component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentCheck {
    /// `kind.name`.
    pub name: String,
    /// Files found in the set.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Bytes read and authenticated file by file (with `read_data`).
    pub verified_bytes: u64,
    /// Errors found for this component.
    pub errors: usize,
}

/// What was checked for one set.
#[derive(Debug, Clone, Serialize)]
pub struct SetCheck {
    /// Set id.
    pub id: String,
    /// Per component.
    pub components: Vec<ComponentCheck>,
}

/// Result of a verify run.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    /// No error-level findings.
    pub ok: bool,
    /// Whether data was read.
    pub read_data: bool,
    /// The share of packs read (`--read-data-subset`), when not all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_data_subset: Option<String>,
    /// All findings.
    pub findings: Vec<Finding>,
    /// Per set.
    pub sets: Vec<SetCheck>,
}

/// Verifies `sets` (and the repository as a whole).
///
/// # Errors
/// Only when the check could not run at all.
pub fn run(
    repo: &Repository,
    sets: &[BackupSet],
    read_data: bool,
    subset: Option<&ReadSubset>,
    deep: bool,
    progress: &ProgressRef,
) -> Result<VerifySummary, RepoError> {
    // Shared: a prune (of any host) must not delete packs while they are read.
    let _lock = repo.read_lock("verify", progress)?;
    let mut findings = Vec::new();
    match subset {
        Some(s) => progress.note(&format!(
            "checking repository structure and reading a {s} subset of the packs"
        )),
        None if read_data => progress.note("checking repository structure and reading all packs"),
        None => progress.note("checking repository structure"),
    }
    // Not being able to list the snapshots is a finding too: the checks below still run.
    match repo.damaged_snapshots() {
        Ok(damaged) => {
            for (id, reason) in damaged {
                findings.push(Finding {
                    level: Level::Error,
                    set: Some(id.clone()),
                    component: None,
                    message: format!(
                        "snapshot file snapshots/{id} is damaged ({reason}): the set stored in it cannot be listed or restored; the other sets are not affected"
                    ),
                });
            }
        }
        Err(e) => findings.push(Finding {
            level: Level::Error,
            set: None,
            component: None,
            message: format!("the snapshot files could not be listed: {e}"),
        }),
    }
    // A check that cannot run at all is a finding too, so the sets below are still read.
    // When it read every pack and found no error, every blob of every file was authenticated
    // (each pack's SHA-256, then each blob's against its id) and the per-file pass below
    // does not read the data a second time; otherwise it reads each file's blobs itself, to
    // name the files that damage touches.
    let mut all_read_clean = read_data && subset.is_none();
    match repo.check(read_data, subset) {
        Ok(engine_findings) => {
            all_read_clean &= !engine_findings.iter().any(|f| f.error);
            for f in engine_findings {
                findings.push(Finding {
                    level: if f.error {
                        Level::Error
                    } else {
                        Level::Warning
                    },
                    set: None,
                    component: None,
                    message: f.message,
                });
            }
        }
        Err(e) => {
            all_read_clean = false;
            findings.push(Finding {
                level: Level::Error,
                set: None,
                component: None,
                message: format!("the repository structure check could not run: {e}"),
            });
        }
    }
    let mut blob_results: HashMap<BlobRef, Option<String>> = HashMap::new();
    let mut checks = Vec::new();
    for set in sets {
        let mut comps = Vec::new();
        for rec in &set.manifest.components {
            let mut check = ComponentCheck {
                name: rec.name.clone(),
                files: 0,
                bytes: 0,
                verified_bytes: 0,
                errors: 0,
            };
            let add = |findings: &mut Vec<Finding>, check: &mut ComponentCheck, message: String| {
                check.errors += 1;
                findings.push(Finding {
                    level: Level::Error,
                    set: Some(set.id.clone()),
                    component: Some(rec.name.clone()),
                    message,
                });
            };
            let entries = match repo.walk(&set.id, std::path::Path::new(&rec.repo_path)) {
                Ok(e) => e,
                Err(e) => {
                    add(
                        &mut findings,
                        &mut check,
                        format!("cannot read its tree: {e}"),
                    );
                    comps.push(check);
                    continue;
                }
            };
            let files: Vec<_> = entries
                .iter()
                .filter(|e| e.kind == EntryKind::File)
                .collect();
            check.files = files.len() as u64;
            check.bytes = files.iter().map(|e| e.size).sum();
            if check.files != rec.files || check.bytes != rec.bytes {
                let msg = format!(
                    "holds {} files / {} bytes, its manifest says {} / {}",
                    check.files, check.bytes, rec.files, rec.bytes
                );
                add(&mut findings, &mut check, msg);
            }
            if read_data && all_read_clean {
                check.verified_bytes = check.bytes;
            } else if read_data {
                let label = format!("verify {} {}", set.short_id(), rec.name);
                progress.begin(&label, Some(check.bytes));
                for e in &files {
                    let mut bad = None;
                    for blob in &e.blobs {
                        let result = blob_results.entry(blob.clone()).or_insert_with(|| {
                            repo.read_blob(blob).err().map(|err| err.to_string())
                        });
                        if let Some(err) = result {
                            bad = Some(err.clone());
                            break;
                        }
                    }
                    match bad {
                        Some(err) => {
                            let path = std::path::Path::new(&rec.repo_path).join(&e.path);
                            add(
                                &mut findings,
                                &mut check,
                                format!("{}: {err}", path.display()),
                            );
                        }
                        None => check.verified_bytes += e.size,
                    }
                    progress.advance(&label, e.size);
                }
                progress.end(&label);
            }
            // A kind this release does not know (a set from a later one) has no deep check.
            if deep
                && let Some(kind) = Kind::parse(&rec.kind)
                && kind.has_deep_check()
            {
                progress.note(&format!(
                    "deep check of {} in set {}",
                    rec.name,
                    set.short_id()
                ));
                for p in kind.deep_check(repo, &set.id, rec, progress) {
                    add(&mut findings, &mut check, p);
                }
            }
            comps.push(check);
        }
        checks.push(SetCheck {
            id: set.id.clone(),
            components: comps,
        });
    }
    let ok = !findings.iter().any(|f| f.level == Level::Error);
    Ok(VerifySummary {
        ok,
        read_data,
        read_data_subset: subset.map(ToString::to_string),
        findings,
        sets: checks,
    })
}
