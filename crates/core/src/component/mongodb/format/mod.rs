//! The on-disk formats of mongodump and mongorestore (MongoDB Database Tools 100.x), read and
//! written in pure Rust, without a server and without the tools installed.
//!
//! Two forms exist. A dump *directory* (`mongodump --out`) holds `<db>/<coll>.bson` (the
//! documents, concatenated BSON) and `<db>/<coll>.metadata.json` (options and indexes as
//! canonical Extended JSON), each optionally gzipped on its own (`--gzip`), plus `oplog.bson`
//! at the top for `--oplog`. An *archive* (`mongodump --archive`) is one stream: a magic
//! number, a prelude (header and one metadata document per namespace), then blocks of
//! documents per namespace, interleaved, each namespace closed by an EOF block carrying the
//! CRC-64 of its documents; `--gzip` wraps the whole stream. The reference is
//! `common/archive/spec.md` and `common/archive/*.go` of mongodb/mongo-tools.
//!
//! The component keeps dumps as a *plain directory* (no gzip), because that is what
//! deduplicates well in the repository; this module converts every other form into it and
//! back. Everything streams: memory is bounded by one document (16 MiB and a little), never a
//! collection.
//!
//! Deliberately not here: talking to a server, running the tools, and checking documents
//! beyond their framing (a length in range and a trailing NUL, as mongorestore's own parser
//! checks). Documents are not parsed further, so that data a server accepted (for example
//! strings that are not valid UTF-8 in old collections) never makes a backup fail.
//!
//! The parts: `framing` (a BSON length prefix, a terminator, the end of the data), `names`
//! (file names and kinds of namespaces), `archive_read` (an archive into a directory),
//! `directory` (reading and converting dump directories) and `archive_write` (a directory
//! into an archive). This file holds what they share: the limits and constants of the
//! formats, the summary and error types, and the creation of the files they write.

mod archive_read;
mod archive_write;
mod directory;
#[cfg(test)]
mod fixtures;
mod framing;
mod names;

pub use archive_read::unpack_archive;
pub use archive_write::write_archive;
pub use directory::{scan_directory, unpack_directory, write_directory};
pub use framing::BsonFileReader;
pub use names::{collection_file_stem, collection_from_file_stem};

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use crc::{CRC_64_XZ, Crc};

/// The archive magic number 0x8199e26d, as stored (little-endian).
pub const ARCHIVE_MAGIC: [u8; 4] = [0x6d, 0xe2, 0x99, 0x81];
/// Ends a block (prelude or namespace segment) in an archive: int32 -1.
const TERMINATOR: [u8; 4] = [0xff; 4];
/// The smallest BSON document: a length and the trailing NUL.
const MIN_DOCUMENT: usize = 5;
/// The largest document accepted: the server's internal limit (16 MiB plus 16 KiB of room
/// for oplog entries of maximum size documents), a little above the 16 MiB user limit.
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;
/// The archive format version the tools write and read.
const ARCHIVE_VERSION: &str = "0.1";
/// Go's `crc64.ECMA` table as the tools use it (reflected, inverted in and out) is CRC-64/XZ.
static CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_XZ);
/// Where the oplog goes in a directory, and its namespace in an archive (empty db).
const OPLOG_COLLECTION: &str = "oplog";
/// Buffer size for file and stream I/O; documents are small, syscalls are not.
const IO_BUFFER: usize = 256 * 1024;

/// Per namespace facts of a dump.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NsSummary {
    /// Database; empty for the oplog.
    pub db: String,
    /// Collection (the name, not the escaped file name).
    pub collection: String,
    /// `collection`, `view`, `timeseries` or `oplog` (whatever the metadata says otherwise).
    pub kind: String,
    /// Documents.
    pub documents: u64,
    /// Bytes of BSON documents (uncompressed).
    pub bytes: u64,
}

impl NsSummary {
    /// `db.collection`, or just the collection for the oplog.
    #[must_use]
    pub fn namespace(&self) -> String {
        namespace(&self.db, &self.collection)
    }
}

