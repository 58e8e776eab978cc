//! Checks every block of a LevelDB table file (`*.ldb`, `*.sst`) against its CRC-32C before a
//! LevelDB implementation opens the store.
//!
//! Why: the reader we open stores with (`rusty-leveldb`) skips a block whose checksum fails
//! while it iterates, and asserts (panics) on a damaged footer. A damaged table then gave a
//! smaller key count and a different digest with no error at all, recorded as the truth in a
//! set's manifest (or, on `verify --deep`, reported as a mismatch without saying why). LevelDB
//! itself reads with `verify_checksums = false` by default, so a live SSDB serving such a table
//! would not notice either: the backup is where it gets noticed.
//!
//! The layout (LevelDB's `table_format.md`): blocks, each followed by a 5-byte trailer (the
//! compression type, then the masked CRC-32C of the block bytes and that type byte), and a
//! 48-byte footer holding the handles (varint offset and size) of the metaindex and index
//! blocks and a magic number. The index block maps keys to the handles of the data blocks;
//! the metaindex maps names to the filter block's handle. Every one of them is checked.

use super::manifest::{Cursor, unmask};

/// Length of the footer at the end of every table.
const FOOTER: usize = 48;
/// The footer's last 8 bytes, little-endian.
const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Compression type byte + CRC.
const TRAILER: usize = 5;
/// A block larger than this once decompressed is not one LevelDB wrote (its blocks are about
/// 4 KiB; the index of a big table a few MiB): refuse instead of allocating what a damaged
/// length asks for.
const MAX_BLOCK: usize = 64 << 20;

/// Damage found in a table file: what is wrong and where, e.g. `the block at offset 8123
/// (size 4021) fails its checksum (damaged)`. A finding about bytes, not a lower layer's error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Damage(String);

/// Checks the table `data` (a whole file); returns how many blocks it checked.
///
/// # Errors
/// [`Damage`] naming what is wrong and where.
pub fn check(data: &[u8]) -> Result<u64, Damage> {
    check_blocks(data).map_err(Damage)
}

fn check_blocks(data: &[u8]) -> Result<u64, String> {
    if data.len() < FOOTER {
        return Err(format!(
            "{} bytes, shorter than a table's {FOOTER}-byte footer (truncated)",
            data.len()
        ));
    }
    let footer = &data[data.len() - FOOTER..];
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&footer[FOOTER - 8..]);
    if u64::from_le_bytes(magic) != MAGIC {
        return Err("no table magic number at its end (truncated or not a table)".to_string());
    }
    let mut c = Cursor {
        data: &footer[..FOOTER - 8],
        pos: 0,
    };
    let (Some(meta), Some(index)) = (handle(&mut c), handle(&mut c)) else {
        return Err("its footer does not hold two block handles (damaged)".to_string());
    };
    let mut blocks = 0;
    for top in [meta, index] {
        let contents = block(data, top)?;
        blocks += 1;
        // Both map a key to the handle of another block: the data blocks, the filter block.
        for value in
            entries(&contents).map_err(|e| format!("{e} in the block at offset {}", top.0))?
        {
            let mut v = Cursor {
                data: value,
                pos: 0,
            };
            let Some(h) = handle(&mut v) else {
                return Err(format!(
                    "an entry of the block at offset {} is not a block handle (damaged)",
                    top.0
                ));
            };
            // A leaf (data or filter block): its checksum is the check. Its bytes are the
            // compressed ones the CRC covers, so decompressing them would prove nothing more,
            // and cost more than the checksum itself.
            checked(data, h)?;
            blocks += 1;
        }
    }
    Ok(blocks)
}

/// A block handle: offset and size.
fn handle(c: &mut Cursor<'_>) -> Option<(u64, u64)> {
    Some((c.varint()?, c.varint()?))
}

/// The block at `(offset, size)` of `data`, its checksum verified, decompressed.
fn block(data: &[u8], (offset, size): (u64, u64)) -> Result<Vec<u8>, String> {
    let place = || format!("the block at offset {offset} (size {size})");
    let (raw, kind) = checked(data, (offset, size))?;
    match kind {
        0 => Ok(raw.to_vec()),
        _ => {
            let n =
                snap::raw::decompress_len(raw).map_err(|e| format!("{}: snappy: {e}", place()))?;
            if n > MAX_BLOCK {
                return Err(format!("{} claims {n} bytes uncompressed", place()));
            }
            snap::raw::Decoder::new()
                .decompress_vec(raw)
                .map_err(|e| format!("{}: snappy: {e}", place()))
        }
    }
}

