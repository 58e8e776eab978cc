//! Compatibility with the documented manual procedure: `tar.gz` archives in and out.
//!
//! The documented commands produce `altcraft-YYYY-MM-DD.tar.gz` (the control module, entries
//! under `opt/altcraft/`) and `ssdb-<name>-YYYY-MM-DD.tar.gz` (entries under
//! `var/lib/ssdb/<name>/`). `import` turns such an archive into a backup set dated by its
//! name, so years of manual backups become restorable by akbackup; `export` writes the same
//! archives from a set, so nobody is locked in.
//!
//! MongoDB dumps come as `mongodump --archive` files (`mongodb-<name>-YYYY-MM-DD.tar.gz` in
//! the documentation: a gzipped archive stream despite the name, not a tar) or as
//! `mongodump --out` directories, gzipped per file or not; both import, and export writes
//! either form (see [`crate::component::mongodb::format`]).

use std::{
    fs,
    io::BufReader,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    backup::{self, BackupSummary},
    backup_set::{BackupSet, ComponentRecord},
    component::{
        self, Component, ComponentError, Estimate, Prepared, RestoreStep, RestoreTarget,
        StoredIndex,
    },
    config::{ComponentName, Config, Kind},
    plan,
    progress::ProgressRef,
    repository::{PartStats, Repository, SourcePart},
    tree,
};

