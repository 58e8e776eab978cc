//! Opening a copy of an SSDB store with a real LevelDB implementation and describing it:
//! key counts per SSDB data type and a digest of every key and value ([`summarize`], the full
//! read of `verify --deep`), or, as every backup does, only what is new since the parent set:
//! the new table files block by block ([`check_tables`]) and the MANIFEST and logs replayed by
//! LevelDB ([`opens`]).
//!
//! SSDB keeps its type in the first byte of each LevelDB key: `k` key-value, `h`/`H` hash
//! (item / size), `s`/`z`/`Z` sorted set, `q`/`Q` queue, `0x01` binlog. The digest is SHA-256
//! over `len(key) key len(value) value` in key order, so two copies holding the same data give
//! the same digest whatever their file layout.

use std::path::{Path, PathBuf};

use rusty_leveldb::{DB, LdbIterator, Options};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a copy of a LevelDB database does not open or check.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// A file of the database cannot be read.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause (printed in the message, so not also the `source()`).
        error: std::io::Error,
    },
    /// A table file is damaged.
    #[error("table {table}: {damage}")]
    Table {
        /// The table's file name.
        table: String,
        /// What is wrong and where (printed in the message).
        damage: super::table::Damage,
    },
    /// `CURRENT` cannot be read.
    #[error("no readable CURRENT file: {error}")]
    Current {
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// `CURRENT` does not name a MANIFEST.
    #[error("CURRENT names no MANIFEST ({0:?})")]
    NoManifest(String),
    /// The MANIFEST does not parse.
    #[error("{name}: {error}")]
    Manifest {
        /// The MANIFEST's file name.
        name: String,
        /// Cause (printed in the message).
        error: super::manifest::ManifestError,
    },
    /// A table the MANIFEST lists is not there.
    #[error("table {number:06}.ldb (level {level}) listed by {manifest} is missing")]
    MissingTable {
        /// The table's number.
        number: u64,
        /// Its level.
        level: u32,
        /// The MANIFEST listing it.
        manifest: String,
    },
    /// LevelDB refused to open or read the database.
    #[error("{0}")]
    LevelDb(rusty_leveldb::Status),
    /// The LevelDB reader panicked on it.
    #[error("the LevelDB reader failed on it ({0}): damaged?")]
    Panicked(String),
    /// The scratch copy LevelDB opens could not be made (the checkpoint error names the
    /// file).
    #[error("{0}")]
    Scratch(super::checkpoint::CheckpointError),
}

/// Key counts by SSDB type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCounts {
    /// `k`.
    pub kv: u64,
    /// `h`, `H`.
    pub hash: u64,
    /// `s`, `z`, `Z`.
    pub zset: u64,
    /// `q`, `Q`.
    pub queue: u64,
    /// `0x01`.
    pub binlog: u64,
    /// Anything else.
    pub other: u64,
    /// All keys.
    pub total: u64,
}

/// What a database holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbSummary {
    /// Counts.
    pub keys: KeyCounts,
    /// SHA-256 hex of all keys and values.
    pub digest: String,
}

/// What a backup checked of one database's table files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCheck {
    /// Table files in the database.
    pub tables: u64,
    /// Tables new since the parent set, each checked block by block.
    pub checked: u64,
    /// Their blocks.
    pub blocks: u64,
    /// Their bytes.
    pub checked_bytes: u64,
    /// Tables the parent set already holds with the same name, size and mtime: checked when
    /// they entered a set, and LevelDB never rewrites a table under its name.
    pub carried: u64,
}

/// Opens the LevelDB database at `dir` (which recovery may modify: pass a scratch copy) and
/// walks every key. Every table file is checked block by block first ([`super::table`]):
/// the LevelDB reader would skip a damaged block without a word, giving a wrong summary.
///
/// # Errors
/// [`InspectError`]: the damaged table and block, or the LevelDB error (a missing table).
pub fn summarize(dir: &Path) -> Result<DbSummary, InspectError> {
    check_tables(dir, |_, _| false)?;
    caught(|| walk(dir))
}

/// [`table::check`](super::table::check) of every table file in `dir` for which `known`
/// (given the file's name and metadata) says no: a table a set already holds unchanged.
///
/// # Errors
/// [`InspectError`]: the damaged table and block, or the I/O error.
pub fn check_tables(
    dir: &Path,
    known: impl Fn(&std::ffi::OsStr, &std::fs::Metadata) -> bool,
) -> Result<TableCheck, InspectError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InspectError::Io {
            path,
            error: source,
        }
    };
    let mut out = TableCheck::default();
    let listed = listed_tables(dir)?;
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if !table_number(&entry.file_name()).is_some_and(|n| listed.contains(&n)) {
            continue;
        }
        out.tables += 1;
        let meta = entry.metadata().map_err(io(&path))?;
        if known(&entry.file_name(), &meta) {
            out.carried += 1;
            continue;
        }
        let data = std::fs::read(&path).map_err(io(&path))?;
        out.blocks += super::table::check(&data).map_err(|damage| InspectError::Table {
            table: entry.file_name().to_string_lossy().into_owned(),
            damage,
        })?;
        out.checked += 1;
        out.checked_bytes += data.len() as u64;
    }
    Ok(out)
}

