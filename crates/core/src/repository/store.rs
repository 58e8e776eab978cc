//! Raw access to repository files the engine does not manage for us.
//!
//! The engine reads and writes the restic file types it knows (config, keys, snapshots,
//! index, packs) and has no notion of restic's `locks/` directory, nor a way to list `data/`
//! with sizes from outside. Both are needed to share a repository safely: lock files so that
//! akbackup on several hosts and the standard `restic` client exclude each other
//! ([`super::locks`]), and a listing of the packs so that a prune reports what it really
//! removed. This module is that small layer: list, read, write and remove a file by its path
//! relative to the repository root, for a local directory or an S3 bucket (through the
//! engine's own OpenDAL operator, with its timeout on every request so a hung server cannot
//! hold a lock forever). It deliberately knows nothing about encryption or
//! the meaning of the files.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use super::engine::Location;

/// Where the repository's files are.
#[derive(Clone)]
pub enum Store {
    /// A local directory (the repository root).
    Local(PathBuf),
    /// An object store, rooted at the repository prefix.
    Remote {
        /// The blocking OpenDAL operator.
        op: opendal::blocking::Operator,
        /// For messages.
        shown: String,
        /// Write through a temporary name and a rename (SFTP: a file is visible while it is
        /// written; another host must never read half a lock).
        atomic: bool,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => write!(f, "Store::Local({})", p.display()),
            Self::Remote { shown, .. } => write!(f, "Store::Remote({shown})"),
        }
    }
}

fn opendal_io(e: &opendal::Error) -> std::io::Error {
    let kind = match e.kind() {
        opendal::ErrorKind::NotFound => std::io::ErrorKind::NotFound,
        opendal::ErrorKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
        _ => std::io::ErrorKind::Other,
    };
    // OpenDAL's Display of an error carries the request context and its cause (SFTP's
    // status text), never the credentials.
    std::io::Error::new(kind, e.to_string())
}

impl Store {
    /// The store of an engine location.
    ///
    /// # Errors
    /// When the S3 operator cannot be built from the options.
    pub fn open(location: &Location) -> std::io::Result<Self> {
        match location {
            Location::Local(path) => Ok(Self::Local(path.clone())),
            // The engine's own operator: the same timeouts, retries and limits.
            Location::S3(_) | Location::Sftp(_) => Ok(Self::Remote {
                op: super::engine::operator(location).map_err(|e| opendal_io(&e))?,
                shown: location.display(),
                atomic: matches!(location, Location::Sftp(_)),
            }),
        }
    }

    /// The files below `dir` (recursively), as paths relative to the repository root, with
    /// their sizes. A missing directory is empty.
    ///
    /// # Errors
    /// Storage errors.
    pub fn list(&self, dir: &str) -> std::io::Result<Vec<(String, u64)>> {
        match self {
            Self::Local(root) => {
                let base = root.join(dir);
                if !base.exists() {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                for entry in walkdir::WalkDir::new(&base) {
                    let entry = entry.map_err(std::io::Error::other)?;
                    if !entry.file_type().is_file() {
                        continue;
                    }
                    let Ok(rel) = entry.path().strip_prefix(root) else {
                        continue;
                    };
                    let size = entry.metadata().map_err(std::io::Error::other)?.len();
                    out.push((rel.to_string_lossy().into_owned(), size));
                }
                Ok(out)
            }
            Self::Remote { op, .. } => {
                let prefix = format!("{}/", dir.trim_end_matches('/'));
                let entries = op
                    .list_options(
                        &prefix,
                        opendal::options::ListOptions {
                            recursive: true,
                            ..Default::default()
                        },
                    )
                    .map_err(|e| opendal_io(&e))?;
                Ok(entries
                    .into_iter()
                    .filter(|e| e.metadata().is_file())
                    .map(|e| (e.path().to_string(), e.metadata().content_length()))
                    .collect())
            }
        }
    }

    /// Reads one file.
    ///
    /// # Errors
    /// Storage errors; `NotFound` when it is gone.
    pub fn read(&self, path: &str) -> std::io::Result<Vec<u8>> {
        match self {
            Self::Local(root) => std::fs::read(root.join(path)),
            Self::Remote { op, .. } => op
                .read(path)
                .map(|b| b.to_vec())
                .map_err(|e| opendal_io(&e)),
        }
    }

    /// Writes one file whole: locally through a temporary file, synced and renamed, so a
    /// reader never sees half of it.
    ///
    /// # Errors
    /// Storage errors.
    pub fn write(&self, path: &str, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Local(root) => write_local(&root.join(path), data),
            Self::Remote {
                op, atomic: true, ..
            } => super::engine::write_renamed(op, path, vec![bytes::Bytes::copy_from_slice(data)])
                .map_err(|f| opendal_io(&f.error)),
            Self::Remote { op, .. } => op
                .write(path, data.to_vec())
                .map(|_| ())
                .map_err(|e| opendal_io(&e)),
        }
    }

    /// Removes one file; a file already gone is not an error.
    ///
    /// # Errors
    /// Storage errors.
    pub fn remove(&self, path: &str) -> std::io::Result<()> {
        let result = match self {
            Self::Local(root) => std::fs::remove_file(root.join(path)),
            Self::Remote { op, .. } => op.delete(path).map_err(|e| opendal_io(&e)),
        };
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Where the store is, for messages.
    #[must_use]
    pub fn shown(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::Remote { shown, .. } => shown.clone(),
        }
    }
}

fn write_local(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a repository file needs a directory"))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A local store lists nested files relative to the root, reads back what it wrote, and
    /// treats removing a missing file as done.
    fn local_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::Local(t.path().to_path_buf());
        assert!(s.list("locks").unwrap().is_empty());
        s.write("locks/abc", b"hello").unwrap();
        s.write("data/00/ff", b"12345678").unwrap();
        assert_eq!(s.read("locks/abc").unwrap(), b"hello");
        assert_eq!(s.list("locks").unwrap(), vec![("locks/abc".to_string(), 5)]);
        assert_eq!(s.list("data").unwrap(), vec![("data/00/ff".to_string(), 8)]);
        s.remove("locks/abc").unwrap();
        s.remove("locks/abc").unwrap();
        assert!(s.list("locks").unwrap().is_empty());
    }
}