/// Errors of import and export.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The file name does not say which component it holds.
    #[error(
        "{0}: cannot tell the component from the name (expected altcraft-YYYY-MM-DD.tar.gz or ssdb-NAME-YYYY-MM-DD.tar.gz): pass --as KIND.NAME"
    )]
    UnknownName(PathBuf),
    /// Not a readable tar.gz.
    #[error("{path}: not a readable tar.gz archive ({reason}); nothing was imported")]
    Corrupt {
        /// The archive.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// The archive does not contain the component's directory.
    #[error("{path}: holds nothing under {inside}/; nothing was imported")]
    Missing {
        /// The archive.
        path: PathBuf,
        /// The expected directory.
        inside: String,
    },
    /// An SSDB store in the archive does not open.
    #[error(
        "{path}: the SSDB store in it does not open with LevelDB ({db}/: {reason}); it was probably archived while SSDB was running; nothing was imported"
    )]
    BrokenStore {
        /// The archive.
        path: PathBuf,
        /// The database.
        db: String,
        /// What LevelDB or the table check found (printed in the message).
        reason: crate::component::ssdb::inspect::InspectError,
    },
    /// A MongoDB dump that cannot be read.
    #[error(
        "{path}: not a readable mongodump archive or directory: {reason}; nothing was imported"
    )]
    Dump {
        /// The archive or directory.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// The target file exists.
    #[error("{0} already exists: refusing to overwrite it")]
    Exists(PathBuf),
    /// Components.
    #[error(transparent)]
    Component(#[from] Box<ComponentError>),
    /// Backup.
    #[error(transparent)]
    Backup(#[from] Box<backup::BackupError>),
    /// I/O.
    #[error("{path}: {error}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// Restoring the set for export.
    #[error(transparent)]
    Tree(#[from] Box<tree::TreeError>),
}

impl ArchiveError {
    /// True when the set's data was found damaged or crafted (exit code 1: the export ran
    /// and found problems), not when the destination or the environment failed.
    #[must_use]
    pub fn is_damaged_data(&self) -> bool {
        matches!(self, Self::Tree(t) if t.is_damaged_data())
    }
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

/// Component and date from a documented archive name.
#[must_use]
pub fn parse_name(path: &Path) -> Option<(ComponentName, jiff::civil::Date)> {
    let name = path.file_name()?.to_str()?;
    // mongodump archives and directories also come as `.archive`, `.archive.gz`, `.gz` or
    // a bare directory name.
    let stem = [".tar.gz", ".tgz", ".archive.gz", ".archive", ".gz"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    if stem.len() < 11 {
        return None;
    }
    let cut = stem.len() - 10;
    let (head, date) = (stem.get(..cut)?, stem.get(cut..)?);
    let date: jiff::civil::Date = date.parse().ok()?;
    let component = Kind::from_archive_stem(head.strip_suffix('-')?)?;
    Some((component, date))
}

/// The documented archive name for a component's data taken on `date`.
#[must_use]
pub fn archive_name(name: &ComponentName, date: jiff::civil::Date) -> String {
    Kind::export_name(name, date, MongoExport::Archive)
}

/// A component whose data was already unpacked to `staged`: stored as is.
struct Unpacked {
    inner: Box<dyn Component>,
    staged: PathBuf,
    details: serde_json::Value,
    /// The archive or directory it came from: the set's source.
    from: String,
}

impl Component for Unpacked {
    fn name(&self) -> &ComponentName {
        self.inner.name()
    }
    fn source(&self) -> String {
        self.from.clone()
    }
    fn repo_path(&self) -> &Path {
        self.inner.repo_path()
    }
    fn check(&self) -> Vec<String> {
        Vec::new()
    }
    fn estimate(&self, _stored: Option<&StoredIndex>) -> Result<Estimate, ComponentError> {
        let bytes = crate::fsutil::tree_size(&self.staged);
        Ok(Estimate {
            files: 0,
            bytes,
            changed_bytes: bytes,
        })
    }
    fn prepare(
        &self,
        _staging: &Path,
        _progress: &ProgressRef,
    ) -> Result<Prepared, ComponentError> {
        Ok(Prepared {
            part: SourcePart {
                label: self.inner.name().to_string(),
                read_root: self.staged.clone(),
                repo_path: self.inner.repo_path().to_path_buf(),
                excludes: Vec::new(),
                meta_root: self.staged.clone(),
                ctime_from_mtime: false,
                expected_bytes: None,
            },
            details: self.details.clone(),
            guard: None,
        })
    }
    fn finish(&self, prepared: Prepared, stats: PartStats) -> ComponentRecord {
        let mut record = self.inner.finish(prepared, stats);
        record.source.clone_from(&self.from);
        record
    }
    fn plan_restore(&self, target: &RestoreTarget, record: &ComponentRecord) -> RestoreStep {
        self.inner.plan_restore(target, record)
    }
    fn restore(
        &self,
        req: &component::RestoreRequest<'_>,
    ) -> Result<component::ComponentRestore, ComponentError> {
        self.inner.restore(req)
    }
}

/// Imports a documented archive as a backup set dated by its name (or `as_name` and today).
///
/// # Errors
/// [`ArchiveError`]: unknown name, corrupt or truncated archive, missing directory, an SSDB
/// store that does not open. Nothing is recorded on error.
pub fn import(
    config: &Config,
    repo: &Repository,
    path: &Path,
    as_name: Option<&ComponentName>,
    progress: &ProgressRef,
) -> Result<BackupSummary, ArchiveError> {
    let parsed = parse_name(path);
    let name = match (as_name, &parsed) {
        (Some(n), _) => n.clone(),
        (None, Some((n, _))) => n.clone(),
        (None, None) => return Err(ArchiveError::UnknownName(path.to_path_buf())),
    };
    let inner = component::build(config, std::slice::from_ref(&name))
        .map_err(Box::new)?
        .pop()
        .ok_or_else(|| ArchiveError::UnknownName(path.to_path_buf()))?;
    let date = parsed.map(|(_, d)| d);
    for note in crate::stage::sweep(repo.path(), crate::stage::IMPORT) {
        progress.note(&note);
    }
    let staging =
        crate::stage::Stage::create(repo.path(), crate::stage::IMPORT).map_err(io(repo.path()))?;
    progress.note(&format!("unpacking {}", path.display()));
    let (staged, details) = name
        .kind
        .unpack_import(path, inner.as_ref(), staging.path())?;
    let unpacked: Vec<Box<dyn Component>> = vec![Box::new(Unpacked {
        inner,
        staged,
        details,
        from: path.display().to_string(),
    })];
    let mut plan =
        plan::backup_plan(repo, &unpacked, &["imported".to_string()]).map_err(Box::new)?;
    plan.time = date
        .and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp());
    let summary = backup::run(repo, &unpacked, &plan, false, progress, None).map_err(Box::new)?;
    drop(staging);
    Ok(summary)
}

/// Unpacks a `tar.gz` of the documented procedure into `staging`; returns the component's
/// directory in it and the manifest details.
pub(crate) fn unpack_tar(
    path: &Path,
    inner: &dyn Component,
    staging: &Path,
) -> Result<(PathBuf, serde_json::Value), ArchiveError> {
    let file = fs::File::open(path).map_err(io(path))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_overwrite(false);
    let corrupt = |e: std::io::Error| ArchiveError::Corrupt {
        path: path.to_path_buf(),
        reason: archive_reason(&e),
    };
    archive.unpack(staging).map_err(corrupt)?;
    // tar stops reading at its end-of-archive blocks, before the gzip trailer: the CRC-32 of
    // the whole stream (the only check a file's bytes have in a tar.gz) is verified only when
    // the stream is read to its end. Without this, a flipped bit in a file's data was imported
    // silently as a set with wrong content.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(corrupt)?;
    // `unpack` sets the times of files only, and every file written into a directory moves
    // the directory's time again: a second pass over the headers sets directory times,
    // deepest first, once everything is in.
    let file = fs::File::open(path).map_err(io(path))?;
    let mut again = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let mut dirs = Vec::new();
    for entry in again.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        if entry.header().entry_type().is_dir()
            && let (Ok(p), Ok(t)) = (entry.path(), entry.header().mtime())
        {
            dirs.push((p.into_owned(), t));
        }
    }
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (rel, mtime) in dirs {
        let t = filetime::FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(0), 0);
        // Only the normal components, as `unpack` did: a leading `/` or `..` never leads
        // outside the staging directory.
        let inside: PathBuf = rel
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        let _ = filetime::set_file_mtime(staging.join(inside), t);
    }
    let inside = inner
        .repo_path()
        .strip_prefix("/")
        .unwrap_or(inner.repo_path())
        .to_path_buf();
    let staged = staging.join(&inside);
    if !staged.is_dir() {
        return Err(ArchiveError::Missing {
            path: path.to_path_buf(),
            inside: inside.display().to_string(),
        });
    }
    let details = serde_json::json!({ "imported_from": path.display().to_string() });
    Ok((staged, details))
}

/// What is wrong with an archive, in the operator's terms: the tar reader's own message names
/// the staging path it was writing, which says nothing about the archive.
fn archive_reason(e: &std::io::Error) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut root = e.to_string();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            return "it ends in the middle of an entry: truncated (an interrupted copy?)"
                .to_string();
        }
        root = err.to_string();
        cur = err.source();
    }
    if root.contains("failed to unpack") || root.contains("failed to iterate") {
        // The tar reader's outer message; the inner one (if any) was kept in `root`.
        format!("{root}: damaged or truncated")
    } else {
        root
    }
}