/// The number of table file `name` (`000123.ldb`, `000123.sst`).
#[must_use]
pub fn table_number(name: &std::ffi::OsStr) -> Option<u64> {
    let name = name.to_str()?;
    let stem = name
        .strip_suffix(".ldb")
        .or_else(|| name.strip_suffix(".sst"))?;
    stem.parse().ok()
}

/// The tables the current MANIFEST of the database at `dir` lists. A table file it does not
/// list is not part of the database: an obsolete one not deleted yet, or a compaction's output
/// still being written (a snapshot catches it half-written); LevelDB deletes both on open.
///
/// # Errors
/// [`InspectError`]: no CURRENT, or a MANIFEST that cannot be read.
pub fn listed_tables(dir: &Path) -> Result<std::collections::BTreeSet<u64>, InspectError> {
    Ok(read_version(dir)?
        .1
        .tables
        .iter()
        .map(|&(_, number)| number)
        .collect())
}

/// The current MANIFEST's name and the version it describes.
fn read_version(dir: &Path) -> Result<(String, super::manifest::VersionState), InspectError> {
    let current = std::fs::read_to_string(dir.join("CURRENT"))
        .map_err(|source| InspectError::Current { error: source })?;
    let name = current.trim_end_matches('\n');
    if name.is_empty() || name.contains('/') {
        return Err(InspectError::NoManifest(name.to_string()));
    }
    let manifest = std::fs::read(dir.join(name)).map_err(|source| InspectError::Io {
        path: PathBuf::from(name),
        error: source,
    })?;
    let version = super::manifest::parse(&manifest).map_err(|source| InspectError::Manifest {
        name: name.to_string(),
        error: source,
    })?;
    Ok((name.to_string(), version))
}

/// Proves that the database at `dir` (a scratch copy: recovery may write to it) opens: every
/// table its MANIFEST lists is there, and LevelDB reads the MANIFEST and replays the logs.
/// This is what a server starting on the copy does first; the tables' blocks are checked
/// separately ([`check_tables`]).
///
/// # Errors
/// [`InspectError`]: what is missing or what LevelDB said.
pub fn opens(dir: &Path) -> Result<(), InspectError> {
    let (name, version) = read_version(dir)?;
    for &(level, number) in &version.tables {
        let ldb = dir.join(format!("{number:06}.ldb"));
        if !ldb.is_file() && !dir.join(format!("{number:06}.sst")).is_file() {
            return Err(InspectError::MissingTable {
                number,
                level,
                manifest: name.to_string(),
            });
        }
    }
    caught(|| {
        let opts = Options {
            create_if_missing: false,
            paranoid_checks: false,
            ..Options::default()
        };
        let mut db = DB::open(dir, opts).map_err(InspectError::LevelDb)?;
        db.close().map_err(InspectError::LevelDb)
    })
}

/// Runs `f`, turning a panic of the LevelDB reader into an error. Defence in depth: it
/// asserts on some damage the table checks cannot see (a table it expects but of another
/// shape); a damaged store is a failed component, never a crash of the whole run.
fn caught<T>(
    f: impl FnOnce() -> Result<T, InspectError> + std::panic::UnwindSafe,
) -> Result<T, InspectError> {
    std::panic::catch_unwind(f).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(InspectError::Panicked(why.to_string()))
    })
}

