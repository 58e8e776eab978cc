//! Archive reading: a mongodump archive (plain or gzip) unpacked into a plain dump directory.
//!
//! Owns the archive's structure (magic, header, prelude, interleaved namespace blocks, EOF
//! blocks with their CRC-64) and refuses anything mongodump does not write, including a
//! database name that would lead outside the destination. It does not write archives
//! ([`super::archive_write`]).

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufReader, BufWriter, Read},
    path::{Path, PathBuf},
};

use ::mongodb::bson::{self, RawDocument};
use crc::Digest;
use flate2::read::MultiGzDecoder;

use super::{
    ARCHIVE_MAGIC, CRC64, FormatError, IO_BUFFER, NsSummary, create_file, finish_file,
    framing::{Counting, Frame, FrameError, read_frame, read_up_to},
    names::{collection_file_stem, db_name_ok, kind_of, sort_summaries, uses_buckets},
    namespace, write_all,
};

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
        error: source,
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
                error: source,
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
        error: source,
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
pub(super) fn ns_dir(dest: &Path, db: &str) -> PathBuf {
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

#[cfg(test)]
mod tests {
    use std::{fs, io::Write};

    use ::mongodb::bson::doc;
    use flate2::{Compression, write::GzEncoder};

    use super::super::TERMINATOR;
    use super::super::archive_write::write_archive;
    use super::super::fixtures::{fixture, small_dump};
    use super::super::framing::{Frame, read_frame};
    use super::*;

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