/// One archive written by export.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// Component.
    pub component: String,
    /// The archive.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// How MongoDB components are exported (files and SSDB are always the documented tar.gz).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MongoExport {
    /// `mongodb-<name>-DATE.tar.gz`: a gzipped `mongodump --archive` stream, as the
    /// documented `mongodump --gzip --archive=...` writes it.
    #[default]
    Archive,
    /// `mongodb-<name>-DATE/`: a `mongodump --out` directory, each file gzipped when `gzip`.
    Directory {
        /// Gzip each file (`mongodump --gzip --out`).
        gzip: bool,
    },
}

/// Writes each selected component of `set` as a documented archive into `dir`.
///
/// # Errors
/// Existing archives are never overwritten; restore and I/O errors.
pub fn export(
    repo: &Repository,
    set: &BackupSet,
    only: &[ComponentName],
    dir: &Path,
    mongo: MongoExport,
    progress: &ProgressRef,
) -> Result<Vec<Exported>, ArchiveError> {
    // Shared: a prune (of any host) must not delete packs while they are read.
    let _lock = repo
        .read_lock("export", progress)
        .map_err(|e| Box::new(tree::TreeError::Repo(e)))?;
    fs::create_dir_all(dir).map_err(io(dir))?;
    let date = set
        .manifest
        .started
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let mut out = Vec::new();
    for rec in &set.manifest.components {
        let Ok(name) = rec.name.parse::<ComponentName>() else {
            continue;
        };
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let target = dir.join(Kind::export_name(&name, date, mongo));
        if target.exists() {
            return Err(ArchiveError::Exists(target));
        }
        for note in crate::stage::sweep(dir, crate::stage::EXPORT) {
            progress.note(&note);
        }
        let work = crate::stage::Stage::create(dir, crate::stage::EXPORT).map_err(io(dir))?;
        let tree_dir = work.path().join("tree");
        let repo_path = Path::new(&rec.repo_path);
        tree::materialize(
            repo,
            &set.id,
            repo_path,
            &tree_dir,
            &format!("export {}", rec.name),
            progress,
            tree::Durability::Cached,
        )
        .map_err(Box::new)?;
        let partial = work.path().join("archive.tar.gz");
        name.kind.write_export(&tree_dir, &partial, mongo, rec)?;
        fs::rename(&partial, &target).map_err(io(&target))?;
        let bytes = crate::fsutil::tree_size(&target);
        progress.note(&format!("{}: wrote {}", rec.name, target.display()));
        out.push(Exported {
            component: rec.name.clone(),
            path: target,
            bytes,
        });
    }
    Ok(out)
}

/// Writes `tree` (a component restored from a set) as the documented `tar.gz`, its entries
/// under `repo_path` without the leading `/`, to `partial`; synced before the caller renames
/// it into place.
pub(crate) fn write_tar(tree: &Path, partial: &Path, repo_path: &Path) -> Result<(), ArchiveError> {
    let file = fs::File::create(partial).map_err(io(partial))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let inside = repo_path.strip_prefix("/").unwrap_or(repo_path);
    builder.append_dir_all(inside, tree).map_err(io(partial))?;
    let gz = builder.into_inner().map_err(io(partial))?;
    let file = gz.finish().map_err(io(partial))?;
    file.sync_all().map_err(io(partial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// Documented names map to components and dates, and back.
    fn names() {
        let (c, d) = parse_name(Path::new("/backup/ssdb-actions-2019-06-01.tar.gz")).unwrap();
        assert_eq!(c.to_string(), "ssdb.actions");
        assert_eq!(d.to_string(), "2019-06-01");
        let (c, _) = parse_name(Path::new("altcraft-2024-01-31.tar.gz")).unwrap();
        assert_eq!(c.to_string(), "files.control");
        assert_eq!(archive_name(&c, d), "altcraft-2019-06-01.tar.gz");
        assert_eq!(
            parse_name(Path::new("mongodb-control-2019-06-01.tar.gz"))
                .unwrap()
                .0
                .to_string(),
            "mongodb.control"
        );
        assert!(parse_name(Path::new("backup.tar.gz")).is_none());
        // Regression: a multi-byte character at the cut once panicked.
        assert!(parse_name(Path::new("архив-2024.tar.gz")).is_none());
        assert!(parse_name(Path::new("ssdb-actions-2019-13-01.tar.gz")).is_none());
    }
}