/// The stored bytes of the block at `(offset, size)` and its compression type, once its
/// checksum and type are verified.
fn checked(data: &[u8], (offset, size): (u64, u64)) -> Result<(&[u8], u8), String> {
    let place = || format!("the block at offset {offset} (size {size})");
    let start = usize::try_from(offset).map_err(|_| format!("{} lies past the end", place()))?;
    let len = usize::try_from(size).map_err(|_| format!("{} lies past the end", place()))?;
    let end = start
        .checked_add(len)
        .filter(|e| e.checked_add(TRAILER).is_some_and(|t| t <= data.len()))
        .ok_or_else(|| format!("{} lies past the end of the file (truncated?)", place()))?;
    let raw = &data[start..end];
    let kind = data[end];
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&data[end + 1..end + TRAILER]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(raw), &[kind]);
    if crc != unmask(u32::from_le_bytes(stored)) {
        return Err(format!("{} fails its checksum (damaged)", place()));
    }
    match kind {
        0 | 1 => Ok((raw, kind)),
        other => Err(format!(
            "{} uses compression type {other}, which SSDB's LevelDB does not write",
            place()
        )),
    }
}

/// One entry: the shared key length (at most the previous key's), the key's own bytes and
/// the value; returns the value and updates `key_len`.
fn entry<'a>(c: &mut Cursor<'a>, key_len: &mut usize) -> Option<&'a [u8]> {
    let shared = usize::try_from(c.varint()?).ok()?;
    let own = usize::try_from(c.varint()?).ok()?;
    let value = usize::try_from(c.varint()?).ok()?;
    if shared > *key_len {
        return None;
    }
    c.take(own)?;
    *key_len = shared.checked_add(own)?;
    c.take(value)
}

/// The values of a block's entries (prefix-compressed keys, then a restart array and its
/// length at the end).
fn entries(block: &[u8]) -> Result<Vec<&[u8]>, String> {
    let Some(count_at) = block.len().checked_sub(4) else {
        return Err("a block shorter than its restart count".to_string());
    };
    let mut n = [0u8; 4];
    n.copy_from_slice(&block[count_at..]);
    let restarts = usize::try_from(u32::from_le_bytes(n)).unwrap_or(usize::MAX);
    let Some(end) = restarts
        .checked_mul(4)
        .and_then(|r| count_at.checked_sub(r))
    else {
        return Err("a restart array longer than its block".to_string());
    };
    let mut c = Cursor {
        data: &block[..end],
        pos: 0,
    };
    let mut key_len = 0usize;
    let mut values = Vec::new();
    while c.pos < end {
        let at = c.pos;
        let value = entry(&mut c, &mut key_len)
            .ok_or_else(|| format!("an entry at {at} that does not parse"))?;
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A database with several tables of snappy-compressed blocks, as SSDB writes them.
    fn db(dir: &Path) {
        let opts = rusty_leveldb::Options {
            write_buffer_size: 16 * 1024,
            ..rusty_leveldb::Options::default()
        };
        let mut db = rusty_leveldb::DB::open(dir, opts).unwrap();
        for i in 0..3000u32 {
            db.put(
                format!("k{i:06}").as_bytes(),
                format!("value {i} ").repeat(8).as_bytes(),
            )
            .unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
    }

    fn tables(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut t: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "ldb" || x == "sst"))
            .collect();
        t.sort();
        t
    }

    #[test]
    /// Every block of a real table passes; one flipped bit anywhere in a block or its trailer,
    /// or a cut anywhere, is found.
    fn finds_every_flip_and_cut() {
        let t = tempfile::tempdir().unwrap();
        db(t.path());
        let files = tables(t.path());
        assert!(!files.is_empty());
        let data = std::fs::read(&files[0]).unwrap();
        let blocks = check(&data).unwrap();
        assert!(blocks >= 3, "index, metaindex and data blocks: {blocks}");
        // The footer's padding between the handles and the magic is the only unchecked part.
        let mut footer_handles = Cursor {
            data: &data[data.len() - FOOTER..],
            pos: 0,
        };
        handle(&mut footer_handles).unwrap();
        handle(&mut footer_handles).unwrap();
        let padding = data.len() - FOOTER + footer_handles.pos..data.len() - 8;
        for at in (0..data.len()).filter(|a| !padding.contains(a)) {
            let mut bad = data.clone();
            bad[at] ^= 0x10;
            assert!(
                check(&bad).is_err(),
                "flip at {at} of {} not found",
                data.len()
            );
        }
        for cut in 0..data.len() {
            assert!(check(&data[..cut]).is_err(), "cut at {cut} not found");
        }
    }
}
