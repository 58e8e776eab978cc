//! Archive writing: a dump directory written as one mongodump archive (plain or gzip), as
//! mongodump writes it, so mongorestore and [`super::unpack_archive`] read it back.
//!
//! Owns the header, prelude and block order of the archive it writes, and the CRC-64 of each
//! namespace. It does not read archives ([`super::archive_read`]).

use std::{
    io::{BufWriter, Write},
    path::Path,
};

use ::mongodb::bson::{self, doc};
use flate2::{Compression, write::GzEncoder};

use super::{
    ARCHIVE_MAGIC, ARCHIVE_VERSION, CRC64, FormatError, IO_BUFFER, NsSummary, TERMINATOR,
    directory::{list_dump_dir, read_metadata, stream_documents},
    names::{sort_summaries, uses_buckets},
};

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
        error: source,
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
        error: source,
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
    use std::{collections::BTreeMap, fs, io::Read};

    use ::mongodb::bson::Document;
    use flate2::read::MultiGzDecoder;

    use super::super::archive_read::unpack_archive;
    use super::super::directory::scan_directory;
    use super::super::fixtures::{files_of, fixture, small_dump, unpack_fixture};
    use super::super::framing::{Frame, read_frame};
    use super::super::namespace;
    use super::*;

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
}