/// Errors reading or writing dumps. Each message names the file (or archive label) and what
/// is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A file or stream could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file, or the archive's label.
        path: PathBuf,
        /// Cause.
        error: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        error: io::Error,
    },
    /// The archive stream being written could not be written.
    #[error("cannot write the archive of {}: {error}", src.display())]
    ArchiveWrite {
        /// The dump directory being written.
        src: PathBuf,
        /// Cause.
        error: io::Error,
    },
    /// The stream does not start with the archive magic number.
    #[error("{}: not a mongodump archive ({detail})", path.display())]
    NotArchive {
        /// The archive's label.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// The data ends in the middle of something.
    #[error("{}: truncated {place}", path.display())]
    Truncated {
        /// The file, or the archive's label.
        path: PathBuf,
        /// Where: "in namespace db.coll after 12 documents", "in the prelude", ...
        place: String,
    },
    /// A namespace's documents do not match the CRC-64 of its EOF block.
    #[error(
        "{}: CRC-64 mismatch for {namespace} (EOF block says {stored}, the documents give {computed})",
        path.display()
    )]
    CrcMismatch {
        /// The archive's label.
        path: PathBuf,
        /// `db.collection`.
        namespace: String,
        /// The CRC in the archive.
        stored: i64,
        /// The CRC of the documents read.
        computed: i64,
    },
    /// The archive ended while a namespace listed or opened had no EOF block.
    #[error("{}: namespace {namespace} never ended (no EOF block)", path.display())]
    Unfinished {
        /// The archive's label.
        path: PathBuf,
        /// `db.collection`.
        namespace: String,
    },
    /// Anything else that is not what mongodump writes.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The file, or the archive's label.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl FormatError {
    fn corrupt(path: &Path, message: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// `db.collection`, or the bare collection when the db is empty (the oplog).
fn namespace(db: &str, collection: &str) -> String {
    if db.is_empty() {
        collection.to_string()
    } else {
        format!("{db}.{collection}")
    }
}

/// Creates a new file; an existing one is an error, so that two namespaces can never write
/// the same file and an unpack never silently overwrites.
fn create_file(path: &Path) -> Result<BufWriter<File>, FormatError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| FormatError::Write {
            path: parent.to_path_buf(),
            error: source,
        })?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| FormatError::Write {
            path: path.to_path_buf(),
            error: source,
        })?;
    Ok(BufWriter::with_capacity(IO_BUFFER, file))
}

/// Flushes and closes a file written with [`create_file`].
fn finish_file(mut w: BufWriter<File>, path: &Path) -> Result<(), FormatError> {
    w.flush().map_err(|source| FormatError::Write {
        path: path.to_path_buf(),
        error: source,
    })
}

fn write_all(w: &mut impl Write, data: &[u8], path: &Path) -> Result<(), FormatError> {
    w.write_all(data).map_err(|source| FormatError::Write {
        path: path.to_path_buf(),
        error: source,
    })
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::PathBuf};

    use super::fixtures::{check_summaries, dataset_bson, files_of, fixture, unpack_fixture};
    use super::*;

    const FORMS: [&str; 4] = [
        "dump.archive",
        "dump.archive.gz",
        "dump-dir",
        "dump-dir-gzip",
    ];

    /// Each of the four fixture forms unpacks to the same namespaces, kinds and counts, and
    /// every `.bson` has exactly the bytes of the dataset's documents; the view has no `.bson`.
    #[test]
    fn unpack_every_fixture_form_gives_the_dataset_bytes() {
        let dataset = dataset_bson();
        for form in FORMS {
            let (tmp, summaries) = unpack_fixture(form);
            check_summaries(form, &summaries);
            let dest = tmp.path().join("out");
            assert!(!dest.join("control/active_users.bson").exists(), "{form}");
            assert!(
                dest.join("control/active_users.metadata.json").exists(),
                "{form}"
            );
            assert_eq!(
                fs::read(dest.join("account_1/suppressions.bson"))
                    .unwrap()
                    .len(),
                0,
                "{form}"
            );
            for ((db, coll), docs) in &dataset {
                let got = fs::read(dest.join(db).join(format!("{coll}.bson"))).unwrap();
                assert_eq!(got, docs.concat(), "{form}: {db}.{coll}");
                let s = summaries
                    .iter()
                    .find(|s| &s.db == db && &s.collection == coll)
                    .unwrap();
                assert_eq!(s.bytes, got.len() as u64);
            }
            assert_eq!(scan_directory(&dest).unwrap(), summaries, "{form}");
        }
    }

    fn indexes_of(dir: &Path) -> BTreeMap<PathBuf, serde_json::Value> {
        files_of(dir)
            .into_iter()
            .filter(|(p, _)| p.to_string_lossy().ends_with(".metadata.json"))
            .map(|(p, text)| {
                let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
                (p, v["indexes"].clone())
            })
            .collect()
    }

    /// The metadata of all four forms carries the same indexes (options may differ in key
    /// order between runs, indexes must not).
    #[test]
    fn metadata_carries_the_same_indexes_in_every_form() {
        let mut first: Option<BTreeMap<PathBuf, serde_json::Value>> = None;
        for form in FORMS {
            let (tmp, _) = unpack_fixture(form);
            let idx = indexes_of(&tmp.path().join("out"));
            assert_eq!(idx.len(), 6, "{form}");
            assert_eq!(
                idx[Path::new("control/users.metadata.json")]
                    .as_array()
                    .unwrap()
                    .len(),
                5
            );
            match &first {
                None => first = Some(idx),
                Some(f) => assert_eq!(f, &idx, "{form}"),
            }
        }
    }

    /// The CRC-64/XZ of a collection's `.bson` is the CRC the fixture archive stores.
    #[test]
    fn crc64_xz_is_the_archive_crc() {
        let users = fs::read(fixture("dump-dir/control/users.bson")).unwrap();
        #[allow(clippy::cast_possible_wrap)]
        let crc = CRC64.checksum(&users) as i64;
        assert_eq!(crc, 316_320_425_159_519_744);
        assert_eq!(CRC64.checksum(b""), 0);
    }
}
