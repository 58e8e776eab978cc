//! Directory reading: listing a dump directory (plain or gzip) and converting it into a plain
//! or gzipped one, or only counting it.
//!
//! Owns which files a dump directory may hold and how they pair into namespaces; a stray file
//! is refused rather than dropped. It does not read or write archives.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, BufReader, BufWriter, Read},
    path::{Path, PathBuf},
};

use flate2::{Compression, read::MultiGzDecoder, write::GzEncoder};

use super::{
    FormatError, IO_BUFFER, MAX_DOCUMENT, NsSummary, OPLOG_COLLECTION,
    archive_read::ns_dir,
    create_file, finish_file,
    framing::BsonFileReader,
    names::{collection_file_stem, collection_from_file_stem, db_name_ok, kind_of, sort_summaries},
    write_all,
};

/// One file of a dump directory.
#[derive(Debug, Clone)]
pub(super) struct DumpFile {
    path: PathBuf,
    /// Gzipped (`.gz`).
    gz: bool,
    /// Name without `.bson` / `.metadata.json` / `.gz`.
    stem: String,
}

/// One namespace of a dump directory.
#[derive(Debug, Clone)]
pub(super) struct DirNs {
    pub(super) db: String,
    pub(super) collection: String,
    pub(super) kind: String,
    /// The `type` field of the metadata ("" when absent), as the archive prelude wants it.
    pub(super) type_field: String,
    pub(super) metadata: Option<DumpFile>,
    pub(super) data: Option<DumpFile>,
}

/// Opens a dump file for reading, decompressing `.gz`.
fn open_dump_file(f: &DumpFile) -> Result<Box<dyn Read>, FormatError> {
    let file = File::open(&f.path).map_err(|source| FormatError::Read {
        path: f.path.clone(),
        error: source,
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
pub(super) fn read_metadata(f: &DumpFile) -> Result<String, FormatError> {
    let mut r = open_dump_file(f)?.take(MAX_DOCUMENT as u64 + 1);
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)
        .map_err(|source| FormatError::Read {
            path: f.path.clone(),
            error: source,
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
        error: source,
    })?;
    let mut entries = Vec::new();
    for e in rd {
        entries.push(e.map_err(|source| FormatError::Read {
            path: dir.to_path_buf(),
            error: source,
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
pub(super) fn list_dump_dir(src: &Path) -> Result<(Vec<DirNs>, Vec<PathBuf>), FormatError> {
    let mut out = Vec::new();
    let mut extras = Vec::new();
    let mut oplog: Option<DumpFile> = None;
    for entry in read_dir_sorted(src)? {
        let path = entry.path();
        let ft = entry.file_type().map_err(|source| FormatError::Read {
            path: path.clone(),
            error: source,
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
            error: source,
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
pub(super) fn stream_documents(
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
                error: source,
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
        error: source,
    })?;
    for extra in extras {
        let Some(name) = extra.file_name() else {
            continue;
        };
        let to = dest.join(name);
        let mut w = create_file(&to)?;
        let mut r = File::open(&extra).map_err(|source| FormatError::Read {
            path: extra.clone(),
            error: source,
        })?;
        io::copy(&mut r, &mut w).map_err(|source| FormatError::Write {
            path: to.clone(),
            error: source,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::archive_write::write_archive;
    use super::super::fixtures::{check_summaries, files_of, fixture};
    use super::*;

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
}
