//! MongoDB dumps in the forms made outside akbackup: `mongodump --archive` streams (gzipped
//! or not) and `mongodump --out` directories, for `import` and `export` (see
//! [`crate::archive`], which owns the naming and the staging around them).

use crate::component::Details;
use std::{
    fs,
    io::BufReader,
    path::{Path, PathBuf},
};

use super::format;
use crate::{
    archive::{ArchiveError, MongoExport, io},
    backup_set::ComponentRecord,
};

/// Unpacks a mongodump archive (gzipped or not) or `--out` directory into the plain layout
/// a backup stores, checking every document's framing and each namespace's CRC.
pub(crate) fn unpack(
    path: &Path,
    staging: &Path,
) -> Result<(PathBuf, serde_json::Value), ArchiveError> {
    let staged = staging.join("dump");
    let bad = |e: format::FormatError| ArchiveError::Dump {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let found = if path.is_dir() {
        format::unpack_directory(path, &staged).map_err(bad)?
    } else {
        let file = fs::File::open(path).map_err(io(path))?;
        let label = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        format::unpack_archive(BufReader::new(file), &label, &staged).map_err(bad)?
    };
    if !staged.is_dir() {
        fs::create_dir_all(&staged).map_err(io(&staged))?;
    }
    let details = super::details::SetDetails {
        consistency: "unknown".to_string(),
        consistency_note: "imported from a mongodump made outside akbackup".to_string(),
        oplog_entries: found.iter().find(|n| n.db.is_empty()).map(|n| n.documents),
        collections: found
            .iter()
            .filter(|n| !n.db.is_empty())
            .map(|n| super::dump::CollectionRecord {
                ns: n.namespace(),
                kind: n.kind.clone(),
                documents: n.documents,
                bytes: n.bytes,
            })
            .collect(),
        imported_from: Some(path.display().to_string()),
        ..super::details::SetDetails::default()
    }
    .to_value();
    Ok((staged, details))
}

/// Writes a MongoDB component's dump (the plain layout in `tree`) to `partial` in the
/// chosen form; the caller renames it into place.
pub(crate) fn write(
    tree: &Path,
    partial: &Path,
    mongo: MongoExport,
    rec: &ComponentRecord,
) -> Result<(), ArchiveError> {
    let bad = |e: format::FormatError| ArchiveError::Io {
        path: partial.to_path_buf(),
        error: std::io::Error::other(e.to_string()),
    };
    if super::details::SetDetails::of(&rec.details)
        .physical
        .is_some()
    {
        // A physical copy is the dbpath's files, not a dump: it exports as their tar.gz.
        return match mongo {
            MongoExport::Archive => {
                crate::archive::write_tar(tree, partial, std::path::Path::new(&rec.repo_path))
            }
            MongoExport::Directory { .. } => Err(ArchiveError::Io {
                path: partial.to_path_buf(),
                error: std::io::Error::other(
                    "this set holds a physical copy of the dbpath, not a dump: export it as a tar.gz (without --format dir), or restore it with --target DIR",
                ),
            }),
        };
    }
    match mongo {
        MongoExport::Archive => {
            let server_version = super::details::SetDetails::of(&rec.details).server_version;
            let file = fs::File::create(partial).map_err(io(partial))?;
            let mut out = std::io::BufWriter::new(file);
            format::write_archive(tree, &mut out, true, &server_version).map_err(bad)?;
            let file = out.into_inner().map_err(|e| ArchiveError::Io {
                path: partial.to_path_buf(),
                error: e.into_error(),
            })?;
            file.sync_all().map_err(io(partial))?;
        }
        MongoExport::Directory { gzip } => {
            format::write_directory(tree, partial, gzip).map_err(bad)?;
        }
    }
    Ok(())
}
