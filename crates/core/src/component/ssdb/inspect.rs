//! Opening a copy of an SSDB store with a real LevelDB implementation and describing it:
//! key counts per SSDB data type and a digest of every key and value.
//!
//! SSDB keeps its type in the first byte of each LevelDB key: `k` key-value, `h`/`H` hash
//! (item / size), `s`/`z`/`Z` sorted set, `q`/`Q` queue, `0x01` binlog. The digest is SHA-256
//! over `len(key) key len(value) value` in key order, so two copies holding the same data give
//! the same digest whatever their file layout.

use std::path::Path;

use rusty_leveldb::{DB, LdbIterator, Options};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Opens the LevelDB database at `dir` (which recovery may modify: pass a scratch copy) and
/// walks every key.
///
/// # Errors
/// The LevelDB error as text, e.g. a missing table file.
pub fn summarize(dir: &Path) -> Result<DbSummary, String> {
    let opts = Options {
        create_if_missing: false,
        paranoid_checks: false,
        ..Options::default()
    };
    let mut db = DB::open(dir, opts).map_err(|e| e.to_string())?;
    let mut it = db.new_iter().map_err(|e| e.to_string())?;
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
    db.close().map_err(|e| e.to_string())?;
    Ok(DbSummary {
        keys,
        digest: hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