fn walk(dir: &Path) -> Result<DbSummary, InspectError> {
    let opts = Options {
        create_if_missing: false,
        paranoid_checks: false,
        ..Options::default()
    };
    let mut db = DB::open(dir, opts).map_err(InspectError::LevelDb)?;
    let mut it = db.new_iter().map_err(InspectError::LevelDb)?;
    let mut keys = KeyCounts::default();
    let mut hasher = Sha256::new();
    // advance/current rather than next: next copies every key and value into two new Vecs.
    while it.advance() {
        let Some((k, v)) = it.current() else { break };
        match k.first() {
            Some(b'k') => keys.kv += 1,
            Some(b'h' | b'H') => keys.hash += 1,
            Some(b's' | b'z' | b'Z') => keys.zset += 1,
            Some(b'q' | b'Q') => keys.queue += 1,
            Some(1) => keys.binlog += 1,
            _ => keys.other += 1,
        }
        keys.total += 1;
        hasher.update((k.len() as u64).to_le_bytes());
        hasher.update(&k);
        hasher.update((v.len() as u64).to_le_bytes());
        hasher.update(&v);
    }
    drop(it);
    db.close().map_err(InspectError::LevelDb)?;
    Ok(DbSummary {
        keys,
        digest: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of 3,000 keys spread over several small tables (16 KiB memtable).
    fn db_of_tables(dir: &Path) {
        let opts = Options {
            write_buffer_size: 16 * 1024,
            ..Options::default()
        };
        let mut db = DB::open(dir, opts).unwrap();
        for i in 0..3000u32 {
            db.put(format!("k{i:06}").as_bytes(), &[b'v'; 100]).unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
    }

    #[test]
    /// Counts follow SSDB's key prefixes and the digest depends only on content.
    fn counts_by_prefix_and_stable_digest() {
        let t = tempfile::tempdir().unwrap();
        let write = |dir: &Path, keys: &[&[u8]]| {
            let mut db = DB::open(dir, Options::default()).unwrap();
            for k in keys {
                db.put(k, b"v").unwrap();
            }
            db.close().unwrap();
        };
        write(
            &t.path().join("a"),
            &[
                b"kname",
                b"hx\x00f",
                b"Hx",
                b"zs",
                b"qq",
                b"\x01\x00\x00\x00\x00\x00\x00\x00\x01",
                b"?",
            ],
        );
        write(
            &t.path().join("b"),
            &[
                b"?",
                b"\x01\x00\x00\x00\x00\x00\x00\x00\x01",
                b"qq",
                b"zs",
                b"Hx",
                b"hx\x00f",
                b"kname",
            ],
        );
        let a = summarize(&t.path().join("a")).unwrap();
        let b = summarize(&t.path().join("b")).unwrap();
        assert_eq!(
            a.keys,
            KeyCounts {
                kv: 1,
                hash: 2,
                zset: 1,
                queue: 1,
                binlog: 1,
                other: 1,
                total: 7
            }
        );
        assert_eq!(a.digest, b.digest);
        assert!(summarize(&t.path().join("missing")).is_err());
    }

    #[test]
    /// A real database opens; without a table its MANIFEST lists, or without CURRENT, it
    /// does not, and the error names what is missing. `check_tables` skips what `known` says
    /// a set already holds and checks the rest.
    fn opens_needs_every_listed_table_and_check_tables_skips_known_ones() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("db");
        db_of_tables(&dir);
        let copy = |name: &str| {
            let to = t.path().join(name);
            super::super::checkpoint::scratch_copy(&dir, &to).unwrap();
            to
        };
        opens(&copy("ok")).unwrap();
        let all = check_tables(&dir, |_, _| false).unwrap();
        assert!(all.tables > 1 && all.checked == all.tables && all.carried == 0);
        assert!(all.blocks > all.tables && all.checked_bytes > 0);
        let first = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".ldb"))
            .min()
            .unwrap();
        let some = check_tables(&dir, |n, _| n != first.as_os_str()).unwrap();
        assert_eq!((some.checked, some.carried), (1, all.tables - 1));

        let gone = copy("gone");
        std::fs::remove_file(gone.join(&first)).unwrap();
        let err = opens(&gone).unwrap_err();
        assert!(matches!(err, InspectError::MissingTable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&*first.to_string_lossy()) && text.contains("missing"),
            "{text}"
        );
        let no_current = copy("nocurrent");
        std::fs::remove_file(no_current.join("CURRENT")).unwrap();
        assert!(matches!(
            opens(&no_current),
            Err(InspectError::Current { .. })
        ));
    }

    #[test]
    /// Seeded damage (flipped bits, cuts) to the tables of a real database: every summary is
    /// either an error naming the table or exactly the undamaged one. Before the table
    /// checks, 257 of 300 such trials gave a different summary without an error and 43
    /// panicked in the LevelDB reader.
    fn damaged_tables_are_an_error_never_a_wrong_summary() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        db_of_tables(&src);
        let good = summarize(&src).unwrap();
        let (mut ok_same, mut ok_diff, mut err, mut panics) = (0, 0, 0, 0);
        for trial in 0..300u64 {
            let d = t.path().join(format!("t{trial}"));
            std::fs::create_dir_all(&d).unwrap();
            let mut tables = Vec::new();
            for e in std::fs::read_dir(&src).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
                if e.file_name().to_string_lossy().ends_with(".ldb") {
                    tables.push(e.file_name());
                }
            }
            tables.sort();
            let victim = d.join(&tables[(trial as usize) % tables.len()]);
            let mut bytes = std::fs::read(&victim).unwrap();
            let mut x = trial
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            for _ in 0..(1 + trial % 4) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (x >> 33) as usize % bytes.len();
                bytes[at] ^= 1 << ((x >> 20) % 8);
            }
            if trial % 7 == 0 {
                let n = bytes.len() * ((x >> 40) as usize % 100) / 100;
                bytes.truncate(n);
            }
            std::fs::write(&victim, &bytes).unwrap();
            match std::panic::catch_unwind(|| summarize(&d)) {
                Ok(Ok(s)) if s == good => ok_same += 1,
                Ok(Ok(_)) => ok_diff += 1,
                Ok(Err(_)) => err += 1,
                Err(_) => panics += 1,
            }
        }
        eprintln!(
            "damaged tables: {err} refused, {ok_same} read the same (damage in unchecked padding)"
        );
        assert_eq!((ok_diff, panics), (0, 0), "same {ok_same}, errors {err}");
        assert!(err >= 250, "only {err} of 300 damaged copies were refused");
    }
}
