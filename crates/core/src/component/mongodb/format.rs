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

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use ::mongodb::bson::{self, RawDocument, doc};
use crc::{CRC_64_XZ, Crc, Digest};
use flate2::{Compression, read::MultiGzDecoder, write::GzEncoder};

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
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file, or the archive's label.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The archive stream being written could not be written.
    #[error("cannot write the archive of {}: {source}", src.display())]
    ArchiveWrite {
        /// The dump directory being written.
        src: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
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

// ---------------------------------------------------------------------------------------------
// Framing: a BSON length prefix, an archive terminator, or the clean end of the data.

/// What one read of the framing layer found.
enum Frame {
    /// A whole document is in the buffer.
    Document,
    /// The archive terminator (int32 -1).
    Terminator,
    /// The data ended cleanly, before the first byte of a frame.
    End,
}

/// Why a frame could not be read.
enum FrameError {
    /// The reader failed (a gzip stream that ends early reports `UnexpectedEof` here).
    Io(io::Error),
    /// The data ended inside a frame.
    Torn,
    /// The length prefix is neither a terminator nor a possible document length.
    BadLength(i32),
    /// The document does not end with a NUL byte.
    NoTrailingNul,
}

/// Reads until `buf` is full or the data ends; returns how much was read.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads one frame into `buf` (cleared first). Memory is bounded by [`MAX_DOCUMENT`].
fn read_frame(r: &mut dyn Read, buf: &mut Vec<u8>) -> Result<Frame, FrameError> {
    buf.clear();
    let mut len = [0u8; 4];
    match read_up_to(r, &mut len).map_err(FrameError::Io)? {
        0 => return Ok(Frame::End),
        4 => {}
        _ => return Err(FrameError::Torn),
    }
    if len == TERMINATOR {
        return Ok(Frame::Terminator);
    }
    let size = i32::from_le_bytes(len);
    let size_ok = usize::try_from(size)
        .ok()
        .filter(|s| (MIN_DOCUMENT..=MAX_DOCUMENT).contains(s));
    let Some(size) = size_ok else {
        return Err(FrameError::BadLength(size));
    };
    buf.resize(size, 0);
    buf[..4].copy_from_slice(&len);
    if read_up_to(r, &mut buf[4..]).map_err(FrameError::Io)? != size - 4 {
        return Err(FrameError::Torn);
    }
    if buf[size - 1] != 0 {
        return Err(FrameError::NoTrailingNul);
    }
    Ok(Frame::Document)
}

/// Counts the bytes read through it, for offsets in error messages.
struct Counting<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Streams the documents of one `.bson` file (already decompressed): each call to
/// [`BsonFileReader::next_into`] yields the next whole document's raw bytes.
///
/// Pass a buffered reader: each document costs two reads.
pub struct BsonFileReader<R> {
    inner: Counting<R>,
    path: PathBuf,
    documents: u64,
}

impl<R: Read> BsonFileReader<R> {
    /// Reads documents from `r`; `path` names the file in errors.
    pub fn new(r: R, path: impl Into<PathBuf>) -> Self {
        Self {
            inner: Counting {
                inner: r,
                offset: 0,
            },
            path: path.into(),
            documents: 0,
        }
    }

    /// Fills `buf` with the next document; `Ok(false)` at a clean end of the file.
    ///
    /// # Errors
    /// A document cut short, a length below 5 or above [`MAX_DOCUMENT`], a missing trailing
    /// NUL, or a read error (a gzip stream that ends early counts as cut short).
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, FormatError> {
        let start = self.inner.offset;
        match read_frame(&mut self.inner, buf) {
            Ok(Frame::End) => Ok(false),
            Ok(Frame::Document) => {
                self.documents += 1;
                Ok(true)
            }
            Ok(Frame::Terminator) => Err(FormatError::corrupt(
                &self.path,
                format!(
                    "bad document length -1 at offset {start} after {} documents (an archive terminator in a .bson file)",
                    self.documents
                ),
            )),
            Err(FrameError::Torn) => Err(self.truncated()),
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(self.truncated())
            }
            Err(FrameError::Io(source)) => Err(FormatError::Read {
                path: self.path.clone(),
                source,
            }),
            Err(FrameError::BadLength(n)) => Err(FormatError::corrupt(
                &self.path,
                format!(
                    "bad document length {n} at offset {start} after {} documents",
                    self.documents
                ),
            )),
            Err(FrameError::NoTrailingNul) => Err(FormatError::corrupt(
                &self.path,
                format!(
                    "the document at offset {start} (after {} documents) does not end with a NUL byte",
                    self.documents
                ),
            )),
        }
    }

    /// Documents read so far.
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.inner.offset
    }

    fn truncated(&self) -> FormatError {
        FormatError::Truncated {
            path: self.path.clone(),
            place: format!(
                "after {} documents (a torn document at offset {})",
                self.documents, self.inner.offset
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File names.

/// File name stem of a collection in a dump directory, escaped as mongodump does (Go's
/// `url.QueryEscape`): letters, digits and `-_.~` stay, a space becomes `+`, every other byte
/// becomes `%XX`. So `/` can never make a path.
///
/// Left out: mongodump shortens stems longer than 238 bytes with a SHA-1 suffix; the real
/// name is then only in the metadata's `collectionName`, which the readers here prefer.
#[must_use]
pub fn collection_file_stem(collection: &str) -> String {
    let mut out = String::with_capacity(collection.len());
    for b in collection.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The collection name of a file name stem (Go's `url.QueryUnescape`); `None` for a broken
/// `%` escape or a name that is not UTF-8.
#[must_use]
pub fn collection_from_file_stem(stem: &str) -> Option<String> {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Whether a database name can be a directory name. MongoDB itself forbids `/\. "$` and NUL
/// in database names; refusing them here also keeps a hostile archive from writing outside
/// the destination.
fn db_name_ok(db: &str) -> bool {
    !db.is_empty() && !db.contains(['/', '\\', '.', '"', '$', '\0', ' '])
}

/// Whether a timeseries collection keeps its data in `system.buckets.<name>` in an archive
/// written for (or by) this server version: before 8.3, as in mongo-tools' prelude explorer.
/// A version that does not parse is taken as older.
fn uses_buckets(server_version: &str) -> bool {
    let mut parts = server_version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) < (8, 3),
        (Some(major), None) => major < 8,
        _ => true,
    }
}

/// The kind reported for a namespace: the metadata's type, `oplog` for the oplog, and
/// `collection` when nothing says otherwise.
fn kind_of(db: &str, collection: &str, type_field: &str) -> String {
    if db.is_empty() && collection == OPLOG_COLLECTION {
        "oplog".to_string()
    } else if type_field.is_empty() {
        "collection".to_string()
    } else {
        type_field.to_string()
    }
}

/// Sort order of results: by db and collection, the oplog (empty db) last, as mongodump
/// writes it last.
fn sort_summaries(list: &mut [NsSummary]) {
    list.sort_by(|a, b| {
        (a.db.is_empty(), &a.db, &a.collection).cmp(&(b.db.is_empty(), &b.db, &b.collection))
    });
}

/// Creates a new file; an existing one is an error, so that two namespaces can never write
/// the same file and an unpack never silently overwrites.
fn create_file(path: &Path) -> Result<BufWriter<File>, FormatError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| FormatError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| FormatError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(BufWriter::with_capacity(IO_BUFFER, file))
}

/// Flushes and closes a file written with [`create_file`].
fn finish_file(mut w: BufWriter<File>, path: &Path) -> Result<(), FormatError> {
    w.flush().map_err(|source| FormatError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_all(w: &mut impl Write, data: &[u8], path: &Path) -> Result<(), FormatError> {
    w.write_all(data).map_err(|source| FormatError::Write {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// Archive reading.

/// State of one namespace while an archive is read.
#[derive(PartialEq, Eq, Clone, Copy)]
enum NsStatus {
    Unopened,
    Open,
    Closed,
}

/// One namespace of an archive being unpacked, keyed by its data namespace.
struct ArchiveNs {
    summary: NsSummary,
    /// Where its documents go (`<db>/<stem>.bson`).
    data_path: PathBuf,
    /// Whether an empty `.bson` is written when there are no documents (not for views).
    wants_file: bool,
    /// The `.bson` being written while the namespace is open.
    out: Option<BufWriter<File>>,
    /// Whether the `.bson` was created (open or already closed).
    created: bool,
    digest: Digest<'static, u64>,
    status: NsStatus,
    /// Listed in the prelude: must be closed by the end (timeseries entries excepted, as
    /// mongorestore does, because their data travels under `system.buckets.<name>`).
    required: bool,
}

/// Reads a mongodump archive stream (plain, or gzip: detected by the `1f 8b` magic) and
/// writes it as a plain mongodump directory under `dest`: `<db>/<coll>.bson` (an empty file
/// for an empty collection, none for a view), `<db>/<coll>.metadata.json` (the metadata text
/// exactly as stored in the archive), and `oplog.bson` for the oplog (the namespace with an
/// empty db). Timeseries data goes to `<db>/system.buckets.<coll>.bson`, as mongodump
/// writes it in directory mode.
///
/// Verifies the magic number, the prelude, every namespace's CRC-64 and EOF block, and the
/// framing of every document; files already written stay in `dest` on error, so unpack into
/// a fresh directory and discard it on error. `label` names the archive in errors.
///
/// # Errors
/// [`FormatError`] for a stream that is not a complete, intact archive (truncation, garbage,
/// CRC mismatch, a namespace without EOF block), for unsafe names, and for I/O failures.
pub fn unpack_archive(
    input: impl Read,
    label: &str,
    dest: &Path,
) -> Result<Vec<NsSummary>, FormatError> {
    let label = Path::new(label);
    let mut input = input;
    let mut prefix = [0u8; 4];
    let n = read_up_to(&mut input, &mut prefix).map_err(|source| FormatError::Read {
        path: label.to_path_buf(),
        source,
    })?;
    let head = &prefix[..n];
    let chained = head.chain(input);
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut r = Counting {
            inner: MultiGzDecoder::new(BufReader::with_capacity(IO_BUFFER, chained)),
            offset: 0,
        };
        unpack_stream(&mut r, label, dest)
    } else {
        let mut r = Counting {
            inner: BufReader::with_capacity(IO_BUFFER, chained),
            offset: 0,
        };
        unpack_stream(&mut r, label, dest)
    }
}

/// A frame reader over an archive stream that turns framing errors into [`FormatError`]s
/// saying where in the archive they happened.
struct ArchiveReader<'a, R> {
    r: &'a mut Counting<R>,
    label: &'a Path,
}

impl<R: Read> ArchiveReader<'_, R> {
    /// Reads a frame; `place` says where ("in the prelude", "in namespace x after 3
    /// documents") for errors.
    fn frame(
        &mut self,
        buf: &mut Vec<u8>,
        place: &dyn Fn() -> String,
    ) -> Result<Frame, FormatError> {
        let start = self.r.offset;
        read_frame(self.r, buf).map_err(|e| match e {
            FrameError::Torn => FormatError::Truncated {
                path: self.label.to_path_buf(),
                place: place(),
            },
            FrameError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                FormatError::Truncated {
                    path: self.label.to_path_buf(),
                    place: format!("{} (the gzip stream ends early)", place()),
                }
            }
            FrameError::Io(source) => FormatError::Read {
                path: self.label.to_path_buf(),
                source,
            },
            FrameError::BadLength(n) => FormatError::corrupt(
                self.label,
                format!(
                    "{n} at offset {start} is neither a BSON document length nor a terminator ({})",
                    place()
                ),
            ),
            FrameError::NoTrailingNul => FormatError::corrupt(
                self.label,
                format!(
                    "the BSON document at offset {start} does not end with a NUL byte ({})",
                    place()
                ),
            ),
        })
    }
}

/// Reads a string field of an archive control document.
fn get_str<'a>(
    doc: &'a RawDocument,
    key: &str,
    what: &str,
    label: &Path,
) -> Result<&'a str, FormatError> {
    doc.get_str(key)
        .map_err(|e| FormatError::corrupt(label, format!("{what}: field {key:?}: {e}")))
}

fn unpack_stream<R: Read>(
    r: &mut Counting<R>,
    label: &Path,
    dest: &Path,
) -> Result<Vec<NsSummary>, FormatError> {
    let mut magic = [0u8; 4];
    let n = read_up_to(r, &mut magic).map_err(|source| FormatError::Read {
        path: label.to_path_buf(),
        source,
    })?;
    if n == 0 {
        return Err(FormatError::NotArchive {
            path: label.to_path_buf(),
            detail: "empty input".into(),
        });
    }
    if magic[..n] != ARCHIVE_MAGIC[..n] || n < 4 {
        let mut peek = magic[..n].to_vec();
        if n == 4 {
            let mut more = [0u8; 4];
            let m = read_up_to(r, &mut more).unwrap_or(0);
            peek.extend_from_slice(&more[..m]);
        }
        return Err(FormatError::NotArchive {
            path: label.to_path_buf(),
            detail: if n < 4 && magic[..n] == ARCHIVE_MAGIC[..n] {
                format!("only {n} bytes")
            } else {
                format!("bad magic {}", hex::encode(&peek))
            },
        });
    }

    let mut ar = ArchiveReader { r, label };
    let mut buf = Vec::new();

    // Header.
    match ar.frame(&mut buf, &|| "before the end of the archive header".into())? {
        Frame::Document => {}
        Frame::End => {
            return Err(FormatError::Truncated {
                path: label.to_path_buf(),
                place: "after the magic number".into(),
            });
        }
        Frame::Terminator => {
            return Err(FormatError::corrupt(
                label,
                "no archive header after the magic number",
            ));
        }
    }
    let header = RawDocument::from_bytes(&buf)
        .map_err(|e| FormatError::corrupt(label, format!("bad archive header: {e}")))?;
    let server_version = header.get_str("server_version").unwrap_or("").to_string();
    let buckets = uses_buckets(&server_version);

    // Prelude: one metadata document per namespace, then a terminator.
    let mut spaces: BTreeMap<(String, String), ArchiveNs> = BTreeMap::new();
    let mut prelude_count = 0u64;
    loop {
        let frame = ar.frame(&mut buf, &|| {
            format!("in the prelude after {prelude_count} namespaces")
        })?;
        match frame {
            Frame::Terminator => break,
            Frame::End => {
                return Err(FormatError::Truncated {
                    path: label.to_path_buf(),
                    place: format!("in the prelude after {prelude_count} namespaces"),
                });
            }
            Frame::Document => {}
        }
        prelude_count += 1;
        let what = "prelude entry";
        let meta = RawDocument::from_bytes(&buf)
            .map_err(|e| FormatError::corrupt(label, format!("bad {what}: {e}")))?;
        let db = get_str(meta, "db", what, label)?.to_string();
        let collection = get_str(meta, "collection", what, label)?.to_string();
        let metadata = get_str(meta, "metadata", what, label)?;
        let type_field = meta.get_str("type").unwrap_or("");
        let kind = kind_of(&db, &collection, type_field);
        let data_collection = if kind == "timeseries" && buckets {
            format!("system.buckets.{collection}")
        } else {
            collection.clone()
        };
        let mut ns = new_archive_ns(label, dest, &db, &collection, &data_collection, kind)?;
        ns.required = ns.summary.kind != "timeseries";
        if !metadata.is_empty() {
            let path = ns_dir(dest, &db).join(format!(
                "{}.metadata.json",
                collection_file_stem(&collection)
            ));
            let mut w = create_file(&path)?;
            write_all(&mut w, metadata.as_bytes(), &path)?;
            finish_file(w, &path)?;
        }
        let key = (db, data_collection);
        if spaces.contains_key(&key) {
            return Err(FormatError::corrupt(
                label,
                format!(
                    "namespace {} is listed twice in the prelude",
                    namespace(&key.0, &key.1)
                ),
            ));
        }
        spaces.insert(key, ns);
    }

    // Namespace blocks until the end of the stream.
    loop {
        match ar.frame(&mut buf, &|| "between namespace blocks".into())? {
            Frame::End => break,
            Frame::Terminator => {
                return Err(FormatError::corrupt(
                    label,
                    format!(
                        "a terminator without a namespace header at offset {}",
                        ar.r.offset - 4
                    ),
                ));
            }
            Frame::Document => {}
        }
        let what = "namespace header";
        let header = RawDocument::from_bytes(&buf)
            .map_err(|e| FormatError::corrupt(label, format!("bad {what}: {e}")))?;
        let db = get_str(header, "db", what, label)?.to_string();
        let collection = get_str(header, "collection", what, label)?.to_string();
        let eof = header.get_bool("EOF").unwrap_or(false);
        let stored_crc = match header.get("CRC") {
            Ok(Some(bson::RawBsonRef::Int64(v))) => v,
            Ok(Some(bson::RawBsonRef::Int32(v))) => i64::from(v),
            _ => 0,
        };
        let key = (db, collection);
        if !spaces.contains_key(&key) {
            // Not in the prelude: mongorestore accepts it when it has a use for it; keep it.
            let kind = kind_of(&key.0, &key.1, "");
            let ns = new_archive_ns(label, dest, &key.0, &key.1, &key.1, kind)?;
            spaces.insert(key.clone(), ns);
        }
        let Some(ns) = spaces.get_mut(&key) else {
            continue;
        };
        let name = namespace(&key.0, &key.1);
        if ns.status == NsStatus::Closed {
            return Err(FormatError::corrupt(
                label,
                format!("a block for namespace {name} after its EOF block"),
            ));
        }
        ns.status = NsStatus::Open;
        if ns.wants_file && !ns.created {
            ns.out = Some(create_file(&ns.data_path)?);
            ns.created = true;
        }
        if eof {
            match ar.frame(&mut buf, &|| {
                format!("in the EOF block of namespace {name}")
            })? {
                Frame::Terminator => {}
                Frame::End => {
                    return Err(FormatError::Truncated {
                        path: label.to_path_buf(),
                        place: format!("in the EOF block of namespace {name}"),
                    });
                }
                Frame::Document => {
                    return Err(FormatError::corrupt(
                        label,
                        format!("documents after the EOF header of namespace {name}"),
                    ));
                }
            }
            let digest = std::mem::replace(&mut ns.digest, CRC64.digest());
            #[allow(clippy::cast_possible_wrap)] // Go stores the uint64 sum as int64 the same way
            let computed = digest.finalize() as i64;
            if computed != stored_crc {
                return Err(FormatError::CrcMismatch {
                    path: label.to_path_buf(),
                    namespace: name,
                    stored: stored_crc,
                    computed,
                });
            }
            if let Some(w) = ns.out.take() {
                finish_file(w, &ns.data_path)?;
            }
            ns.status = NsStatus::Closed;
            continue;
        }
        loop {
            let docs = ns.summary.documents;
            let frame = ar.frame(&mut buf, &|| {
                format!("in namespace {name} after {docs} documents")
            })?;
            match frame {
                Frame::Terminator => break,
                Frame::End => {
                    return Err(FormatError::Truncated {
                        path: label.to_path_buf(),
                        place: format!("in namespace {name} after {docs} documents"),
                    });
                }
                Frame::Document => {}
            }
            if ns.out.is_none() {
                // A view dumped with --viewsAsCollections has documents after all.
                ns.out = Some(create_file(&ns.data_path)?);
                ns.created = true;
            }
            if let Some(w) = ns.out.as_mut() {
                write_all(w, &buf, &ns.data_path)?;
            }
            ns.digest.update(&buf);
            ns.summary.documents += 1;
            ns.summary.bytes += buf.len() as u64;
        }
    }

    let mut out = Vec::with_capacity(spaces.len());
    for ((db, coll), ns) in spaces {
        let unfinished =
            ns.status == NsStatus::Open || (ns.status == NsStatus::Unopened && ns.required);
        if unfinished {
            return Err(FormatError::Unfinished {
                path: label.to_path_buf(),
                namespace: namespace(&db, &coll),
            });
        }
        out.push(ns.summary);
    }
    sort_summaries(&mut out);
    Ok(out)
}

/// The directory of a database's files in a dump (the top for the oplog).
fn ns_dir(dest: &Path, db: &str) -> PathBuf {
    if db.is_empty() {
        dest.to_path_buf()
    } else {
        dest.join(db)
    }
}

fn new_archive_ns(
    label: &Path,
    dest: &Path,
    db: &str,
    collection: &str,
    data_collection: &str,
    kind: String,
) -> Result<ArchiveNs, FormatError> {
    if collection.is_empty() || collection.contains('\0') {
        return Err(FormatError::corrupt(
            label,
            format!("a namespace in db {db:?} has a bad collection name {collection:?}"),
        ));
    }
    if !db.is_empty() && !db_name_ok(db) {
        return Err(FormatError::corrupt(
            label,
            format!("bad database name {db:?} (not allowed by MongoDB, unsafe as a directory)"),
        ));
    }
    let data_path =
        ns_dir(dest, db).join(format!("{}.bson", collection_file_stem(data_collection)));
    Ok(ArchiveNs {
        wants_file: kind != "view",
        summary: NsSummary {
            db: db.to_string(),
            collection: collection.to_string(),
            kind,
            documents: 0,
            bytes: 0,
        },
        data_path,
        out: None,
        created: false,
        digest: CRC64.digest(),
        status: NsStatus::Unopened,
        required: true,
    })
}

// ---------------------------------------------------------------------------------------------
// Directory reading.

/// One file of a dump directory.
#[derive(Debug, Clone)]
struct DumpFile {
    path: PathBuf,
    /// Gzipped (`.gz`).
    gz: bool,
    /// Name without `.bson` / `.metadata.json` / `.gz`.
    stem: String,
}

/// One namespace of a dump directory.
#[derive(Debug, Clone)]
struct DirNs {
    db: String,
    collection: String,
    kind: String,
    /// The `type` field of the metadata ("" when absent), as the archive prelude wants it.
    type_field: String,
    metadata: Option<DumpFile>,
    data: Option<DumpFile>,
}

/// Opens a dump file for reading, decompressing `.gz`.
fn open_dump_file(f: &DumpFile) -> Result<Box<dyn Read>, FormatError> {
    let file = File::open(&f.path).map_err(|source| FormatError::Read {
        path: f.path.clone(),
        source,
    })?;
    let buffered = BufReader::with_capacity(IO_BUFFER, file);
    if f.gz {
        Ok(Box::new(BufReader::with_capacity(
            IO_BUFFER,
            MultiGzDecoder::new(buffered),
        )))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Reads a metadata file (decompressed) as text; metadata is small, but a bound keeps a
/// wrong file from filling memory.
fn read_metadata(f: &DumpFile) -> Result<String, FormatError> {
    let mut r = open_dump_file(f)?.take(MAX_DOCUMENT as u64 + 1);
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|source| FormatError::Read {
            path: f.path.clone(),
            source,
        })?;
    if bytes.len() > MAX_DOCUMENT {
        return Err(FormatError::corrupt(&f.path, "metadata larger than 16 MiB"));
    }
    String::from_utf8(bytes).map_err(|_| FormatError::corrupt(&f.path, "metadata is not UTF-8"))
}

/// Splits a file name of a dump directory into (stem, is metadata, is gzip).
fn classify(name: &str) -> Option<(&str, bool, bool)> {
    for (suffix, meta, gz) in [
        (".metadata.json.gz", true, true),
        (".metadata.json", true, false),
        (".bson.gz", false, true),
        (".bson", false, false),
    ] {
        if let Some(stem) = name.strip_suffix(suffix).filter(|s| !s.is_empty()) {
            return Some((stem, meta, gz));
        }
    }
    None
}

/// Sorted entries of a directory.
fn read_dir_sorted(dir: &Path) -> Result<Vec<fs::DirEntry>, FormatError> {
    let rd = fs::read_dir(dir).map_err(|source| FormatError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    for e in rd {
        entries.push(e.map_err(|source| FormatError::Read {
            path: dir.to_path_buf(),
            source,
        })?);
    }
    entries.sort_by_key(fs::DirEntry::file_name);
    Ok(entries)
}

/// Files mongodump may write at the top of a dump besides databases and the oplog; copied
/// through as they are.
const TOP_LEVEL_EXTRAS: [&str; 1] = ["prelude.json"];

/// Lists the namespaces of a dump directory (plain, gzip, or a mix) and the extra top-level
/// files. Anything else is an error: a dump directory holds nothing else, and skipping
/// files silently would lose data.
fn list_dump_dir(src: &Path) -> Result<(Vec<DirNs>, Vec<PathBuf>), FormatError> {
    let mut out = Vec::new();
    let mut extras = Vec::new();
    let mut oplog: Option<DumpFile> = None;
    for entry in read_dir_sorted(src)? {
        let path = entry.path();
        let ft = entry.file_type().map_err(|source| FormatError::Read {
            path: path.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(FormatError::corrupt(&path, "file name is not UTF-8"));
        };
        if ft.is_dir() {
            if !db_name_ok(name) {
                return Err(FormatError::corrupt(
                    &path,
                    "not a database directory of a dump (not a valid database name)",
                ));
            }
            out.extend(list_db_dir(&path, name)?);
        } else if ft.is_file() && TOP_LEVEL_EXTRAS.contains(&name) {
            extras.push(path);
        } else if ft.is_file() && (name == "oplog.bson" || name == "oplog.bson.gz") {
            if oplog.is_some() {
                return Err(FormatError::corrupt(
                    &path,
                    "both oplog.bson and oplog.bson.gz exist",
                ));
            }
            oplog = Some(DumpFile {
                gz: name.ends_with(".gz"),
                path,
                stem: OPLOG_COLLECTION.into(),
            });
        } else {
            return Err(FormatError::corrupt(
                &path,
                "unexpected entry at the top of a dump directory",
            ));
        }
    }
    if let Some(f) = oplog {
        out.push(DirNs {
            db: String::new(),
            collection: OPLOG_COLLECTION.into(),
            kind: "oplog".into(),
            type_field: String::new(),
            metadata: None,
            data: Some(f),
        });
    }
    Ok((out, extras))
}

/// Lists the namespaces of one database directory.
fn list_db_dir(dir: &Path, db: &str) -> Result<Vec<DirNs>, FormatError> {
    let mut metas: BTreeMap<String, DumpFile> = BTreeMap::new();
    let mut datas: BTreeMap<String, DumpFile> = BTreeMap::new();
    for entry in read_dir_sorted(dir)? {
        let path = entry.path();
        let ft = entry.file_type().map_err(|source| FormatError::Read {
            path: path.clone(),
            source,
        })?;
        let name = entry.file_name();
        let classified = name.to_str().filter(|_| ft.is_file()).and_then(classify);
        let Some((stem, meta, gz)) = classified else {
            return Err(FormatError::corrupt(
                &path,
                "unexpected entry in a database directory of a dump (only .bson and .metadata.json files, optionally .gz)",
            ));
        };
        let map = if meta { &mut metas } else { &mut datas };
        let file = DumpFile {
            path: path.clone(),
            gz,
            stem: stem.to_string(),
        };
        if map.insert(stem.to_string(), file).is_some() {
            return Err(FormatError::corrupt(
                &path,
                "the same file exists both plain and gzipped",
            ));
        }
    }
    let mut out = Vec::new();
    for (stem, meta) in metas {
        let text = read_metadata(&meta)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| FormatError::corrupt(&meta.path, format!("metadata is not JSON: {e}")))?;
        let collection = match json.get("collectionName").and_then(|v| v.as_str()) {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => collection_from_file_stem(&stem).ok_or_else(|| {
                FormatError::corrupt(&meta.path, "file name is not an escaped collection name")
            })?,
        };
        let type_field = json
            .get("type")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let kind = kind_of(db, &collection, &type_field);
        let data_stem = if kind == "timeseries" {
            collection_file_stem(&format!("system.buckets.{collection}"))
        } else {
            stem.clone()
        };
        let data = datas.remove(&data_stem);
        out.push(DirNs {
            db: db.to_string(),
            collection,
            kind,
            type_field,
            metadata: Some(meta),
            data,
        });
    }
    for (stem, data) in datas {
        let collection = collection_from_file_stem(&stem).ok_or_else(|| {
            FormatError::corrupt(&data.path, "file name is not an escaped collection name")
        })?;
        out.push(DirNs {
            db: db.to_string(),
            kind: kind_of(db, &collection, ""),
            collection,
            type_field: String::new(),
            metadata: None,
            data: Some(data),
        });
    }
    Ok(out)
}

/// Streams the documents of a namespace's data file (if any) to `sink`; returns the summary.
fn stream_documents(
    ns: &DirNs,
    buf: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8]) -> Result<(), FormatError>,
) -> Result<NsSummary, FormatError> {
    let mut summary = NsSummary {
        db: ns.db.clone(),
        collection: ns.collection.clone(),
        kind: ns.kind.clone(),
        documents: 0,
        bytes: 0,
    };
    if let Some(data) = &ns.data {
        let mut reader = BsonFileReader::new(open_dump_file(data)?, &data.path);
        while reader.next_into(buf)? {
            sink(buf)?;
            summary.documents += 1;
            summary.bytes += buf.len() as u64;
        }
    }
    Ok(summary)
}

/// Reads a plain mongodump directory (as [`unpack_archive`] and [`unpack_directory`] write
/// it; gzipped files are read too) and lists its namespaces with counts, read from the
/// `.bson` files.
///
/// # Errors
/// Unexpected files, unreadable metadata, and `.bson` files that are not whole documents.
pub fn scan_directory(src: &Path) -> Result<Vec<NsSummary>, FormatError> {
    let (spaces, _) = list_dump_dir(src)?;
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(spaces.len());
    for ns in &spaces {
        out.push(stream_documents(ns, &mut buf, |_| Ok(()))?);
    }
    sort_summaries(&mut out);
    Ok(out)
}

/// Copies a mongodump `--out` directory (plain, or with `--gzip`: `.bson.gz` /
/// `.metadata.json.gz`; a mix is accepted) into the plain layout at `dest`, checking that
/// each `.bson` is a sequence of whole documents of valid length.
///
/// # Errors
/// As [`scan_directory`], plus failures writing `dest` (existing files are not overwritten).
pub fn unpack_directory(src: &Path, dest: &Path) -> Result<Vec<NsSummary>, FormatError> {
    convert_directory(src, dest, false)
}

/// Writes a mongodump `--out` directory at `dest` from the plain directory `src`, each file
/// gzipped on its own when `gzip` (as `mongodump --gzip --out` does).
///
/// # Errors
/// As [`unpack_directory`].
pub fn write_directory(src: &Path, dest: &Path, gzip: bool) -> Result<Vec<NsSummary>, FormatError> {
    convert_directory(src, dest, gzip)
}

/// A file being written, gzipped or not.
enum OutFile {
    Plain(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl OutFile {
    fn create(path: &Path, gzip: bool) -> Result<Self, FormatError> {
        let w = create_file(path)?;
        Ok(if gzip {
            Self::Gzip(GzEncoder::new(w, Compression::default()))
        } else {
            Self::Plain(w)
        })
    }

    fn write(&mut self, data: &[u8], path: &Path) -> Result<(), FormatError> {
        match self {
            Self::Plain(w) => write_all(w, data, path),
            Self::Gzip(w) => write_all(w, data, path),
        }
    }

    fn finish(self, path: &Path) -> Result<(), FormatError> {
        let w = match self {
            Self::Plain(w) => w,
            Self::Gzip(w) => w.finish().map_err(|source| FormatError::Write {
                path: path.to_path_buf(),
                source,
            })?,
        };
        finish_file(w, path)
    }
}

fn convert_directory(src: &Path, dest: &Path, gzip: bool) -> Result<Vec<NsSummary>, FormatError> {
    let (spaces, extras) = list_dump_dir(src)?;
    let gz = if gzip { ".gz" } else { "" };
    fs::create_dir_all(dest).map_err(|source| FormatError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    for extra in extras {
        let Some(name) = extra.file_name() else {
            continue;
        };
        let to = dest.join(name);
        let mut w = create_file(&to)?;
        let mut r = File::open(&extra).map_err(|source| FormatError::Read {
            path: extra.clone(),
            source,
        })?;
        io::copy(&mut r, &mut w).map_err(|source| FormatError::Write {
            path: to.clone(),
            source,
        })?;
        finish_file(w, &to)?;
    }
    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(spaces.len());
    for ns in &spaces {
        let dir = ns_dir(dest, &ns.db);
        if let Some(meta) = &ns.metadata {
            let text = read_metadata(meta)?;
            let path = dir.join(format!("{}.metadata.json{gz}", meta.stem));
            let mut w = OutFile::create(&path, gzip)?;
            w.write(text.as_bytes(), &path)?;
            w.finish(&path)?;
        }
        let summary = if let Some(data) = &ns.data {
            let path = dir.join(format!("{}.bson{gz}", data.stem));
            let mut w = OutFile::create(&path, gzip)?;
            let summary = stream_documents(ns, &mut buf, |doc| w.write(doc, &path))?;
            w.finish(&path)?;
            summary
        } else {
            stream_documents(ns, &mut buf, |_| Ok(()))?
        };
        out.push(summary);
    }
    sort_summaries(&mut out);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Archive writing.

/// Serializes a control document of the archive.
fn control_bytes(doc: &bson::Document, src: &Path) -> Result<Vec<u8>, FormatError> {
    let bytes = bson::to_vec(doc)
        .map_err(|e| FormatError::corrupt(src, format!("cannot encode an archive header: {e}")))?;
    if bytes.len() > 16 * 1024 * 1024 {
        return Err(FormatError::corrupt(
            src,
            "a namespace's metadata makes an archive header above 16 MiB, which mongorestore refuses",
        ));
    }
    Ok(bytes)
}

/// Writes the plain mongodump directory `src` as a mongodump archive to `out` (one gzip
/// stream around the whole archive when `gzip`), as mongodump 100.x with
/// `--numParallelCollections 1` would: the magic number, the header `{concurrent_collections:
/// 1, version: "0.1", server_version, tool_version: "akbackup <version>"}`, one prelude entry
/// `{db, collection, metadata, size: 0, type}` per namespace, a terminator, then per
/// namespace one segment (header, documents, terminator; a header and a terminator alone
/// when there are none, views included, as mongodump does) and an EOF block with the CRC-64.
/// The oplog comes last. Timeseries data travels as `system.buckets.<name>` for servers
/// before 8.3, as mongorestore expects.
///
/// `server_version` goes into the header; mongorestore reads it to decide how to restore.
///
/// # Errors
/// As [`scan_directory`], plus failures writing `out`.
pub fn write_archive(
    src: &Path,
    out: impl Write,
    gzip: bool,
    server_version: &str,
) -> Result<Vec<NsSummary>, FormatError> {
    let werr = |source| FormatError::ArchiveWrite {
        src: src.to_path_buf(),
        source,
    };
    if gzip {
        let mut w = GzEncoder::new(
            BufWriter::with_capacity(IO_BUFFER, out),
            Compression::default(),
        );
        let summaries = write_archive_to(src, &mut w, server_version)?;
        w.finish().map_err(werr)?.flush().map_err(werr)?;
        Ok(summaries)
    } else {
        let mut w = BufWriter::with_capacity(IO_BUFFER, out);
        let summaries = write_archive_to(src, &mut w, server_version)?;
        w.flush().map_err(werr)?;
        Ok(summaries)
    }
}

fn write_archive_to(
    src: &Path,
    w: &mut dyn Write,
    server_version: &str,
) -> Result<Vec<NsSummary>, FormatError> {
    let werr = |source| FormatError::ArchiveWrite {
        src: src.to_path_buf(),
        source,
    };
    let (mut spaces, _) = list_dump_dir(src)?;
    spaces.sort_by(|a, b| {
        (a.db.is_empty(), &a.db, &a.collection).cmp(&(b.db.is_empty(), &b.db, &b.collection))
    });
    let buckets = uses_buckets(server_version);

    w.write_all(&ARCHIVE_MAGIC).map_err(werr)?;
    let header = doc! {
        "concurrent_collections": 1_i32,
        "version": ARCHIVE_VERSION,
        "server_version": server_version,
        "tool_version": format!("akbackup {}", crate::VERSION),
    };
    w.write_all(&control_bytes(&header, src)?).map_err(werr)?;
    for ns in &spaces {
        let metadata = match &ns.metadata {
            Some(m) => read_metadata(m)?,
            None => String::new(),
        };
        // mongodump gives the oplog no type, and every collection the server's type.
        let type_field = match (ns.kind.as_str(), ns.type_field.as_str()) {
            ("oplog", _) => "",
            (_, "") => "collection",
            (_, t) => t,
        };
        let entry = doc! {
            "db": &ns.db,
            "collection": &ns.collection,
            "metadata": metadata,
            "size": 0_i32,
            "type": type_field,
        };
        w.write_all(&control_bytes(&entry, src)?).map_err(werr)?;
    }
    w.write_all(&TERMINATOR).map_err(werr)?;

    let mut buf = Vec::new();
    let mut out = Vec::with_capacity(spaces.len());
    for ns in &spaces {
        let data_collection = if ns.kind == "timeseries" && buckets {
            format!("system.buckets.{}", ns.collection)
        } else {
            ns.collection.clone()
        };
        let segment = doc! {
            "db": &ns.db,
            "collection": &data_collection,
            "EOF": false,
            "CRC": 0_i64,
        };
        w.write_all(&control_bytes(&segment, src)?).map_err(werr)?;
        let mut digest = CRC64.digest();
        let summary = stream_documents(ns, &mut buf, |doc| {
            digest.update(doc);
            w.write_all(doc).map_err(werr)
        })?;
        w.write_all(&TERMINATOR).map_err(werr)?;
        #[allow(clippy::cast_possible_wrap)] // Go stores the uint64 sum as int64 the same way
        let crc = digest.finalize() as i64;
        let eof = doc! {
            "db": &ns.db,
            "collection": &data_collection,
            "EOF": true,
            "CRC": crc,
        };
        w.write_all(&control_bytes(&eof, src)?).map_err(werr)?;
        w.write_all(&TERMINATOR).map_err(werr)?;
        out.push(summary);
    }
    sort_summaries(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use ::mongodb::bson::{Bson, Document};

    use super::*;

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/mongodump"
    );

    fn fixture(name: &str) -> PathBuf {
        Path::new(FIXTURES).join(name)
    }

    /// The expected (namespace, kind, documents) of the fixture dump.
    fn expected_namespaces() -> Vec<(&'static str, &'static str, &'static str, u64)> {
        vec![
            ("account_1", "contacts", "collection", 300),
            ("account_1", "suppressions", "collection", 0),
            ("control", "accounts", "collection", 40),
            ("control", "active_users", "view", 0),
            ("control", "audit_log", "collection", 50),
            ("control", "users", "collection", 120),
        ]
    }

    /// The BSON of each collection of `dataset.json`, encoded from its canonical extjson.
    fn dataset_bson() -> BTreeMap<(String, String), Vec<Vec<u8>>> {
        let text = fs::read_to_string(fixture("dataset.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut out = BTreeMap::new();
        for (db, dbv) in json["databases"].as_object().unwrap() {
            for (coll, cv) in dbv["collections"].as_object().unwrap() {
                let docs: Vec<Vec<u8>> = cv["documents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        let bson = Bson::try_from(d.clone()).unwrap();
                        let Bson::Document(doc) = bson else {
                            panic!("not a document: {d}")
                        };
                        bson::to_vec(&doc).unwrap()
                    })
                    .collect();
                assert_eq!(docs.len() as u64, cv["count"].as_u64().unwrap());
                out.insert((db.clone(), coll.clone()), docs);
            }
        }
        out
    }

    /// Every file under `dir`, by relative path.
    fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        for e in walkdir::WalkDir::new(dir) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
        out
    }

    fn unpack_fixture(form: &str) -> (tempfile::TempDir, Vec<NsSummary>) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let summaries = if form.starts_with("dump-dir") {
            unpack_directory(&fixture(form), &dest).unwrap()
        } else {
            let f = File::open(fixture(form)).unwrap();
            unpack_archive(f, form, &dest).unwrap()
        };
        (tmp, summaries)
    }

    const FORMS: [&str; 4] = [
        "dump.archive",
        "dump.archive.gz",
        "dump-dir",
        "dump-dir-gzip",
    ];

    fn check_summaries(form: &str, summaries: &[NsSummary]) {
        let got: Vec<(&str, &str, &str, u64)> = summaries
            .iter()
            .map(|s| {
                (
                    s.db.as_str(),
                    s.collection.as_str(),
                    s.kind.as_str(),
                    s.documents,
                )
            })
            .collect();
        assert_eq!(got, expected_namespaces(), "{form}");
    }

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

    /// Canonical extjson from `dataset.json` re-encodes to the server's bytes document by
    /// document (no reordering, NaN, -0.0, Decimal128 and the rest survive the trip).
    #[test]
    fn dataset_extjson_reencodes_to_the_dumped_bytes() {
        for ((db, coll), docs) in dataset_bson() {
            let file =
                fs::read(fixture("dump-dir").join(&db).join(format!("{coll}.bson"))).unwrap();
            let mut reader = BsonFileReader::new(file.as_slice(), "x");
            let mut buf = Vec::new();
            for (i, want) in docs.iter().enumerate() {
                assert!(reader.next_into(&mut buf).unwrap());
                assert_eq!(&buf, want, "{db}.{coll} document {i}");
            }
            assert!(!reader.next_into(&mut buf).unwrap());
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

    /// The pieces of an archive, for structural comparisons.
    #[derive(Debug)]
    struct ArchiveView {
        header: Document,
        prelude: Vec<Document>,
        /// (header, documents in the block) in stream order.
        blocks: Vec<(Document, usize)>,
    }

    fn parse_archive(bytes: &[u8]) -> ArchiveView {
        let mut data = Vec::new();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            MultiGzDecoder::new(bytes).read_to_end(&mut data).unwrap();
        } else {
            data = bytes.to_vec();
        }
        assert_eq!(data[..4], ARCHIVE_MAGIC);
        let mut r: &[u8] = &data[4..];
        let mut buf = Vec::new();
        let doc = |buf: &[u8]| Document::from_reader(buf).unwrap();
        assert!(matches!(read_frame(&mut r, &mut buf), Ok(Frame::Document)));
        let header = doc(&buf);
        let mut prelude = Vec::new();
        while let Ok(Frame::Document) = read_frame(&mut r, &mut buf) {
            prelude.push(doc(&buf));
        }
        let mut blocks = Vec::new();
        while let Ok(Frame::Document) = read_frame(&mut r, &mut buf) {
            let h = doc(&buf);
            let mut n = 0;
            while let Ok(Frame::Document) = read_frame(&mut r, &mut buf) {
                n += 1;
            }
            blocks.push((h, n));
        }
        assert!(r.is_empty());
        ArchiveView {
            header,
            prelude,
            blocks,
        }
    }

    fn keys(d: &Document) -> Vec<&str> {
        d.keys().map(String::as_str).collect()
    }

    /// EOF CRCs by namespace.
    fn eof_crcs(v: &ArchiveView) -> BTreeMap<String, i64> {
        v.blocks
            .iter()
            .filter(|(h, _)| h.get_bool("EOF").unwrap())
            .map(|(h, _)| {
                (
                    namespace(h.get_str("db").unwrap(), h.get_str("collection").unwrap()),
                    h.get_i64("CRC").unwrap(),
                )
            })
            .collect()
    }

    /// Writing the unpacked fixture as an archive (plain and gzip) and unpacking that gives
    /// identical files, and our archive has the fixture's structure: same header and prelude
    /// fields in the same order, one segment and one EOF block per namespace (views and
    /// empty collections included), and the same CRC-64 values.
    #[test]
    fn archive_round_trip_matches_the_fixture_structure() {
        let (tmp, summaries) = unpack_fixture("dump.archive");
        let plain = tmp.path().join("out");
        let fixture_view = parse_archive(&fs::read(fixture("dump.archive")).unwrap());
        for gzip in [false, true] {
            let mut bytes = Vec::new();
            let written = write_archive(&plain, &mut bytes, gzip, "7.0.0").unwrap();
            assert_eq!(written, summaries);
            assert_eq!(bytes.starts_with(&[0x1f, 0x8b]), gzip);
            let again = tempfile::tempdir().unwrap();
            let back = unpack_archive(bytes.as_slice(), "ours", again.path()).unwrap();
            assert_eq!(back, summaries);
            assert_eq!(files_of(&plain), files_of(again.path()));

            let ours = parse_archive(&bytes);
            assert_eq!(keys(&ours.header), keys(&fixture_view.header));
            assert_eq!(ours.header.get_i32("concurrent_collections").unwrap(), 1);
            assert_eq!(ours.header.get_str("version").unwrap(), "0.1");
            assert_eq!(ours.header.get_str("server_version").unwrap(), "7.0.0");
            assert_eq!(
                ours.header.get_str("tool_version").unwrap(),
                format!("akbackup {}", crate::VERSION)
            );
            assert_eq!(ours.prelude.len(), fixture_view.prelude.len());
            let prelude_of = |v: &ArchiveView| -> BTreeMap<String, Document> {
                v.prelude
                    .iter()
                    .map(|d| {
                        (
                            namespace(d.get_str("db").unwrap(), d.get_str("collection").unwrap()),
                            d.clone(),
                        )
                    })
                    .collect()
            };
            let (mine, theirs) = (prelude_of(&ours), prelude_of(&fixture_view));
            for (ns, d) in &theirs {
                let m = &mine[ns];
                assert_eq!(keys(m), keys(d), "{ns}");
                assert_eq!(m.get_str("type").unwrap(), d.get_str("type").unwrap());
                assert_eq!(m.get_i32("size").unwrap(), 0);
            }
            for v in [&ours, &fixture_view] {
                let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
                for (h, _) in &v.blocks {
                    assert_eq!(keys(h), ["db", "collection", "EOF", "CRC"]);
                    let ns = namespace(h.get_str("db").unwrap(), h.get_str("collection").unwrap());
                    let e = seen.entry(ns).or_default();
                    if h.get_bool("EOF").unwrap() {
                        e.1 += 1;
                    } else {
                        assert_eq!(h.get_i64("CRC").unwrap(), 0);
                        e.0 += 1;
                    }
                }
                assert_eq!(seen.len(), 6);
                assert!(seen.values().all(|&(s, e)| s == 1 && e == 1), "{seen:?}");
            }
            assert_eq!(eof_crcs(&ours), eof_crcs(&fixture_view));
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

    /// A gzipped directory written from the plain one unpacks to identical files, with the
    /// names mongodump --gzip uses.
    #[test]
    fn gzip_directory_round_trip() {
        let src = fixture("dump-dir");
        let tmp = tempfile::tempdir().unwrap();
        let gz = tmp.path().join("gz");
        let s1 = write_directory(&src, &gz, true).unwrap();
        check_summaries("write_directory", &s1);
        let names = |d: &Path| files_of(d).into_keys().collect::<BTreeSet<_>>();
        assert_eq!(names(&gz), names(&fixture("dump-dir-gzip")));
        let back = tmp.path().join("back");
        assert_eq!(unpack_directory(&gz, &back).unwrap(), s1);
        assert_eq!(files_of(&back), files_of(&src));
        let plain = tmp.path().join("plain");
        write_directory(&src, &plain, false).unwrap();
        assert_eq!(files_of(&plain), files_of(&src));
    }

    /// A small dump with every kind of namespace: documents, an empty collection, a view, a
    /// timeseries collection and the oplog.
    fn small_dump(dir: &Path) {
        let d = dir.join("d");
        fs::create_dir_all(&d).unwrap();
        let mut c = Vec::new();
        for i in 0..3 {
            c.extend(bson::to_vec(&doc! {"_id": i, "s": "x".repeat(i as usize)}).unwrap());
        }
        fs::write(d.join("c%2Fx.bson"), &c).unwrap();
        fs::write(
            d.join("c%2Fx.metadata.json"),
            r#"{"indexes":[],"collectionName":"c/x","type":"collection"}"#,
        )
        .unwrap();
        fs::write(d.join("e.bson"), b"").unwrap();
        fs::write(
            d.join("e.metadata.json"),
            r#"{"indexes":[],"type":"collection"}"#,
        )
        .unwrap();
        fs::write(
            d.join("v.metadata.json"),
            r#"{"options":{"viewOn":"c/x","pipeline":[]},"indexes":[],"type":"view"}"#,
        )
        .unwrap();
        fs::write(
            d.join("t.metadata.json"),
            r#"{"indexes":[],"type":"timeseries"}"#,
        )
        .unwrap();
        fs::write(
            d.join("system.buckets.t.bson"),
            bson::to_vec(&doc! {"_id": 1, "control": {}}).unwrap(),
        )
        .unwrap();
        fs::write(
            dir.join("oplog.bson"),
            bson::to_vec(&doc! {"op": "n", "o": {}}).unwrap(),
        )
        .unwrap();
    }

    /// The small dump round-trips through an archive, with names escaped, timeseries data
    /// under `system.buckets.`, and the oplog as the namespace with an empty db, last.
    #[test]
    fn small_dump_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        small_dump(&src);
        let mut bytes = Vec::new();
        let s = write_archive(&src, &mut bytes, false, "6.0.4").unwrap();
        let got: Vec<(&str, &str, &str, u64)> = s
            .iter()
            .map(|s| {
                (
                    s.db.as_str(),
                    s.collection.as_str(),
                    s.kind.as_str(),
                    s.documents,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("d", "c/x", "collection", 3),
                ("d", "e", "collection", 0),
                ("d", "t", "timeseries", 1),
                ("d", "v", "view", 0),
                ("", "oplog", "oplog", 1),
            ]
        );
        let view = parse_archive(&bytes);
        let last = &view.prelude[view.prelude.len() - 1];
        assert_eq!(last.get_str("db").unwrap(), "");
        assert_eq!(last.get_str("metadata").unwrap(), "");
        assert!(
            view.blocks.iter().any(|(h, n)| {
                h.get_str("collection").unwrap() == "system.buckets.t" && *n == 1
            })
        );
        let back = tmp.path().join("back");
        assert_eq!(unpack_archive(bytes.as_slice(), "small", &back).unwrap(), s);
        assert_eq!(files_of(&back), files_of(&src));
        assert_eq!(scan_directory(&src).unwrap(), s);
    }

    fn small_archive(gzip: bool) -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        small_dump(tmp.path());
        let mut bytes = Vec::new();
        write_archive(tmp.path(), &mut bytes, gzip, "7.0.0").unwrap();
        bytes
    }

    fn unpack_bytes(bytes: &[u8]) -> Result<Vec<NsSummary>, FormatError> {
        let tmp = tempfile::tempdir().unwrap();
        unpack_archive(bytes, "dump.archive", &tmp.path().join("out"))
    }

    /// Every truncation of a small archive, plain and gzip, is an error, never a panic.
    #[test]
    fn every_truncation_of_a_small_archive_is_an_error() {
        for gzip in [false, true] {
            let bytes = small_archive(gzip);
            assert!(unpack_bytes(&bytes).is_ok());
            for len in 0..bytes.len() {
                assert!(
                    unpack_bytes(&bytes[..len]).is_err(),
                    "gzip {gzip}, length {len}"
                );
            }
        }
    }

    /// Flipping any byte of a small archive never panics; flipping a byte inside a
    /// document is caught by the CRC.
    #[test]
    fn flipped_bytes_never_panic() {
        let bytes = small_archive(false);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            let _ = unpack_bytes(&b);
        }
    }

    /// Truncating the fixture archive anywhere is an error naming where it happened.
    #[test]
    fn truncated_fixture_archive_is_an_error() {
        let bytes = fs::read(fixture("dump.archive")).unwrap();
        for len in [
            1,
            3,
            4,
            10,
            100,
            1000,
            5000,
            bytes.len() / 2,
            bytes.len() - 5,
            bytes.len() - 1,
        ] {
            let err = unpack_bytes(&bytes[..len]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("dump.archive: "), "{msg}");
        }
        let err = unpack_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
        let gz = fs::read(fixture("dump.archive.gz")).unwrap();
        for len in [1, 2, 10, 100, gz.len() / 2, gz.len() - 1] {
            assert!(unpack_bytes(&gz[..len]).is_err(), "gzip length {len}");
        }
        // Trailing garbage after the last EOF block is not an archive block.
        let mut extra = bytes.clone();
        extra.extend_from_slice(b"garbage!");
        assert!(matches!(
            unpack_bytes(&extra),
            Err(FormatError::Corrupt { .. })
        ));
    }

    /// A byte flipped inside a document of control.users is a CRC-64 mismatch naming it.
    #[test]
    fn flipped_document_byte_is_a_crc_mismatch() {
        let bytes = fs::read(fixture("dump.archive")).unwrap();
        let users = fs::read(fixture("dump-dir/control/users.bson")).unwrap();
        let doc_len = u32::from_le_bytes(users[..4].try_into().unwrap()) as usize;
        let first_doc = &users[..doc_len];
        let at = bytes
            .windows(first_doc.len())
            .position(|w| w == first_doc)
            .unwrap();
        let mut b = bytes.clone();
        b[at + doc_len / 2] ^= 0x01;
        let err = unpack_bytes(&b).unwrap_err();
        assert!(
            matches!(&err, FormatError::CrcMismatch { namespace, .. } if namespace == "control.users"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("CRC-64 mismatch for control.users")
        );
        // Flipping the length's high byte makes the length impossible.
        let mut b = bytes.clone();
        b[at + 3] ^= 0x40;
        assert!(matches!(unpack_bytes(&b), Err(FormatError::Corrupt { .. })));
    }

    /// Bad magic, empty input and a plain gzip of something else are "not an archive".
    #[test]
    fn not_an_archive() {
        let err = unpack_bytes(b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "dump.archive: not a mongodump archive (empty input)"
        );
        let err = unpack_bytes(b"PK\x03\x04hello").unwrap_err();
        assert_eq!(
            err.to_string(),
            "dump.archive: not a mongodump archive (bad magic 504b030468656c6c)"
        );
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(b"just text").unwrap();
        let err = unpack_bytes(&gz.finish().unwrap()).unwrap_err();
        assert!(matches!(err, FormatError::NotArchive { .. }), "{err}");
        // A gzipped .bson file is not an archive either.
        let err = unpack_bytes(&fs::read(fixture("dump-dir-gzip/control/users.bson.gz")).unwrap())
            .unwrap_err();
        assert!(matches!(err, FormatError::NotArchive { .. }), "{err}");
        // A namespace header without its EOF block.
        let bytes = fs::read(fixture("dump.archive")).unwrap();
        let mut r: &[u8] = &bytes[4..];
        let mut buf = Vec::new();
        let mut terminators = 0;
        let cut = loop {
            let frame = read_frame(&mut r, &mut buf);
            if matches!(frame, Ok(Frame::Terminator)) {
                terminators += 1;
                if terminators == 2 {
                    // The prelude's end, then the first segment's end: cut before its EOF.
                    break bytes.len() - r.len();
                }
            }
        };
        let err = unpack_bytes(&bytes[..cut]).unwrap_err();
        assert!(matches!(err, FormatError::Unfinished { .. }), "{err}");
        assert!(
            err.to_string().contains("never ended (no EOF block)"),
            "{err}"
        );
    }

    /// A `.bson` whose last document is torn fails scan and unpack, naming the file.
    #[test]
    fn torn_bson_file_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let dest = tmp.path().join("dest");
        unpack_directory(&fixture("dump-dir"), &src).unwrap();
        let users = src.join("control/users.bson");
        let data = fs::read(&users).unwrap();
        fs::write(&users, &data[..data.len() - 3]).unwrap();
        let err = scan_directory(&src).unwrap_err();
        assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("users.bson"), "{err}");
        assert!(unpack_directory(&src, &dest).is_err());
        let mut out = Vec::new();
        assert!(write_archive(&src, &mut out, false, "7.0.0").is_err());
        // A stray file is refused rather than silently dropped.
        fs::write(&users, &data).unwrap();
        fs::write(src.join("control/notes.txt"), b"hi").unwrap();
        assert!(scan_directory(&src).is_err());
    }

    /// Lengths out of range and a missing trailing NUL are errors of the reader.
    #[test]
    fn bson_reader_rejects_bad_framing() {
        let mut buf = Vec::new();
        for bad in [
            &[4u8, 0, 0, 0, 0][..],
            &[0xff, 0xff, 0xff, 0x7f, 0][..],
            &[0xff, 0xff, 0xff, 0xff][..],
            &[6, 0, 0, 0, 1, 1][..],
            &[5, 0][..],
            &[5, 0, 0, 0][..],
        ] {
            let mut r = BsonFileReader::new(bad, "t.bson");
            assert!(r.next_into(&mut buf).is_err(), "{bad:?}");
        }
        let mut r = BsonFileReader::new(&[5u8, 0, 0, 0, 0][..], "t.bson");
        assert!(r.next_into(&mut buf).unwrap());
        assert!(!r.next_into(&mut buf).unwrap());
        assert_eq!((r.documents(), r.bytes()), (1, 5));
    }

    /// Collection names escape as Go's `url.QueryEscape` does, and unescape back.
    #[test]
    fn collection_names_escape_like_mongodump() {
        for (name, stem) in [
            ("users", "users"),
            ("a.b-c_d~e", "a.b-c_d~e"),
            ("a b", "a+b"),
            ("a/b", "a%2Fb"),
            ("$admin.system.users", "%24admin.system.users"),
            ("ключ", "%D0%BA%D0%BB%D1%8E%D1%87"),
            ("a+b%", "a%2Bb%25"),
        ] {
            assert_eq!(collection_file_stem(name), stem);
            assert_eq!(collection_from_file_stem(stem).as_deref(), Some(name));
        }
        assert_eq!(collection_from_file_stem("bad%zz"), None);
        assert_eq!(collection_from_file_stem("bad%2"), None);
        assert_eq!(collection_from_file_stem("%FF"), None);
    }

    /// Hostile names in an archive cannot write outside the destination.
    #[test]
    fn archive_with_unsafe_db_name_is_refused() {
        let mut bytes = ARCHIVE_MAGIC.to_vec();
        bytes.extend(bson::to_vec(&doc! {"concurrent_collections": 1, "version": "0.1", "server_version": "7.0.0", "tool_version": "x"}).unwrap());
        bytes.extend(bson::to_vec(&doc! {"db": "..", "collection": "x", "metadata": "{}", "size": 0, "type": "collection"}).unwrap());
        bytes.extend(TERMINATOR);
        let err = unpack_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("bad database name"), "{err}");
    }

    #[test]
    /// Seeded damage to the real mongodump archive (600 cases: bit flips, a length field
    /// overwritten with a random or huge value, truncation): the reader answers with an error
    /// or a result, it never panics and never allocates what a damaged length claims. A
    /// deterministic stand-in for `cargo fuzz`, which needs a nightly toolchain.
    fn damaged_archives_never_panic() {
        let bytes = std::fs::read(fixture("dump.archive")).unwrap();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x >> 16).unwrap()
        };
        let mut refused = 0;
        for case in 0..600 {
            let mut b = bytes.clone();
            match case % 4 {
                0 => {
                    let i = next() % b.len();
                    b[i] ^= 1 << (next() % 8);
                }
                1 => {
                    let i = next() % (b.len() - 4);
                    let v = u32::try_from(next() % (1 << 31)).unwrap();
                    b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
                2 => {
                    let n = next() % b.len();
                    b.truncate(n);
                }
                _ => {
                    let i = next() % (b.len() - 4);
                    b[i..i + 4].copy_from_slice(&0x7fff_fff0_u32.to_le_bytes());
                }
            }
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("out");
            let result =
                std::panic::catch_unwind(|| unpack_archive(&b[..], "damaged.archive", &dest));
            match result {
                Ok(Err(_)) => refused += 1,
                Ok(Ok(_)) => {}
                Err(_) => panic!("case {case} panicked"),
            }
        }
        assert!(
            refused > 300,
            "only {refused} of 600 damaged archives refused"
        );
    }
}
